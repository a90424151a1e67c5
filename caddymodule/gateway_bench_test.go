package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// benchGateway is a provisioned gateway and a session cookie for it whose
// claims and tokens are the size of a real login's.
func benchGateway(b testing.TB) (*Gateway, string) {
	return benchGatewayWith(b, nil)
}

// benchGatewayWith is benchGateway with the identity assertion a (nil:
// off).
func benchGatewayWith(b testing.TB, a *GatewayAssertion) (*Gateway, string) {
	b.Helper()
	g := &Gateway{Issuer: "http://127.0.0.1:1", ClientID: "demo-app", SessionKeys: []string{"bench-session-key-0123456789"}, Headers: map[string]string{"X-User-Name": "name"}, IdentityAssertion: a}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel)
	if err := g.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = g.Cleanup() })
	g.logger = zap.NewNop()
	s := &session{
		ID: randomToken(), Subject: "fe4e5196-a8d0-a711-a5f0-373d373cec91",
		Claims:      map[string]any{"name": "Alice Smith", "given_name": "Alice", "family_name": "Smith", "email": "alice@example.com", "email_verified": true, "preferred_username": "alice", "website": "http://alice.com"},
		AccessToken: strings.Repeat("a", 800), RefreshToken: strings.Repeat("r", 43), IDToken: strings.Repeat("i", 900),
		Expiry: time.Now().Add(time.Hour).Unix(), Created: time.Now().Unix(), Binding: g.binding,
	}
	value, err := g.codec.encode(g.cookieName, s)
	if err != nil {
		b.Fatal(err)
	}
	// The revocation list is not empty: requests take its lock.
	g.revocations.list.add(revocation{Kind: revokeSession, Value: randomToken(), Expires: time.Now().Add(time.Hour).Unix()}, time.Now())
	return g, value
}

// BenchmarkGatewaySession is the per-request path with a valid session:
// cookie lookup, checks, header stripping and setting, placeholders. The
// "cold" case decodes the cookie each time (the cost the cache avoids).
// The "assertion" cases add the identity assertion (ES256): the cached
// path reuses the session's assertion, the cold one signs every time.
func BenchmarkGatewaySession(b *testing.B) {
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	for _, c := range []struct {
		name      string
		cold      bool
		assertion *GatewayAssertion
	}{
		{"cached", false, nil},
		{"cold", true, nil},
		{"cached_assertion", false, &GatewayAssertion{}},
		{"cold_assertion", true, &GatewayAssertion{}},
	} {
		cold := c.cold
		b.Run(c.name, func(b *testing.B) {
			g, value := benchGatewayWith(b, c.assertion)
			req := httptest.NewRequest(http.MethodGet, "/headers", nil)
			req.Header.Set("Accept", "text/html")
			req.Header.Set("User-Agent", "bench")
			req.Header.Set("X-Auth-Request-User", "attacker")
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				if cold {
					g.cache = newSessionCache(4096)
				}
				r := req.Clone(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
				r.Header.Set("Cookie", "app=1; authgate="+value)
				if err := g.ServeHTTP(w, r, next); err != nil {
					b.Fatal(err)
				}
				if r.Header.Get("X-Auth-Request-User") != "fe4e5196-a8d0-a711-a5f0-373d373cec91" {
					b.Fatalf("identity not set: %v (status %d)", r.Header, w.Code)
				}
				if (c.assertion != nil) != (r.Header.Get("X-Authgate-Assertion") != "") {
					b.Fatalf("assertion header %q with the assertion %v", r.Header.Get("X-Authgate-Assertion"), c.assertion != nil)
				}
			}
		})
	}
}

// BenchmarkGatewayBearer is the per-request path of bearer mode with a
// token already verified (in the bearer cache), with a non-empty
// revocation list, as the load benchmark's bearer case runs once warm.
func BenchmarkGatewayBearer(b *testing.B) {
	g, token := bearerGateway(b)
	benchBearer(b, g, token)
}

// BenchmarkGatewayBearerScope is BenchmarkGatewayBearer with an allow
// scope rule, which the token passes: the rule allocates nothing.
func BenchmarkGatewayBearerScope(b *testing.B) {
	g, token := bearerGateway(b)
	g.Allow, g.allowAll = []GatewayRule{{Scope: []string{"api", "openid"}}}, false
	benchBearer(b, g, token)
}

func benchBearer(b *testing.B, g *Gateway, token string) {
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	g.logger = zap.NewNop()

	req := httptest.NewRequest(http.MethodGet, "/api", nil)
	req.Header.Set("User-Agent", "bench")
	req.Header.Set("X-Auth-Request-User", "attacker")
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		r := req.Clone(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		r.Header.Set("Authorization", "Bearer "+token)
		if err := g.ServeHTTP(w, r, next); err != nil {
			b.Fatal(err)
		}
		if r.Header.Get("X-Auth-Request-User") != "fe4e5196-a8d0-a711-a5f0-373d373cec91" {
			b.Fatalf("identity not set: %v (status %d)", r.Header, w.Code)
		}
	}
}
