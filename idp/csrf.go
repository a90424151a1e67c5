package idp

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/gorilla/securecookie"
)

// The provider's forms (login, consent, sign-out) are defended against
// cross-site request forgery in two layers.
//
// Every form carries a token that the provider sealed with its cookie keys
// (encrypted and MAC'd by securecookie): a random value and the time it was
// issued. Only a genuine token younger than csrfTokenTTL is accepted: a
// token cannot be made up, and one lifted from a page goes stale.
//
// A genuine token is public, though: anyone gets one by opening the login
// page. So the request must also come from the provider's own page:
//   - Sec-Fetch-Site (Fetch Metadata) same-origin, or none for what the
//     user did in the browser itself, or an Origin header equal to the
//     issuer's origin (RFC 6454 §7), proves it. Any other Sec-Fetch-Site
//     (cross-site, same-site) or Origin refuses the request outright,
//     whatever it carries: a sibling subdomain is as foreign as any site.
//     Origin "null" (a sandboxed frame; also our own pages, whose
//     Referrer-Policy is no-referrer) says nothing.
//   - A browser that sends neither falls back to the double-submit cookie:
//     the token's value must be that of the browser's CSRF cookie the
//     token names, which another site can neither read nor set.
//
// Two tabs that open the login page at once both come without a CSRF
// cookie, and both answers set one (issue 7, finding 8): each gets a name
// of its own (csrfCookie, "_", an id), so that the later does not replace
// the earlier and both tabs' forms keep their cookie. A page opened with a
// CSRF cookie uses it, so a browser has about one of them.
//
// Against login CSRF (the victim signed in as the attacker): the
// attacker's form, posted by the victim's browser, is labelled cross-site
// or carries the attacker's Origin, or else lacks the victim's cookie.
const csrfTokenTTL = authRequestTTL

// csrfTokenName is the securecookie name of a form token, so that no other
// value sealed with the same keys passes for one.
const csrfTokenName = "authgate_csrf"

// formToken is what a form's csrf_token seals.
type formToken struct {
	Cookie string `json:"c"` // the name of the double-submit cookie
	Value  string `json:"v"` // its value
	Issued int64  `json:"iat"`
}

// csrfToken returns a new form token for the request's browser, and sets
// a double-submit cookie when it has none.
func (p *Provider) csrfToken(w http.ResponseWriter, r *http.Request) string {
	t := formToken{Issued: p.now().Unix()}
	for _, ck := range r.Cookies() {
		if strings.HasPrefix(ck.Name, csrfCookie+"_") && len(ck.Value) >= 22 {
			t.Cookie, t.Value = ck.Name, ck.Value
			break
		}
	}
	if t.Value == "" {
		t.Cookie, t.Value = csrfCookie+"_"+p.randomString(6), p.randomString(24)
		http.SetCookie(w, p.cookie(t.Cookie, t.Value, 0))
	}
	tok, err := p.cookies.Encode(csrfTokenName, t)
	if err != nil {
		// The keys were tried in New: this does not happen. An empty
		// token is refused when the form comes back.
		p.log.ErrorContext(r.Context(), "sealing form token", "error", err)
		return ""
	}
	return tok
}

// checkCSRF reports why a form posted with token must be refused, or nil.
// The error never holds the token or the cookie.
func (p *Provider) checkCSRF(r *http.Request, token string) error {
	if token == "" {
		return errors.New("idp: form without a CSRF token")
	}
	var t formToken
	if err := securecookie.DecodeMulti(csrfTokenName, token, &t, p.cookieSet...); err != nil {
		return fmt.Errorf("idp: CSRF token: %w", err)
	}
	if !p.fresh(t.Issued, csrfTokenTTL) {
		return errors.New("idp: CSRF token expired")
	}
	sameOrigin := false
	// Fetch Metadata Request Headers §2.1: same-origin, same-site,
	// cross-site or none.
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "same-origin", "none":
		sameOrigin = true
	case "":
	default:
		return fmt.Errorf("idp: form posted from a page that is not ours (Sec-Fetch-Site %q)", truncate(site, 20))
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		if o != p.origin {
			return fmt.Errorf("idp: form posted from origin %q, not %q", truncate(o, 100), p.origin)
		}
		sameOrigin = true
	}
	if sameOrigin {
		return nil
	}
	if !strings.HasPrefix(t.Cookie, csrfCookie+"_") {
		return errors.New("idp: CSRF token names no CSRF cookie")
	}
	ck, err := r.Cookie(t.Cookie)
	if err != nil || t.Value == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(t.Value)) != 1 {
		return errors.New("idp: CSRF token does not match the browser's cookie")
	}
	return nil
}

// webOrigin is the origin of u as a browser serializes it in an Origin
// header (RFC 6454 §6.2): scheme and host in lower case, and the port only
// when it is not the scheme's default.
func webOrigin(u *url.URL) string {
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if scheme == "https" && port == "443" || scheme == "http" && port == "80" {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host
}

// truncate cuts what a client sent down to n bytes for a log line.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
