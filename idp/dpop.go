package idp

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/authgate/authgate/idp/dpop"
)

// DPoP (RFC 9449) at the provider. The token endpoint takes a proof from
// any client and binds what it issues to the proof's key: the access
// token carries cnf.jkt and is of token_type DPoP (§5, §6.1), and a public
// client's refresh tokens are bound to the key too (§5: they must be,
// as a public client has nothing else to prove that it holds them). A
// confidential client's refresh tokens stay unbound, as §5 allows: its
// client authentication protects them, and it may refresh with a new key.
// Userinfo takes a bound token with the DPoP scheme and a proof; one
// presented as Bearer is refused (§7.2). Every proof's jti is taken once
// in the store ([Adder]), so a proof replayed at any node is refused.

// Error codes of RFC 9449 §5 and §8.
const (
	ErrInvalidDPoPProof = dpop.ErrCodeInvalidProof
	ErrUseDPoPNonce     = dpop.ErrCodeUseNonce
)

// DefaultDPoPNonceLifetime is the default of [Config.DPoPNonceLifetime].
const DefaultDPoPNonceLifetime = 5 * time.Minute

// addOnce stores key unless it is there: atomically on an [Adder].
func addOnce(ctx context.Context, s Store, key string, ttl time.Duration) (bool, error) {
	if a, ok := s.(Adder); ok {
		return a.Add(ctx, key, []byte{1}, ttl)
	}
	_, err := s.Get(ctx, key)
	switch {
	case err == nil:
		return false, nil
	case !errors.Is(err, ErrNotFound):
		return false, err
	}
	return true, s.Put(ctx, key, []byte{1}, ttl)
}

func dpopReplayKey(p *dpop.Proof) string { return "dpopjti/" + p.ReplayKey() }

// confirmation is the cnf claim of a DPoP-bound access token (RFC 9449
// §6.1, RFC 7800).
type confirmation struct {
	JKT string `json:"jkt"`
}

// dpopState is the provider's DPoP configuration.
type dpopState struct {
	tokenURL    *url.URL
	userinfoURL *url.URL
	parURL      *url.URL
	nonceKey    []byte        // HMAC key of nonces; nil: nonces are not required
	nonceSlot   time.Duration // a nonce is good for this long, and at most twice as long
}

func (p *Provider) newDPoPState(cfg Config) (*dpopState, error) {
	d := &dpopState{}
	var err error
	if d.tokenURL, err = url.Parse(p.url(PathToken)); err != nil {
		return nil, err
	}
	if d.userinfoURL, err = url.Parse(p.url(PathUserinfo)); err != nil {
		return nil, err
	}
	if d.parURL, err = url.Parse(p.url(PathPushedAuthorization)); err != nil {
		return nil, err
	}
	if cfg.DPoPNonceLifetime < 0 {
		return nil, errors.New("idp: negative DPoP nonce lifetime")
	}
	if cfg.DPoPNonce {
		mac := hmac.New(sha256.New, cfg.CookieKeys[0][0])
		mac.Write([]byte("authgate dpop nonce"))
		d.nonceKey = mac.Sum(nil)
		d.nonceSlot = cmp(cfg.DPoPNonceLifetime, DefaultDPoPNonceLifetime)
	}
	return d, nil
}

// nonce returns the nonce of the time slot holding now (§8): the slot's
// number and a MAC of it under a key derived from the cookie keys, so
// every node that shares them makes and accepts the same nonces with no
// state, and nobody without the key can predict one.
func (d *dpopState) nonce(now time.Time) string {
	return d.nonceOf(now.UnixNano() / int64(d.nonceSlot))
}

func (d *dpopState) nonceOf(slot int64) string {
	b := make([]byte, 8, 8+16)
	binary.BigEndian.PutUint64(b, uint64(slot))
	mac := hmac.New(sha256.New, d.nonceKey)
	mac.Write(b)
	return base64.RawURLEncoding.EncodeToString(mac.Sum(b)[:8+16])
}

// nonceCheck accepts the nonce of the current slot and of the one before,
// so a nonce handed out just before a slot ends stays good for a slot.
func (d *dpopState) nonceCheck(now time.Time) func(string) bool {
	if d.nonceKey == nil {
		return nil
	}
	slot := now.UnixNano() / int64(d.nonceSlot)
	return func(n string) bool {
		return hmac.Equal([]byte(n), []byte(d.nonceOf(slot))) || hmac.Equal([]byte(n), []byte(d.nonceOf(slot-1)))
	}
}

// tokenDPoP checks the DPoP proof of a token request (RFC 9449 §5) and
// returns the client to issue with: c itself without a proof, else a copy
// of c for this request whose tokens are bound to the proof's key. A
// client that requires DPoP must send one. With nonces on, every answer
// to a request with a proof carries the current nonce (§8, §8.2).
func (p *Provider) tokenDPoP(w http.ResponseWriter, r *http.Request, c *client) (*client, *Error) {
	proof, oe := p.checkProof(w, r, p.dpop.tokenURL)
	switch {
	case oe != nil:
		return nil, oe
	case proof == nil && c.RequireDPoP:
		return nil, oauthErr(ErrInvalidDPoPProof, "this client must send a DPoP proof")
	case proof == nil:
		return c, nil
	}
	bound := *c
	bound.dpopJKT = proof.JKT
	return &bound, nil
}

// dpopErr is the OAuth error of dpop.Verify's err, nil for none.
func dpopErr(err error) *Error {
	switch {
	case errors.Is(err, dpop.ErrUseNonce):
		return &Error{Code: ErrUseDPoPNonce, Description: "the DPoP proof needs the nonce of the DPoP-Nonce header", Cause: err}
	case err != nil:
		return &Error{Code: ErrInvalidDPoPProof, Description: "the DPoP proof is invalid", Cause: err}
	}
	return nil
}

// dpopOnce records the proof's jti: a proof seen before is refused (RFC
// 9449 §11.1), for as long as its iat could be accepted.
func (p *Provider) dpopOnce(ctx context.Context, proof *dpop.Proof) *Error {
	fresh, err := addOnce(ctx, p.store, dpopReplayKey(proof), dpop.MaxReplayWindow(dpop.DefaultWindow))
	switch {
	case err != nil:
		return unavailable("the DPoP proof could not be checked", err)
	case !fresh:
		return &Error{Code: ErrInvalidDPoPProof, Description: "the DPoP proof was used before", Cause: fmt.Errorf("replayed DPoP proof jti")}
	}
	return nil
}

// refreshJKT is the key a new refresh token family of c is bound to: a
// public client's DPoP key, none for a confidential client (RFC 9449 §5).
func (c *client) refreshJKT() string {
	if c.Public {
		return c.dpopJKT
	}
	return ""
}

// refreshBinding refuses a refresh of a token bound to a DPoP key without
// a proof of that key (RFC 9449 §5).
func refreshBinding(g refreshGrant, c *client) *Error {
	if g.JKT == "" || hmac.Equal([]byte(g.JKT), []byte(c.dpopJKT)) {
		return nil
	}
	if c.dpopJKT == "" {
		return oauthErr(ErrInvalidDPoPProof, "the refresh token is bound to a DPoP key: send a DPoP proof of it")
	}
	return oauthErr(ErrInvalidDPoPProof, "the refresh token is bound to another DPoP key")
}

// userinfoDPoPToken returns the access token of an Authorization: DPoP
// header (RFC 9449 §7.1), and whether the header has that scheme.
func userinfoDPoPToken(r *http.Request) (string, bool) {
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, dpop.Scheme) {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// checkResourceDPoP checks a request to userinfo against the token's
// binding: a bound token only with the DPoP scheme and a proof of its key
// (with the token's hash, §7.1), an unbound one only as Bearer.
func (p *Provider) checkResourceDPoP(r *http.Request, isDPoP bool, raw string, claims *accessClaims) *Error {
	switch {
	case !isDPoP && claims.Confirmation == nil:
		return nil
	case !isDPoP:
		return oauthErr(ErrInvalidToken, "the access token is DPoP-bound: present it with the DPoP scheme and a proof")
	case claims.Confirmation == nil:
		return oauthErr(ErrInvalidToken, "the access token is not DPoP-bound: present it as a Bearer token")
	}
	proofRaw, err := dpop.FromHeader(r.Header)
	if err == nil && proofRaw == "" {
		err = errors.New("no DPoP header")
	}
	if err != nil {
		return &Error{Code: ErrInvalidDPoPProof, Description: "a DPoP proof is required", Cause: err}
	}
	proof, err := dpop.Verify(proofRaw, dpop.Check{Method: r.Method, URL: p.dpop.userinfoURL, AccessToken: raw, Now: p.now()})
	if oe := dpopErr(err); oe != nil {
		return oe
	}
	if !hmac.Equal([]byte(proof.JKT), []byte(claims.Confirmation.JKT)) {
		return oauthErr(ErrInvalidDPoPProof, "the DPoP proof is not signed by the key the token is bound to")
	}
	return p.dpopOnce(r.Context(), proof)
}

// dpopError answers a userinfo request that used the DPoP scheme per RFC
// 9449 §7.1.
func (p *Provider) dpopError(w http.ResponseWriter, r *http.Request, status int, e *Error) {
	if e.Cause != nil {
		p.log.InfoContext(r.Context(), "DPoP token refused", "error_code", e.Code, "error", e.Cause)
	}
	if e.Code == ErrInvalidDPoPProof || e.Code == ErrInvalidToken {
		status = http.StatusUnauthorized
	}
	w.Header().Set("WWW-Authenticate", dpop.Challenge(p.issuer, e.Code, cleanDescription(e.Description)))
	writeError(w, status, e)
}
