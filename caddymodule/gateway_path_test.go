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
// the route's policy was not chosen for; so is one with a segment that is
// only a ";" parameter (Tomcat reads /;x/admin as /admin), a control
// character, or an overlong UTF-8 form (lenient decoders read %c0%ae as
// ".").
func TestGatewayDotSegments(t *testing.T) {
	op := newOP(t, nil)
	tests := []struct {
		name    string
		target  string
		refused bool
		always  bool // refused even with allow_dot_segments
	}{
		{"plain", "/admin/x", false, false},
		{"dots inside names", "/files/v1..2/a.b/...", false, false},
		{"dot file", "/.well-known/openid-configuration", false, false},
		{"parameters", "/admin;x/y;jsessionid=1", false, false},
		{"trailing dots in a name", "/a../..b", false, false},
		{"dot-dot", "/public/../admin/x", true, false},
		{"dot", "/public/./admin", true, false},
		{"dot-dot at the end", "/public/..", true, false},
		{"Tomcat parameter", "/public/..;/admin/x", true, false},
		{"Tomcat parameter with a value", "/public/..;jsessionid=1/admin/x", true, false},
		{"dot parameter", "/public/.;x/admin", true, false},
		{"encoded", "/public/%2e%2e/admin/x", true, false},
		{"half encoded", "/public/.%2E/admin/x", true, false},
		{"encoded parameter", "/public/..%3b/admin/x", true, false},
		{"encoded slashes", "/public%2f..%2fadmin", true, false},
		{"backslashes", "/public/..%5cadmin", true, false},
		{"double encoded", "/public/%252e%252e/admin", true, false},
		{"parameter at the end", "/app/;jsessionid=1", false, false},
		{"parameter only", "/;x/admin", true, true},
		{"empty parameter", "/;/admin", true, true},
		{"encoded parameter only", "/%3b/admin", true, true},
		{"parameter only, deeper", "/public/;jsessionid=1/admin", true, true},
		{"NUL", "/%00/admin", true, true},
		{"NUL in a name", "/admin%00", true, true},
		{"NUL after dots", "/public/..%00/admin", true, true},
		{"line feed", "/public/%0a/admin", true, true},
		{"double encoded NUL", "/%2500/admin", true, true},
		{"UTF-8", "/caf%C3%A9/%E2%82%AC", false, false},
		{"Latin-1", "/caf%E9", false, false},
		{"overlong dot", "/public/%c0%ae%c0%ae/admin", true, true},
		{"overlong dot, three bytes", "/public/%e0%80%ae%e0%80%ae/admin", true, true},
		{"overlong slash", "/%c0%afadmin", true, true},
		{"overlong backslash", "/public%c1%9cadmin", true, true},
		{"overlong, four bytes", "/%f0%80%80%ae", true, true},
		{"overlong lead before a dot", "/public/%c0%2e%c0%2e/admin", true, true},
		{"Latin-1 with E0", "/voil%E0", false, false},
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
				if want := tt.refused && (!allow || tt.always); refused != want {
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
