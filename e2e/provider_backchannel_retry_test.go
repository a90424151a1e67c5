package e2e_test

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/authgate/authgate/internal/caddytest"
)

// splitProviderTemplate and splitGatewayTemplate are a provider and a
// gateway in Caddy processes of their own, so that either can be stopped
// while the other runs. The provider registers the gateway's back-channel
// logout endpoint as demo-app's backchannel_logout_uri; .Extra is more
// oidc_provider options.
var splitProviderTemplate = template.Must(template.New("Caddyfile").Parse(`{
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
		}
		user alice {
			password_hash {{.Hash}}
			claim email alice@example.com{{.Alice}}
		}{{.Extra}}
	}
}
`))

var splitGatewayTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
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

// splitSites is a provider and a gateway, each in its own Caddy.
type splitSites struct {
	provider, gateway *caddytest.Caddy
	issuer, gwURL     string
}

// newSplitSites writes the Caddyfiles of a provider with extra options
// (and alice's with more user options) and of its gateway, and starts
// both.
func newSplitSites(t *testing.T, extra, alice string) *splitSites {
	t.Helper()
	s := &splitSites{
		provider: caddytest.New(t, secretEnv+"="+clientSecret),
		gateway:  caddytest.New(t, secretEnv+"="+clientSecret),
		issuer:   fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t)),
		gwURL:    fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t)),
	}
	s.writeProvider(t, extra, alice)
	s.provider.Ready = []string{s.issuer + "/.well-known/openid-configuration"}
	s.gateway.WriteConfig(t, splitGatewayTemplate, map[string]any{
		"Admin": s.gateway.AdminAddr, "Storage": s.gateway.Storage, "Issuer": s.issuer, "Gateway": s.gwURL,
		"SecretEnv": secretEnv,
	})
	s.provider.Start(t)
	s.gateway.Start(t)
	return s
}

func (s *splitSites) writeProvider(t *testing.T, extra, alice string) {
	t.Helper()
	s.provider.WriteConfig(t, splitProviderTemplate, map[string]any{
		"Admin": s.provider.AdminAddr, "Storage": s.provider.Storage, "Issuer": s.issuer, "Gateway": s.gwURL,
		"SecretEnv": secretEnv, "Hash": passwordHash, "Extra": extra, "Alice": alice,
	})
}

// browse sends a request as browser, with Accept: text/html, a form if
// any, and returns the response with its body read.
func browse(t testing.TB, browser *http.Client, method, target string, form url.Values) (*http.Response, string) {
	t.Helper()
	body := ""
	if form != nil {
		body = form.Encode()
	}
	req, err := http.NewRequestWithContext(testContext(t), method, target, strings.NewReader(body))
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

// gatewayLogin logs alice in through the gateway with browser and returns
// the gateway's cookies as a Cookie header, checked to pass.
func (s *splitSites) gatewayLogin(t testing.TB, browser *http.Client) string {
	t.Helper()
	resp, _ := browse(t, browser, http.MethodGet, s.gwURL+"/", nil)
	authorize, err := resp.Location()
	if err != nil {
		t.Fatalf("gateway: %d, no redirect to the provider", resp.StatusCode)
	}
	resp, _ = browse(t, browser, http.MethodGet, authorize.String(), nil)
	loginURL, err := resp.Location()
	if err != nil {
		t.Fatalf("authorize: %d, no redirect to the login page", resp.StatusCode)
	}
	callback := caddytest.Login(t, browser, loginURL, "alice", password)
	if resp, _ := browse(t, browser, http.MethodGet, callback.String(), nil); resp.StatusCode != http.StatusFound {
		t.Fatalf("callback: %d, want 302 back to the app", resp.StatusCode)
	}
	gw, _ := url.Parse(s.gwURL + "/")
	var parts []string
	for _, c := range browser.Jar.Cookies(gw) {
		parts = append(parts, c.Name+"="+c.Value)
	}
	cookie := strings.Join(parts, "; ")
	if resp, body := apiGet(t, s.gwURL+"/", cookie, jsonAccept); resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, "hello ") {
		t.Fatalf("after the login: %d %s", resp.StatusCode, body)
	}
	return cookie
}

var jsonAccept = http.Header{"Accept": {"application/json"}}

// providerSignOut signs browser out on the provider's own sign-out page.
func (s *splitSites) providerSignOut(t testing.TB, browser *http.Client) {
	t.Helper()
	_, page := browse(t, browser, http.MethodGet, s.issuer+"/account/logout", nil)
	m := csrfInput.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the provider's sign-out page has no form:\n%s", page)
	}
	resp, page := browse(t, browser, http.MethodPost, s.issuer+"/account/logout", url.Values{"csrf_token": {html.UnescapeString(m[1])}, "decision": {"logout"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "signed out") {
		t.Fatalf("the provider's sign-out: %d:\n%s", resp.StatusCode, page)
	}
}

// waitRefused polls the gateway with cookie until it answers 401, for at
// most within; until then it must answer 200.
func (s *splitSites) waitRefused(t testing.TB, cookie string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, body := apiGet(t, s.gwURL+"/", cookie, jsonAccept)
		if resp.StatusCode == http.StatusUnauthorized {
			return
		}
		if resp.StatusCode != http.StatusOK || time.Now().After(deadline) {
			t.Fatalf("the gateway still answers the old cookie %d %s after %s, want 401", resp.StatusCode, body, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLog waits, at most within, until c's log holds msg.
func waitLog(t testing.TB, c *caddytest.Caddy, msg string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, err := os.ReadFile(c.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), msg) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log after %s", msg, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBackchannelDeliveryRetried: the gateway is down when the user signs
// out at the provider, so the logout token cannot be delivered and is
// retried; the provider restarts meanwhile, and finds the delivery in its
// store; once the gateway is back, it gets the logout token and refuses
// the session's old cookie.
func TestBackchannelDeliveryRetried(t *testing.T) {
	t.Parallel()
	s := newSplitSites(t, `
		backchannel_logout {
			backoff 100ms
			max_backoff 500ms
			poll 200ms
			retry_for 2m
		}`, "")
	browser := caddytest.NewBrowser(t)
	cookie := s.gatewayLogin(t, browser)

	s.gateway.Stop(t)
	s.providerSignOut(t, browser)
	waitLog(t, s.provider, "back-channel logout failed; will retry", 10*time.Second)

	// A restart on the same storage: the queue is in the store's file.
	s.provider.Stop(t)
	s.provider.Start(t)
	s.gateway.Start(t)

	s.waitRefused(t, cookie, 10*time.Second)
	waitLog(t, s.provider, "back-channel logout delivered", 5*time.Second)
}
