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
  apiURL: window.location.origin + "/api/identity",
};
