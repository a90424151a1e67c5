package e2e_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/authgate/authgate/internal/caddytest"
)

// perRouteTemplate is the README's per-route policy pattern: one site,
// /admin and everything under it for group admins, the rest for anyone
// signed in, both gateways with the same client and so one login.
var perRouteTemplate = template.Must(template.New("Caddyfile").Delims("[[", "]]").Parse(`{
	admin [[.Admin]]
	storage file_system [[.Storage]]
	persist_config off
	grace_period 2s
}

[[.Issuer]] {
	oidc_provider [[.Issuer]] {
		client demo-app {
			secret {env.[[.SecretEnv]]}
			redirect_uri [[.Gateway]]/oauth2/callback
			scopes openid profile email groups
		}
		user alice {
			password_hash [[.Hash]]
			claim email alice@example.com
			claim email_verified true
			claim groups admins
		}
		user bob {
			password_hash [[.Hash]]
			claim email bob@example.com
			claim email_verified true
			claim groups staff
		}
	}
}

[[.Gateway]] {
	handle [[.AdminMatcher]] {
		oidc_gateway {
			issuer [[.Issuer]]
			client_id demo-app
			client_secret {env.[[.SecretEnv]]}
			scopes openid profile email groups
			allow group admins
		}
		reverse_proxy [[.Upstream]]
	}
	handle {
		oidc_gateway {
			issuer [[.Issuer]]
			client_id demo-app
			client_secret {env.[[.SecretEnv]]}
			scopes openid profile email groups
		}
		reverse_proxy [[.Upstream]]
	}
}
`))

// httpLogin logs username in at the gateway with a plain HTTP client, as
// a browser would, and returns the Cookie header for the gateway.
func httpLogin(t testing.TB, gateway, username string) string {
	t.Helper()
	browser := caddytest.NewBrowser(t)
	get := func(target string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, target, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "text/html")
		resp, err := browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		caddytest.ReadBody(t, resp)
		return resp
	}
	// The gateway sends the browser to authorize, which sends it to the
	// login page.
	next, err := get(gateway + "/").Location()
	if err != nil {
		t.Fatalf("gateway: no redirect to the provider: %v", err)
	}
	loginURL, err := get(next.String()).Location()
	if err != nil {
		t.Fatalf("authorize: no redirect to the login page: %v", err)
	}
	callback := caddytest.Login(t, browser, loginURL, username, password)
	resp := get(callback.String())
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("callback: status %d, want 302 back to the app", resp.StatusCode)
	}
	u, err := url.Parse(gateway + "/")
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, ck := range browser.Jar.Cookies(u) {
		parts = append(parts, ck.Name+"="+ck.Value)
	}
	return strings.Join(parts, "; ")
}

// rawGet sends GET with the request target exactly as given, which Go's
// client would normalise, and returns the status and body.
func rawGet(t testing.TB, hostport, target, cookie string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", hostport, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\nCookie: %s\r\nConnection: close\r\n\r\n", target, hostport, cookie)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestGatewayPerRoutePolicy: the README's per-route pattern keeps every
// spelling of /admin for admins, and the gateway refuses a path that an
// upstream could resolve into /admin behind the general route's back.
func TestGatewayPerRoutePolicy(t *testing.T) {
	t.Parallel()
	s := newEmptySite(t)
	gateway := fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t))
	s.WriteConfig(t, perRouteTemplate, map[string]string{
		"Admin":        s.AdminAddr,
		"Storage":      s.Storage,
		"Issuer":       s.issuer,
		"Gateway":      gateway,
		"Upstream":     newUpstream(t),
		"SecretEnv":    secretEnv,
		"Hash":         passwordHash,
		"AdminMatcher": "/admin*",
	})
	s.Start(t)
	hostport := strings.TrimPrefix(gateway, "http://")
	users := map[string]string{
		"alice": httpLogin(t, gateway, "alice"), // admins
		"bob":   httpLogin(t, gateway, "bob"),   // staff
	}
	tests := []struct {
		target     string
		alice, bob int
	}{
		{"/admin", 200, 403},
		{"/admin/", 200, 403},
		{"/admin;x/y", 200, 403},
		{"/ADMIN/x", 200, 403},
		{"/admin%2fx", 200, 403},
		{"/admin%2Fx", 200, 403},
		{"/public/..;/admin/x", 400, 400},
		{"/public/%2e%2e/admin/x", 400, 400},
		{"/;x/admin", 400, 400},
		{"/%3b/admin", 400, 400},
		{"/%00/admin", 400, 400},
		{"/public/%c0%ae%c0%ae/admin", 400, 400},
		{"/%c0%afadmin", 400, 400},
		{"/public/x", 200, 200},
	}
	for _, tt := range tests {
		for name, want := range map[string]int{"alice": tt.alice, "bob": tt.bob} {
			t.Run(name+" "+tt.target, func(t *testing.T) {
				status, body := rawGet(t, hostport, tt.target, users[name])
				if status != want {
					t.Fatalf("status %d, want %d:\n%s", status, want, body)
				}
				if status == http.StatusOK {
					e := parseEcho(t, body)
					if got := e.Headers.Get("X-Auth-Request-Email"); got != name+"@example.com" || e.URI != tt.target {
						t.Errorf("upstream got %s as %q, want %s as %s@example.com", e.URI, got, tt.target, name)
					}
				}
			})
		}
	}
}
