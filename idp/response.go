package idp

import (
	"crypto/sha256"
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"strings"
)

// Response modes of the code flow: how the authorization response travels
// back to the client's redirect URI (OAuth 2.0 Multiple Response Type
// Encoding Practices §2; OAuth 2.0 Form Post Response Mode).
const (
	modeQuery    = "query"     // the default for response_type=code
	modeFragment = "fragment"  // in the redirect URI's fragment
	modeFormPost = "form_post" // POSTed by an auto-submitting HTML form
)

// responseModes is what discovery lists as response_modes_supported.
var responseModes = []string{modeQuery, modeFragment, modeFormPost}

// formPostScript submits the form_post page's form as soon as it loads.
// The page's CSP allows this script, and only this one, by its hash; the
// form's visible button does the same without JavaScript.
const formPostScript = `document.forms[0].submit();`

// formPostScriptHash is formPostScript's CSP hash-source.
var formPostScriptHash = scriptHash(formPostScript)

// scriptHash is the CSP hash-source ('sha256-...') that allows an inline
// script of exactly this text.
func scriptHash(script string) string {
	sum := sha256.Sum256([]byte(script))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// formPostPage is the data of form_post.html.
type formPostPage struct {
	Action string
	Fields []formField
	Script template.JS
}

type formField struct{ Name, Value string }

// respond sends the authorization response v (code or error, with state
// and iss) to req's redirect URI by req's response mode.
func (p *Provider) respond(w http.ResponseWriter, r *http.Request, req *authRequest, v url.Values) {
	if p.checkSession != nil {
		// Session Management §2: in the response, and in an error
		// response too, for the state the browser is left in.
		v.Set("session_state", p.sessionState(w, r, req))
	}
	switch req.Mode {
	case modeFormPost:
		p.renderFormPost(w, r, req.RedirectURI, v)
	case modeFragment:
		// Multiple Response Type Encoding Practices §2.1: the parameters
		// are the fragment, application/x-www-form-urlencoded. Registered
		// redirect URIs have no fragment of their own (RFC 6749 §3.1.2).
		w.Header().Set("Location", req.RedirectURI+"#"+v.Encode())
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(redirectStatus(r))
	default:
		redirectTo(w, r, req.RedirectURI, v)
	}
}

// renderFormPost answers with a page whose form POSTs v to action (Form
// Post Response Mode §2): it submits itself by script, or by its button
// where scripts do not run. Its CSP lets the page do nothing else: no
// other script, no style, no frame, no other form target.
func (p *Provider) renderFormPost(w http.ResponseWriter, r *http.Request, action string, v url.Values) {
	page := formPostPage{Action: action, Script: template.JS(formPostScript)}
	// A fixed order, so that the page is the same for the same response.
	for _, name := range []string{"code", "state", "iss", "error", "error_description", "error_uri", "session_state"} {
		if v.Has(name) {
			page.Fields = append(page.Fields, formField{Name: name, Value: v.Get(name)})
		}
	}
	csp := "default-src 'none'; form-action " + formActionSource(action) + "; script-src " + formPostScriptHash +
		"; frame-ancestors 'none'; base-uri 'none'"
	p.renderCSP(w, r, http.StatusOK, "form_post.html", page, csp)
}

// formActionSource is the CSP source expression that matches exactly the
// redirect URI raw (CSP3 §6.7.2.8): its scheme, host, port and path, with
// the characters that would end or split the expression percent-encoded
// (CSP matches percent-decoded paths). The query is not part of a source
// expression; a redirect after the POST is matched by origin only (CSP3
// ignores paths after a redirect), so a client may redirect within its
// own origin after the callback.
func formActionSource(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "'none'"
	}
	if strings.HasPrefix(u.Host, "[") {
		// CSP host sources have no IPv6 literals (CSP3 §2.3.1): a native
		// app's http://[::1]:port/ gets its scheme, the narrowest source
		// that still lets the form go.
		return u.Scheme + ":"
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	path = strings.NewReplacer(";", "%3B", ",", "%2C", " ", "%20", "'", "%27").Replace(path)
	return u.Scheme + "://" + u.Host + path
}
