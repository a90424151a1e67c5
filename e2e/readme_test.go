package e2e_test

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/template"

	"github.com/authgate/authgate/internal/caddytest"
)

// readmeOneMachine returns the README's "try it on one machine" Caddyfile,
// as written there.
func readmeOneMachine(t testing.TB) string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)To try it on one machine.*?```caddyfile\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no one-machine example")
	}
	return string(m[1])
}

// TestReadmeOneMachine runs the README's one-machine example as written,
// with only its three ports changed to free ones, and logs in through it.
func TestReadmeOneMachine(t *testing.T) {
	t.Parallel()
	config := readmeOneMachine(t)
	c := caddytest.New(t, "APP_SECRET=e2e-readme-secret-of-some-length")
	provider, app := caddytest.FreePort(t), caddytest.FreePort(t)
	for old, repl := range map[string]string{
		"localhost:2020": c.AdminAddr,
		"localhost:9100": fmt.Sprintf("localhost:%d", provider),
		"localhost:9101": fmt.Sprintf("localhost:%d", app),
	} {
		if !strings.Contains(config, old) {
			t.Fatalf("the README's example has no %s", old)
		}
		config = strings.ReplaceAll(config, old, repl)
	}
	// The example's braces are Caddy's: a template without actions.
	c.WriteConfig(t, template.Must(template.New("readme").Delims("[[", "]]").Parse(config)), nil)
	issuer := fmt.Sprintf("http://localhost:%d", provider)
	appURL := fmt.Sprintf("http://localhost:%d/", app)
	c.Ready = []string{issuer + "/.well-known/openid-configuration"}
	c.Start(t)

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
		if body := caddytest.ReadBody(t, resp); resp.StatusCode != http.StatusFound {
			t.Logf("%s: %d %s", target, resp.StatusCode, body)
		}
		return resp
	}
	next := func(resp *http.Response, what string) *url.URL {
		t.Helper()
		loc, err := resp.Location()
		if err != nil {
			t.Fatalf("%s: status %d, no redirect", what, resp.StatusCode)
		}
		return loc
	}
	authorize := next(get(appURL), "the app")
	if !strings.HasPrefix(authorize.String(), issuer+"/") {
		t.Fatalf("the app sent the browser to %s, want the provider %s", authorize, issuer)
	}
	login := next(get(authorize.String()), "authorize")
	callback := caddytest.Login(t, browser, login, "alice", password)
	back := next(get(callback.String()), "the callback")
	if back.String() != appURL {
		t.Fatalf("the callback sent the browser to %s, want %s", back, appURL)
	}
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, appURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := caddytest.ReadBody(t, resp); resp.StatusCode != http.StatusOK || body != "hello Alice" {
		t.Fatalf("the app after login: %d %q, want 200 \"hello Alice\"", resp.StatusCode, body)
	}
}
