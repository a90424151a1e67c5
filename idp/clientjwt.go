package idp

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Client authentication methods of OpenID Connect Core §9 and RFC 7591
// §2, the values of [Client.TokenEndpointAuthMethods].
const (
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
	AuthPrivateKeyJWT     = "private_key_jwt"
)

// ClientAssertionType is the client_assertion_type of a JWT client
// assertion (RFC 7523 §2.2).
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// ClientAssertionAlgs are the signature algorithms a client assertion may
// use: asymmetric ones only. HMAC (client_secret_jwt) is not offered, and
// "none" never is (RFC 7523 §3 item 9: the JWT MUST be signed).
var ClientAssertionAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Limits of a client assertion.
const (
	// MaxClientAssertionLifetime bounds how far ahead of now an
	// assertion's exp may be, so that the record of its jti is short-lived
	// and a leaked assertion soon worthless. Ten minutes takes the
	// lifetimes common clients use (five in Nimbus and Spring, ten in
	// MSAL).
	MaxClientAssertionLifetime = 10 * time.Minute

	// ClientAssertionLeeway is the clock skew allowed for exp, nbf and
	// iat.
	ClientAssertionLeeway = 30 * time.Second

	maxAssertionBytes = 16 << 10 // a JWT with a few claims is < 2 KiB
	maxJTILength      = 256
	maxJWKSBytes      = 512 << 10 // of a document at a jwks_uri
	jwksFetchTimeout  = 5 * time.Second
	jwksRefetchAfter  = 15 * time.Second // least time between two fetches of one jwks_uri
	jwksMaxAge        = time.Hour        // keys fetched are refetched after this, on use
)

// assertionTyps are the typ header values a client assertion may carry:
// none, the generic JWT, or the explicit type of draft-ietf-oauth-rfc7523bis
// §4. Any other (at+jwt, logout+jwt, dpop+jwt, ...) is a JWT of another
// kind, which RFC 8725 §3.11 has refused here.
var assertionTyps = []string{"", "jwt", "client-authentication+jwt", "application/client-authentication+jwt"}

func assertionAlgs() []jose.SignatureAlgorithm {
	out := make([]jose.SignatureAlgorithm, len(ClientAssertionAlgs))
	for i, a := range ClientAssertionAlgs {
		out[i] = jose.SignatureAlgorithm(a)
	}
	return out
}

// clientKeys are the public keys a private_key_jwt client signs with:
// inline, or at a jwks_uri fetched on first use.
type clientKeys struct {
	static []jose.JSONWebKey // from Client.JWKS
	remote *remoteJWKS       // from Client.JWKSURI
}

// parseJWKS reads a JWK Set (RFC 7517 §5). Keys this provider cannot
// verify an assertion with (encryption keys, symmetric keys, unknown key
// types, RSA under 2048 bits) are errors when strict, else left out, as
// a jwks_uri may publish more than signing keys.
func parseJWKS(data []byte, strict bool) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JWK Set: %w", err)
	}
	var keys []jose.JSONWebKey
	for i, raw := range set.Keys {
		var k jose.JSONWebKey
		err := k.UnmarshalJSON(raw)
		if err == nil {
			err = usableKey(&k)
		}
		if err != nil {
			if strict {
				return nil, fmt.Errorf("key %d: %w", i+1, err)
			}
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no public signing key in the JWK Set")
	}
	return keys, nil
}

// usableKey checks that k is a public key that can verify a client
// assertion.
func usableKey(k *jose.JSONWebKey) error {
	if k.Use != "" && k.Use != "sig" {
		return fmt.Errorf("use %q is not sig", k.Use)
	}
	if k.Algorithm != "" && !slices.Contains(ClientAssertionAlgs, k.Algorithm) {
		return fmt.Errorf("alg %q is not one of %s", k.Algorithm, strings.Join(ClientAssertionAlgs, ", "))
	}
	if !k.IsPublic() {
		// A private key here would mean the client's secret is in the
		// provider's configuration: refuse it rather than keep it.
		return errors.New("is a private or symmetric key; give the public key only")
	}
	switch pk := k.Key.(type) {
	case *rsa.PublicKey:
		if pk.N.BitLen() < 2048 {
			return errors.New("RSA key is shorter than 2048 bits")
		}
	case *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return fmt.Errorf("key type %T is not supported", k.Key)
	}
	if k.Algorithm != "" && !keyFitsAlg(k.Key, k.Algorithm) {
		return fmt.Errorf("alg %q does not fit the key", k.Algorithm)
	}
	return nil
}

// keyFitsAlg says whether key can verify a signature of alg (RFC 7518
// §3.1): no RSA key for an EC algorithm, no P-256 key for ES384.
func keyFitsAlg(key any, alg string) bool {
	switch pk := key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return pk.Curve == elliptic.P256()
		case "ES384":
			return pk.Curve == elliptic.P384()
		case "ES512":
			return pk.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// remoteJWKS is a client's jwks_uri: fetched on first use, kept for
// jwksMaxAge, fetched again sooner for a kid it does not hold, but never
// more than once per jwksRefetchAfter, and one fetch at a time.
type remoteJWKS struct {
	url    string
	client *http.Client
	now    func() time.Time

	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetched time.Time // of keys
	tried   time.Time // the last fetch, successful or not
}

// get returns the keys, fetching them first if there are none yet, they
// are old, or none has kid (if not empty).
func (r *remoteJWKS) get(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	stale := r.keys == nil || now.Sub(r.fetched) >= jwksMaxAge ||
		kid != "" && !slices.ContainsFunc(r.keys, func(k jose.JSONWebKey) bool { return k.KeyID == kid })
	if stale && (r.tried.IsZero() || now.Sub(r.tried) >= jwksRefetchAfter) {
		r.tried = now
		keys, err := r.fetch(ctx)
		if err != nil && r.keys == nil {
			return nil, err
		}
		if err == nil {
			r.keys, r.fetched = keys, now
		}
		// On a failure, the keys fetched before stay in use.
	}
	if r.keys == nil {
		return nil, errors.New("the jwks_uri could not be fetched; next try after a pause")
	}
	return r.keys, nil
}

func (r *remoteJWKS) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching jwks_uri %s: %w", r.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching jwks_uri %s: status %d", r.url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading jwks_uri %s: %w", r.url, err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("jwks_uri %s: document larger than %d bytes", r.url, maxJWKSBytes)
	}
	keys, err := parseJWKS(body, false)
	if err != nil {
		return nil, fmt.Errorf("jwks_uri %s: %w", r.url, err)
	}
	return keys, nil
}

// newClientKeys checks a client's JWKS or jwks_uri.
func (p *Provider) newClientKeys(c Client) (*clientKeys, error) {
	switch {
	case len(c.JWKS) > 0 && c.JWKSURI != "":
		return nil, errors.New("jwks and jwks_uri are exclusive")
	case len(c.JWKS) > 0:
		keys, err := parseJWKS(c.JWKS, true)
		if err != nil {
			return nil, fmt.Errorf("jwks: %w", err)
		}
		return &clientKeys{static: keys}, nil
	case c.JWKSURI != "":
		if err := checkJWKSURI(c.JWKSURI); err != nil {
			return nil, err
		}
		return &clientKeys{remote: &remoteJWKS{url: c.JWKSURI, client: p.jwksClient, now: p.now}}, nil
	}
	return nil, nil
}

// checkJWKSURI checks that u is an absolute http(s) URL.
func checkJWKSURI(u string) error {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok || scheme != "https" && scheme != "http" || rest == "" || strings.ContainsAny(u, " #") {
		return fmt.Errorf("jwks_uri %q is not an absolute http(s) URL", u)
	}
	return nil
}

// assertionClaims are the claims of a client assertion that RFC 7523 §3
// checks.
type assertionClaims struct {
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"`
	Audience  jwt.Audience     `json:"aud"`
	Expiry    *jwt.NumericDate `json:"exp"`
	NotBefore *jwt.NumericDate `json:"nbf"`
	IssuedAt  *jwt.NumericDate `json:"iat"`
	ID        string           `json:"jti"`
}

// parseAssertion parses a client assertion and returns its unverified
// claims. The signature is checked by [Provider.authenticateAssertion].
func parseAssertion(assertion string) (*jose.JSONWebSignature, *assertionClaims, error) {
	if len(assertion) > maxAssertionBytes {
		return nil, nil, errors.New("client_assertion is too long")
	}
	jws, err := jose.ParseSignedCompact(assertion, assertionAlgs())
	if err != nil {
		return nil, nil, fmt.Errorf("client_assertion is not a signed JWT: %w", err)
	}
	h := jws.Signatures[0].Header
	typ, _ := h.ExtraHeaders[jose.HeaderType].(string)
	if _, has := h.ExtraHeaders[jose.HeaderType]; has && typ == "" || !slices.Contains(assertionTyps, strings.ToLower(typ)) {
		return nil, nil, fmt.Errorf("client_assertion has typ %q", truncate(typ, 40))
	}
	var claims assertionClaims
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err != nil {
		return nil, nil, fmt.Errorf("client_assertion claims: %w", err)
	}
	return jws, &claims, nil
}

// assertionID is the client_id a client assertion names, unverified, for
// the log and events of a failed request.
func assertionID(t *tokenRequest) string {
	if id := t.get("client_id"); id != "" {
		return id
	}
	if _, c, err := parseAssertion(t.get("client_assertion")); err == nil {
		return c.Subject
	}
	return ""
}

// authenticateAssertion authenticates a client by a JWT it signed (RFC
// 7523 §2.2 and §3, OpenID Connect Core §9 private_key_jwt). Every failure
// is invalid_client (RFC 7521 §4.2.1); what failed goes to the log only.
func (p *Provider) authenticateAssertion(t *tokenRequest) (*client, *Error) {
	fail := func(format string, args ...any) *Error {
		return &Error{Code: ErrInvalidClient, Description: "client authentication failed", Cause: fmt.Errorf(format, args...)}
	}
	if typ := t.get("client_assertion_type"); typ != ClientAssertionType {
		return nil, fail("unsupported client_assertion_type %q", truncate(typ, 100))
	}
	jws, claims, err := parseAssertion(t.get("client_assertion"))
	if err != nil {
		return nil, fail("%w", err)
	}
	// RFC 7523 §3 items 1 and 2: iss and sub are both the client_id.
	id := claims.Subject
	c := p.clients[id]
	switch {
	case id == "" || claims.Issuer != id:
		return nil, fail("client assertion: iss %q and sub %q must both be the client_id", truncate(claims.Issuer, 100), truncate(id, 100))
	case t.form.Has("client_id") && t.get("client_id") != id:
		// RFC 7521 §4.2: a client_id beside the assertion must be the one
		// it names.
		return nil, fail("client_id %q is not the client assertion's sub %q", truncate(t.get("client_id"), 100), truncate(id, 100))
	case c == nil:
		return nil, fail("client assertion of unknown client %q", truncate(id, 100))
	case !c.allows(AuthPrivateKeyJWT) || c.keys == nil:
		return nil, fail("client %q may not use private_key_jwt", id)
	}
	if err := p.verifyAssertion(t.ctx, c, jws); err != nil {
		return nil, fail("client %q: %w", id, err)
	}
	now := p.now()
	if err := p.checkAssertionClaims(claims, now); err != nil {
		return nil, fail("client %q: %w", id, err)
	}
	ttl := claims.Expiry.Time().Add(ClientAssertionLeeway).Sub(now)
	t.assertionJTI = &pendingJTI{clientID: id, key: assertionJTIKey(id, claims.ID), ttl: max(ttl, time.Second)}
	if t.deferJTI {
		return c, nil
	}
	if oe := p.spendAssertion(t); oe != nil {
		return nil, oe
	}
	return c, nil
}

// pendingJTI is the jti of a client assertion that passed its checks and
// is yet to be recorded as used.
type pendingJTI struct {
	clientID, key string
	ttl           time.Duration
}

// spendAssertion records the jti of the request's client assertion, if it
// has one not yet recorded. RFC 7523 §3 item 7: the jti is used once; it
// is remembered until the assertion would be refused as expired anyway.
// Add is one atomic write, so two nodes sharing the store cannot both
// accept it. An endpoint that sets deferJTI calls it once the request's
// DPoP proof passed (RFC 9449 §8: a client retries with the same body and
// a proof with the nonce), before it acts on the request.
func (p *Provider) spendAssertion(t *tokenRequest) *Error {
	j := t.assertionJTI
	if j == nil {
		return nil
	}
	t.assertionJTI = nil
	added, err := addOnce(t.ctx, p.store, j.key, j.ttl) // an Adder: New makes sure
	if err != nil {
		return unavailable("the client assertion could not be checked", err)
	}
	if !added {
		return &Error{Code: ErrInvalidClient, Description: "client authentication failed", Cause: fmt.Errorf("client %q: client assertion replayed (jti already used)", j.clientID)}
	}
	return nil
}

// assertionJTIKey is the store key of a used client assertion's jti, per
// client (RFC 7523 §3 item 7 allows one jti per issuer).
func assertionJTIKey(clientID, jti string) string {
	return "cajti/" + hashKey(clientID+"\x00"+jti)
}

// verifyAssertion checks the assertion's signature with the client's
// keys: those whose kid is the header's (every key if the header has none)
// and that fit its alg; if no key has the header's kid, those with no kid
// that fit its alg (a client may register a key without a kid and still
// name one). Never a key the assertion's header carries.
func (p *Provider) verifyAssertion(ctx context.Context, c *client, jws *jose.JSONWebSignature) error {
	h := jws.Signatures[0].Header
	keys := c.keys.static
	if c.keys.remote != nil {
		var err error
		if keys, err = c.keys.remote.get(ctx, h.KeyID); err != nil {
			return err
		}
	}
	tried := false
	verify := func(named func(*jose.JSONWebKey) bool) bool {
		for i := range keys {
			k := &keys[i]
			if !named(k) || k.Algorithm != "" && k.Algorithm != h.Algorithm || !keyFitsAlg(k.Key, h.Algorithm) {
				continue
			}
			tried = true
			if _, err := jws.Verify(k.Key); err == nil {
				return true
			}
		}
		return false
	}
	if verify(func(k *jose.JSONWebKey) bool { return h.KeyID == "" || k.KeyID == h.KeyID }) {
		return nil
	}
	if h.KeyID != "" && !slices.ContainsFunc(keys, func(k jose.JSONWebKey) bool { return k.KeyID == h.KeyID }) &&
		verify(func(k *jose.JSONWebKey) bool { return k.KeyID == "" }) {
		return nil
	}
	if !tried {
		return fmt.Errorf("no key of the client's JWKS has kid %q and fits alg %s", truncate(h.KeyID, 100), h.Algorithm)
	}
	return errors.New("bad client assertion signature")
}

// checkAssertionClaims checks aud, exp, nbf, iat and jti (RFC 7523 §3).
func (p *Provider) checkAssertionClaims(c *assertionClaims, now time.Time) error {
	// Audience: draft-ietf-oauth-rfc7523bis §4 has the issuer identifier
	// as the one audience value, so that an assertion made for one server
	// cannot be played at another that shares an endpoint URL with it.
	// The token endpoint URL, which OpenID Connect Core §9 recommends and
	// most client libraries still send, is accepted as well, but alone
	// too: several values (one of them ours) are refused.
	if len(c.Audience) != 1 || c.Audience[0] != p.issuer && c.Audience[0] != p.url(PathToken) {
		return fmt.Errorf("client assertion aud %q is not the issuer or the token endpoint, alone", truncate(strings.Join(c.Audience, " "), 200))
	}
	switch {
	case c.Expiry == nil:
		return errors.New("client assertion has no exp")
	case !now.Before(c.Expiry.Time().Add(ClientAssertionLeeway)):
		return errors.New("client assertion expired")
	case c.Expiry.Time().After(now.Add(MaxClientAssertionLifetime + ClientAssertionLeeway)):
		return fmt.Errorf("client assertion exp is more than %s ahead", MaxClientAssertionLifetime)
	case c.NotBefore != nil && c.NotBefore.Time().After(now.Add(ClientAssertionLeeway)):
		return errors.New("client assertion is not valid yet (nbf)")
	case c.IssuedAt != nil && c.IssuedAt.Time().After(now.Add(ClientAssertionLeeway)):
		return errors.New("client assertion is issued in the future (iat)")
	case c.ID == "":
		return errors.New("client assertion has no jti")
	case len(c.ID) > maxJTILength:
		return errors.New("client assertion jti is too long")
	}
	return nil
}

// setAuthMethods checks and defaults the client's token endpoint
// authentication methods and reads its keys.
func (p *Provider) setAuthMethods(cl *client) error {
	hasKeys := len(cl.JWKS) > 0 || cl.JWKSURI != ""
	hasSecret := cl.Secret != "" || cl.SecretHash != ""
	if cl.Public {
		if hasKeys || len(cl.TokenEndpointAuthMethods) > 0 {
			return errors.New("a public client authenticates with none: it has no keys and no token endpoint auth method")
		}
		return nil
	}
	methods := cl.TokenEndpointAuthMethods
	switch {
	case len(methods) > 0:
	case hasKeys && hasSecret:
		return errors.New("with both keys and a secret, token_endpoint_auth_method must list the methods the client may use (private_key_jwt, client_secret_basic, client_secret_post)")
	case hasKeys:
		methods = []string{AuthPrivateKeyJWT}
	default:
		methods = []string{AuthClientSecretBasic, AuthClientSecretPost}
	}
	cl.methods = make(map[string]bool)
	for _, m := range methods {
		switch m {
		case AuthPrivateKeyJWT:
			if !hasKeys {
				return errors.New("private_key_jwt needs jwks or jwks_uri")
			}
			if _, ok := p.store.(Adder); !ok {
				// Without an atomic add, two nodes could both accept one
				// assertion: its jti would not be one-time.
				return fmt.Errorf("private_key_jwt needs a store that can keep assertion ids one-time (idp.Adder); %T cannot", p.store)
			}
		case AuthClientSecretBasic, AuthClientSecretPost:
			if !hasSecret {
				return fmt.Errorf("%s needs a secret", m)
			}
		default:
			return fmt.Errorf("token endpoint auth method %q is not private_key_jwt, client_secret_basic or client_secret_post", m)
		}
		cl.methods[m] = true
	}
	if hasKeys && !cl.methods[AuthPrivateKeyJWT] {
		return errors.New("jwks or jwks_uri without private_key_jwt among the token endpoint auth methods")
	}
	if hasSecret && !cl.methods[AuthClientSecretBasic] && !cl.methods[AuthClientSecretPost] {
		return errors.New("a secret without client_secret_basic or client_secret_post among the token endpoint auth methods")
	}
	keys, err := p.newClientKeys(cl.Client)
	if err != nil {
		return err
	}
	cl.keys = keys
	return nil
}

// allows says whether the client may authenticate by method.
func (c *client) allows(method string) bool { return c.methods[method] }
