package caddymodule

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// TestGatewayDotSegments: a path with a segment that a server may resolve
// as "." or "..", after dropping ";" parameters and percent-decoding, is
// refused before anything else, so that no upstream resolves it to a path
// the route's policy was not chosen for.
func TestGatewayDotSegments(t *testing.T) {
	op := newOP(t, nil)
	tests := []struct {
		name    string
		target  string
		refused bool
	}{
		{"plain", "/admin/x", false},
		{"dots inside names", "/files/v1..2/a.b/...", false},
		{"dot file", "/.well-known/openid-configuration", false},
		{"parameters", "/admin;x/y;jsessionid=1", false},
		{"trailing dots in a name", "/a../..b", false},
		{"dot-dot", "/public/../admin/x", true},
		{"dot", "/public/./admin", true},
		{"dot-dot at the end", "/public/..", true},
		{"Tomcat parameter", "/public/..;/admin/x", true},
		{"Tomcat parameter with a value", "/public/..;jsessionid=1/admin/x", true},
		{"dot parameter", "/public/.;x/admin", true},
		{"encoded", "/public/%2e%2e/admin/x", true},
		{"half encoded", "/public/.%2E/admin/x", true},
		{"encoded parameter", "/public/..%3b/admin/x", true},
		{"encoded slashes", "/public%2f..%2fadmin", true},
		{"backslashes", "/public/..%5cadmin", true},
		{"double encoded", "/public/%252e%252e/admin", true},
	}
	for _, allow := range []bool{false, true} {
		gw := newGateway(t, op, func(g *Gateway) { g.AllowDotSegments = allow })
		for _, tt := range tests {
			name := tt.name
			if allow {
				name = "allow_dot_segments/" + name
			}
			t.Run(name, func(t *testing.T) {
				r := httptest.NewRequest(http.MethodGet, "http://gw.test"+tt.target, nil)
				r.Header.Set("Accept", "application/json")
				var call upstreamCall
				w := httptest.NewRecorder()
				err := gw.gw.ServeHTTP(w, withReplacer(r), protectedUpstream(&call))
				var he caddyhttp.HandlerError
				refused := errors.As(err, &he) && he.StatusCode == http.StatusBadRequest
				if want := tt.refused && !allow; refused != want {
					t.Fatalf("%s: error %v, status %d; refused %v, want %v", tt.target, err, w.Code, refused, want)
				}
				if refused && (call.reached || w.Code != http.StatusOK || w.Body.Len() != 0) {
					t.Errorf("refused, yet answered %d %q", w.Code, w.Body.String())
				}
				if !refused && w.Code != http.StatusUnauthorized {
					t.Errorf("status %d, want the 401 of a request without a session", w.Code)
				}
			})
		}
	}
}
