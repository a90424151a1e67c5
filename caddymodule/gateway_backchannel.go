package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

// The back-channel logout endpoint (OpenID Connect Back-Channel Logout
// 1.0): the provider POSTs a logout token when one of its sessions ends,
// and the gateway ends every session of that provider session (sid), or
// of that user (sub), on every node, through the revocation list. It
// answers a provider, not a browser: no session cookie, no CSRF token
// (the signed token is the request's authentication), no allow rules.

// backchannelLogoutEvent is the member of a logout token's events claim
// (§2.4).
const backchannelLogoutEvent = "http://schemas.openid.net/event/backchannel-logout"

const (
	defaultBackchannelLogoutPath = "/oauth2/backchannel_logout"

	// backchannelMaxBody bounds the form: a logout token is a JWS of a
	// few hundred bytes.
	backchannelMaxBody = 64 << 10

	// logoutTokenMaxAge is how old a logout token's iat may be. §2.4
	// recommends a short lifetime ("two minutes" as an example); an older
	// token is refused whatever its exp says, which also bounds how long
	// its jti must be remembered.
	logoutTokenMaxAge = 5 * time.Minute

	// logoutTokenLeeway is the clock difference allowed between provider
	// and gateway, for iat in the future and exp in the past.
	logoutTokenLeeway = time.Minute

	// maxLogoutJTIs bounds the replay cache; a provider sends one token
	// per session end and client, so this is far more than minutes of
	// logouts.
	maxLogoutJTIs = 100_000
)

// errLogoutUnavailable marks a logout that failed on the gateway's side
// (the provider's discovery or keys could not be fetched, the revocation
// store could not be written): answered 503 so the provider retries,
// rather than 400, which tells it that the token will never be accepted
// (§2.8).
var errLogoutUnavailable = errors.New("the back-channel logout could not be processed now")

// logoutToken is what a valid logout token asks for.
type logoutToken struct {
	sid, sub, jti string
	iat           time.Time
}

// serveBackchannelLogout validates a logout token (§2.6), ends the
// sessions it names (§2.7) and answers as §2.8 says: 200 on success, 400
// with an OAuth error for any invalid request, no-store either way.
func (g *Gateway) serveBackchannelLogout(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodPost {
		// §2.5: the token comes as a POST form.
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "invalid_request", "error_description": "the back-channel logout endpoint takes POST"})
		return nil
	}
	refuse := func(desc string) error {
		g.logger.Debug("back-channel logout refused", zap.String("reason", desc))
		g.auditBackchannel(r, auditRefused, desc, nil)
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": desc})
		return nil
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		return refuse("the body must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(w, r.Body, backchannelMaxBody)
	if err := r.ParseForm(); err != nil {
		return refuse("the body is not a form of at most 64 KB")
	}
	raw := r.PostForm.Get("logout_token")
	if raw == "" {
		return refuse("logout_token is missing")
	}

	now := time.Now()
	lt, err := g.validateLogoutToken(r.Context(), raw, now)
	if errors.Is(err, errLogoutUnavailable) {
		g.logger.Error("back-channel logout", zap.Error(err))
		return g.logoutUnavailable(w)
	}
	if err != nil {
		return refuse(err.Error())
	}
	// §2.6: a jti seen before is a replay. Checked last, so that an
	// invalid token takes no place in the cache. The cache is this
	// process's: a token replayed at another node repeats a revocation
	// already made, which ends nothing more (see logoutCut).
	jtiKey := scopedKey(g.Issuer, lt.jti)
	switch g.revocations.logoutJTIs.add(jtiKey, lt.iat.Add(logoutTokenMaxAge+logoutTokenLeeway), now) {
	case jtiSeen:
		return refuse("the logout token was already used (jti)")
	case jtiFull:
		g.logger.Error("back-channel logout: the replay cache is full")
		return g.logoutUnavailable(w)
	}

	if lt.sid != "" {
		// §2.7: a sid names one provider session; only its sessions end.
		err = g.revokeSID(r.Context(), lt.sid)
	} else {
		// No sid: every session of the user at this provider ends.
		err = g.revokeSubjectBefore(r.Context(), lt.sub, logoutCut(lt.iat, now))
	}
	if err != nil {
		// This node refuses the sessions already; the others would not
		// know. Forget the jti so that the provider's retry is accepted.
		g.revocations.logoutJTIs.forget(jtiKey)
		g.logger.Error("back-channel logout", zap.String("sid", lt.sid), zap.String("sub", lt.sub), zap.Error(err))
		return g.logoutUnavailable(w)
	}
	g.logger.Info("back-channel logout", zap.String("sid", lt.sid), zap.String("sub", lt.sub))
	g.auditBackchannel(r, auditAccepted, "", lt)
	w.WriteHeader(http.StatusOK)
	return nil
}

// logoutUnavailable answers a logout the gateway could not process: 503,
// which our provider (and any that retries) tries again later.
func (g *Gateway) logoutUnavailable(w http.ResponseWriter) error {
	w.Header().Set("Retry-After", "5")
	writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable", "error_description": errLogoutUnavailable.Error()})
	return nil
}

// logoutCut is when a logout by sub takes effect: sessions created before
// it end. The token's iat plus the clock leeway, so that a session made
// just before the logout on a gateway whose clock is ahead still ends,
// but no later than now, so that a replay of the token (at another node,
// whose replay cache has not seen it) ends no session made after the
// logout.
func logoutCut(iat, now time.Time) time.Time {
	if cut := iat.Add(logoutTokenLeeway); cut.Before(now) {
		return cut
	}
	return now
}

// validateLogoutToken checks raw as §2.6 says and returns what it asks.
// An error is the reason to give the provider, or wraps
// errLogoutUnavailable.
func (g *Gateway) validateLogoutToken(ctx context.Context, raw string, now time.Time) (*logoutToken, error) {
	d, err := g.oidc.get()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errLogoutUnavailable, err)
	}
	// §2.6: a JWS signed with the provider's ID token keys; like ID
	// tokens, RS256 or ES256 only, so neither "none" nor an HMAC keyed
	// with a public key passes. An encrypted token (JWE, which §2.4
	// allows) is not supported: the gateway registers no encryption key.
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil || len(jws.Signatures) != 1 {
		return nil, errors.New("the logout token is not a JWS signed with RS256 or ES256")
	}
	// §2.4 and §4.1: explicit typing keeps other JWTs of the provider, an
	// ID token above all, from passing as a logout token. No typ is
	// allowed (providers before explicit typing), any other is not.
	if typ, ok := jws.Signatures[0].Header.ExtraHeaders[jose.HeaderType]; ok {
		s, _ := typ.(string)
		if s = strings.ToLower(s); s != "logout+jwt" && s != "application/logout+jwt" {
			return nil, errors.New("the logout token's typ is not logout+jwt")
		}
	}
	payload, err := d.keys.VerifySignature(ctx, raw)
	if errors.Is(err, errKeysUnavailable) {
		return nil, fmt.Errorf("%w: %w", errLogoutUnavailable, err)
	}
	if err != nil {
		return nil, errors.New("the logout token's signature is not valid")
	}
	var c map[string]json.RawMessage
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, errors.New("the logout token's claims are not a JSON object")
	}

	// §2.6: iss, aud, iat and exp as for an ID token (Core §3.1.3.7).
	if iss, _ := claimText(c, "iss"); iss != d.issuer {
		return nil, errors.New("the logout token's iss is not the provider's issuer")
	}
	if !claimAudience(c, g.ClientID) {
		return nil, errors.New("the logout token's aud is not this client")
	}
	iat, ok := claimTime(c, "iat")
	switch {
	case !ok:
		return nil, errors.New("the logout token has no iat")
	case iat.After(now.Add(logoutTokenLeeway)):
		return nil, errors.New("the logout token's iat is in the future")
	case iat.Before(now.Add(-logoutTokenMaxAge)):
		return nil, errors.New("the logout token is too old (iat)")
	}
	// §2.4 makes exp REQUIRED (drafts before the final 1.0 had none; a
	// provider still on one is refused, as the spec says).
	switch exp, ok := claimTime(c, "exp"); {
	case !ok:
		return nil, errors.New("the logout token has no exp")
	case !now.Before(exp.Add(logoutTokenLeeway)):
		return nil, errors.New("the logout token has expired")
	}
	// §2.6: sub, sid or both.
	lt := &logoutToken{iat: iat}
	lt.sid, _ = claimText(c, "sid")
	lt.sub, _ = claimText(c, "sub")
	if lt.sid == "" && lt.sub == "" {
		return nil, errors.New("the logout token has neither sid nor sub")
	}
	// §2.6: the back-channel logout event, whose value is an object.
	var events map[string]json.RawMessage
	if json.Unmarshal(c["events"], &events) != nil || !isJSONObject(events[backchannelLogoutEvent]) {
		return nil, errors.New("the logout token's events has no back-channel logout event")
	}
	// §2.6: no nonce, which would let a logout token pass for an ID
	// token, or an ID token for a logout token.
	if _, present := c["nonce"]; present {
		return nil, errors.New("the logout token has a nonce")
	}
	// §2.4: jti is required; §2.6 uses it against replays.
	if lt.jti, _ = claimText(c, "jti"); lt.jti == "" {
		return nil, errors.New("the logout token has no jti")
	}
	return lt, nil
}

// claimText is the string claim name of c; ok false when it is absent or
// not a string.
func claimText(c map[string]json.RawMessage, name string) (string, bool) {
	var s string
	if raw, ok := c[name]; !ok || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// claimTime is the NumericDate claim name of c (RFC 7519 §2: seconds,
// possibly fractional).
func claimTime(c map[string]json.RawMessage, name string) (time.Time, bool) {
	var secs float64
	if raw, ok := c[name]; !ok || json.Unmarshal(raw, &secs) != nil {
		return time.Time{}, false
	}
	return time.Unix(int64(secs), 0), true
}

// claimAudience reports whether c's aud, a string or a list of them
// (RFC 7519 §4.1.3), has clientID.
func claimAudience(c map[string]json.RawMessage, clientID string) bool {
	if aud, ok := claimText(c, "aud"); ok {
		return aud == clientID
	}
	var auds []string
	if json.Unmarshal(c["aud"], &auds) != nil {
		return false
	}
	for _, a := range auds {
		if a == clientID {
			return true
		}
	}
	return false
}

// isJSONObject reports whether raw is a JSON object.
func isJSONObject(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	return len(raw) > 0 && bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) && json.Unmarshal(raw, &m) == nil
}

// jtiCache remembers the jti of the logout tokens accepted, until they
// could no longer pass for their age.
type jtiCache struct {
	mu   sync.Mutex
	seen map[string]time.Time // key: until
}

// Results of jtiCache.add.
const (
	jtiNew = iota
	jtiSeen
	jtiFull
)

// add records key until until, unless it is there already or the cache
// is full of entries that have not expired.
func (c *jtiCache) add(key string, until, now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]time.Time{}
	}
	if u, ok := c.seen[key]; ok && now.Before(u) {
		return jtiSeen
	}
	if len(c.seen) >= maxLogoutJTIs {
		for k, u := range c.seen {
			if !now.Before(u) {
				delete(c.seen, k)
			}
		}
		if len(c.seen) >= maxLogoutJTIs {
			return jtiFull
		}
	}
	c.seen[key] = until
	return jtiNew
}

// forget removes key, for a logout that failed and will be retried.
func (c *jtiCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.seen, key)
}
