package caddymodule

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/authgate/authgate/idp/dpop"
)

// testDPoPKey makes proofs as a client would.
type testDPoPKey struct{ priv *ecdsa.PrivateKey }

func newTestDPoPKey(t testing.TB) *testDPoPKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &testDPoPKey{k}
}

func (k *testDPoPKey) jkt(t testing.TB) string {
	tp, err := (&jose.JSONWebKey{Key: &k.priv.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

func (k *testDPoPKey) proof(t testing.TB, method, htu, token string) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.priv},
		(&jose.SignerOptions{}).WithType(dpop.JWTType).WithHeader("jwk", jose.JSONWebKey{Key: &k.priv.PublicKey}))
	if err != nil {
		t.Fatal(err)
	}
	jti := make([]byte, 12)
	rand.Read(jti)
	c := map[string]any{"jti": base64.RawURLEncoding.EncodeToString(jti), "htm": method, "htu": htu, "iat": time.Now().Unix()}
	if token != "" {
		c["ath"] = dpop.AccessTokenHash(token)
	}
	b, _ := json.Marshal(c)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

func dpopRequest(t *testing.T, url, scheme, token, proof string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", scheme+" "+token)
	}
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestGatewayDPoP(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, func(g *Gateway) { g.Mode = "bearer"; g.Audience = []string{"demo-api"} })
	key, thief := newTestDPoPKey(t), newTestDPoPKey(t)
	now := time.Now()
	claims := func(cnf bool) map[string]any {
		c := map[string]any{"iss": op.URL, "sub": "s1", "aud": "demo-api", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "jti": "t1"}
		if cnf {
			c["cnf"] = map[string]any{"jkt": key.jkt(t)}
		}
		return c
	}
	bound, unbound := forge(t, claims(true)), forge(t, claims(false))
	api := gw.URL + "/api"
	htu := "http://gw.test/api" // the request as the gateway sees it: the test server sets Host gw.test

	good := key.proof(t, "GET", htu, bound)
	if resp := dpopRequest(t, api, "DPoP", bound, good); resp.StatusCode != 200 {
		t.Fatalf("bound token with its proof: %d %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	// Cached now: each request still needs a proof of its own.
	if resp := dpopRequest(t, api, "DPoP", bound, key.proof(t, "GET", htu, bound)); resp.StatusCode != 200 {
		t.Fatalf("cached bound token with a new proof: %d", resp.StatusCode)
	}
	tests := []struct {
		name, scheme, token, proof, want string
	}{
		{"replayed proof", "DPoP", bound, good, `error="invalid_dpop_proof"`},
		{"bound token as Bearer", "Bearer", bound, "", `error="invalid_token"`},
		{"bound token as Bearer with a proof", "Bearer", bound, key.proof(t, "GET", htu, bound), `error="invalid_token"`},
		{"no proof", "DPoP", bound, "", `error="invalid_dpop_proof"`},
		{"the thief's key", "DPoP", bound, thief.proof(t, "GET", htu, bound), `error="invalid_dpop_proof"`},
		{"wrong htm", "DPoP", bound, key.proof(t, "POST", htu, bound), `error="invalid_dpop_proof"`},
		{"wrong htu", "DPoP", bound, key.proof(t, "GET", "http://gw.test/other", bound), `error="invalid_dpop_proof"`},
		{"no ath", "DPoP", bound, key.proof(t, "GET", htu, ""), `error="invalid_dpop_proof"`},
		{"ath of another token", "DPoP", bound, key.proof(t, "GET", htu, unbound), `error="invalid_dpop_proof"`},
		{"unbound token as DPoP", "DPoP", unbound, key.proof(t, "GET", htu, unbound), `error="invalid_token"`},
		{"forged token as DPoP", "DPoP", bound[:len(bound)-4] + "AAAA", key.proof(t, "GET", htu, bound[:len(bound)-4]+"AAAA"), `error="invalid_token"`},
		{"two proofs", "DPoP", bound, key.proof(t, "GET", htu, bound) + "," + key.proof(t, "GET", htu, bound), `error="invalid_dpop_proof"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := dpopRequest(t, api, tt.scheme, tt.token, tt.proof)
			wa := resp.Header.Get("WWW-Authenticate")
			if resp.StatusCode != 401 || !strings.HasPrefix(wa, "DPoP ") || !strings.Contains(wa, tt.want) || !strings.Contains(wa, `algs="ES256`) {
				t.Fatalf("%d %s", resp.StatusCode, wa)
			}
		})
	}
	// An unbound token stays a bearer token.
	if resp := dpopRequest(t, api, "Bearer", unbound, ""); resp.StatusCode != 200 {
		t.Fatalf("unbound bearer token: %d", resp.StatusCode)
	}
	// No token: both schemes are offered (RFC 9449 §7.1).
	resp := dpopRequest(t, api, "", "", "")
	if vals := resp.Header.Values("WWW-Authenticate"); resp.StatusCode != 401 || len(vals) != 2 || !strings.HasPrefix(vals[1], `DPoP realm=`) {
		t.Fatalf("no token: %d %q", resp.StatusCode, vals)
	}
}

func TestReplaySet(t *testing.T) {
	s := newReplaySet(time.Minute)
	t0 := time.Unix(1_800_000_000, 0)
	if s.add("k", "a", t0) != proofNew || s.add("k", "a", t0.Add(time.Second)) != proofReplayed {
		t.Fatal("a proof is new once")
	}
	// Remembered for at least a period after it was added, across a swap.
	if s.add("k", "a", t0.Add(time.Minute+30*time.Second)) != proofReplayed {
		t.Fatal("forgotten after one swap")
	}
	if s.add("k", "b", t0.Add(time.Minute+30*time.Second)) != proofNew {
		t.Fatal("b is new")
	}
	// Two periods on, both generations are gone.
	if s.add("k", "a", t0.Add(4*time.Minute)) != proofNew {
		t.Fatal("a kept for ever")
	}
}

// TestReplaySetPerKeyCap: one key that added maxPerKey proofs to the
// current generation is refused, while other keys still add theirs; the
// cap ends with the generation; and the bound over all keys still holds.
func TestReplaySetPerKeyCap(t *testing.T) {
	s := newReplaySet(time.Minute)
	t0 := time.Unix(1_800_000_000, 0)
	for i := range maxProofsPerKey {
		if got := s.add("greedy", fmt.Sprint("g", i), t0); got != proofNew {
			t.Fatalf("proof %d of the greedy key: %d", i, got)
		}
	}
	if got := s.add("greedy", "g-more", t0); got != proofsKeyFull {
		t.Fatalf("past its cap, the greedy key's proof: %d", got)
	}
	if got := s.add("greedy", "g0", t0); got != proofReplayed {
		t.Fatalf("a replay past the cap: %d", got)
	}
	if got := s.add("other", "o0", t0); got != proofNew {
		t.Fatalf("another key while the greedy one is at its cap: %d", got)
	}
	// A new generation: the greedy key may add again, its old proofs still count as seen.
	if got := s.add("greedy", "g-more", t0.Add(time.Minute)); got != proofNew {
		t.Fatalf("the greedy key in the next generation: %d", got)
	}
	if got := s.add("greedy", "g1", t0.Add(time.Minute)); got != proofReplayed {
		t.Fatalf("a proof of the previous generation: %d", got)
	}

	// The bound over all keys: many keys, each under its cap, fill the set.
	s = newReplaySet(time.Minute)
	s.maxAll, s.maxPerKey = 10, 4
	for i := range 10 {
		if got := s.add(fmt.Sprint("k", i/3), fmt.Sprint("p", i), t0); got != proofNew {
			t.Fatalf("proof %d: %d", i, got)
		}
	}
	if got := s.add("fresh", "p-fresh", t0); got != proofsFull {
		t.Fatalf("a fresh key with the set full: %d", got)
	}
	if len(s.cur) != 10 || len(s.perKey) > len(s.cur) {
		t.Fatalf("%d proofs, %d keys counted", len(s.cur), len(s.perKey))
	}
}

// TestGatewayDPoPKeyCap: a key that sent maxProofsPerKey proofs in this
// window gets 401 invalid_dpop_proof with the DPoP challenge; a client
// with another key keeps passing.
func TestGatewayDPoPKeyCap(t *testing.T) {
	op := newOP(t, nil)
	var g *Gateway
	gw := newGateway(t, op, func(e *Gateway) { e.Mode = "bearer"; e.Audience = []string{"demo-api"}; g = e })
	greedy, other := newTestDPoPKey(t), newTestDPoPKey(t)
	now := time.Now()
	token := func(k *testDPoPKey) string {
		return forge(t, map[string]any{"iss": op.URL, "sub": "s1", "aud": "demo-api", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "cnf": map[string]any{"jkt": k.jkt(t)}})
	}
	greedyToken, otherToken := token(greedy), token(other)
	api, htu := gw.URL+"/api", "http://gw.test/api"
	if resp := dpopRequest(t, api, "DPoP", greedyToken, greedy.proof(t, "GET", htu, greedyToken)); resp.StatusCode != 200 {
		t.Fatalf("greedy key's first proof: %d", resp.StatusCode)
	}
	// The rest of its cap, as if sent (ES256 proofs by the thousand are slow to make).
	for i := 1; i < maxProofsPerKey; i++ {
		g.dpopSeen.add(greedy.jkt(t), fmt.Sprint("filler-", i), time.Now())
	}
	resp := dpopRequest(t, api, "DPoP", greedyToken, greedy.proof(t, "GET", htu, greedyToken))
	if wa := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 401 || !strings.HasPrefix(wa, "DPoP ") || !strings.Contains(wa, `error="invalid_dpop_proof"`) {
		t.Fatalf("greedy key past its cap: %d %s", resp.StatusCode, wa)
	}
	for range 3 {
		if resp := dpopRequest(t, api, "DPoP", otherToken, other.proof(t, "GET", htu, otherToken)); resp.StatusCode != 200 {
			t.Fatalf("another key: %d %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
}

// BenchmarkGatewayDPoP is BenchmarkGatewayBearer with a DPoP-bound token
// and a proof per request: the token's checks come from the cache, the
// proof's (an ES256 verification, the replay memory) are the added cost.
// Proofs are made outside the timer, as the client makes them.
func BenchmarkGatewayDPoP(b *testing.B) {
	g, token := bearerGateway(b)
	key := newTestDPoPKey(b)
	// One key sends every proof of the run: lift its cap (the set is the
	// process's, so put the cap back after).
	g.dpopSeen.mu.Lock()
	capped := g.dpopSeen.maxPerKey
	g.dpopSeen.maxPerKey = maxSeenProofs
	g.dpopSeen.mu.Unlock()
	b.Cleanup(func() {
		g.dpopSeen.mu.Lock()
		g.dpopSeen.maxPerKey = capped
		g.dpopSeen.mu.Unlock()
	})
	id := g.bearerCache.get(token, time.Now())
	id.jkt = key.jkt(b)
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	g.logger = zap.NewNop()
	req := httptest.NewRequest(http.MethodGet, "/api", nil)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		proof := key.proof(b, http.MethodGet, "http://example.com/api", token)
		b.StartTimer()
		r := req.Clone(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		r.Header.Set("Authorization", "DPoP "+token)
		r.Header.Set("DPoP", proof)
		if err := g.ServeHTTP(w, r, next); err != nil {
			b.Fatal(err)
		}
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Header().Get("WWW-Authenticate"))
		}
	}
}

// TestReplaySetSurvivesReload: the gateways of a new config share the
// proofs the old ones saw, so a reload does not reopen the replay window.
func TestReplaySetSurvivesReload(t *testing.T) {
	old, _ := bearerGateway(t)
	if old.dpopSeen.add("jkt", "k", time.Now()) != proofNew {
		t.Fatal("a new key was refused")
	}
	next, _ := bearerGateway(t) // provisioned before the old one is cleaned up, as in a reload
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if next.dpopSeen.add("jkt", "k", time.Now()) != proofReplayed {
		t.Fatal("the new config's gateway forgot a proof the old one saw")
	}
	if err := next.Cleanup(); err != nil {
		t.Fatal(err)
	}
}

// TestGatewayUnknownConfirmation: a token with a cnf the gateway cannot
// check (an mTLS x5t#S256 of RFC 8705, a jkt that is not a string, ...) is
// bound to something it cannot verify: refused as invalid_token with
// either scheme, never let through as a plain bearer token.
func TestGatewayUnknownConfirmation(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, func(g *Gateway) { g.Mode = "bearer"; g.Audience = []string{"demo-api"} })
	key := newTestDPoPKey(t)
	now := time.Now()
	htu := "http://gw.test/api"
	for name, cnf := range map[string]any{
		"x5t#S256":         map[string]any{"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"},
		"jkt and x5t#S256": map[string]any{"jkt": key.jkt(t), "x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"},
		"jkt a number":     map[string]any{"jkt": 42},
		"jkt empty":        map[string]any{"jkt": ""},
		"empty object":     map[string]any{},
		"string":           "bound",
		"null":             nil,
		"array":            []any{map[string]any{"jkt": key.jkt(t)}},
	} {
		t.Run(name, func(t *testing.T) {
			token := forge(t, map[string]any{"iss": op.URL, "sub": "s1", "aud": "demo-api", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "jti": name, "cnf": cnf})
			for _, scheme := range []string{"Bearer", "DPoP", "Bearer"} { // the second Bearer: after a first refusal, nothing cached
				proof := ""
				if scheme == "DPoP" {
					proof = key.proof(t, "GET", htu, token)
				}
				resp := dpopRequest(t, gw.URL+"/api", scheme, token, proof)
				wa := resp.Header.Get("WWW-Authenticate")
				if resp.StatusCode != 401 || !strings.HasPrefix(wa, scheme+" ") || !strings.Contains(wa, `error="invalid_token"`) {
					t.Fatalf("%s: %d %q", scheme, resp.StatusCode, wa)
				}
			}
		})
	}
}

// TestRequestURIForwardedProto: behind a TLS-terminating proxy that
// Caddy's trusted_proxies lists, the htu scheme is its X-Forwarded-Proto;
// from anyone else the header is ignored. The host is the Host header.
func TestRequestURIForwardedProto(t *testing.T) {
	tests := []struct {
		name    string
		trusted any // the trusted_proxy var: nil for unset
		tls     bool
		proto   []string
		want    string
	}{
		{"direct http", false, false, nil, "http://api.test/x"},
		{"direct https", false, true, nil, "https://api.test/x"},
		{"untrusted client claims https", false, false, []string{"https"}, "http://api.test/x"},
		{"untrusted client claims http", false, true, []string{"http"}, "https://api.test/x"},
		{"no trusted_proxy var", nil, false, []string{"https"}, "http://api.test/x"},
		{"trusted proxy, https", true, false, []string{"https"}, "https://api.test/x"},
		{"trusted proxy, HTTPS", true, false, []string{"HTTPS"}, "https://api.test/x"},
		{"trusted proxy, http", true, true, []string{"http"}, "http://api.test/x"},
		{"trusted proxy, list: the last", true, false, []string{"http, https"}, "https://api.test/x"},
		{"trusted proxy, two lines: the last", true, false, []string{"http", "https"}, "https://api.test/x"},
		{"trusted proxy, junk", true, false, []string{"gopher"}, "http://api.test/x"},
		{"trusted proxy, no header", true, true, nil, "https://api.test/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://api.test/x", nil)
			if !tt.tls {
				r.TLS = nil
			} else if r.TLS == nil {
				r.TLS = &tls.ConnectionState{}
			}
			r.Header["X-Forwarded-Proto"] = tt.proto
			vars := map[string]any{}
			if tt.trusted != nil {
				vars[caddyhttp.TrustedProxyVarKey] = tt.trusted
			}
			r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, vars))
			if got := requestURI(r).String(); got != tt.want {
				t.Fatalf("%s, want %s", got, tt.want)
			}
		})
	}
}
