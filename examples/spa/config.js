// Settings of the SPA. The demo Caddyfile serves this file as it is; a
// deployment points authority, client_id and the URIs at its own provider.
window.authgateConfig = {
  authority: "http://localhost:9000",
  client_id: "spa",
  redirect_uri: window.location.origin + "/callback.html",
  post_logout_redirect_uri: window.location.origin + "/",
  response_type: "code",
  scope: "openid profile api offline_access",
  // Renew with the refresh token shortly before the access token expires.
  automaticSilentRenew: true,
  // On sign-out, revoke the tokens at the provider (RFC 7009) first.
  revokeTokensOnSignout: true,
  revokeTokenTypes: ["access_token", "refresh_token"],
  // Watch the provider's session (OpenID Connect Session Management, the
  // provider's session_management): a sign-out at the provider, in another
  // tab or app, signs this app out. It works where the app is on the same
  // site as the provider, as in the demo; on another site, leave it off
  // (see the README). After a change, oidc-client-ts asks the provider with
  // prompt=none in a hidden iframe that comes back to silent_redirect_uri.
  monitorSession: true,
  silent_redirect_uri: window.location.origin + "/silent-callback.html",
  apiURL: window.location.origin + "/api/identity",
};
