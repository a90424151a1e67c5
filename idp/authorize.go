package idp

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// authRequest is a validated authorization request (RFC 6749 §4.1.1,
// OpenID Connect Core §3.1.2.1). It travels, encrypted, through the login
// page, so its fields are short JSON names.
type authRequest struct {
	ClientID    string   `json:"c"`
	RedirectURI string   `json:"r"`
	Scopes      []string `json:"s"`
	State       string   `json:"st,omitempty"`
	Nonce       string   `json:"n,omitempty"`
	Challenge   string   `json:"cc,omitempty"`
	Method      string   `json:"cm,omitempty"`
	Prompt      []string `json:"p,omitempty"`
	MaxAge      int      `json:"ma"` // -1: absent
	LoginHint   string   `json:"lh,omitempty"`
	Mode        string   `json:"rm,omitempty"`  // response mode; empty: query
	Issued      int64    `json:"iat,omitempty"` // when it was sealed for the login page
	// Device marks a login for the device page, not a client: after it
	// the user goes back there, with UserCode as typed.
	Device   bool   `json:"dv,omitempty"`
	UserCode string `json:"uc,omitempty"`
	// Account marks a login for an account page (account.go): the path
	// of the page to return to, which the provider sealed itself.
	Account string `json:"ac,omitempty"`
	// ConsentSID is set only on a request sealed for the consent page:
	// the session that passed every check of the request (login,
	// max_age, prompt, id_token_hint, acr), which alone may consent to
	// it. A request sealed for the login page cannot be taken there.
	ConsentSID string `json:"cs,omitempty"`
	// ACRValues are the request's acr_values (acr.go).
	ACRValues []string `json:"acr,omitempty"`
	// DPoPJKT is the dpop_jkt the code is bound to (RFC 9449 §10).
	DPoPJKT string `json:"jkt,omitempty"`
}

// codeGrant is what an authorization code stands for, kept in the Store
// under the code's hash until it is redeemed.
type codeGrant struct {
	ClientID    string   `json:"client_id"`
	RedirectURI string   `json:"redirect_uri"`
	Scopes      []string `json:"scopes"`
	Nonce       string   `json:"nonce,omitempty"`
	Challenge   string   `json:"challenge,omitempty"`
	Method      string   `json:"method,omitempty"`
	Subject     string   `json:"sub"`
	AuthTime    int64    `json:"auth_time"`
	SID         string   `json:"sid"`
	AMR         []string `json:"amr,omitempty"`
	ACR         string   `json:"acr,omitempty"`
	Expires     int64    `json:"exp"`
	DPoPJKT     string   `json:"dpop_jkt,omitempty"` // RFC 9449 §10
}

// parseAuthorizeRequest reads and checks the parameters of an authorization
// request. A *pageError means the client or redirect URI cannot be trusted:
// show it, never redirect. Any other error is an *Error for the redirect URI.
// maxShownRedirect is how much of an unregistered redirect_uri the error
// page and the log show.
const maxShownRedirect = 200

func (p *Provider) parseAuthorizeRequest(q url.Values) (*authRequest, *client, error) {
	q = params(q)
	for _, name := range []string{"client_id", "redirect_uri"} {
		if len(q[name]) > 1 {
			return nil, nil, &pageError{status: http.StatusBadRequest, msg: fmt.Sprintf("The parameter %s was given more than once.", name)}
		}
	}
	clientID := q.Get("client_id")
	if clientID == "" {
		return nil, nil, &pageError{status: http.StatusBadRequest, msg: "The request has no client_id."}
	}
	c, ok := p.clients[clientID]
	if !ok {
		return nil, nil, &pageError{status: http.StatusBadRequest, msg: "The client is not registered with this provider."}
	}
	redirect := q.Get("redirect_uri")
	if redirect == "" {
		// OpenID Connect Core §3.1.2.1: redirect_uri is required.
		return nil, nil, &pageError{status: http.StatusBadRequest, msg: "The request has no redirect_uri."}
	}
	if !c.redirects[redirect] && !c.loopbackRedirect(redirect) {
		// RFC 9700 §4.1.3: exact string match, no patterns, no prefixes.
		// The page names the URI (html/template escapes it) so that whoever
		// registers the client sees the mismatch; the log too, for its
		// operator.
		shown := strings.ToValidUTF8(truncate(redirect, maxShownRedirect), "?")
		p.log.Warn("authorize: redirect_uri is not registered", "client_id", clientID, "redirect_uri", shown)
		return nil, nil, &pageError{status: http.StatusBadRequest,
			msg: fmt.Sprintf("The redirect_uri %q is not registered for the client %q.", shown, clientID)}
	}
	req := &authRequest{ClientID: clientID, RedirectURI: redirect, MaxAge: -1}
	// From here on, errors go to the redirect URI with the state.
	if len(q["state"]) == 1 {
		req.State = q.Get("state")
	}
	// Errors go back by the response mode the client asked for (Form Post
	// Response Mode §2; Multiple Response Type Encoding Practices §2), so
	// it is read before anything else can fail. A mode given twice or
	// unknown cannot be used: that error goes by the default, query; so
	// does form_post to a redirect URI that no web page can post to.
	if m := q["response_mode"]; len(m) == 1 && (m[0] == modeFragment || m[0] == modeFormPost && webURI(redirect)) {
		req.Mode = m[0]
	}
	if name := repeated(q, "state", "response_type", "response_mode", "scope", "nonce", "code_challenge",
		"code_challenge_method", "prompt", "max_age", "login_hint", "id_token_hint", "request", "request_uri", "acr_values", paramDPoPJKT); name != "" {
		return req, c, oauthErr(ErrInvalidRequest, "parameter "+name+" is given more than once")
	}
	if q.Has("request") {
		return req, c, oauthErr(ErrRequestNotSupported, "request objects are not supported")
	}
	if q.Has("request_uri") {
		return req, c, oauthErr(ErrRequestURINotSupported, "request_uri is not supported")
	}
	switch rt := q.Get("response_type"); rt {
	case "code":
	case "":
		return req, c, oauthErr(ErrInvalidRequest, "response_type is required")
	default:
		return req, c, oauthErr(ErrUnsupportedResponseType, "only response_type=code is supported")
	}
	switch m := q.Get("response_mode"); m {
	case "", modeQuery, modeFragment:
	case modeFormPost:
		if req.Mode != modeFormPost {
			return req, c, oauthErr(ErrInvalidRequest, "response_mode=form_post needs an http or https redirect_uri")
		}
	default:
		return req, c, oauthErr(ErrInvalidRequest, "unsupported response_mode; use query, fragment or form_post")
	}
	scopes, err := p.checkScopes(c, q.Get("scope"))
	if err != nil {
		return req, c, err
	}
	req.Scopes = scopes
	req.Nonce = q.Get("nonce")
	req.LoginHint = q.Get("login_hint")
	req.ACRValues = splitACRValues(q.Get("acr_values"))

	req.Challenge = q.Get("code_challenge")
	req.Method = q.Get("code_challenge_method")
	switch {
	case req.Challenge == "" && req.Method != "":
		return req, c, oauthErr(ErrInvalidRequest, "code_challenge_method without code_challenge")
	case req.Challenge == "":
		if !c.InsecurePKCEOptional {
			return req, c, oauthErr(ErrInvalidRequest, "code_challenge is required (PKCE, RFC 7636)")
		}
	default:
		if req.Method == "" {
			req.Method = "plain" // RFC 7636 §4.3: the default method
		}
		switch req.Method {
		case "S256":
		case "plain":
			if !c.AllowPlainPKCE {
				return req, c, oauthErr(ErrInvalidRequest, "code_challenge_method must be S256")
			}
		default:
			return req, c, oauthErr(ErrInvalidRequest, "unsupported code_challenge_method")
		}
		if !validVerifier(req.Challenge) {
			return req, c, oauthErr(ErrInvalidRequest, "code_challenge must be 43 to 128 characters of [A-Za-z0-9-._~]")
		}
	}

	if jkt := q.Get(paramDPoPJKT); jkt != "" {
		if !validJKT(jkt) {
			return req, c, oauthErr(ErrInvalidRequest, "dpop_jkt must be a JWK SHA-256 thumbprint: 43 characters of base64url")
		}
		req.DPoPJKT = jkt
	}

	if pr := q.Get("prompt"); pr != "" {
		req.Prompt = strings.Fields(pr)
		for _, v := range req.Prompt {
			switch v {
			case "none", "login", "consent", "select_account":
			default:
				return req, c, oauthErr(ErrInvalidRequest, "unsupported prompt value")
			}
		}
		if slices.Contains(req.Prompt, "none") && len(req.Prompt) > 1 {
			// OpenID Connect Core §3.1.2.1.
			return req, c, oauthErr(ErrInvalidRequest, "prompt=none cannot be combined with other values")
		}
	}
	if ma := q.Get("max_age"); ma != "" {
		n, err := strconv.ParseUint(ma, 10, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return req, c, oauthErr(ErrInvalidRequest, "max_age must be a non-negative integer")
		}
		req.MaxAge = int(min(n, maxMaxAge)) // beyond a century, it is "no limit"
	}
	return req, c, nil
}

// webURI reports whether raw is an http or https URI, which a form can
// post to.
func webURI(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https")
}

// loopbackRedirect reports whether redirect is a registered loopback
// redirect URI with another port: native apps listen on whatever port is
// free (RFC 8252 §7.3), so only for http://127.0.0.1 and http://[::1]
// may the port vary; all else matches exactly.
func (c *client) loopbackRedirect(redirect string) bool {
	key, ok := loopbackKey(redirect)
	return ok && c.loopback[key]
}

// loopbackKey is a loopback IP redirect URI without its port.
func loopbackKey(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.User != nil {
		return "", false
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		return "", false
	}
	u.Host = u.Hostname()
	return u.String(), true
}

// checkScopes parses a scope parameter (RFC 6749 §3.3) and checks each
// value is known and allowed for the client.
func (p *Provider) checkScopes(c *client, raw string) ([]string, error) {
	scopes := splitScope(raw)
	if len(scopes) == 0 {
		return nil, oauthErr(ErrInvalidScope, "scope is required")
	}
	for _, s := range scopes {
		if !p.knownScope(s) {
			return nil, oauthErr(ErrInvalidScope, fmt.Sprintf("unknown scope %q", s))
		}
		if !c.scopes[s] {
			return nil, oauthErr(ErrInvalidScope, fmt.Sprintf("scope %q is not allowed for this client", s))
		}
	}
	return scopes, nil
}

func (p *Provider) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	q := p.readFrontChannel(w, r)
	if q == nil {
		return
	}
	pushed := isPushed(q)
	if pushed {
		pq, pe := p.takePushed(r, q)
		if pe != nil {
			if pe.status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", unavailableRetryAfter)
			}
			p.renderError(w, r, pe)
			return
		}
		q = pq
	}
	req, c, err := p.parseAuthorizeRequest(q)
	var pe *pageError
	if errors.As(err, &pe) {
		p.renderError(w, r, pe)
		return
	}
	if !pushed && p.requiresPAR(c) {
		// RFC 9126 §4: a client held to PAR gets invalid_request for
		// any other request.
		p.redirectWithError(w, r, req, oauthErr(ErrInvalidRequest, "this client must push its authorization requests to the pushed authorization request endpoint"))
		return
	}
	if err != nil {
		p.redirectWithError(w, r, req, err.(*Error))
		return
	}

	sess := p.readSession(r)
	p.syncBrowserState(w, r, sess)
	needLogin := sess == nil || slices.Contains(req.Prompt, "login") || slices.Contains(req.Prompt, "select_account")
	if hint := q.Get("id_token_hint"); hint != "" {
		h, ok := p.idTokenHint(hint)
		if !ok {
			p.redirectWithError(w, r, req, oauthErr(ErrInvalidRequest, "id_token_hint is not an ID token of this provider"))
			return
		}
		// OpenID Connect Core §3.1.2.1: the hint names who should be
		// logged in; someone else's session does not do.
		needLogin = needLogin || sess.Subject != h.sub
	}
	if sess != nil && req.MaxAge >= 0 && p.now().Sub(time.Unix(sess.AuthTime, 0)) > time.Duration(req.MaxAge)*time.Second {
		needLogin = true
	}
	if sess != nil && !p.satisfies(sess, req) {
		needLogin = true // step-up: the user, the client or acr_values ask for more (acr.go)
	}
	if needLogin {
		if slices.Contains(req.Prompt, "none") {
			p.redirectWithError(w, r, req, oauthErr(ErrLoginRequired, "the user is not logged in"))
			return
		}
		p.redirectToLogin(w, r, req)
		return
	}
	p.afterLogin(w, r, req, c, sess)
}

// readFrontChannel returns the parameters of a browser request that may
// come as a GET query or a POST form (OpenID Connect Core §3.1.2.1,
// RP-Initiated Logout §2). On failure it has answered and returns nil.
func (p *Provider) readFrontChannel(w http.ResponseWriter, r *http.Request) url.Values {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return r.URL.Query()
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "The request body could not be read."})
			return nil
		}
		return r.PostForm
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		p.renderError(w, r, &pageError{status: http.StatusMethodNotAllowed, msg: "Use GET or POST."})
		return nil
	}
}

// finishAuthorize issues a code for a logged-in user and sends the browser
// back to the client with code, state and iss (RFC 9207), by the request's
// response mode.
func (p *Provider) finishAuthorize(w http.ResponseWriter, r *http.Request, req *authRequest, c *client, sess *session) {
	code := p.randomString(32)
	grant := codeGrant{
		ClientID:    req.ClientID,
		RedirectURI: req.RedirectURI,
		Scopes:      req.Scopes,
		Nonce:       req.Nonce,
		Challenge:   req.Challenge,
		Method:      req.Method,
		Subject:     sess.Subject,
		AuthTime:    sess.AuthTime,
		SID:         sess.SID,
		AMR:         sess.AMR,
		ACR:         sess.ACR,
		Expires:     p.now().Add(p.codeTTL).Unix(),
		DPoPJKT:     req.DPoPJKT,
	}
	data, _ := json.Marshal(grant)
	if err := p.store.Put(r.Context(), codeKey(code), data, p.codeTTL); err != nil {
		p.log.ErrorContext(r.Context(), "storing authorization code", "client_id", c.ID, "error", err)
		p.redirectWithError(w, r, req, oauthErr(ErrTemporarilyUnavailable, "the code could not be stored; try again shortly"))
		return
	}
	p.recordSessionClient(r.Context(), c, sess)
	v := url.Values{"code": {code}, "iss": {p.issuer}}
	if req.State != "" {
		v.Set("state", req.State)
	}
	p.respond(w, r, req, v)
}

// redirectWithError sends e to the client's redirect URI, with state and
// iss, by the request's response mode (RFC 6749 §4.1.2.1).
func (p *Provider) redirectWithError(w http.ResponseWriter, r *http.Request, req *authRequest, e *Error) {
	if e.Cause != nil {
		p.log.WarnContext(r.Context(), "authorization request failed", "client_id", req.ClientID, "error", e.Cause)
	}
	v := url.Values{"error": {e.Code}, "iss": {p.issuer}}
	if e.Description != "" {
		v.Set("error_description", cleanDescription(e.Description))
	}
	if req.State != "" {
		v.Set("state", req.State)
	}
	p.respond(w, r, req, v)
}

// redirectTo sends the browser to base with v added to its query: a 302,
// or a 303 in answer to a POST (redirectStatus).
func redirectTo(w http.ResponseWriter, r *http.Request, base string, v url.Values) {
	loc := base
	if len(v) > 0 {
		sep := "?"
		if strings.Contains(base, "?") {
			sep = "&"
		}
		loc += sep + v.Encode()
	}
	w.Header().Set("Location", loc)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(redirectStatus(r))
}

// redirectStatus is the status of a redirect in answer to r. RFC 9700
// §4.12: after a POST, which may have carried the user's credentials, it
// is 303 See Other, so that the next request is a GET and nothing posted
// travels on (307 would re-post it); otherwise 302 Found.
func redirectStatus(r *http.Request) int {
	if r.Method == http.MethodPost {
		return http.StatusSeeOther
	}
	return http.StatusFound
}

// codeKey is the Store key of a code: its hash, so that the store never
// holds a code that could be redeemed.
func codeKey(code string) string { return "code/" + hashKey(code) }

func usedCodeKey(code string) string { return "usedcode/" + hashKey(code) }

func revokedKey(jti string) string { return "revoked/" + jti }

func hashKey(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base64RawURL(sum[:])
}

// validVerifier checks the syntax of a PKCE code verifier or plain
// challenge (RFC 7636 §4.1): 43 to 128 unreserved characters.
func validVerifier(s string) bool {
	if len(s) < 43 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// splitScope splits a scope parameter on spaces, dropping repeats.
func splitScope(s string) []string {
	var out []string
	for _, f := range strings.Split(s, " ") {
		if f != "" && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

const maxFormBytes = 64 << 10

// maxMaxAge caps max_age so that it converts to a time.Duration.
const maxMaxAge = 100 * 365 * 24 * 3600
