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
)

// backchannelTemplate is the Caddyfile of TestGatewayBackchannelLogout:
// the provider registers the gateway's back-channel logout endpoint as
// demo-app's backchannel_logout_uri.
var backchannelTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

{{.Issuer}} {
	oidc_provider {{.Issuer}} {
		client demo-app {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.Gateway}}/oauth2/callback
			backchannel_logout_uri {{.Gateway}}/oauth2/backchannel_logout
			backchannel_logout_session_required
		}
		user alice {
			password_hash {{.Hash}}
			claim email alice@example.com
		}
	}
}

{{.Gateway}} {
	route {
		oidc_gateway {{.Issuer}} {
			client_id demo-app
			client_secret {env.{{.SecretEnv}}}
		}
		respond "hello {http.auth.user.id}"
	}
}
`))

var csrfInput = regexp.MustCompile(`name="csrf_token" value="([^"]*)"`)

// TestGatewayBackchannelLogout: a user logs in through the gateway, then
// signs out at the provider itself (its /account/logout page, not the
// gateway's sign-out); the provider posts a logout token to the gateway's
// back-channel endpoint, and the gateway's session cookie is refused from
// then on: 401 for an API call, a fresh login for a navigation.
func TestGatewayBackchannelLogout(t *testing.T) {
	t.Parallel()
	issuer := fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t))
	gateway := fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t))
	node := caddytest.New(t, secretEnv+"="+clientSecret)
	node.WriteConfig(t, backchannelTemplate, map[string]any{
		"Admin": node.AdminAddr, "Storage": node.Storage, "Issuer": issuer, "Gateway": gateway,
		"SecretEnv": secretEnv, "Hash": passwordHash,
	})
	node.Ready = []string{issuer + "/.well-known/openid-configuration"}
	node.Start(t)

	// The browser keeps both sites' cookies: the gateway's session and
	// the provider's single sign-on session.
	browser := caddytest.NewBrowser(t)
	send := func(method, target string, form url.Values) (*http.Response, string) {
		t.Helper()
		var body *strings.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		} else {
			body = strings.NewReader("")
		}
		req, err := http.NewRequestWithContext(testContext(t), method, target, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "text/html")
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, caddytest.ReadBody(t, resp)
	}
	resp, _ := send(http.MethodGet, gateway+"/", nil)
	authorize, err := resp.Location()
	if err != nil {
		t.Fatalf("gateway: %d, no redirect to the provider", resp.StatusCode)
	}
	resp, _ = send(http.MethodGet, authorize.String(), nil)
	loginURL, err := resp.Location()
	if err != nil {
		t.Fatalf("authorize: %d, no redirect to the login page", resp.StatusCode)
	}
	callback := caddytest.Login(t, browser, loginURL, "alice", password)
	if resp, _ := send(http.MethodGet, callback.String(), nil); resp.StatusCode != http.StatusFound {
		t.Fatalf("callback: %d, want 302 back to the app", resp.StatusCode)
	}
	gwURL, _ := url.Parse(gateway + "/")
	var parts []string
	for _, c := range browser.Jar.Cookies(gwURL) {
		parts = append(parts, c.Name+"="+c.Value)
	}
	cookie := strings.Join(parts, "; ")
	api := http.Header{"Accept": {"application/json"}}
	if resp, body := apiGet(t, gateway+"/", cookie, api); resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, "hello ") {
		t.Fatalf("before the logout: %d %s", resp.StatusCode, body)
	}

	// Sign out at the provider, as the user does on its page.
	_, page := send(http.MethodGet, issuer+"/account/logout", nil)
	m := csrfInput.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the provider's sign-out page has no form:\n%s", page)
	}
	resp, page = send(http.MethodPost, issuer+"/account/logout", url.Values{"csrf_token": {html.UnescapeString(m[1])}, "decision": {"logout"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "signed out") {
		t.Fatalf("the provider's sign-out: %d:\n%s", resp.StatusCode, page)
	}

	// The delivery is asynchronous: wait for it, bounded.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, body := apiGet(t, gateway+"/", cookie, api)
		if resp.StatusCode == http.StatusUnauthorized {
			break
		}
		if resp.StatusCode != http.StatusOK || time.Now().After(deadline) {
			t.Fatalf("after the provider's sign-out the gateway still answers %d %s, want 401", resp.StatusCode, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, _ = apiGet(t, gateway+"/", cookie, http.Header{"Accept": {"text/html"}})
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, issuer) {
		t.Errorf("navigation after the logout: %d to %q, want a fresh login", resp.StatusCode, loc)
	}
}
