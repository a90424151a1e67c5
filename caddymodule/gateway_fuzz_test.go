package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// FuzzSessionCookie sends arbitrary session cookies: never a pass to the
// upstream, never a 5xx.
func FuzzSessionCookie(f *testing.F) {
	g := &Gateway{Issuer: "http://127.0.0.1:1", ClientID: "c", SessionKeys: []string{"fuzz-session-key-0123456789"}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := g.Provision(ctx); err != nil {
		f.Fatal(err)
	}
	g.logger = zap.NewNop()
	valid, err := g.codec.encode(g.cookieName, &session{ID: "i", Subject: "s", Created: 1, Binding: g.binding})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid, "")
	f.Add(valid[:len(valid)/2], valid[len(valid)/2:])
	f.Add(strings.Repeat("A", chunkSize), "B")
	f.Add("", "")
	f.Add("%%%|||", "x")
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		f.Fatal("request passed to the upstream")
		return nil
	})
	f.Fuzz(func(t *testing.T, first, second string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Accept", "application/json")
		r.Header.Set("Cookie", "authgate="+first+"; authgate_1="+second)
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		w := httptest.NewRecorder()
		if err := g.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
		if w.Code != http.StatusUnauthorized {
			t.Fatalf("cookie %q|%q: status %d, want 401", first, second, w.Code)
		}
	})
}

// FuzzReturnURL: whatever comes in, the return URL stays on this origin.
func FuzzReturnURL(f *testing.F) {
	for _, s := range []string{"/", "/a?b=c", "//evil.com", "/\\evil.com", "https://evil.com", "/%2F%2Fx", "/\t/evil.com", "\x00"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://app.example/some/page")
	f.Fuzz(func(t *testing.T, raw string) {
		got := safeReturnURL(raw)
		if !strings.HasPrefix(got, "/") {
			t.Fatalf("safeReturnURL(%q) = %q", raw, got)
		}
		u, err := url.Parse(got)
		if err != nil {
			t.Fatalf("safeReturnURL(%q) = %q does not parse", raw, got)
		}
		if dest := base.ResolveReference(u); dest.Host != base.Host || dest.Scheme != base.Scheme {
			t.Fatalf("safeReturnURL(%q) = %q leads to %s", raw, got, dest)
		}
		// Browsers treat a backslash like a slash; none may survive near the start.
		if strings.Contains(got, "\\") {
			t.Fatalf("safeReturnURL(%q) = %q keeps a backslash", raw, got)
		}
	})
}
