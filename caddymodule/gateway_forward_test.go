package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// TestGatewayForwardPerRequest: what forward gives the next handler
// (identity headers, placeholders, the Cookie header without the
// gateway's cookies) is the request's own, computed from the cached
// identity: a handler that edits header values in place, as header_up's
// replacements do, changes nothing for the next request of the session,
// and a client's identity headers never pass.
func TestGatewayForwardPerRequest(t *testing.T) {
	const sub = "fe4e5196-a8d0-a711-a5f0-373d373cec91"
	g, value := benchGateway(t)
	bearer, token := bearerGateway(t)
	tests := []struct {
		name   string
		g      *Gateway
		header http.Header
		want   map[string]string // headers upstream
		cookie string            // the Cookie header upstream; "" none
		email  string
	}{
		{
			name:   "cookie",
			g:      g,
			header: http.Header{"Cookie": {"app=1; authgate=" + value + "; authgate_flow_x=y; other=2"}},
			want:   map[string]string{"X-Auth-Request-User": sub, "X-Auth-Request-Email": "alice@example.com", "X-Auth-Request-Preferred-Username": "alice", "X-User-Name": "Alice Smith"},
			cookie: "app=1; other=2",
			email:  "alice@example.com",
		},
		{
			name:   "bearer",
			g:      bearer,
			header: http.Header{"Authorization": {"Bearer " + token}, "Cookie": {"app=1"}},
			want:   map[string]string{"X-Auth-Request-User": sub, "X-User-Name": "Alice Smith"},
			cookie: "app=1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 3 {
				r := httptest.NewRequest(http.MethodGet, "/x", nil)
				for k, v := range tt.header {
					r.Header[k] = append([]string(nil), v...)
				}
				r.Header.Set("X-Auth-Request-User", "attacker")
				r.Header.Set("x_auth_request_email", "attacker@example.com")
				repl := caddy.NewReplacer()
				r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
				called := false
				next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
					called = true
					for name, want := range tt.want {
						if got := r.Header[name]; len(got) != 1 || got[0] != want {
							t.Errorf("request %d: %s = %q, want %q", i, name, got, want)
						}
					}
					for k, v := range r.Header {
						if _, ok := tt.want[k]; !ok && k != "Cookie" && k != "Authorization" {
							t.Errorf("request %d: header %s %q passed", i, k, v)
						}
					}
					if got := r.Header.Get("Cookie"); got != tt.cookie {
						t.Errorf("request %d: Cookie %q, want %q", i, got, tt.cookie)
					}
					for placeholder, want := range map[string]string{
						"http.auth.user.id":            sub,
						"http.auth.user.email":         tt.email,
						"http.auth.user.claim.name":    "Alice Smith",
						"http.auth.user.claim.sub":     sub,
						"http.auth.user.claim.nothing": "",
					} {
						if got, ok := repl.GetString(placeholder); !ok || got != want {
							t.Errorf("request %d: %s = %q, want %q", i, placeholder, got, want)
						}
					}
					// In place, as header_up's replacements edit values.
					for _, vals := range r.Header {
						for j := range vals {
							vals[j] = "edited"
						}
					}
					return nil
				})
				if err := tt.g.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
					t.Fatal(err)
				}
				if !called {
					t.Fatalf("request %d: not forwarded", i)
				}
			}
		})
	}
}

// bearerGateway is a provisioned bearer-mode gateway whose bearer cache
// holds the identity of the token it returns, as bearerIdentity leaves
// it once the token is verified.
func bearerGateway(tb testing.TB) (*Gateway, string) {
	tb.Helper()
	g := &Gateway{Issuer: "http://127.0.0.1:1", Mode: "bearer", Audience: []string{"demo-api"}, SessionKeys: []string{"bench-session-key-0123456789"}, Headers: map[string]string{"X-User-Name": "name"}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	tb.Cleanup(cancel)
	if err := g.Provision(ctx); err != nil {
		tb.Fatal(err)
	}
	g.revocations.list.add(revocation{Kind: revokeSession, Value: randomToken(), Expires: time.Now().Add(time.Hour).Unix()}, time.Now())
	// The size of the provider's access tokens.
	token := "eyJ0eXAiOiJhdCtqd3QifQ." + strings.Repeat("p", 600) + "." + randomToken()
	const sub = "fe4e5196-a8d0-a711-a5f0-373d373cec91"
	claims := map[string]any{"sub": sub, "aud": []any{"demo-api"}, "scope": "openid api", "client_id": "demo-app", "name": "Alice Smith"}
	id := g.bearerIdentityOf(token, sub, claims, time.Now().Add(time.Hour))
	g.bearerCache.put(id)
	return g, token
}

// TestStripOwnCookies: the session cookie, its chunks and the flow
// cookies go; every other part of every line stays, in order.
func TestStripOwnCookies(t *testing.T) {
	g := &Gateway{cookieName: "authgate"}
	tests := []struct {
		name string
		in   []string
		want []string // nil: no Cookie header
	}{
		{"none of ours", []string{"a=1;b=2", "c=3"}, []string{"a=1;b=2", "c=3"}},
		{"name inside a value", []string{"a=authgate; b=2"}, []string{"a=authgate; b=2"}},
		{"only ours", []string{"authgate=x; authgate_1=y"}, nil},
		{"ours first", []string{"authgate=x; a=1; b=2"}, []string{"a=1; b=2"}},
		{"ours between", []string{"a=1;authgate=x;  b=2"}, []string{"a=1; b=2"}},
		{"ours last", []string{"a=1; authgate_flow_abc=y"}, []string{"a=1"}},
		{"longer name not ours", []string{"authgatex=1; authgate=x"}, []string{"authgatex=1"}},
		{"lines", []string{"authgate=x", "a=1", "b=2; authgate_2=z"}, []string{"a=1", "b=2"}},
		{"empty part kept", []string{"authgate=x;"}, []string{""}},
		{"empty parts between", []string{";a=1;;authgate=x; b=2"}, []string{"; a=1; ; b=2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header["Cookie"] = append([]string(nil), tt.in...)
			g.stripOwnCookies(r)
			got, ok := r.Header["Cookie"]
			if tt.want == nil {
				if ok {
					t.Errorf("Cookie %q, want none", got)
				}
				return
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Cookie %q, want %q", got, tt.want)
			}
		})
	}
}
