// Package verifier checks the identity assertion that authgate's gateway
// (oidc_gateway with identity_assertion) sends its upstream: a JWT signed
// with a key of the gateway's JWKS, of type authgate-assertion+jwt, for
// this upstream's audience, and not expired.
package verifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Type is the typ header of an identity assertion.
const Type = "authgate-assertion+jwt"

// refetchAfter is how soon after a fetch of the JWKS an unknown kid makes
// another: a new key is published a day before it signs, so an unknown
// kid is nearly always a forgery, which must not make us fetch at will.
const refetchAfter = 10 * time.Second

// Verifier checks assertions against the gateway's published keys.
type Verifier struct {
	// JWKSURL is the gateway's https://<site>/.well-known/authgate/jwks.json.
	JWKSURL string
	// Issuer is the iss an assertion must have: the gateway's site
	// origin, unless it is configured otherwise.
	Issuer string
	// Audience is the aud an assertion must have: by default the
	// gateway's site origin too.
	Audience string
	// Leeway is the clock difference tolerated on exp and iat. Default: 5s.
	Leeway time.Duration
	// Client fetches the JWKS. Default: a client with a 10s timeout.
	Client *http.Client
	// Now is the clock. Default: time.Now.
	Now func() time.Time

	mu      sync.Mutex
	keys    jose.JSONWebKeySet
	fetched time.Time
}

// Identity is what a valid assertion says.
type Identity struct {
	Subject string   `json:"sub"`
	Email   string   `json:"email,omitempty"`
	Groups  []string `json:"groups,omitempty"`
}

// Verify checks token and returns the identity it asserts.
func (v *Verifier) Verify(ctx context.Context, token string) (*Identity, error) {
	// Only the gateway's algorithms: "none" and HMAC never parse.
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.RS256})
	if err != nil {
		return nil, fmt.Errorf("parsing assertion: %w", err)
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != Type {
		return nil, fmt.Errorf("assertion has typ %q, want %q", typ, Type)
	}
	key, err := v.key(ctx, h.KeyID)
	if err != nil {
		return nil, err
	}
	if key.Algorithm != h.Algorithm {
		return nil, fmt.Errorf("assertion alg %s does not match its key's %s", h.Algorithm, key.Algorithm)
	}
	var claims jwt.Claims
	var id Identity
	if err := tok.Claims(key.Key, &claims, &id); err != nil {
		return nil, fmt.Errorf("checking assertion signature: %w", err)
	}
	if claims.Expiry == nil || claims.IssuedAt == nil || id.Subject == "" {
		return nil, errors.New("assertion lacks exp, iat or sub")
	}
	leeway := v.Leeway
	if leeway == 0 {
		leeway = 5 * time.Second
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	expected := jwt.Expected{Issuer: v.Issuer, AnyAudience: jwt.Audience{v.Audience}, Time: now()}
	if err := claims.ValidateWithLeeway(expected, leeway); err != nil {
		return nil, fmt.Errorf("checking assertion claims: %w", err)
	}
	return &id, nil
}

// key returns the published key kid, fetching the JWKS the first time
// and when kid is unknown (at most every refetchAfter).
func (v *Verifier) key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ks := v.keys.Key(kid); len(ks) > 0 {
		return &ks[0], nil
	}
	if !v.fetched.IsZero() && time.Since(v.fetched) < refetchAfter {
		return nil, fmt.Errorf("assertion key %q is not published", kid)
	}
	if err := v.fetch(ctx); err != nil {
		return nil, err
	}
	if ks := v.keys.Key(kid); len(ks) > 0 {
		return &ks[0], nil
	}
	return nil, fmt.Errorf("assertion key %q is not published", kid)
}

func (v *Verifier) fetch(ctx context.Context) error {
	v.fetched = time.Now()
	client := v.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.JWKSURL, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("fetching JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching JWKS: %s", resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return fmt.Errorf("decoding JWKS: %w", err)
	}
	v.keys = set
	return nil
}

// Handler answers 200 with the asserted subject for a request whose
// header carries a valid assertion, and 401 otherwise.
func (v *Verifier) Handler(header string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		id, err := v.Verify(r.Context(), r.Header.Get(header))
		if err != nil {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, "assertion refused:", err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(id)
	})
}
