package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/authgate/authgate/examples/assertion-verifier/verifier"
	"github.com/authgate/authgate/internal/redistest"
)

// assertionGateway is a provisioned gateway with the identity assertion a
// (nil: off) and a session cookie of alice, in groups admins and dev.
func assertionGateway(t testing.TB, a *GatewayAssertion) (*Gateway, string) {
	t.Helper()
	g := &Gateway{Issuer: "http://127.0.0.1:1", ClientID: "demo-app", SessionKeys: []string{"assertion-session-key-0123456789"}, IdentityAssertion: a}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := g.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Cleanup() })
	g.logger = zap.NewNop()
	s := &session{
		ID: randomToken(), Subject: "alice-sub",
		Claims:      map[string]any{"email": "alice@example.com", "email_verified": true, "groups": []any{"admins", "dev"}},
		AccessToken: "at", Expiry: time.Now().Add(time.Hour).Unix(), Created: time.Now().Unix(), Binding: g.binding,
	}
	value, err := g.codec.encode(g.cookieName, s)
	if err != nil {
		t.Fatal(err)
	}
	return g, value
}

// through runs r through g and returns the request the next handler got
// (nil if none) and the response.
func through(t testing.TB, g *Gateway, r *http.Request) (*http.Request, *httptest.ResponseRecorder) {
	t.Helper()
	var got *http.Request
	next := caddyhttp.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) error { got = r; return nil })
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	w := httptest.NewRecorder()
	if err := g.ServeHTTP(w, r, next); err != nil {
		if he, ok := err.(caddyhttp.HandlerError); ok {
			w.Code = he.StatusCode
		} else {
			t.Fatal(err)
		}
	}
	return got, w
}

// jwksServer serves g's assertion JWKS, as its site would.
func jwksServer(t testing.TB, g *Gateway) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.assertion.serveJWKS(w, r); err != nil {
			t.Errorf("serving JWKS: %v", err)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestGatewayAssertion(t *testing.T) {
	for _, alg := range []string{"", "RS256"} {
		t.Run("alg "+alg, func(t *testing.T) {
			g, cookie := assertionGateway(t, &GatewayAssertion{Alg: alg})
			r := httptest.NewRequest(http.MethodGet, "http://App.Example:80/x", nil)
			r.Header.Set("Cookie", "authgate="+cookie)
			r.Header.Set("X-Authgate-Assertion", "forged")
			got, w := through(t, g, r)
			if got == nil {
				t.Fatalf("request not passed: %d", w.Code)
			}
			token := got.Header.Get("X-Authgate-Assertion")
			if token == "" || token == "forged" || len(got.Header["X-Authgate-Assertion"]) != 1 {
				t.Fatalf("assertion header %q", got.Header["X-Authgate-Assertion"])
			}
			v := &verifier.Verifier{JWKSURL: jwksServer(t, g).URL, Issuer: "http://app.example", Audience: "http://app.example"}
			id, err := v.Verify(context.Background(), token)
			if err != nil {
				t.Fatal(err)
			}
			if id.Subject != "alice-sub" || id.Email != "alice@example.com" || strings.Join(id.Groups, ",") != "admins,dev" {
				t.Errorf("identity %+v", id)
			}
			sig, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES256, jose.RS256})
			if err != nil {
				t.Fatal(err)
			}
			want := alg
			if want == "" {
				want = "ES256"
			}
			if h := sig.Signatures[0].Header; h.Algorithm != want || h.KeyID == "" || h.ExtraHeaders[jose.HeaderType] != AssertionType {
				t.Errorf("header alg %s kid %q typ %v", h.Algorithm, h.KeyID, h.ExtraHeaders[jose.HeaderType])
			}
			var claims map[string]any
			if err := json.Unmarshal(sig.UnsafePayloadWithoutVerification(), &claims); err != nil {
				t.Fatal(err)
			}
			if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 60 {
				t.Errorf("lifetime %vs, want the default 60s", exp-iat)
			}
			// Another site of the same gateway: its own iss and aud, which
			// the first site's upstream refuses.
			r2 := httptest.NewRequest(http.MethodGet, "http://other.example:8080/x", nil)
			r2.Header.Set("Cookie", "authgate="+cookie)
			got2, _ := through(t, g, r2)
			if _, err := v.Verify(context.Background(), got2.Header.Get("X-Authgate-Assertion")); err == nil {
				t.Error("an assertion for http://other.example:8080 passed the verifier of http://app.example")
			}
		})
	}
}

func TestGatewayAssertionReuse(t *testing.T) {
	g, cookie := assertionGateway(t, &GatewayAssertion{Lifetime: caddy.Duration(40 * time.Second)})
	req := func() string {
		r := httptest.NewRequest(http.MethodGet, "http://app.example/x", nil)
		r.Header.Set("Cookie", "authgate="+cookie)
		got, w := through(t, g, r)
		if got == nil {
			t.Fatalf("request not passed: %d", w.Code)
		}
		return got.Header.Get("X-Authgate-Assertion")
	}
	first := req()
	if second := req(); second != first {
		t.Error("the cached session signed a new assertion with most of the last one's lifetime left")
	}
	id := g.cache.get(cookie, time.Now())
	if id == nil {
		t.Fatal("session not cached")
	}
	r := httptest.NewRequest(http.MethodGet, "http://app.example/x", nil)
	for _, c := range []struct {
		name  string
		after time.Duration
		same  bool
	}{
		{"before half its lifetime", 19 * time.Second, true},
		{"past half its lifetime", 21 * time.Second, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			id.assertion.Store(&signedAssertion{token: first, host: "app.example", renewAt: time.Now().Add(20 * time.Second)})
			tok, err := g.assertion.assertionFor(r, id, time.Now().Add(c.after))
			if err != nil {
				t.Fatal(err)
			}
			if (tok == first) != c.same {
				t.Errorf("reused %v, want %v", tok == first, c.same)
			}
		})
	}
	// Another host: its own assertion, never the first host's.
	id.assertion.Store(&signedAssertion{token: first, host: "app.example", renewAt: time.Now().Add(time.Minute)})
	other := httptest.NewRequest(http.MethodGet, "http://other.example/x", nil)
	if tok, _ := g.assertion.assertionFor(other, id, time.Now()); tok == first {
		t.Error("the assertion of app.example was sent to other.example")
	}
}

// TestGatewayAssertionHeaderStripped: a client's assertion header, in any
// spelling, never reaches the upstream, with the assertion off or on,
// under the default name and a configured one.
func TestGatewayAssertionHeaderStripped(t *testing.T) {
	for _, c := range []struct {
		name string
		a    *GatewayAssertion
	}{
		{"off", nil},
		{"on", &GatewayAssertion{}},
		{"other header", &GatewayAssertion{Header: "x-upstream-proof"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, cookie := assertionGateway(t, c.a)
			r := httptest.NewRequest(http.MethodGet, "http://app.example/x", nil)
			r.Header.Set("Cookie", "authgate="+cookie)
			r.Header["X-Authgate-Assertion"] = []string{"forged"}
			r.Header["X_Authgate_Assertion"] = []string{"forged"}
			r.Header["X-Upstream-Proof"] = []string{"forged"}
			got, w := through(t, g, r)
			if got == nil {
				t.Fatalf("request not passed: %d", w.Code)
			}
			for name, vals := range got.Header {
				for _, v := range vals {
					if v == "forged" && (name != "X-Upstream-Proof" || (c.a != nil && c.a.Header != "")) {
						t.Errorf("client's %s reached the upstream", name)
					}
				}
			}
			if c.a != nil && c.a.Header != "" && got.Header.Get("X-Upstream-Proof") == "" {
				t.Error("no assertion in the configured header")
			}
		})
	}
}

func TestGatewayAssertionJWKS(t *testing.T) {
	g, _ := assertionGateway(t, &GatewayAssertion{})
	r := httptest.NewRequest(http.MethodGet, "http://app.example"+AssertionJWKSPath, nil)
	got, w := through(t, g, r)
	if got != nil || w.Code != http.StatusOK {
		t.Fatalf("JWKS: passed %v, status %d", got != nil, w.Code)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "public, max-age=300" {
		t.Errorf("Cache-Control %q", cc)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(w.Body.Bytes(), &set); err != nil || len(set.Keys) != 1 || !set.Keys[0].IsPublic() || set.Keys[0].Algorithm != "ES256" {
		t.Fatalf("JWKS %s: %v", w.Body, err)
	}
	_, w = through(t, g, httptest.NewRequest(http.MethodPost, "http://app.example"+AssertionJWKSPath, nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", w.Code)
	}
	// Off: the path is the upstream's, behind the login like any other.
	off, _ := assertionGateway(t, nil)
	r = httptest.NewRequest(http.MethodGet, "http://app.example"+AssertionJWKSPath, nil)
	r.Header.Set("Accept", "application/json")
	if got, w := through(t, off, r); got != nil || w.Code != http.StatusUnauthorized {
		t.Errorf("off: passed %v, status %d", got != nil, w.Code)
	}
}

func TestGatewayAssertionValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		a    GatewayAssertion
		want string
	}{
		{"alg", GatewayAssertion{Alg: "HS256"}, `alg "HS256" is not ES256 or RS256`},
		{"short lifetime", GatewayAssertion{Lifetime: caddy.Duration(time.Millisecond)}, "lifetime 1ms is not between 1s and 10m0s"},
		{"long lifetime", GatewayAssertion{Lifetime: caddy.Duration(time.Hour)}, "lifetime 1h0m0s is not between"},
		{"header", GatewayAssertion{Header: "bad header"}, `header "bad header" is not a header name`},
		{"issuer", GatewayAssertion{Issuer: "app.example"}, `issuer "app.example" is not an absolute`},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := &Gateway{Issuer: "http://127.0.0.1:1", ClientID: "c", ClientSecret: "s", SessionKeys: []string{"k-0123456789abcdef"}, IdentityAssertion: &c.a}
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := g.Provision(ctx)
			if err == nil {
				err = g.Validate()
			}
			_ = g.Cleanup()
			if err == nil || !strings.Contains(err.Error(), "identity_assertion: "+c.want) {
				t.Errorf("got %v, want %q", err, c.want)
			}
		})
	}
}

// redisAssertionGateway provisions a gateway with the identity assertion
// on the Redis at addr; dial tells nodes apart (another configuration of
// the same server, so another key ring in the pool, as on another node).
func redisAssertionGateway(t *testing.T, addr string, dial time.Duration) *Gateway {
	t.Helper()
	g := &Gateway{
		Issuer: "https://login.example.com", ClientID: "app",
		Store:             &StateStore{Redis: &RedisStore{Addresses: []string{addr}, KeyPrefix: "gw:", DialTimeout: caddy.Duration(dial)}},
		IdentityAssertion: &GatewayAssertion{},
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := g.Provision(ctx); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	t.Cleanup(func() { _ = g.Cleanup() })
	return g
}

// TestGatewayAssertionRedisKeys: gateways of two nodes that share only
// Redis sign with the same key ring, made once there.
func TestGatewayAssertionRedisKeys(t *testing.T) {
	srv := redistest.Start(t)
	a := redisAssertionGateway(t, srv.Addr, 200*time.Millisecond)
	b := redisAssertionGateway(t, srv.Addr, 300*time.Millisecond)
	if a.assertion.keys == b.assertion.keys {
		t.Fatal("the two nodes share a key ring in memory; the test needs one each")
	}
	ka, err := a.assertion.keys.current()
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.assertion.keys.current()
	if err != nil {
		t.Fatal(err)
	}
	if string(ka.jwks) != string(kb.jwks) {
		t.Errorf("node A publishes %s, node B %s", ka.jwks, kb.jwks)
	}
}

// TestGatewayAssertionRedisDown: Provision needs no Redis; without it the
// JWKS and protected requests get 503, not a request without assertion.
func TestGatewayAssertionRedisDown(t *testing.T) {
	g := redisAssertionGateway(t, closedAddr(t), 200*time.Millisecond)
	_, w := through(t, g, httptest.NewRequest(http.MethodGet, "http://app.example"+AssertionJWKSPath, nil))
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("JWKS: status %d, want 503", w.Code)
	}
	id := g.newIdentity("alice", map[string]any{})
	if _, err := g.assertion.assertionFor(httptest.NewRequest(http.MethodGet, "http://app.example/", nil), id, time.Now()); !errors.Is(err, errAssertionKeysUnavailable) {
		t.Errorf("assertion: %v, want errAssertionKeysUnavailable", err)
	}
}
