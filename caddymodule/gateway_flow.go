package caddymodule

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/oauth2"
)

// flowState is one login in progress, in its own short-lived encrypted
// cookie named after its state, so several tabs can log in at once.
type flowState struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Return   string `json:"r"`
	Created  int64  `json:"c"`
}

// Login flow limits.
const (
	flowLifetime = 10 * time.Minute
	maxFlows     = 5 // flow cookies kept at once; the oldest goes first
)

// serveSignIn starts a login that comes back to ?rd=.
func (g *Gateway) serveSignIn(w http.ResponseWriter, r *http.Request) error {
	g.metrics.count(g.startLogin(w, r, safeReturnURL(r.URL.Query().Get("rd"))))
	return nil
}

// startLogin sends the browser to the provider's authorization endpoint
// with state, nonce and a PKCE S256 challenge, remembering them in a flow
// cookie. It returns the outcome of the answer, for the metrics.
func (g *Gateway) startLogin(w http.ResponseWriter, r *http.Request, returnTo string) outcome {
	d, err := g.oidc.get()
	if err != nil {
		return g.providerDown(w, r, err)
	}
	f := flowState{
		State:    randomToken(),
		Nonce:    randomToken(),
		Verifier: oauth2.GenerateVerifier(),
		Return:   returnTo,
		Created:  time.Now().Unix(),
	}
	value, err := g.codec.encode(g.flowPrefix, f)
	if err != nil {
		g.logger.Error("encoding flow cookie", zap.Error(err))
		if errors.Is(err, errSessionKeyUnavailable) {
			w.Header().Set("Retry-After", "5")
			writePage(w, http.StatusServiceUnavailable, "Sign-in unavailable", "The sign-in could not be started. Try again shortly.", "", "")
			return outcomeUnavailable
		}
		writePage(w, http.StatusInternalServerError, "Sign-in failed", "The sign-in could not be started.", "", "")
		return outcomeUnavailable
	}
	g.dropOldFlows(w, r)
	fc := g.cookie(r, g.flowName(f.State), value, int(flowLifetime/time.Second))
	http.SetCookie(w, fc)

	opts := []oauth2.AuthCodeOption{g.redirectURI(r), oauth2.S256ChallengeOption(f.Verifier), oauth2.SetAuthURLParam("nonce", f.Nonce)}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, d.oauth.AuthCodeURL(f.State, opts...), http.StatusFound)
	return outcomeLoginStarted
}

// dropOldFlows expires the oldest flow cookies so that, with the new one,
// at most maxFlows remain: abandoned logins never grow the Cookie header
// without bound.
func (g *Gateway) dropOldFlows(w http.ResponseWriter, r *http.Request) {
	type flow struct {
		name    string
		created int64
	}
	var flows []flow
	for _, c := range r.Cookies() {
		if !strings.HasPrefix(c.Name, g.flowPrefix) {
			continue
		}
		var f flowState
		if err := g.codec.decode(g.flowPrefix, c.Value, &f); errors.Is(err, errForeignCookie) {
			continue // another gateway's login: its own, expiring in flowLifetime
		} else if err != nil {
			http.SetCookie(w, g.cookie(r, c.Name, "", -1)) // undecodable: drop
			continue
		}
		flows = append(flows, flow{c.Name, f.Created})
	}
	if len(flows) < maxFlows {
		return
	}
	sort.Slice(flows, func(i, j int) bool { return flows[i].created < flows[j].created })
	for _, f := range flows[:len(flows)-maxFlows+1] {
		http.SetCookie(w, g.cookie(r, f.name, "", -1))
	}
}

// flowName is the cookie of a login's state: a digest, so the cookie name
// does not carry the state itself.
func (g *Gateway) flowName(state string) string {
	return g.flowPrefix + hashID(state)[:16]
}

// serveCallback finishes a login: state against the flow cookie, the
// issuer (RFC 9207), the code exchange with the PKCE verifier, the ID
// token (signature, iss, aud, exp, nonce); then a new session replaces any
// earlier one and the browser returns to where it was going.
func (g *Gateway) serveCallback(w http.ResponseWriter, r *http.Request) error {
	o := outcomeLoginFailed
	defer func() { g.metrics.count(o) }()
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" {
		writePage(w, http.StatusBadRequest, "Sign-in failed", "The sign-in response has no state.", g.SignInPath, "Try again")
		return nil
	}
	name := g.flowName(state)
	ck, err := r.Cookie(name)
	var f flowState
	if err == nil {
		err = g.codec.decode(g.flowPrefix, ck.Value, &f)
	}
	if err != nil || subtle.ConstantTimeCompare([]byte(f.State), []byte(state)) != 1 || time.Since(time.Unix(f.Created, 0)) > flowLifetime {
		writePage(w, http.StatusBadRequest, "Sign-in failed", "This sign-in has expired or was started elsewhere. Please try again.", g.SignInPath, "Try again")
		return nil
	}
	http.SetCookie(w, g.cookie(r, name, "", -1)) // one use
	retry := g.SignInPath + "?rd=" + url.QueryEscape(f.Return)

	d, err := g.oidc.get()
	if err != nil {
		g.providerDown(w, r, err)
		return nil
	}
	if iss := q.Get("iss"); iss != "" && iss != g.Issuer || iss == "" && d.issParam {
		// RFC 9207 §2.4: a response, error responses included, from
		// another issuer is a mix-up attack.
		writePage(w, http.StatusBadRequest, "Sign-in failed", "The sign-in response came from another issuer.", retry, "Try again")
		return nil
	}
	if e := q.Get("error"); e != "" {
		msg := "The identity provider refused the sign-in (" + e + ")."
		if desc := q.Get("error_description"); desc != "" {
			msg += " " + desc
		}
		writePage(w, http.StatusForbidden, "Sign-in refused", msg, retry, "Try again")
		return nil
	}
	code := q.Get("code")
	if code == "" {
		writePage(w, http.StatusBadRequest, "Sign-in failed", "The sign-in response has no code.", retry, "Try again")
		return nil
	}
	tok, err := d.oauth.Exchange(withProviderOp(g.oidc.ctx, opExchange), code, g.redirectURI(r), oauth2.VerifierOption(f.Verifier))
	if err != nil {
		g.logger.Warn("exchanging authorization code", zap.String("issuer", g.Issuer), zap.Error(redactOAuthError(err)))
		status := http.StatusBadGateway // the provider failed
		if isOAuthRefusal(err) {
			status = http.StatusBadRequest // the provider refused the code the browser brought
		}
		writePage(w, status, "Sign-in failed", "The identity provider did not accept the sign-in. Please try again.", retry, "Try again")
		return nil
	}
	s, err := g.sessionFromToken(d, tok, nil, f.Nonce)
	if err != nil {
		g.logger.Warn("checking ID token", zap.String("issuer", g.Issuer), zap.Error(err))
		writePage(w, http.StatusBadGateway, "Sign-in failed", "The identity provider's answer could not be verified.", retry, "Try again")
		return nil
	}
	if err := g.writeSession(w, r, s); err != nil {
		g.logger.Error("writing session", zap.String("sub", s.Subject), zap.Error(err))
		writePage(w, http.StatusBadGateway, "Sign-in failed", "Your identity from the provider is too large to keep in a session cookie. Ask the administrator to release fewer claims.", "", "")
		return nil
	}
	if ce := g.logger.Check(zap.InfoLevel, "login"); ce != nil {
		ce.Write(zap.String("sub", s.Subject), zap.String("email", claimString(s.userClaims()["email"])))
	}
	g.auditSession(r, zap.InfoLevel, auditSignIn, s)
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, safeReturnURL(f.Return), http.StatusFound)
	o = outcomeLoginCompleted
	return nil
}

// sessionFromToken builds a session from a token response. prev is the
// session being refreshed (nil at login), whose claims stay when the
// response has no new ID token; nonce is checked at login only.
func (g *Gateway) sessionFromToken(d *discovered, tok *oauth2.Token, prev *session, nonce string) (*session, error) {
	s := &session{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Created: time.Now().Unix()}
	if !tok.Expiry.IsZero() {
		s.Expiry = tok.Expiry.Unix()
	} else {
		s.Expiry = jwtExpiry(tok.AccessToken) // no expires_in: the token's own exp, if it has one
	}
	if prev != nil {
		s.ID, s.Subject, s.Claims, s.IDToken, s.Created, s.claims, s.SID = prev.ID, prev.Subject, prev.Claims, prev.IDToken, prev.Created, prev.claims, prev.SID
	} else {
		s.ID = randomToken()
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		if prev == nil {
			return nil, fmt.Errorf("token response has no id_token")
		}
		return s, nil
	}
	idt, err := d.verifier(g.ClientID).Verify(g.oidc.ctx, rawID)
	if err == nil {
		err = d.checkTimes(idt, time.Now())
	}
	if err != nil {
		return nil, fmt.Errorf("verifying id token: %w", err)
	}
	if prev == nil && subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return nil, fmt.Errorf("id token nonce does not match the login")
	}
	if !httpguts.ValidHeaderFieldValue(idt.Subject) {
		return nil, errBadSubject
	}
	if prev != nil && idt.Subject != prev.Subject {
		// OpenID Connect Core §12.2: a refreshed ID token is about the same user.
		return nil, fmt.Errorf("refreshed id token is for another subject")
	}
	if err := idt.VerifyAccessToken(tok.AccessToken); err != nil && idt.AccessTokenHash != "" {
		return nil, fmt.Errorf("id token at_hash: %w", err)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("reading id token claims: %w", err)
	}
	if sid, ok := claims["sid"].(string); ok && sid != "" {
		// OpenID Connect Back-Channel Logout 1.0 §2.1: the provider's
		// session, which a logout token may name.
		s.SID = sid
	}
	for _, c := range protocolClaims {
		delete(claims, c)
	}
	delete(claims, "sub")
	s.Subject, s.IDToken, s.Claims, s.claims = idt.Subject, rawID, nil, claims
	return s, nil
}

// serveSignOut ends the session. A GET (a link) shows a page whose button
// posts back a token bound to the session; only that POST signs out, so a
// page of another site cannot sign the user out (logout CSRF). It clears
// the cookies, revokes the refresh token and signs out at the provider
// when it offers an end_session_endpoint.
func (g *Gateway) serveSignOut(w http.ResponseWriter, r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		writePage(w, http.StatusMethodNotAllowed, "Sign out", "Sign out with the button of the sign-out page.", g.SignOutPath, "Sign out")
		return nil
	}
	raw := readSessionCookie(r, g.cookieName)
	var s *session
	if raw != "" {
		s, _ = g.openSession(raw)
	}
	if s == nil {
		// Nothing of ours to end, and nothing cleared: a cross-site POST
		// arrives without the SameSite=Lax cookie the browser still has,
		// and another gateway's session is not this sign-out's to end.
		// The provider may still have a session: it gets no id_token_hint,
		// so it asks the user itself (RP-Initiated Logout 1.0 §2), and a
		// third-party page could send the browser there directly anyway.
		g.endAtProvider(w, r, "", false)
		return nil
	}
	if r.Method != http.MethodPost {
		g.writeSignOutPage(w, http.StatusOK, s, "")
		return nil
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if !g.validSignOutToken(s, r.PostFormValue("token")) {
		g.writeSignOutPage(w, http.StatusForbidden, s, "This sign-out request did not come from this site's sign-out page. ")
		return nil
	}
	// Every copy of the cookie ends, on every node: the revocation is in
	// the store before the answer, unless the store fails, when this node
	// still refuses the session (and the log says the others may not).
	if err := g.revokeSessionID(context.WithoutCancel(r.Context()), s); err != nil {
		g.logger.Error("revoking the session at sign-out", zap.String("sub", s.Subject), zap.Error(err))
	}
	g.cache.remove(raw)
	g.clearSessionCookies(w, r)
	g.auditSession(r, zap.InfoLevel, auditSignOut, s)
	// The browser's cached pages of the site too, which it would show
	// again from its disk cache (W3C Clear Site Data §3.1). Not its
	// cookies yet: "cookies" clears those of the whole registrable
	// domain, a provider's single sign-on cookie among them, which the
	// provider needs to end its session (and tell its other clients) on
	// the way out; the signed-out page clears them once it has.
	w.Header().Set("Clear-Site-Data", `"cache"`)
	if d, err := g.oidc.get(); err == nil && s.RefreshToken != "" && d.revocation != "" {
		// A copy of the cookie must not go on refreshing: revoke its
		// refresh token (RFC 7009), which with the bundled provider also
		// ends the access tokens of that login.
		if err := g.revoke(d, s.RefreshToken); err != nil {
			g.logger.Warn("revoking the refresh token at sign-out", zap.Error(err))
		}
	}
	g.endAtProvider(w, r, s.IDToken, true)
	return nil
}

// endAtProvider sends the browser to the provider's end_session_endpoint,
// or straight to post_logout_redirect when there is none. After a
// sign-out here (signedOut), the way back carries a state that shows the
// signed-out page, should post_logout_redirect be a page the gateway
// protects.
func (g *Gateway) endAtProvider(w http.ResponseWriter, r *http.Request, idToken string, signedOut bool) {
	after := g.PostLogoutRedirect
	if strings.HasPrefix(after, "/") {
		after = requestOrigin(r) + after
	}
	state := ""
	if signedOut {
		state = g.signedOutState()
	}
	target := after
	if state != "" {
		target = addQuery(after, "state", state)
	}
	if d, err := g.oidc.get(); err == nil && d.endSession != "" {
		v := url.Values{"post_logout_redirect_uri": {after}, "client_id": {g.ClientID}}
		if idToken != "" {
			v.Set("id_token_hint", idToken)
		}
		if state != "" {
			// RP-Initiated Logout 1.0 §2: the provider passes state back
			// to post_logout_redirect_uri.
			v.Set("state", state)
		}
		sep := "?"
		if strings.Contains(d.endSession, "?") {
			sep = "&"
		}
		target = d.endSession + sep + v.Encode()
	}
	status := http.StatusFound
	if r.Method == http.MethodPost {
		status = http.StatusSeeOther // RFC 9110 §15.4.4: the next request is a GET
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, status)
}

// redirectURI is the callback URL as the browser reached this site,
// given as an option to the discovery's one [oauth2.Config].
func (g *Gateway) redirectURI(r *http.Request) oauth2.AuthCodeOption {
	return oauth2.SetAuthURLParam("redirect_uri", requestOrigin(r)+g.RedirectPath)
}

func requestOrigin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// safeReturnURL keeps a return URL only if it is a path on this site:
// anything that could leave the origin ("//host", "/\host", "https:",
// control characters) becomes "/" (open redirect defence).
func safeReturnURL(raw string) string {
	if raw == "" || raw[0] != '/' || len(raw) > 2048 {
		return "/"
	}
	if len(raw) > 1 && (raw[1] == '/' || raw[1] == '\\') {
		return "/"
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return "/"
		}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return "/"
	}
	return raw
}

// randomToken is 32 random bytes, base64url.
func randomToken() string {
	b := make([]byte, 32)
	if _, err := io.ReadFull(randReader, b); err != nil {
		panic("oidc_gateway: reading randomness: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// jwtExpiry reads the exp claim of a JWT without verifying it, only to time
// a refresh; 0 when the token is not a JWT or has no exp.
func jwtExpiry(token string) int64 {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return 0
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return 0
	}
	var c struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return 0
	}
	return c.Exp
}

// redactOAuthError keeps the OAuth error code of a failed token request but
// drops the response body, which may echo what was sent.
func redactOAuthError(err error) error {
	if re, ok := err.(*oauth2.RetrieveError); ok {
		return fmt.Errorf("token endpoint answered %d: %s", re.Response.StatusCode, re.ErrorCode)
	}
	return err
}
