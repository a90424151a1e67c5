// The SPA: sign in and out with oidc-client-ts, show the tokens, and call
// the API with the access token.
const config = window.authgateConfig;
const mgr = new oidc.UserManager(config);
const $ = (id) => document.getElementById(id);

function show(user) {
  const signedIn = !!user && !user.expired;
  $("status").textContent = signedIn ? "signed in" : "signed out";
  $("sub").textContent = signedIn ? user.profile.sub : "";
  $("id_token").textContent = signedIn ? user.id_token : "";
  $("access_token").textContent = signedIn ? user.access_token : "";
  $("refresh_token").textContent = signedIn ? (user.refresh_token || "") : "";
  $("expires_at").textContent = signedIn ? String(user.expires_at) : "";
}

async function callAPI() {
  const user = await mgr.getUser();
  const headers = user ? { Authorization: "Bearer " + user.access_token } : {};
  try {
    const resp = await fetch(config.apiURL, { headers });
    $("api").textContent = resp.status + "\n" + (await resp.text());
  } catch (err) {
    $("api").textContent = "error: " + err.message;
  }
}

mgr.events.addUserLoaded(show);
mgr.events.addUserUnloaded(() => show(null));
mgr.events.addSilentRenewError((err) => { $("status").textContent = "renew failed: " + err.message; });
// With monitorSession, a sign-out at the provider (another tab, another
// app) is noticed here: say so, and forget the user. A new login of the
// same user there only changes the session.
mgr.events.addUserSessionChanged(() => { $("session").textContent = "session changed at the provider"; });
mgr.events.addUserSignedOut(async () => {
  $("session").textContent = "signed out at the provider";
  await mgr.removeUser();
});

$("signin").addEventListener("click", () => mgr.signinRedirect());
$("signout").addEventListener("click", () => mgr.signoutRedirect());
$("callapi").addEventListener("click", callAPI);

mgr.getUser().then(show);
