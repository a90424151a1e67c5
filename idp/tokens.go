package idp

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// accessTokenType is the JWT typ of access tokens (RFC 9068 §2.1).
const accessTokenType = "at+jwt"

// keyState is everything that follows from the signing keys: the signers,
// the public keys and the documents that list them. It is never changed
// once built; [Provider.SetKeys] swaps in a new one whole, so a request
// that loads it once signs and verifies with one consistent set, and the
// hot path takes no lock.
type keyState struct {
	signers   map[string]jose.Signer // ID token signers by alg: the first key of each
	logout    map[string]jose.Signer // logout token signers by alg, typ logout+jwt
	atSigner  jose.Signer            // access token signer, typ at+jwt
	jwks      []byte                 // public JWKS document
	verifyKey jose.JSONWebKeySet     // public keys, for verifying our own tokens
	discovery []byte                 // discovery document, which lists the signing algorithms
}

// SetKeys replaces the provider's signing keys while it serves, as
// [Config.Keys] sets them in [New]: the first key of each algorithm signs,
// the others are only published, so that the tokens they signed keep
// verifying. An RS256 key is required, and a key of every algorithm a
// client's ID tokens or the access tokens use. A set that breaks these
// rules is refused, and the keys in use stay.
//
// Requests already running finish with the keys they started with. A
// key should be published (passed after the signing keys) for a while
// before it signs, longer than [Config.JWKSMaxAge], so that verifiers
// that cache the JWKS know it before they see a token it signed.
func (p *Provider) SetKeys(keys []SigningKey) error {
	ks, err := p.newKeyState(keys)
	if err != nil {
		return err
	}
	p.keys.Store(ks)
	return nil
}

func (p *Provider) newKeyState(keys []SigningKey) (*keyState, error) {
	if len(keys) == 0 {
		return nil, errors.New("idp: no signing keys")
	}
	first := make(map[string]SigningKey)
	var pub jose.JSONWebKeySet
	seen := make(map[string]bool)
	for _, k := range keys {
		if err := k.check(); err != nil {
			return nil, err
		}
		if seen[k.ID] {
			return nil, fmt.Errorf("idp: key id %q is used twice", k.ID)
		}
		seen[k.ID] = true
		pub.Keys = append(pub.Keys, jose.JSONWebKey{Key: k.Key.Public(), KeyID: k.ID, Algorithm: k.Alg, Use: "sig"})
		if _, ok := first[k.Alg]; !ok {
			first[k.Alg] = k // the first key of an algorithm signs; later ones only verify
		}
	}
	if _, ok := first[RS256]; !ok {
		// OpenID Connect Core §15.1: RS256 must be supported.
		return nil, errors.New("idp: an RS256 signing key is required")
	}
	for _, c := range p.clients {
		if _, ok := first[c.IDTokenAlg]; !ok {
			return nil, fmt.Errorf("idp: client %q: no %s signing key", c.ID, c.IDTokenAlg)
		}
	}
	atKey, ok := first[p.atAlg]
	if !ok {
		return nil, fmt.Errorf("idp: access token algorithm %q has no signing key", p.atAlg)
	}
	ks := &keyState{signers: make(map[string]jose.Signer), logout: make(map[string]jose.Signer), verifyKey: pub}
	for alg, k := range first {
		s, err := newSigner(k, "JWT")
		if err != nil {
			return nil, err
		}
		ks.signers[alg] = s
		if ks.logout[alg], err = newSigner(k, logoutTokenType); err != nil {
			return nil, err
		}
	}
	var err error
	if ks.atSigner, err = newSigner(atKey, accessTokenType); err != nil {
		return nil, err
	}
	if ks.jwks, err = json.Marshal(pub); err != nil {
		return nil, err
	}
	algs := make([]string, 0, len(first))
	for alg := range first {
		algs = append(algs, alg)
	}
	if ks.discovery, err = p.discoveryDocument(algs); err != nil {
		return nil, err
	}
	return ks, nil
}

func newSigner(k SigningKey, typ string) (jose.Signer, error) {
	s, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.Alg), Key: jose.JSONWebKey{Key: k.Key, KeyID: k.ID}},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)))
	if err != nil {
		return nil, fmt.Errorf("idp: key %q: %w", k.ID, err)
	}
	return s, nil
}

// sign serializes claims as a JWS.
func sign(s jose.Signer, claims any) (string, error) {
	return jwt.Signed(s).Claims(claims).Serialize()
}

// signAccess serializes an access token's claims and the user claims its
// API resources asked for as a JWS. extra never holds a name of claims':
// [New] refuses them.
func signAccess(s jose.Signer, claims accessClaims, extra map[string]any) (string, error) {
	b := jwt.Signed(s).Claims(claims)
	if len(extra) > 0 {
		b = b.Claims(extra)
	}
	return b.Serialize()
}

// accessClaims are the claims of an access token (RFC 9068 §2.2).
type accessClaims struct {
	Issuer   string   `json:"iss"`
	Subject  string   `json:"sub"`
	Audience []string `json:"aud"`
	ClientID string   `json:"client_id"`
	Scope    string   `json:"scope"`
	Expiry   int64    `json:"exp"`
	IssuedAt int64    `json:"iat"`
	ID       string   `json:"jti"`
	AuthTime int64    `json:"auth_time,omitempty"`
	SID      string   `json:"sid,omitempty"`
	GrantID  string   `json:"grant_id,omitempty"` // refresh token family

	Confirmation *confirmation `json:"cnf,omitempty"` // the DPoP key it is bound to (RFC 9449 §6.1)

	// Extra are the token's other claims: the user claims of its API
	// resources, a client_credentials token's client claims.
	Extra map[string]any `json:"-"`
}

// verifyAccessToken checks an access token of ours: signature by one of our
// keys, typ at+jwt, issuer and expiry. Revocation is the caller's check.
func (p *Provider) verifyAccessToken(raw string) (*accessClaims, error) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("parsing token: %w", err)
	}
	if len(tok.Headers) != 1 {
		return nil, errors.New("token has more than one signature")
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != accessTokenType && typ != "application/"+accessTokenType {
		return nil, fmt.Errorf("token type %q is not %s", typ, accessTokenType)
	}
	keys := p.keys.Load().verifyKey.Key(h.KeyID)
	if len(keys) == 0 {
		return nil, errors.New("token signed by an unknown key")
	}
	var c accessClaims
	var all map[string]any
	if err := tok.Claims(keys[0].Key, &c, &all); err != nil {
		return nil, fmt.Errorf("checking signature: %w", err)
	}
	for name, v := range all {
		if !slices.Contains(ReservedAccessTokenClaims, name) {
			if c.Extra == nil {
				c.Extra = make(map[string]any)
			}
			c.Extra[name] = v
		}
	}
	if keys[0].Algorithm != h.Algorithm {
		return nil, errors.New("token algorithm does not match its key")
	}
	if c.Issuer != p.issuer {
		return nil, errors.New("token from another issuer")
	}
	if c.ID == "" || c.Subject == "" {
		return nil, errors.New("token without jti or sub")
	}
	if !p.now().Before(time.Unix(c.Expiry, 0)) {
		return nil, errors.New("token expired")
	}
	return &c, nil
}

func (p *Provider) hasScope(scope string, want string) bool {
	return slices.Contains(splitScope(scope), want)
}

func base64RawURL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
