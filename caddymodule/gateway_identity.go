package caddymodule

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/caddyserver/caddy/v2"

	"github.com/authgate/authgate/idp/dpop"
)

// cookieIdentity returns the identity of the request's session cookie.
// A nil identity means the request was answered (a login was started, or
// 401), with the outcome o. With an identity, o says whether its tokens
// were refreshed (outcomeRefreshed, outcomeRefreshFailed) or not
// (outcomeNone). A tampered, expired or undecodable cookie is the same as
// none, and so is another gateway's: one of another issuer or client_id.
func (g *Gateway) cookieIdentity(w http.ResponseWriter, r *http.Request) (id *identity, o outcome) {
	raw := readSessionCookie(r, g.cookieName)
	if raw == "" {
		return nil, g.unauthenticated(w, r, "")
	}
	g.revocations.run()
	now := time.Now()
	if id := g.cache.get(raw, now); id != nil {
		g.metrics.sessionHit.Inc()
		if g.revocations.list.revoked(id, now.Unix()) {
			return nil, g.revokedSession(w, r, id.subject)
		}
		return id, outcomeNone
	}
	g.metrics.sessionMiss.Inc()
	s, err := g.openSession(raw)
	if errors.Is(err, errSessionKeyUnavailable) {
		// The cookie may well be good: keep it, and say to come back.
		g.logger.Error("session key unavailable", zap.Error(err))
		w.Header().Set("Retry-After", "5")
		writePage(w, http.StatusServiceUnavailable, "Unavailable", "The session could not be checked. Try again shortly.", "", "")
		return nil, outcomeUnavailable
	}
	if err != nil {
		if !errors.Is(err, errForeignCookie) {
			g.clearSessionCookies(w, r)
		}
		return nil, g.unauthenticated(w, r, "")
	}
	if time.Since(time.Unix(s.Created, 0)) > g.lifetime {
		g.clearSessionCookies(w, r)
		return nil, g.unauthenticated(w, r, "")
	}
	// Before a refresh: a revoked copy must not get new tokens either.
	if l := g.revocations.list; l.n.Load() != 0 && l.revokedSession(s.ID, g.sidKey(s), scopedKey(g.Issuer, s.Subject), s.Created, now.Unix()) {
		return nil, g.revokedSession(w, r, s.Subject)
	}
	if s.Expiry != 0 && now.Add(g.refreshBefore).After(time.Unix(s.Expiry, 0)) {
		return g.refreshIdentity(w, r, raw, s)
	}
	id = g.sessionIdentity(raw, s)
	g.cache.put(id)
	return id, outcomeNone
}

// openSession decodes a session cookie's value and checks that it is this
// gateway's: sealed for its issuer and client_id. errForeignCookie means
// it is another gateway's, which the caller leaves alone: a gateway only
// ever clears its own cookies, so that two gateways sharing a cookie name
// on one host do not also log each other out.
func (g *Gateway) openSession(raw string) (*session, error) {
	var s session
	err := g.codec.decode(g.cookieName, raw, &s)
	switch {
	case err == nil && s.Binding != g.binding:
		err = errForeignCookie
	case err == nil && s.Subject == "":
		err = errors.New("the session has no subject")
	}
	switch {
	case errors.Is(err, errForeignCookie):
		g.foreignCookie.Do(func() {
			g.logger.Warn("a session cookie of another gateway (another issuer or client_id) came to this one: if such gateways serve one host, give each its own cookie name, or each login replaces the other's",
				zap.String("cookie", g.cookieName), zap.String("issuer", g.Issuer), zap.String("client_id", g.ClientID))
		})
		if ce := g.logger.Check(zap.DebugLevel, "session cookie of another gateway ignored"); ce != nil {
			ce.Write(zap.String("cookie", g.cookieName))
		}
		return nil, err
	case err != nil:
		if ce := g.logger.Check(zap.DebugLevel, "session cookie refused"); ce != nil {
			ce.Write(zap.Error(err))
		}
		return nil, err
	}
	return &s, nil
}

// sessionIdentity computes and caches the identity of a decoded session.
// It is good until the access token enters its refresh window.
func (g *Gateway) sessionIdentity(raw string, s *session) *identity {
	id := g.newIdentity(s.Subject, s.userClaims())
	id.raw, id.token = raw, s.AccessToken
	id.sessionID, id.sidKey, id.subKey, id.created = s.ID, g.sidKey(s), scopedKey(g.Issuer, s.Subject), s.Created
	id.ends = time.Unix(s.Created, 0).Add(g.lifetime)
	id.expires = id.ends
	if s.Expiry != 0 {
		if refreshAt := time.Unix(s.Expiry, 0).Add(-g.refreshBefore); refreshAt.Before(id.expires) {
			id.expires = refreshAt
		}
	}
	return id
}

// sidKey is the revocation key of the provider session of s, if it has
// one.
func (g *Gateway) sidKey(s *session) string {
	if s.SID == "" {
		return ""
	}
	return scopedKey(g.Issuer, s.SID)
}

// revokedSession answers a request whose session was revoked: its cookies
// go, and it is answered as one without a session.
func (g *Gateway) revokedSession(w http.ResponseWriter, r *http.Request, sub string) outcome {
	if ce := g.logger.Check(zap.InfoLevel, "revoked session refused"); ce != nil {
		ce.Write(zap.String("sub", sub))
	}
	g.clearSessionCookies(w, r)
	return g.unauthenticated(w, r, "")
}

// refreshIdentity refreshes the access token of a session near expiry.
// Concurrent requests of the session share one refresh, and requests that
// still carry the old cookie shortly after get the same result. Its
// outcome is that of [Gateway.cookieIdentity].
func (g *Gateway) refreshIdentity(w http.ResponseWriter, r *http.Request, raw string, s *session) (*identity, outcome) {
	expired := !time.Now().Before(time.Unix(s.Expiry, 0))
	if s.RefreshToken == "" {
		if !expired {
			return g.sessionIdentity(raw, s), outcomeNone // good until it expires
		}
		g.clearSessionCookies(w, r)
		return nil, g.unauthenticated(w, r, "")
	}
	res := g.refresher.do(hashID(s.RefreshToken), func() refreshResult {
		return g.refresh(s)
	})
	switch {
	case res.session != nil:
		value, ns, err := res.encodedFor(g)
		if err != nil {
			g.logger.Error("encoding refreshed session", zap.String("sub", s.Subject), zap.Error(err))
			g.clearSessionCookies(w, r)
			g.unauthenticated(w, r, "")
			return nil, outcomeRefreshFailed
		}
		for _, c := range g.sessionCookies(r, value) {
			http.SetCookie(w, c)
		}
		// The upstream's answer carries the new cookie: no cache may keep
		// it for another visitor. reverse_proxy adds the upstream's own
		// Cache-Control, and no-store among them wins (RFC 9111 §5.2.2.5).
		w.Header().Add("Cache-Control", "no-store")
		if id := g.cache.get(value, time.Now()); id != nil {
			return id, outcomeRefreshed
		}
		id := g.sessionIdentity(value, ns)
		g.cache.put(id)
		return id, outcomeRefreshed
	case res.refused:
		g.clearSessionCookies(w, r)
		g.unauthenticated(w, r, "")
		return nil, outcomeRefreshFailed
	case !expired:
		// The provider is unreachable but the token still works: go on,
		// and try again on a later request.
		return g.sessionIdentity(raw, s), outcomeRefreshFailed
	default:
		return nil, g.providerDown(w, r, res.err)
	}
}

// refresh asks the provider for new tokens.
func (g *Gateway) refresh(s *session) refreshResult {
	d, err := g.oidc.get()
	if err != nil {
		return refreshResult{err: err}
	}
	tok, err := g.refreshTokens(d, s.RefreshToken)
	if err != nil {
		refused := isOAuthRefusal(err)
		if ce := g.logger.Check(zap.WarnLevel, "token refresh failed"); ce != nil {
			ce.Write(zap.String("sub", s.Subject), zap.Bool("refused", refused), zap.Error(redactOAuthError(err)))
		}
		return refreshResult{err: err, refused: refused}
	}
	ns, err := g.sessionFromToken(d, tok, s, "")
	if err != nil {
		g.logger.Warn("checking refreshed tokens", zap.String("sub", s.Subject), zap.Error(err))
		return refreshResult{err: err, refused: true}
	}
	// Callers of every gateway sharing the refresh read ns at once: its
	// claims are set now, not on first use.
	ns.Claims, ns.claims = ns.userClaims(), nil
	if ce := g.logger.Check(zap.DebugLevel, "token refreshed"); ce != nil {
		ce.Write(zap.String("sub", s.Subject))
	}
	return refreshResult{session: ns, encoded: new(sync.Map)}
}

// bearerIdentity returns the identity of an Authorization: Bearer JWT from
// the issuer. With no bearer token it returns nil and outcomeNone; a bad
// token is answered with 401, and its outcome returned.
func (g *Gateway) bearerIdentity(w http.ResponseWriter, r *http.Request) (*identity, outcome) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, outcomeNone
	}
	scheme, token, _ := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	isDPoP := strings.EqualFold(scheme, dpop.Scheme)
	if !isDPoP && !strings.EqualFold(scheme, "Bearer") || token == "" {
		if g.acceptCookie {
			return nil, outcomeNone // not ours: maybe the upstream's own scheme
		}
		// RFC 6750 §3.1: no bearer token at all gets the bare challenge.
		return nil, g.unauthenticated(w, r, "")
	}
	now := time.Now()
	if id := g.bearerCache.get(token, now); id != nil {
		g.metrics.bearerHit.Inc()
		if id.jkt == "" && !isDPoP {
			return id, outcomeNone
		}
		return g.checkDPoP(w, r, id, token, isDPoP, now)
	}
	g.metrics.bearerMiss.Inc()
	d, err := g.oidc.get()
	if err != nil {
		return nil, g.providerDown(w, r, err)
	}
	if g.userinfoCheck {
		if isDPoP {
			// Userinfo says nothing of a token's binding.
			return nil, g.dpopRefused(w, r, "invalid_token", "DPoP tokens are not accepted here", nil)
		}
		return g.userinfoIdentity(w, r, d, token)
	}
	idt, err := d.verifier("").Verify(g.oidc.ctx, token)
	if err == nil {
		err = d.checkTimes(idt, now)
	}
	if err == nil {
		err = g.checkBearerJWT(idt, token)
	}
	if err == nil && !httpguts.ValidHeaderFieldValue(idt.Subject) {
		err = errBadSubject
	}
	if err != nil {
		if ce := g.logger.Check(zap.InfoLevel, "bearer token refused"); ce != nil {
			ce.Write(zap.Error(err))
		}
		return nil, g.badToken(w, r, isDPoP)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, g.badToken(w, r, isDPoP)
	}
	jkt, ok := cnfJKT(claims)
	if !ok {
		if ce := g.logger.Check(zap.InfoLevel, "bearer token refused"); ce != nil {
			ce.Write(zap.String("reason", "bound by a cnf the gateway cannot check"), zap.String("sub", idt.Subject))
		}
		return nil, g.badToken(w, r, isDPoP)
	}
	id := g.bearerIdentityOf(token, idt.Subject, claims, idt.Expiry.Add(d.clockSkew))
	id.jkt = jkt
	if g.Introspect {
		active, err := g.introspect(d, token)
		if err != nil {
			return nil, g.providerDown(w, r, err)
		}
		if !active {
			if ce := g.logger.Check(zap.InfoLevel, "bearer token refused"); ce != nil {
				ce.Write(zap.String("reason", "not active at introspection"), zap.String("sub", idt.Subject))
			}
			return nil, g.badToken(w, r, isDPoP)
		}
		// The answer is good for a short while only: then ask again.
		if until := now.Add(g.introspectCache); until.Before(id.expires) {
			id.expires = until
		}
	}
	g.bearerCache.put(id)
	return g.checkDPoP(w, r, id, token, isDPoP, now)
}

// bearerIdentityOf is the identity of a verified bearer token.
func (g *Gateway) bearerIdentityOf(token, subject string, claims map[string]any, expires time.Time) *identity {
	id := g.newIdentity(subject, claims)
	id.raw, id.token, id.expires, id.ends, id.bearer = token, token, expires, expires, true
	return id
}

var (
	errNotAccessToken = errors.New("token is an ID token, not an access token")
	// errBadSubject: the sub is the identity sent upstream, which a
	// control character cannot travel in; without it the user would pass
	// as no one in particular.
	errBadSubject    = errors.New("token sub holds a control character")
	errWrongAudience = errors.New("token audience is not one of the configured audiences")
)

// isAccessToken tells an access token from an ID token (RFC 8725 §3.11):
// typ at+jwt (RFC 9068 §2.1) is an access token; any other typ is one
// unless it has claims only ID tokens carry. Providers that do not follow
// RFC 9068 mark access tokens typ JWT too, so typ alone cannot decide.
func isAccessToken(token string) bool {
	head, rest, _ := strings.Cut(token, ".")
	payload, _, _ := strings.Cut(rest, ".")
	var h struct {
		Typ string `json:"typ"`
	}
	if b, err := base64.RawURLEncoding.DecodeString(head); err == nil && json.Unmarshal(b, &h) == nil {
		if typ := strings.ToLower(h.Typ); typ == "at+jwt" || typ == "application/at+jwt" {
			return true
		}
	}
	var c map[string]json.RawMessage
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil || json.Unmarshal(b, &c) != nil {
		return false
	}
	for _, idOnly := range []string{"nonce", "at_hash", "c_hash"} {
		if _, ok := c[idOnly]; ok {
			return false
		}
	}
	return true
}

// isNavigation tells a browser navigation, which may be redirected to log
// in, from a script or API call, which gets 401: Fetch Metadata first
// (Sec-Fetch-Mode), then X-Requested-With, then whether text/html ranks
// first in Accept.
func isNavigation(r *http.Request) bool {
	if mode := r.Header.Get("Sec-Fetch-Mode"); mode != "" {
		return mode == "navigate"
	}
	if r.Header.Get("X-Requested-With") != "" {
		return false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	return htmlPreferred(r.Header.Get("Accept"))
}

// htmlPreferred reports whether text/html has the highest q-value in an
// Accept header (RFC 9110 §12.5.1); ties go to html.
func htmlPreferred(accept string) bool {
	if accept == "" {
		return false
	}
	html, best := -1.0, -1.0
	for part := range strings.SplitSeq(accept, ",") {
		media, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		for p := range strings.SplitSeq(params, ";") {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(k, "q") {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					q = f
				}
			}
		}
		media = strings.ToLower(strings.TrimSpace(media))
		if media == "text/html" || media == "application/xhtml+xml" {
			html = max(html, q)
		} else {
			best = max(best, q)
		}
	}
	return html > 0 && html >= best
}

// allowed applies the allow rules: any match lets the user through.
func (g *Gateway) allowed(id *identity) bool {
	if g.allowAll {
		return true
	}
	for _, rule := range g.Allow {
		switch {
		case rule.Email != "":
			if !g.AllowUnverifiedEmail && !emailVerified(id.claims["email_verified"]) {
				continue // an unverified address proves nothing
			}
			if emailMatches(id.email, rule.Email) {
				return true
			}
		case rule.Group != "":
			if claimHas(id.claims["groups"], rule.Group) {
				return true
			}
		case rule.Claim != "":
			v := id.claims[rule.Claim]
			if rule.Claim == "sub" {
				v = id.subject
			}
			if claimHas(v, rule.Value) {
				return true
			}
		case rule.Scope != nil:
			if id.bearer && hasScopes(id.claims, rule.Scope) {
				return true
			}
		}
	}
	return false
}

// hasScopes reports whether a token's claims grant every scope of want,
// in scope (a space-separated string, RFC 9068 §2.2.3) or scp (a list,
// or such a string). It allocates nothing: it runs on the cached path.
func hasScopes(claims map[string]any, want []string) bool {
	scope, scp := claims["scope"], claims["scp"]
	for _, w := range want {
		if !scopeIn(scope, w) && !scopeIn(scp, w) {
			return false
		}
	}
	return true
}

// scopeIn reports whether the scope claim v, a space-separated string or
// a list of strings, holds want.
func scopeIn(v any, want string) bool {
	switch v := v.(type) {
	case string:
		for v != "" {
			var sc string
			sc, v, _ = strings.Cut(v, " ")
			if sc == want {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if sc, ok := e.(string); ok && sc == want {
				return true
			}
		}
	}
	return false
}

// emailMatches reports whether an address matches an email rule, an
// address or *@domain. The address must have exactly one "@": with more
// ("a@evil.com@corp.example", or a quoted local part) which domain it is
// at depends on who parses it, so it is at none. Case is compared in ASCII
// only: Unicode folding would take the Kelvin sign for "k", and so an
// address at another, internationalised, domain for one at the rule's.
func emailMatches(email, rule string) bool {
	local, domain, ok := strings.Cut(email, "@")
	if !ok || local == "" || strings.Contains(domain, "@") {
		return false
	}
	if want, ok := strings.CutPrefix(rule, "*@"); ok {
		return asciiEqualFold(domain, want)
	}
	return asciiEqualFold(email, rule)
}

// asciiEqualFold is strings.EqualFold for ASCII letters only.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// emailVerified reads an email_verified claim, failing closed: only a
// boolean true (OpenID Connect Core §5.1) or the string "true" in any case,
// as AWS Cognito sends it, is verified; false, a missing claim or anything
// else is not.
func emailVerified(v any) bool {
	switch v := v.(type) {
	case bool:
		return v
	case string:
		return strings.EqualFold(v, "true")
	default:
		return false
	}
}

// claimHas: the claim equals want, or is a list containing it.
func claimHas(v any, want string) bool {
	switch v := v.(type) {
	case []any:
		return slices.ContainsFunc(v, func(e any) bool { return claimString(e) == want })
	case nil:
		return false
	default:
		return claimString(v) == want
	}
}

// forward prepares the request for the next handler: client-sent identity
// headers and the gateway's cookies go, our headers and placeholders come,
// and the identity assertion if there is one.
func (g *Gateway) forward(r *http.Request, id *identity, assertion string) {
	g.strip.strip(r.Header)
	// One array for every value, copied per request: handlers after this
	// one may edit a header's values in place (header_up's replacements
	// do), which must not reach the cached identity.
	vals := make([]string, len(id.headers), len(id.headers)+1)
	for i, h := range id.headers {
		vals[i] = h.value
		r.Header[h.name] = vals[i : i+1 : i+1]
	}
	if assertion != "" {
		vals = append(vals, assertion)
		r.Header[g.assertion.header] = vals[len(vals)-1:]
	}
	if g.PassAccessToken && id.token != "" {
		scheme := "Bearer "
		if id.jkt != "" {
			scheme = dpop.Scheme + " " // with the client's DPoP header, as it came
		}
		r.Header.Set("Authorization", scheme+id.token)
	}
	g.stripOwnCookies(r)
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return
	}
	repl.Set("http.auth.user.id", id.subjectValue)
	repl.Set("http.auth.user.email", id.emailValue)
	repl.Map(id.placeholders)
}

// stripOwnCookies removes the session, chunk and flow cookies from the
// Cookie header, so the upstream never sees them. A line with none of
// them stays as it is; one with some is rewritten, in the header's own
// slice, with one allocation for its new text.
func (g *Gateway) stripOwnCookies(r *http.Request) {
	vals := r.Header["Cookie"]
	n, changed := 0, false
	for _, line := range vals {
		if strings.Contains(line, g.cookieName) {
			var dropped, empty bool
			if line, dropped, empty = g.withoutOwnCookies(line); dropped {
				changed = true
				if empty {
					continue
				}
			}
		}
		vals[n] = line
		n++
	}
	switch {
	case !changed:
	case n == 0:
		r.Header.Del("Cookie")
	default:
		clear(vals[n:])
		r.Header["Cookie"] = vals[:n]
	}
}

// withoutOwnCookies returns a Cookie line without the gateway's cookies,
// its other parts joined by "; ", whether it had any of ours, and whether
// nothing is left. The first pass only measures, so that the new line is
// one allocation of its own size, not of the line's (mostly our cookie).
func (g *Gateway) withoutOwnCookies(line string) (kept string, dropped, empty bool) {
	size, n := 0, 0
	for part := range strings.SplitSeq(line, ";") {
		if part = strings.TrimSpace(part); g.isOwnCookie(part) {
			dropped = true
			continue
		}
		size += len(part)
		n++
	}
	if !dropped {
		return line, false, false
	}
	if n == 0 {
		return "", true, true
	}
	var b strings.Builder
	b.Grow(size + 2*(n-1))
	first := true
	for part := range strings.SplitSeq(line, ";") {
		if part = strings.TrimSpace(part); g.isOwnCookie(part) {
			continue
		}
		if !first {
			b.WriteString("; ")
		}
		b.WriteString(part)
		first = false
	}
	return b.String(), true, false
}

// isOwnCookie tells a cookie-pair of the session, its chunks or a login
// flow from the others.
func (g *Gateway) isOwnCookie(pair string) bool {
	name, _, _ := strings.Cut(pair, "=")
	rest, ok := strings.CutPrefix(name, g.cookieName)
	return ok && (rest == "" || rest[0] == '_')
}

// identityHeaderNames lists every header the gateway controls.
func (g *Gateway) identityHeaderNames() []string {
	// The assertion's header goes whether the assertion is on or not: an
	// upstream that checks it must never see one a client made up.
	names := []string{"X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Preferred-Username", "X-Auth-Request-Groups", defaultAssertionHeader}
	if g.assertion != nil && g.assertion.header != defaultAssertionHeader {
		names = append(names, g.assertion.header)
	}
	for h := range g.Headers {
		names = append(names, h)
	}
	if g.PassAccessToken {
		names = append(names, "Authorization")
	}
	return names
}

// headerStripper deletes headers whose names a backend might normalise to
// one of ours: compared case-insensitively with '_' and '.' as '-'.
type headerStripper struct {
	names []string // normalised
}

func newHeaderStripper(names []string) headerStripper {
	var s headerStripper
	for _, n := range names {
		s.names = append(s.names, normaliseHeader(n))
	}
	return s
}

func normaliseHeader(name string) string {
	b := []byte(strings.ToLower(name))
	for i, c := range b {
		if c == '_' || c == '.' {
			b[i] = '-'
		}
	}
	return string(b)
}

func (s headerStripper) strip(h http.Header) {
	for key := range h {
		for _, n := range s.names {
			if sameHeader(key, n) {
				delete(h, key)
				break
			}
		}
	}
}

// sameHeader compares a header name with a normalised one without
// allocating.
func sameHeader(key, norm string) bool {
	if len(key) != len(norm) {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case c == '_' || c == '.':
			c = '-'
		}
		if c != norm[i] {
			return false
		}
	}
	return true
}

func hashID(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
