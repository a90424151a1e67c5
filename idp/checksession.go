package idp

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/net/idna"
)

// OpenID Connect Session Management 1.0, when [Config.SessionManagement]
// is on. The OP browser state is a random value in a cookie that the
// check_session_iframe's script reads: it is replaced at every login and
// deleted at every sign-out, and holds nothing else. Each authorization
// response carries session_state, a salted hash of the client_id, the
// origin of the redirect URI, that state and the salt (§2, §3.2); the RP
// posts "client_id session_state" to the iframe every few seconds, which
// recomputes the hash with the current cookie and answers "unchanged" or
// "changed" (then the RP asks again with prompt=none), or "error".
//
// The cookie is SameSite=Lax like the session cookie, so the iframe sees
// the state exactly where a prompt=none request would see the session:
// in a page on the same site as the provider. A client on another site
// gets the cookie in neither; its checks would all answer "changed" and
// its prompt=none requests login_required, which is why session
// management is off by default.

// PathCheckSession is the check_session_iframe (Session Management §3.2),
// relative to the issuer's path, as IdentityServer has it.
const PathCheckSession = "/connect/checksession"

// BrowserStateCookie is the name of the OP browser state cookie. It is
// not HttpOnly: the check_session_iframe's script reads it.
const BrowserStateCookie = "authgate_provider_browser_state"

// checkSession is the check_session_iframe page, built once in New.
type checkSession struct {
	page []byte
	csp  string
}

// checkSessionScript is the iframe's script; %ALLOWED% is replaced by the
// JSON array of the registered (client_id, origin) pairs, each as the
// hex SHA-256 of client_id + " " + origin, so that the page lists no
// client and no origin, yet tells a registered pair from any other.
//
// A message is answered only when the page is framed and the message
// comes from its parent's origin (window.location.ancestorOrigins, where
// the browser has it, else the referrer's origin, where it is sent), and
// only when that origin is registered for the client_id the message
// names: a redirect URI's origin or a cors_origin (§3.2: the OP iframe
// MUST reject postMessage requests from other origins). A message that is
// not "client_id session_state" gets "error", as does a browser without
// crypto.subtle (a page that is not a secure context).
const checkSessionScript = `(function () {
"use strict";
var allowed = %ALLOWED%;
var cookieName = "` + BrowserStateCookie + `";
function parentOrigin() {
  var a = window.location.ancestorOrigins;
  if (a && a.length > 0) { return a[0]; }
  if (document.referrer) {
    try { return new URL(document.referrer).origin; } catch (e) { return null; }
  }
  return "";
}
function browserState() {
  var parts = document.cookie.split(";");
  for (var i = 0; i < parts.length; i++) {
    var c = parts[i].trim();
    if (c.indexOf(cookieName + "=") === 0) { return c.substring(cookieName.length + 1); }
  }
  return "";
}
function sha256(s) {
  return crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)).then(function (buf) {
    return Array.prototype.map.call(new Uint8Array(buf), function (b) {
      return (b < 16 ? "0" : "") + b.toString(16);
    }).join("");
  });
}
window.addEventListener("message", function (e) {
  if (window.parent === window || !e.source || e.source === window) { return; }
  var parent = parentOrigin();
  if (parent === null || (parent !== "" && e.origin !== parent)) { return; }
  var answer = function (s) { e.source.postMessage(s, e.origin); };
  if (typeof e.data !== "string") { answer("error"); return; }
  var sp = e.data.lastIndexOf(" ");
  var clientID = e.data.substring(0, sp), state = e.data.substring(sp + 1);
  var dot = state.lastIndexOf(".");
  if (sp <= 0 || dot <= 0 || dot === state.length - 1) { answer("error"); return; }
  if (!window.crypto || !crypto.subtle || !window.TextEncoder) { answer("error"); return; }
  var salt = state.substring(dot + 1);
  var origin = e.origin;
  sha256(clientID + " " + origin).then(function (pair) {
    if (allowed.indexOf(pair) < 0) { return; }
    return sha256(clientID + " " + origin + " " + browserState() + " " + salt).then(function (h) {
      answer(h + "." + salt === state ? "unchanged" : "changed");
    });
  }).catch(function () { answer("error"); });
});
})();`

// newCheckSession builds the check_session_iframe page for clients.
func newCheckSession(clients map[string]*client) *checkSession {
	pairs := []string{}
	for id, c := range clients {
		for _, o := range c.checkSessionOrigins() {
			pairs = append(pairs, originPair(id, o))
		}
	}
	sort.Strings(pairs)
	pairs = slices.Compact(pairs)
	allowed, _ := json.Marshal(pairs) // hex strings only: nothing to escape in a script
	script := strings.Replace(checkSessionScript, "%ALLOWED%", string(allowed), 1)
	page := `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Session check</title></head><body><script>` +
		script + `</script></body></html>`
	return &checkSession{
		page: []byte(page),
		// Its one script by hash, nothing else to load, no form, no base.
		// Any page may frame it, so it sends no X-Frame-Options: listing
		// the clients' origins here would tell anyone which apps sign in
		// with this provider, and the page has nothing to click and
		// answers only the origins registered for a client. Its hashes of
		// (client_id, origin) pairs list nothing, but do confirm a guess
		// of a pair: client ids and origins are not secrets.
		csp: "default-src 'none'; script-src " + scriptHash(script) +
			"; frame-ancestors *; base-uri 'none'; form-action 'none'",
	}
}

// originPair is the hex SHA-256 of clientID + " " + origin, as the
// iframe's script computes it.
func originPair(clientID, origin string) string {
	sum := sha256.Sum256([]byte(clientID + " " + origin))
	return hex.EncodeToString(sum[:])
}

// checkSessionOrigins returns the web origins a client's pages may be on:
// those of its http(s) redirect URIs and its CORS origins.
func (c *client) checkSessionOrigins() []string {
	var out []string
	for _, raw := range slices.Concat(c.RedirectURIs, c.CORSOrigins) {
		if o := redirectOrigin(raw); o != "null" {
			out = append(out, o)
		}
	}
	return out
}

// redirectOrigin is the origin of a redirect URI as a browser serializes
// it (RFC 6454 §6.1): scheme://host[:port], the host in ASCII (an
// internationalized name as its A-label), or "null" for a URI that is not
// http(s), such as a native app's custom scheme.
func redirectOrigin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "null"
	}
	if host, err := idna.Lookup.ToASCII(u.Hostname()); err == nil && host != u.Hostname() {
		u.Host = host
		if port := u.Port(); port != "" {
			u.Host += ":" + port
		}
	}
	return webOrigin(u)
}

// serveCheckSession serves the check_session_iframe page.
func (p *Provider) serveCheckSession(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		p.renderError(w, r, &pageError{status: http.StatusMethodNotAllowed, msg: "Use GET."})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", p.checkSession.csp)
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(p.checkSession.page)
	}
}

// computeSessionState is the session_state of Session Management §3.2:
// the hex SHA-256 of client_id, origin, OP browser state and salt, joined
// by spaces, then "." and the salt.
func computeSessionState(clientID, origin, browserState, salt string) string {
	sum := sha256.Sum256([]byte(clientID + " " + origin + " " + browserState + " " + salt))
	return hex.EncodeToString(sum[:]) + "." + salt
}

// sessionState is the session_state of an authorization response to req
// (§2), for the OP browser state that the browser holds once this
// response is in: for the origin, that of the redirect URI the response
// goes to (§2 allows it), which is the page the iframe is framed by.
func (p *Provider) sessionState(w http.ResponseWriter, r *http.Request, req *authRequest) string {
	return computeSessionState(req.ClientID, redirectOrigin(req.RedirectURI), p.browserState(w, r), p.randomString(12))
}

// browserState returns the OP browser state the browser holds after this
// response: the value a login or sign-out set in it, else the request's.
func (p *Provider) browserState(w http.ResponseWriter, r *http.Request) string {
	set := w.Header().Values("Set-Cookie")
	for i := len(set) - 1; i >= 0; i-- {
		if c, err := http.ParseSetCookie(set[i]); err == nil && c.Name == BrowserStateCookie {
			if c.MaxAge < 0 {
				return ""
			}
			return c.Value
		}
	}
	if c, err := r.Cookie(BrowserStateCookie); err == nil && validBrowserState(c.Value) {
		return c.Value
	}
	return ""
}

// validBrowserState reports whether v can be an OP browser state of ours:
// base64url, as randomString makes it.
func validBrowserState(v string) bool {
	if len(v) == 0 || len(v) > 64 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(v)
	return err == nil
}

// newBrowserState gives the browser a new OP browser state, at a login.
func (p *Provider) newBrowserState(w http.ResponseWriter) {
	if p.checkSession == nil {
		return
	}
	http.SetCookie(w, p.browserStateCookie(p.randomString(16), int(p.sessionTTL/time.Second)))
}

// clearBrowserState deletes the OP browser state, at a sign-out.
func (p *Provider) clearBrowserState(w http.ResponseWriter) {
	if p.checkSession == nil {
		return
	}
	http.SetCookie(w, p.browserStateCookie("", -1))
}

// syncBrowserState makes the browser state follow the session the
// authorization endpoint sees: gone with a session that ended elsewhere
// or expired, and set for a session that has none (one begun before
// session management was turned on), so that the iframes of the other
// clients notice.
func (p *Provider) syncBrowserState(w http.ResponseWriter, r *http.Request, s *session) {
	if p.checkSession == nil {
		return
	}
	c, err := r.Cookie(BrowserStateCookie)
	switch {
	case s == nil && err == nil:
		p.clearBrowserState(w)
	case s != nil && (err != nil || !validBrowserState(c.Value)):
		ttl := p.sessionTTL - p.now().Sub(time.Unix(s.AuthTime, 0))
		if ttl >= time.Second {
			http.SetCookie(w, p.browserStateCookie(p.randomString(16), int(ttl/time.Second)))
		}
	}
}

// browserStateCookie is the OP browser state cookie: the session cookie's
// path, lifetime and SameSite, readable by script, since it is no secret.
func (p *Provider) browserStateCookie(value string, maxAge int) *http.Cookie {
	c := p.cookie(BrowserStateCookie, value, maxAge)
	c.HttpOnly = false
	return c
}
