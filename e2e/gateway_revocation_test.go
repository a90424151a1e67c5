package e2e_test

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/authgate/authgate/internal/caddytest"
	"github.com/authgate/authgate/internal/redistest"
)

// revocationTemplate is the Caddyfile of the nodes of
// TestGatewayRevocation: node A serves the provider and a gateway, node B
// a gateway of the same client; they share only Redis. /ws and /events go
// to a streaming upstream.
var revocationTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

(redis) {
	store redis {
		address {{.Redis}}
		read_timeout 500ms
		write_timeout 500ms
		dial_timeout 500ms
	}
}
{{if .Provider}}
{{.Issuer}} {
	oidc_provider {{.Issuer}} {
		import redis
		client demo-app {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.GatewayA}}/oauth2/callback
			redirect_uri {{.GatewayB}}/oauth2/callback
			post_logout_redirect_uri {{.GatewayA}}/
		}
		user alice {
			password_hash {{.Hash}}
			claim email alice@example.com
			claim email_verified true
		}
	}
}
{{end}}
{{.Gateway}} {
	route {
		oidc_gateway {{.Issuer}} {
			client_id demo-app
			client_secret {env.{{.SecretEnv}}}
			sign_out_id_token_hint
			import redis
		}
		@streams path /ws /events
		reverse_proxy @streams {{.Streams}}
		respond "hello {http.auth.user.id}"
	}
}
`))

var signOutToken = regexp.MustCompile(`name="token" value="([^"]*)"`)

// signOutWith signs out at gateway the session of cookie, as the sign-out
// page's button does, and returns the answer, not followed.
func signOutWith(t *testing.T, gateway, cookie string) *http.Response {
	t.Helper()
	resp, page := apiGet(t, gateway+"/oauth2/sign_out", cookie, http.Header{"Accept": {"text/html"}})
	m := signOutToken.FindStringSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("sign-out page: %d:\n%s", resp.StatusCode, page)
	}
	form := url.Values{"token": {html.UnescapeString(m[1])}}
	req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, gateway+"/oauth2/sign_out", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Cookie", cookie)
	resp, err = noRedirectClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	caddytest.ReadBody(t, resp)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %d, want 303", resp.StatusCode)
	}
	return resp
}

// TestGatewayRevocation: a copy of a session cookie taken before sign-out
// is refused after it, on the node that signed out and on another node
// that shares the Redis store; a WebSocket and an event stream open on
// the other node are closed when the revocation reaches it; sign-out
// clears the site's data and ends on the gateway's signed-out page.
func TestGatewayRevocation(t *testing.T) {
	t.Parallel()
	redis := redistest.Start(t)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t))
	var gateways [2]string
	for i := range gateways {
		gateways[i] = fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t))
	}
	streams := newStreamingUpstream(t)
	for i, gateway := range gateways {
		node := caddytest.New(t, secretEnv+"="+clientSecret)
		node.WriteConfig(t, revocationTemplate, map[string]any{
			"Admin": node.AdminAddr, "Storage": node.Storage, "Redis": redis.Addr,
			"Provider": i == 0, "Issuer": issuer, "Gateway": gateway,
			"GatewayA": gateways[0], "GatewayB": gateways[1],
			"SecretEnv": secretEnv, "Hash": passwordHash, "Streams": streams,
		})
		if i == 0 {
			node.Ready = []string{issuer + "/.well-known/openid-configuration"}
		}
		node.Start(t)
	}

	cookie := httpLogin(t, gateways[0], "alice")
	api := http.Header{"Accept": {"application/json"}}
	for i, gateway := range gateways {
		if resp, body := apiGet(t, gateway+"/", cookie, api); resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, "hello ") {
			t.Fatalf("node %c before sign-out: %d %s", 'A'+i, resp.StatusCode, body)
		}
	}

	// Streams on node B, which learns of the sign-out at A from Redis.
	ws := openWebSocket(t, gateways[1], cookie)
	events := openEvents(t, gateways[1], cookie)

	out := signOutWith(t, gateways[0], cookie)
	signedOut := time.Now()
	if got := out.Header.Get("Clear-Site-Data"); got != `"cache"` {
		t.Errorf("Clear-Site-Data: %q", got)
	}

	t.Run("streams closed on the other node", func(t *testing.T) {
		// Pub/sub brings the entry at once; the bound is generous.
		expectStreamsClosed(t, ws, events, signedOut, 5*time.Second)
	})
	t.Run("copy refused on the same node", func(t *testing.T) {
		if resp, body := apiGet(t, gateways[0]+"/", cookie, api); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("API call: %d %s, want 401", resp.StatusCode, body)
		}
		resp, _ := apiGet(t, gateways[0]+"/", cookie, http.Header{"Accept": {"text/html"}})
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, issuer) {
			t.Errorf("navigation: %d to %q, want a login", resp.StatusCode, loc)
		}
	})
	t.Run("copy refused on the other node", func(t *testing.T) {
		// Pub/sub brings the revocation at once; allow a little for
		// delivery, bounded.
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, body := apiGet(t, gateways[1]+"/", cookie, api)
			if resp.StatusCode == http.StatusUnauthorized {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node B still answers %d %s", resp.StatusCode, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
		resp, _ := apiGet(t, gateways[1]+"/", cookie, http.Header{"Accept": {"text/html"}})
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, issuer) {
			t.Errorf("navigation: %d to %q, want a login", resp.StatusCode, loc)
		}
	})
	t.Run("signed-out page", func(t *testing.T) {
		// The provider ends its session (id_token_hint: no question) and
		// sends the browser back to / with the gateway's state.
		resp, body := apiGet(t, out.Header.Get("Location"), "", nil)
		back, err := resp.Location()
		if err != nil || !strings.HasPrefix(back.String(), gateways[0]+"/?") {
			t.Fatalf("end_session: %d to %v, want %s/:\n%s", resp.StatusCode, back, gateways[0], body)
		}
		resp, body = apiGet(t, back.String(), "", http.Header{"Accept": {"text/html"}})
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "You have signed out") || !strings.Contains(body, `href="/oauth2/start?rd=%2F"`) {
			t.Fatalf("back from the provider: %d, want the signed-out page with a link to sign in again:\n%s", resp.StatusCode, body)
		}
		// Cookies are cleared here, after the provider has ended its
		// session, not at the sign-out, which would clear its cookie first.
		if got := resp.Header.Get("Clear-Site-Data"); got != `"cache", "cookies"` {
			t.Errorf("signed-out page's Clear-Site-Data: %q", got)
		}
	})
}
