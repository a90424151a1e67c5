// Settings of the client, as IdentityServer4's quickstart "JavaScript
// client" writes them for oidc-client 1.11, plus offline_access and silent
// renew. A deployment points authority and the URIs at its own provider.
window.authgateConfig = {
  authority: "http://localhost:9000",
  client_id: "js",
  redirect_uri: window.location.origin + "/callback.html",
  response_type: "code",
  scope: "openid profile offline_access api",
  post_logout_redirect_uri: window.location.origin + "/index.html",
  // With a refresh token (offline_access), oidc-client 1.11 renews at the
  // token endpoint; without one, in a hidden iframe with prompt=none.
  automaticSilentRenew: true,
  silent_redirect_uri: window.location.origin + "/silent-renew.html",
  // oidc-client's default: watch the provider's session through its
  // check_session_iframe, when discovery lists one.
  monitorSession: true,
  apiURL: window.location.origin + "/api/identity",
};
