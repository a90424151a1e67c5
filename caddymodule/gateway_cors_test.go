package caddymodule

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// withReplacer gives r the replacer Caddy's server puts on every request.
func withReplacer(r *http.Request) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
}

// upstreamCall is what the handler after the gateway got, if anything.
type upstreamCall struct {
	reached bool
	method  string
	header  http.Header
	body    string
}

// protectedUpstream answers every request, whatever its method, with
// protected content, as an app that never looks at the method does.
func protectedUpstream(call *upstreamCall) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		b, _ := io.ReadAll(r.Body)
		*call = upstreamCall{reached: true, method: r.Method, header: r.Header.Clone(), body: string(b)}
		w.Header().Set("Content-Type", "text/plain")
		_, err := io.WriteString(w, "protected content")
		return err
	})
}

// preflight is a CORS preflight from origin, with a body and headers no
// browser would send with one.
func preflight(origin string) *http.Request {
	r := httptest.NewRequest(http.MethodOptions, "http://gw.test/api/items", strings.NewReader("secret=1"))
	r.Header.Set("Origin", origin)
	r.Header.Set("Access-Control-Request-Method", http.MethodPut)
	r.Header.Set("Access-Control-Request-Headers", "content-type")
	r.Header.Set("X-Auth-Request-User", "attacker")
	r.Header.Set("Cookie", "authgate=forged; app=keep")
	return r
}

// TestGatewayPreflightDefault: without a cors block no origin is allowed,
// and a preflight never reaches the upstream.
func TestGatewayPreflightDefault(t *testing.T) {
	op := newOP(t, nil)
	for _, mode := range []string{"browser", "api", "bearer"} {
		t.Run(mode, func(t *testing.T) {
			gw := newGateway(t, op, func(g *Gateway) {
				g.Mode = mode
				if mode != "browser" {
					g.Audience = []string{"demo-app"}
				}
			})
			var call upstreamCall
			w := httptest.NewRecorder()
			if err := gw.gw.ServeHTTP(w, withReplacer(preflight("http://spa.test")), protectedUpstream(&call)); err != nil {
				t.Fatal(err)
			}
			if call.reached || strings.Contains(w.Body.String(), "protected") {
				t.Fatalf("the preflight reached the upstream (%d %q)", w.Code, w.Body.String())
			}
			if w.Code != http.StatusForbidden || w.Header().Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("status %d, Access-Control-Allow-Origin %q; want 403 and none", w.Code, w.Header().Get("Access-Control-Allow-Origin"))
			}
		})
	}
}

// TestGatewayPreflight: the gateway answers preflights from the listed
// origins, refuses the others without CORS headers, and forwards them
// only when told to, stripped of everything a preflight must not carry.
func TestGatewayPreflight(t *testing.T) {
	op := newOP(t, nil)
	const spa, evil = "http://spa.test", "http://evil.test"
	tests := []struct {
		name    string
		cors    *GatewayCORS
		origin  string
		status  int
		forward bool              // reaches the upstream
		header  map[string]string // "" for absent
	}{
		{
			name: "listed origin, defaults", cors: &GatewayCORS{Origins: []string{spa}}, origin: spa, status: http.StatusNoContent,
			header: map[string]string{
				"Access-Control-Allow-Origin":      spa,
				"Access-Control-Allow-Methods":     "GET, HEAD, POST, PUT, PATCH, DELETE",
				"Access-Control-Allow-Headers":     "Authorization, Content-Type, X-Requested-With, DPoP",
				"Access-Control-Max-Age":           "600",
				"Access-Control-Allow-Credentials": "",
				"Vary":                             "Origin",
			},
		},
		{
			name: "listed origin, options",
			cors: &GatewayCORS{Origins: []string{"HTTP://SPA.test:80/"}, Methods: []string{"GET", "PUT"}, Headers: []string{"Content-Type", "X-Csrf"},
				MaxAge: caddy.Duration(time.Hour), Credentials: true},
			origin: spa, status: http.StatusNoContent,
			header: map[string]string{
				"Access-Control-Allow-Origin":      spa,
				"Access-Control-Allow-Methods":     "GET, PUT",
				"Access-Control-Allow-Headers":     "Content-Type, X-Csrf",
				"Access-Control-Max-Age":           "3600",
				"Access-Control-Allow-Credentials": "true",
			},
		},
		{
			name: "any origin", cors: &GatewayCORS{Origins: []string{"*"}}, origin: evil, status: http.StatusNoContent,
			header: map[string]string{"Access-Control-Allow-Origin": "*"},
		},
		{
			name: "origin not listed", cors: &GatewayCORS{Origins: []string{spa}}, origin: evil, status: http.StatusForbidden,
			header: map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Allow-Methods": "", "Vary": "Origin"},
		},
		{
			name: "origin that only looks alike", cors: &GatewayCORS{Origins: []string{spa}}, origin: spa + ".evil.test", status: http.StatusForbidden,
			header: map[string]string{"Access-Control-Allow-Origin": ""},
		},
		{
			name: "null origin", cors: &GatewayCORS{Origins: []string{spa}}, origin: "null", status: http.StatusForbidden,
			header: map[string]string{"Access-Control-Allow-Origin": ""},
		},
		{
			name: "forward, listed origin", cors: &GatewayCORS{Origins: []string{spa}, Preflight: "forward"}, origin: spa, status: http.StatusOK, forward: true,
			header: map[string]string{"Access-Control-Allow-Origin": ""}, // the upstream's to set
		},
		{
			name: "forward, origin not listed", cors: &GatewayCORS{Origins: []string{spa}, Preflight: "forward"}, origin: evil, status: http.StatusForbidden,
			header: map[string]string{"Access-Control-Allow-Origin": ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := newGateway(t, op, func(g *Gateway) { g.CORS = tt.cors })
			var call upstreamCall
			w := httptest.NewRecorder()
			if err := gw.gw.ServeHTTP(w, withReplacer(preflight(tt.origin)), protectedUpstream(&call)); err != nil {
				t.Fatal(err)
			}
			if w.Code != tt.status {
				t.Errorf("status %d, want %d", w.Code, tt.status)
			}
			for name, want := range tt.header {
				if got := strings.Join(w.Header().Values(name), ", "); got != want {
					t.Errorf("%s: %q, want %q", name, got, want)
				}
			}
			if call.reached != tt.forward {
				t.Fatalf("reached the upstream: %v, want %v", call.reached, tt.forward)
			}
			if !tt.forward {
				if strings.Contains(w.Body.String(), "protected") {
					t.Errorf("answer carries the upstream's content: %q", w.Body.String())
				}
				return
			}
			if call.method != http.MethodOptions || call.body != "" || call.header.Get("X-Auth-Request-User") != "" || call.header.Get("Cookie") != "app=keep" {
				t.Errorf("upstream got %s, body %q, headers %v; want OPTIONS without body, identity or the gateway's cookies", call.method, call.body, call.header)
			}
		})
	}
}

// TestGatewayCORSAnswers: answers to an allowed origin's requests carry
// Access-Control-Allow-Origin, the gateway's own 401 included, so that
// a script can read login_url; the upstream's own CORS headers give way
// to the gateway's unless it answers preflights itself, to listed origins
// and others alike: the gateway's list is the policy.
func TestGatewayCORSAnswers(t *testing.T) {
	op := newOP(t, nil)
	const spa = "http://spa.test"
	upstreamWithCORS := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		_, err := io.WriteString(w, "ok")
		return err
	})
	// An upstream that lets any origin read with credentials, as a
	// framework's permissive default does.
	upstreamReflecting := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
		w.Header().Set("Access-Control-Allow-Credentials", "true")
		_, err := io.WriteString(w, "ok")
		return err
	})
	tests := []struct {
		name      string
		cors      *GatewayCORS
		origin    string
		token     bool // a valid bearer token: the upstream answers
		reflect   bool // the upstream allows any origin, with credentials
		wantCode  int
		wantAllow string
		wantCreds string
		// Access-Control-Expose-Headers: WWW-Authenticate is not a
		// CORS-safelisted response header (Fetch §3.2.3), so a script
		// reads the gateway's challenge only if it is exposed.
		wantExpose string
	}{
		{name: "401 to a listed origin", cors: &GatewayCORS{Origins: []string{spa}, Credentials: true}, origin: spa, wantCode: 401, wantAllow: spa, wantCreds: "true", wantExpose: "WWW-Authenticate"},
		{name: "401 to another origin", cors: &GatewayCORS{Origins: []string{spa}, Credentials: true}, origin: "http://evil.test", wantCode: 401},
		{name: "401 without cors", origin: spa, wantCode: 401},
		{name: "401 to a listed origin, forward", cors: &GatewayCORS{Origins: []string{spa}, Preflight: "forward"}, origin: spa, wantCode: 401, wantAllow: spa, wantExpose: "WWW-Authenticate"},
		{name: "upstream's answer, gateway answers preflights", cors: &GatewayCORS{Origins: []string{spa}}, origin: spa, token: true, wantCode: 200, wantAllow: spa},
		{name: "upstream's answer, upstream answers preflights", cors: &GatewayCORS{Origins: []string{spa}, Preflight: "forward"}, origin: spa, token: true, wantCode: 200, wantAllow: "*"},
		{name: "upstream's answer to another origin, gateway answers preflights", cors: &GatewayCORS{Origins: []string{spa}, Credentials: true}, origin: "http://evil.test", token: true, reflect: true, wantCode: 200},
		{name: "upstream's answer to another origin, upstream answers preflights", cors: &GatewayCORS{Origins: []string{spa}, Preflight: "forward"}, origin: "http://evil.test", token: true, reflect: true, wantCode: 200, wantAllow: "http://evil.test", wantCreds: "true"},
		{name: "upstream's answer without cors", origin: "http://evil.test", token: true, reflect: true, wantCode: 200, wantAllow: "http://evil.test", wantCreds: "true"},
	}
	token := issuedToken(t, newGateway(t, op, nil), op, "openid api")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := newGateway(t, op, func(g *Gateway) { g.CORS = tt.cors; g.Mode = "api"; g.Audience = []string{"demo-api"} })
			r := httptest.NewRequest(http.MethodGet, "http://gw.test/api/items", nil)
			r.Header.Set("Origin", tt.origin)
			r.Header.Set("Accept", "application/json")
			if tt.token {
				r.Header.Set("Authorization", "Bearer "+token)
			}
			upstream := upstreamWithCORS
			if tt.reflect {
				upstream = upstreamReflecting
			}
			w := httptest.NewRecorder()
			if err := gw.gw.ServeHTTP(w, withReplacer(r), upstream); err != nil {
				t.Fatal(err)
			}
			if w.Code != tt.wantCode {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.wantCode, w.Body.String())
			}
			if got := w.Header().Values("Access-Control-Allow-Origin"); strings.Join(got, ",") != tt.wantAllow {
				t.Errorf("Access-Control-Allow-Origin %q, want %q", got, tt.wantAllow)
			}
			if got := w.Header().Get("Access-Control-Allow-Credentials"); got != tt.wantCreds {
				t.Errorf("Access-Control-Allow-Credentials %q, want %q", got, tt.wantCreds)
			}
			if got := w.Header().Get("Access-Control-Expose-Headers"); got != tt.wantExpose {
				t.Errorf("Access-Control-Expose-Headers %q, want %q", got, tt.wantExpose)
			}
			if tt.cors != nil && !strings.Contains(strings.Join(w.Header().Values("Vary"), ","), "Origin") {
				t.Errorf("Vary %q, want Origin", w.Header().Values("Vary"))
			}
		})
	}
}

func TestGatewayCORSValidate(t *testing.T) {
	tests := []struct {
		name string
		cors GatewayCORS
		want string // "" for valid
	}{
		{name: "origins", cors: GatewayCORS{Origins: []string{"https://a.example", "http://localhost:8081", "*"}}},
		{name: "no origin", cors: GatewayCORS{}, want: "at least one origin"},
		{name: "path", cors: GatewayCORS{Origins: []string{"https://a.example/app"}}, want: "not scheme://host"},
		{name: "null", cors: GatewayCORS{Origins: []string{"null"}}, want: "not scheme://host"},
		{name: "any with credentials", cors: GatewayCORS{Origins: []string{"*"}, Credentials: true}, want: "cannot go with credentials"},
		{name: "bad preflight", cors: GatewayCORS{Origins: []string{"*"}, Preflight: "pass"}, want: "not answer or forward"},
		{name: "forward with methods", cors: GatewayCORS{Origins: []string{"*"}, Preflight: "forward", Methods: []string{"GET"}}, want: "for preflight answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cors.validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("validate: %v, want %q", err, tt.want)
			}
		})
	}
}
