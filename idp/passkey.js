(function () {
  "use strict";
  // Passkeys for the provider's login and passkeys pages: no library, no
  // other origin. The server sends options as JSON (base64url for bytes);
  // the answer goes back in the page's form, as JSON in "credential".
  function bytes(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), a = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) a[i] = bin.charCodeAt(i);
    return a.buffer;
  }
  function b64(buf) {
    var a = new Uint8Array(buf), s = "";
    for (var i = 0; i < a.length; i++) s += String.fromCharCode(a[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function options(form, purpose) {
    var body = new URLSearchParams();
    body.set("purpose", purpose);
    body.set("csrf_token", form.elements.csrf_token.value);
    return fetch(form.dataset.options, {method: "POST", body: body, credentials: "same-origin"}).then(function (r) {
      if (r.status === 401 && purpose === "register") {
        // The sign-in is too old to add a passkey: the page, reloaded,
        // asks to sign in again.
        location.reload();
      }
      if (!r.ok) throw new Error("the server answered " + r.status);
      return r.json();
    });
  }
  function ids(list) {
    (list || []).forEach(function (c) { c.id = bytes(c.id); });
  }
  function answer(cred) {
    var r = cred.response, out = {
      id: cred.id, rawId: b64(cred.rawId), type: cred.type,
      authenticatorAttachment: cred.authenticatorAttachment || undefined,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: {clientDataJSON: b64(r.clientDataJSON)}
    };
    if (r.attestationObject) {
      out.response.attestationObject = b64(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = b64(r.authenticatorData);
      out.response.signature = b64(r.signature);
      if (r.userHandle) out.response.userHandle = b64(r.userHandle);
    }
    return JSON.stringify(out);
  }
  function say(id, text) {
    var el = document.getElementById(id);
    if (el) { el.textContent = text; el.hidden = false; }
  }
  if (!window.PublicKeyCredential || !navigator.credentials) return;

  var login = document.getElementById("passkey-form");
  if (login) {
    var pending = null;
    var get = function (mediation) {
      if (pending) pending.abort();
      var ctl = new AbortController();
      pending = ctl;
      return options(login, "login").then(function (o) {
        var pk = o.publicKey;
        pk.challenge = bytes(pk.challenge);
        ids(pk.allowCredentials);
        var req = {publicKey: pk, signal: ctl.signal};
        if (mediation) req.mediation = mediation;
        return navigator.credentials.get(req);
      }).then(function (cred) {
        if (!cred) return;
        login.elements.credential.value = answer(cred);
        login.submit();
      });
    };
    var button = document.getElementById("passkey-login");
    button.hidden = false;
    button.addEventListener("click", function () {
      get().catch(function (e) {
        if (e.name !== "AbortError") say("passkey-error", "No passkey was used: " + e.message);
      });
    });
    // Conditional UI: the browser offers passkeys in the username field's
    // autofill (autocomplete="username webauthn"); not again on a page
    // that tells why the last sign-in failed.
    if (PublicKeyCredential.isConditionalMediationAvailable && !document.getElementById("error")) {
      PublicKeyCredential.isConditionalMediationAvailable().then(function (ok) {
        if (ok) get("conditional").catch(function () {});
      });
    }
  }

  var reg = document.getElementById("passkey-register-form");
  if (reg) {
    var add = document.getElementById("passkey-register");
    add.hidden = false;
    add.addEventListener("click", function () {
      if (!reg.reportValidity()) return;
      options(reg, "register").then(function (o) {
        var pk = o.publicKey;
        pk.challenge = bytes(pk.challenge);
        pk.user.id = bytes(pk.user.id);
        ids(pk.excludeCredentials);
        return navigator.credentials.create({publicKey: pk});
      }).then(function (cred) {
        reg.elements.credential.value = answer(cred);
        reg.submit();
      }).catch(function (e) {
        say("passkey-error", "No passkey was added: " + e.message);
      });
    });
  }
})();
