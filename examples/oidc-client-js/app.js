// The quickstart's client: log in and out with oidc-client 1.11, show the
// profile and tokens, call the API with the access token.
var config = window.authgateConfig;
var mgr = new Oidc.UserManager(config);
var loads = 0;

function $(id) { return document.getElementById(id); }

function show(user) {
  var signedIn = !!user && !user.expired;
  $("status").textContent = signedIn ? "signed in" : "signed out";
  $("sub").textContent = signedIn ? user.profile.sub : "";
  $("name").textContent = signedIn ? (user.profile.name || "") : "";
  $("access_token").textContent = signedIn ? user.access_token : "";
  $("refresh_token").textContent = signedIn ? (user.refresh_token || "") : "";
  $("expires_at").textContent = signedIn ? String(user.expires_at) : "";
}

function api() {
  mgr.getUser().then(function (user) {
    var xhr = new XMLHttpRequest();
    xhr.open("GET", config.apiURL);
    xhr.onload = function () { $("results").textContent = xhr.status + "\n" + xhr.responseText; };
    xhr.onerror = function () { $("results").textContent = "error: the request failed"; };
    if (user) {
      xhr.setRequestHeader("Authorization", "Bearer " + user.access_token);
    }
    xhr.send();
  });
}

// userLoaded fires at every renewal (and not for the first getUser).
mgr.events.addUserLoaded(function (user) {
  loads++;
  $("renewals").textContent = String(loads);
  show(user);
});
mgr.events.addUserUnloaded(function () { show(null); });
mgr.events.addSilentRenewError(function (err) { $("status").textContent = "renew failed: " + err.message; });
// With monitorSession, a sign-out at the provider (another tab, another
// app) is noticed here: forget the user.
mgr.events.addUserSignedOut(function () {
  $("session").textContent = "signed out at the provider";
  mgr.removeUser();
});

$("login").addEventListener("click", function () { mgr.signinRedirect(); });
$("api").addEventListener("click", api);
$("logout").addEventListener("click", function () { mgr.signoutRedirect(); });

mgr.getUser().then(show);
