package e2e_test

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"text/template"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/internal/caddytest"
)

// bindingTemplate is one site with gateways of two providers, as in the
// issue that found sessions crossing them: /corp/* and /corp-reports/*
// for client gw-app at the corp provider (the per-route policy pattern:
// one login, two policies), /social/* for client gw-b at the social
// provider. Every gateway keeps the default cookie name and the default
// session key from Caddy's storage.
var bindingTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

{{.Corp}} {
	oidc_provider {{.Corp}} {
		client gw-app {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.Gateway}}/corp/oauth2/callback
			scopes openid profile email groups
		}
		user alice {
			password_hash {{.Hash}}
			claim email alice@corp.example
			claim email_verified true
			claim groups admins
		}
	}
}

{{.Social}} {
	oidc_provider {{.Social}} {
		client gw-b {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.Gateway}}/social/oauth2/callback
			scopes openid profile email groups
		}
		user mallory {
			password_hash {{.Hash}}
			claim email mallory@social.example
			claim email_verified true
			claim groups admins
		}
	}
}

{{.Gateway}} {
	handle /corp/* {
		oidc_gateway {
			issuer {{.Corp}}
			client_id gw-app
			client_secret {env.{{.SecretEnv}}}
			scopes openid profile email groups
			redirect_path /corp/oauth2/callback
			allow group admins
		}
		reverse_proxy {{.Upstream}}
	}
	handle /corp-reports/* {
		oidc_gateway {
			issuer {{.Corp}}
			client_id gw-app
			client_secret {env.{{.SecretEnv}}}
			scopes openid profile email groups
			redirect_path /corp/oauth2/callback
		}
		reverse_proxy {{.Upstream}}
	}
	handle /social/* {
		oidc_gateway {
			issuer {{.Social}}
			client_id gw-b
			client_secret {env.{{.SecretEnv}}}
			scopes openid profile email groups
			redirect_path /social/oauth2/callback
		}
		reverse_proxy {{.Upstream}}
	}
}
`))

// TestGatewaySessionBinding: a login at one gateway is no login at a
// gateway of another provider and client on the same site, even though
// their cookies share a name and their keys come from one stored session
// key; gateways of the same provider and client share the login.
func TestGatewaySessionBinding(t *testing.T) {
	t.Parallel()
	s := newEmptySite(t)
	corp, social := s.issuer, fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t))
	gateway := fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t))
	s.Ready = append(s.Ready, social+"/.well-known/openid-configuration")
	s.WriteConfig(t, bindingTemplate, map[string]string{
		"Admin": s.AdminAddr, "Storage": s.Storage, "SecretEnv": secretEnv, "Hash": passwordHash,
		"Corp": corp, "Social": social, "Gateway": gateway, "Upstream": newUpstream(t),
	})
	s.Start(t)

	// Mallory exists only at the social provider, in its group admins.
	mallory := caddytest.NewBrowser(t)
	e := browserSignIn(t, mallory, gateway+"/social/dashboard", social, "mallory")
	if got := e.Headers.Get("X-Auth-Request-User"); got != idp.DeriveSubject("mallory") {
		t.Fatalf("signed in at /social as %q, want mallory", got)
	}
	gatewayURL, _ := url.Parse(gateway + "/")
	var socialCookie string
	for _, ck := range mallory.Jar.Cookies(gatewayURL) {
		if ck.Name == "authgate" {
			socialCookie = ck.Value
		}
	}
	if socialCookie == "" {
		t.Fatal("no authgate cookie after the login at /social")
	}

	t.Run("navigation to the other gateway logs in there", func(t *testing.T) {
		resp, _ := browserGet(t, mallory, gateway+"/corp/dashboard", navigation)
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, corp+"/connect/authorize?") {
			t.Errorf("GET /corp/dashboard with social's session: %d to %q, want 302 to corp's authorize endpoint", resp.StatusCode, loc)
		}
		for _, ck := range resp.Cookies() {
			if ck.Name == "authgate" {
				t.Errorf("corp's gateway set the social session's cookie: %s (Max-Age %d); it is not its to change", ck.Name, ck.MaxAge)
			}
		}
	})

	t.Run("social's cookie copied to the corp API", func(t *testing.T) {
		resp, body := apiGet(t, gateway+"/corp/dashboard", "authgate="+socialCookie, http.Header{"Accept": {"application/json"}})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("status %d, want 401:\n%s", resp.StatusCode, body)
		}
		resp, body = apiGet(t, gateway+"/corp-reports/q3", "authgate="+socialCookie, http.Header{"Accept": {"application/json"}})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("/corp-reports: status %d, want 401:\n%s", resp.StatusCode, body)
		}
	})

	t.Run("social's session still works at social", func(t *testing.T) {
		resp, body := apiGet(t, gateway+"/social/dashboard", "authgate="+socialCookie, http.Header{"Accept": {"application/json"}})
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status %d, want 200:\n%s", resp.StatusCode, body)
		}
	})

	t.Run("the operator is told about the shared cookie name", func(t *testing.T) {
		b, err := os.ReadFile(s.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		// Once per gateway that got another's cookie: corp and corp-reports.
		if n := strings.Count(string(b), "a session cookie of another gateway"); n != 2 {
			t.Errorf("the log warns %d times of another gateway's cookie, want 2 (once per gateway that got one)", n)
		}
	})

	t.Run("gateways of one provider and client share the login", func(t *testing.T) {
		alice := caddytest.NewBrowser(t)
		e := browserSignIn(t, alice, gateway+"/corp/dashboard", corp, "alice")
		if got := e.Headers.Get("X-Auth-Request-User"); got != idp.DeriveSubject("alice") {
			t.Fatalf("signed in at /corp as %q, want alice", got)
		}
		resp, body := browserGet(t, alice, gateway+"/corp-reports/q3", navigation)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/corp-reports/q3 after the login at /corp: status %d, want 200:\n%s", resp.StatusCode, body)
		}
		if got := parseEcho(t, body).Headers.Get("X-Auth-Request-User"); got != idp.DeriveSubject("alice") {
			t.Errorf("/corp-reports/q3: upstream got user %q, want alice", got)
		}
	})
}

// navigation is what a browser's navigation asks for, so the gateway
// answers with a login redirect rather than 401.
var navigation = http.Header{"Accept": {"text/html,application/xhtml+xml,*/*;q=0.8"}}

// browserSignIn opens target on a gateway in browser, follows the login
// at issuer as username, and returns what the upstream got once the
// browser is back at target.
func browserSignIn(t testing.TB, browser *http.Client, target, issuer, username string) echo {
	t.Helper()
	next, _ := url.Parse(target)
	for range 4 { // target, authorize, then the login page
		resp, _ := browserGet(t, browser, next.String(), navigation)
		loc, err := resp.Location()
		if err != nil {
			t.Fatalf("GET %s: status %d, want a redirect towards the login page", next, resp.StatusCode)
		}
		next = loc
		if strings.HasPrefix(next.String(), issuer+"/account/login") {
			break
		}
	}
	if !strings.HasPrefix(next.String(), issuer+"/account/login") {
		t.Fatalf("the login did not reach %s's login page; last redirect to %s", issuer, next)
	}
	callback := caddytest.Login(t, browser, next, username, password)
	resp, body := browserGet(t, browser, callback.String(), navigation)
	want, _ := url.Parse(target)
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != want.RequestURI() {
		t.Fatalf("callback: %d to %q, want 302 back to %s:\n%s", resp.StatusCode, loc, want.RequestURI(), body)
	}
	resp, body = browserGet(t, browser, target, navigation)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s after the login: status %d:\n%s", target, resp.StatusCode, body)
	}
	return parseEcho(t, body)
}
