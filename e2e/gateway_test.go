package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/chromedp/cdproto/network"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/internal/caddytest"
)

// These tests drive oidc_gateway as its users meet it: a real Chromium
// opens the app, lands on the provider's login page, logs in, and comes
// back, against the Caddy binary serving the provider and the gateway in
// front of reverse_proxy on 127.0.0.1. The upstream is a Go server of the
// test that echoes what it receives, exactly: a Caddy site there would
// drop headers with "_" or "." in their names on its own, and hide whether
// the gateway let such spellings of identity headers through.
//
// Cookies are not port-isolated: the browser sends the provider's cookies
// (authgate_provider_*) to the gateway too, as both are 127.0.0.1. Their
// names differ from the gateway's, which is all the gateway needs.

// gatewayConfig is what a test changes in the Caddyfile of gatewayTemplate.
type gatewayConfig struct {
	// Global are extra lines in the global options block.
	Global []string
	// AccessTokenLifetime is demo-app's access_token_lifetime; "" for the
	// default.
	AccessTokenLifetime string
	// Gateway are extra lines in the oidc_gateway block.
	Gateway []string
	// Claims are extra "name value" claims of alice.
	Claims []string
}

// gatewaySite is a Caddy with the provider, the gateway and the upstream.
type gatewaySite struct {
	*site
	gateway  string // http://127.0.0.1:port, the gateway's site
	upstream string // host:port of the echoing upstream
	cfg      gatewayConfig
}

// gatewayTemplate is the Caddyfile: the provider with alice and demo-app,
// and the gateway, which leaves /public/ open: a page of the gateway's own
// origin from which a script can call what the gateway protects.
var gatewayTemplate = template.Must(template.New("Caddyfile").Delims("[[", "]]").Parse(`{
	admin [[.Admin]]
	storage file_system [[.Storage]]
	persist_config off
	grace_period 2s
[[- range .Cfg.Global]]
	[[.]]
[[- end]]
}

[[.Issuer]] {
	oidc_provider [[.Issuer]] {
		client demo-app {
			secret {env.[[.SecretEnv]]}
			redirect_uri [[.Gateway]]/oauth2/callback
			post_logout_redirect_uri [[.Gateway]]/ [[.Gateway]]/public/signed-out
			offline_access
[[- with .Cfg.AccessTokenLifetime]]
			access_token_lifetime [[.]]
[[- end]]
		}
		user alice {
			password_hash [[.Hash]]
			claim name "Alice Smith"
			claim email alice@example.com
			claim email_verified true
[[- range .Cfg.Claims]]
			claim [[.]]
[[- end]]
		}
	}
}

[[.Gateway]] {
	handle /public/* {
		header Content-Type "text/html; charset=utf-8"
		respond ` + "`" + `<!doctype html><title>public</title><h1 id="public">public</h1>` + "`" + `
	}
	handle {
		oidc_gateway {
			issuer [[.Issuer]]
			client_id demo-app
			client_secret {env.[[.SecretEnv]]}
			scopes openid profile email offline_access
			header X-User-Name name
			post_logout_redirect /public/signed-out
[[- range .Cfg.Gateway]]
			[[.]]
[[- end]]
		}
		reverse_proxy [[.Upstream]]
	}
}
`))

// newGatewaySite picks free ports and a directory for a test's Caddy and
// writes its Caddyfile; Start runs it.
func newGatewaySite(t testing.TB, cfg gatewayConfig) *gatewaySite {
	t.Helper()
	g := &gatewaySite{
		site:     newEmptySite(t),
		gateway:  fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t)),
		upstream: newUpstream(t),
		cfg:      cfg,
	}
	g.writeGatewayConfig(t)
	return g
}

// writeGatewayConfig writes the Caddyfile of g.cfg.
func (g *gatewaySite) writeGatewayConfig(t testing.TB) {
	t.Helper()
	g.WriteConfig(t, gatewayTemplate, map[string]any{
		"Admin":     g.AdminAddr,
		"Storage":   g.Storage,
		"Issuer":    g.issuer,
		"Gateway":   g.gateway,
		"Upstream":  g.upstream,
		"SecretEnv": secretEnv,
		"Hash":      passwordHash,
		"Cfg":       g.cfg,
	})
}

// reload writes the Caddyfile of cfg and has the running Caddy load it
// with `caddy reload`, which returns once the new configuration serves.
func (g *gatewaySite) reload(t testing.TB, cfg gatewayConfig) {
	t.Helper()
	g.cfg = cfg
	g.writeGatewayConfig(t)
	g.Reload(t)
}

// tokensIssued counts the provider's "token issued" log lines for a grant
// type, from Caddy's JSON log.
func (g *gatewaySite) tokensIssued(t testing.TB, grantType string) int {
	t.Helper()
	b, err := os.ReadFile(g.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(line, `"msg":"token issued"`) && strings.Contains(line, `"grant_type":"`+grantType+`"`) {
			n++
		}
	}
	return n
}

// echo is what the upstream answers: the request it received.
type echo struct {
	URI     string      `json:"uri"`
	Headers http.Header `json:"headers"`
}

// newUpstream starts the app behind the gateway for the test and returns
// its address: it answers every request with the request URI and the
// headers it received, as JSON.
func newUpstream(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(echo{URI: r.RequestURI, Headers: r.Header})
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// cookieNames lists the names in the Cookie headers the upstream received.
func (e echo) cookieNames() []string {
	var names []string
	for _, line := range e.Headers.Values("Cookie") {
		for part := range strings.SplitSeq(line, ";") {
			name, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			names = append(names, name)
		}
	}
	return names
}

// aliceHeaders are the identity headers the upstream must get for alice,
// exactly these values, in exactly these spellings.
func aliceHeaders() map[string]string {
	return map[string]string{
		"X-Auth-Request-User":               idp.DeriveSubject("alice"),
		"X-Auth-Request-Email":              "alice@example.com",
		"X-Auth-Request-Preferred-Username": "alice",
		"X-User-Name":                       "Alice Smith",
	}
}

// checkIdentity checks that the upstream got want as identity headers, and
// no other spelling of a header named in want or in absent, which the
// gateway controls (case-insensitive, with _ or . for -), and no gateway
// cookie.
func checkIdentity(t testing.TB, e echo, want map[string]string, absent ...string) {
	t.Helper()
	norm := func(name string) string {
		return strings.NewReplacer("_", "-", ".", "-").Replace(strings.ToLower(name))
	}
	controlled := map[string]string{} // normalised name: canonical name
	for name := range want {
		controlled[norm(name)] = name
	}
	for _, name := range absent {
		controlled[norm(name)] = name
	}
	for name, values := range e.Headers {
		canonical, ok := controlled[norm(name)]
		if !ok {
			continue
		}
		w, set := want[canonical]
		if !set || name != canonical || len(values) != 1 || values[0] != w {
			t.Errorf("upstream got %s: %q; want only %s: %q", name, values, canonical, w)
		}
	}
	for name, w := range want {
		if _, ok := e.Headers[name]; !ok {
			t.Errorf("upstream got no %s, want %q", name, w)
		}
	}
	for _, name := range e.cookieNames() {
		if strings.HasPrefix(name, "authgate") {
			t.Errorf("upstream got cookie %s: the gateway's cookies must not leave it (Cookie: %q)", name, e.Headers.Values("Cookie"))
		}
	}
}

// parseEcho decodes an upstream answer.
func parseEcho(t testing.TB, body string) echo {
	t.Helper()
	var e echo
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("the upstream's answer is not its JSON echo: %v\n%s", err, body)
	}
	return e
}

// pageEcho reads the upstream's echo the tab shows, after checking that the
// tab shows the page at url and not something else.
func pageEcho(t testing.TB, c *chrome, url string) echo {
	t.Helper()
	if loc := c.location(); loc != url {
		t.Fatalf("the browser is at %s, want %s; the page says:\n%s", loc, url, c.text())
	}
	return parseEcho(t, c.text())
}

// expectLoginPage checks that the tab shows the provider's login form.
func expectLoginPage(t testing.TB, c *chrome, issuer string) {
	t.Helper()
	if loc := c.location(); !strings.HasPrefix(loc, issuer+"/account/login") {
		t.Fatalf("the browser is at %s, want the login page %s/account/login; the page says:\n%s", loc, issuer, c.text())
	}
	c.waitVisible("username")
}

// signIn opens path on the gateway, which sends the browser to log in;
// alice logs in, and the browser comes back to path. It returns what the
// upstream then got.
func signIn(t testing.TB, c *chrome, g *gatewaySite, path string) echo {
	t.Helper()
	c.navigate(g.gateway + path)
	expectLoginPage(t, c, g.issuer)
	if resp := c.logIn("alice", password); resp == nil || resp.Status != http.StatusOK {
		t.Fatalf("after logging in: response %+v, want 200 from the upstream", resp)
	}
	e := pageEcho(t, c, g.gateway+path)
	if e.URI != path {
		t.Errorf("upstream got request URI %q, want %q", e.URI, path)
	}
	return e
}

// apiGet sends a GET to url from outside the browser, with cookie as the
// Cookie header and header's names exactly as spelled there, without
// following redirects. It returns the response with its body read.
func apiGet(t testing.TB, url, cookie string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, values := range header {
		req.Header[name] = values // as spelled: no canonicalisation
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := noRedirectClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, caddytest.ReadBody(t, resp)
}

var noRedirectClient = &http.Client{
	Timeout: 15 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// TestGatewayLogin logs in through the gateway in a browser and checks what
// reaches the upstream: the identity headers, never the client's own
// versions of them, and never the gateway's cookies.
func TestGatewayLogin(t *testing.T) {
	t.Parallel()
	g := newGatewaySite(t, gatewayConfig{})
	c := newChrome(t)
	g.Start(t)

	// An app cookie goes through; the gateway's do not.
	c.setCookie(g.gateway+"/", "app_pref", "dark", false)
	const path = "/headers?from=e2e&n=1"
	e := signIn(t, c, g, path)
	checkIdentity(t, e, aliceHeaders(), "X-Auth-Request-Groups")
	if !slices.Contains(e.cookieNames(), "app_pref") {
		t.Errorf("upstream got cookies %q, want app_pref among them", e.cookieNames())
	}

	t.Run("cookies", func(t *testing.T) {
		var session *network.Cookie
		for _, ck := range c.cookies(g.gateway + "/") {
			switch {
			case ck.Name == "authgate":
				session = ck
			case strings.HasPrefix(ck.Name, "authgate_flow_"):
				t.Errorf("flow cookie %s is still there after the login", ck.Name)
			}
		}
		if session == nil {
			t.Fatal("no authgate session cookie after the login")
		}
		if !session.HTTPOnly || session.SameSite != network.CookieSameSiteLax || session.Path != "/" {
			t.Errorf("session cookie: HttpOnly %v, SameSite %q, Path %q; want HttpOnly, Lax, /",
				session.HTTPOnly, session.SameSite, session.Path)
		}
		if session.Secure {
			t.Error("session cookie is Secure on plain http to 127.0.0.1: browsers would drop it")
		}
	})

	// checkSpoofed checks that no value the client sent for an identity
	// header reached the upstream, and that the controls, which are named
	// like no identity header, did: the client's headers were sent and
	// such spellings do get through when they are not ours.
	checkSpoofed := func(t *testing.T, e echo, controls ...string) {
		t.Helper()
		checkIdentity(t, e, aliceHeaders(), "X-Auth-Request-Groups")
		for name, values := range e.Headers {
			if slices.Contains(controls, name) {
				if len(values) != 1 || values[0] != "attacker-control" {
					t.Errorf("upstream got control %s: %q, want %q", name, values, "attacker-control")
				}
				continue
			}
			for _, v := range values {
				if strings.Contains(v, "attacker") || v == "admins" {
					t.Errorf("upstream got the client's %s: %q", name, v)
				}
			}
		}
		for _, name := range controls {
			if _, ok := e.Headers[name]; !ok {
				t.Errorf("upstream got no control header %s: the client's headers did not get through as spelled", name)
			}
		}
	}

	// Every spelling of an identity header goes, including those of
	// X-Auth-Request-Groups, which alice has none of.
	if !t.Run("spoofed headers from the browser", func(t *testing.T) {
		c.setExtraHeaders(map[string]string{
			"X-Auth-Request-User":               "attacker",
			"x-auth-request-email":              "attacker@evil.test",
			"X-AUTH-REQUEST-PREFERRED-USERNAME": "attacker",
			"X-Auth-Request-Groups":             "admins",
			"x-user-name":                       "attacker",
			"X_Auth_Request_User":               "attacker", // Caddy drops these itself
			"X-Spoof-Control":                   "attacker-control",
		})
		defer c.setExtraHeaders(nil)
		c.navigate(g.gateway + "/headers")
		checkSpoofed(t, pageEcho(t, c, g.gateway+"/headers"), "X-Spoof-Control")
	}) {
		return
	}

	// Caddy drops headers with "_" or "." in their names unless the server
	// expects them, as for a CGI app; then they reach the gateway, which
	// must drop those that an upstream could take for identity headers.
	t.Run("underscore and dot spellings the server lets through", func(t *testing.T) {
		allowed := []string{"X_Auth_Request_User", "X_Auth_Request_Email", "x_auth_request_groups", "X_User_Name", "X_Spoof_Underscore"}
		dotted := []string{"X.Auth.Request.Preferred.Username", "x.user.name", "X.Spoof.Dot"}
		g.reload(t, gatewayConfig{Global: []string{
			"servers " + strings.TrimPrefix(g.gateway, "http://127.0.0.1") + " {",
			"	expected_underscore_headers " + strings.Join(allowed, " "),
			"	expected_dot_headers " + strings.Join(dotted, " "),
			"}",
		}})
		h := http.Header{}
		for _, name := range append(allowed, dotted...) {
			h[name] = []string{"attacker"}
		}
		h["x_auth_request_groups"] = []string{"admins"}
		h["X_Spoof_Underscore"] = []string{"attacker-control"}
		h["X.Spoof.Dot"] = []string{"attacker-control"}
		resp, body := apiGet(t, g.gateway+"/headers", c.cookieHeader(g.gateway+"/"), h)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200 with the browser's session:\n%s", resp.StatusCode, body)
		}
		checkSpoofed(t, parseEcho(t, body), "X_spoof_underscore", "X.spoof.dot")

		// The browser sends them too.
		c.setExtraHeaders(map[string]string{"X_Auth_Request_User": "attacker", "X.User.Name": "attacker", "X_Spoof_Underscore": "attacker-control"})
		defer c.setExtraHeaders(nil)
		c.navigate(g.gateway + "/headers")
		checkSpoofed(t, pageEcho(t, c, g.gateway+"/headers"), "X_spoof_underscore")
	})
}

// TestGatewaySessionEnd: a tampered session cookie gets a fresh login,
// sign-out ends the session at the gateway and at the provider, and
// requests without a session that are not navigations get 401 with the
// login URL.
func TestGatewaySessionEnd(t *testing.T) {
	t.Parallel()
	g := newGatewaySite(t, gatewayConfig{})
	c := newChrome(t)
	g.Start(t)
	signIn(t, c, g, "/headers")

	if !t.Run("tampered cookie", func(t *testing.T) {
		// Without the provider's session, a fresh login shows the form
		// rather than passing through single sign-on.
		c.deleteCookie(g.issuer+"/", idp.SessionCookie)
		ck := c.cookie(g.gateway+"/", "authgate")
		if ck == nil {
			t.Fatal("no session cookie after the login")
		}
		v := []byte(ck.Value)
		i := len(v) / 2
		if v[i] == 'A' {
			v[i] = 'B'
		} else {
			v[i] = 'A'
		}
		c.setCookie(g.gateway+"/", "authgate", string(v), true)

		c.navigate(g.gateway + "/headers?after=tamper")
		expectLoginPage(t, c, g.issuer)
		if ck := c.cookie(g.gateway+"/", "authgate"); ck != nil {
			t.Errorf("the tampered session cookie is still there: the gateway should have cleared it")
		}
		c.logIn("alice", password)
		e := pageEcho(t, c, g.gateway+"/headers?after=tamper")
		checkIdentity(t, e, aliceHeaders())
	}) {
		return
	}

	if !t.Run("sign out", func(t *testing.T) {
		signOut(t, c, g)
		// Without an id_token_hint (the gateway's default) the provider
		// asks first (RP-Initiated Logout 1.0 §2); the user's answer ends
		// its session too, and it sends the browser to the post-logout
		// URI.
		c.submit(t, "logout")
		// With the gateway's state, which only a page it protects reads.
		if loc := c.location(); !strings.HasPrefix(loc, g.gateway+"/public/signed-out?state=") {
			t.Fatalf("after sign-out the browser is at %s, want %s/public/signed-out; the page says:\n%s", loc, g.gateway, c.text())
		}
		c.waitVisible("public")
		for _, ck := range c.cookies(g.gateway + "/") {
			if ck.Name == "authgate" || ck.Name == idp.SessionCookie {
				t.Errorf("cookie %s is still there after sign-out", ck.Name)
			}
		}
	}) {
		return
	}

	if !t.Run("401 for fetch without a session", func(t *testing.T) {
		// The tab is on the gateway's own origin, at a page the gateway
		// does not protect; a script there fetches a protected one.
		if loc := c.location(); !strings.HasPrefix(loc, g.gateway+"/public/") {
			t.Fatalf("the browser is at %s, want a page under %s/public/", loc, g.gateway)
		}
		res := c.fetch("/headers?via=fetch")
		if res.Status != http.StatusUnauthorized {
			t.Fatalf("fetch: status %d, want 401:\n%s", res.Status, res.Body)
		}
		wantLogin := g.gateway + "/oauth2/start?rd=" + url.QueryEscape("/headers?via=fetch")
		checkUnauthorized(t, res.Body, wantLogin)

		// The login URL is where a script sends the user.
		c.navigate(wantLogin)
		expectLoginPage(t, c, g.issuer)
		c.logIn("alice", password)
		checkIdentity(t, pageEcho(t, c, g.gateway+"/headers?via=fetch"), aliceHeaders())
	}) {
		return
	}

	t.Run("401 for an API request without a session", func(t *testing.T) {
		resp, body := apiGet(t, g.gateway+"/headers?via=api", "", http.Header{"Accept": {"application/json"}})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401:\n%s", resp.StatusCode, body)
		}
		if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer ") {
			t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", got)
		}
		if got := resp.Header.Get("Content-Type"); !strings.HasPrefix(got, "application/json") {
			t.Errorf("Content-Type = %q, want application/json", got)
		}
		checkUnauthorized(t, body, g.gateway+"/oauth2/start?rd="+url.QueryEscape("/headers?via=api"))
	})

	t.Run("sign out then a navigation shows the login form", func(t *testing.T) {
		signOut(t, c, g)
		c.submit(t, "logout")
		c.navigate(g.gateway + "/headers")
		// No single sign-on bounce: the provider's session has ended.
		expectLoginPage(t, c, g.issuer)
	})
}

// checkUnauthorized checks the JSON body of a 401 from the gateway.
func checkUnauthorized(t testing.TB, body, wantLogin string) {
	t.Helper()
	var got struct {
		Error    string `json:"error"`
		LoginURL string `json:"login_url"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("401 body is not JSON: %v\n%s", err, body)
	}
	if got.Error != "unauthorized" || got.LoginURL != wantLogin {
		t.Errorf("401 body: error %q, login_url %q; want unauthorized, %q", got.Error, got.LoginURL, wantLogin)
	}
}

// waitPast returns at instant: the tests that need an access token to
// expire have nothing to watch but the clock.
func waitPast(t testing.TB, instant time.Time) {
	t.Helper()
	select {
	case <-time.After(time.Until(instant)):
	case <-t.Context().Done():
		t.Fatal("the test ended while waiting for a token to expire")
	}
}

// TestGatewayRefresh: an access token that has expired is refreshed
// without the user noticing, once per session however many requests come
// at once.
func TestGatewayRefresh(t *testing.T) {
	t.Parallel()
	const lifetime = 5 * time.Second
	g := newGatewaySite(t, gatewayConfig{AccessTokenLifetime: "5s", Gateway: []string{"refresh_before 1s"}})
	c := newChrome(t)
	g.Start(t)
	signIn(t, c, g, "/headers")
	// The token was issued before signIn returned: it has expired by then.
	expired := time.Now().Add(lifetime)
	if n := g.tokensIssued(t, "refresh_token"); n != 0 {
		t.Fatalf("the provider issued %d tokens by refresh right after the login, want 0", n)
	}
	before := c.cookie(g.gateway+"/", "authgate")

	waitPast(t, expired)
	c.navigate(g.gateway + "/headers?after=expiry")
	checkIdentity(t, pageEcho(t, c, g.gateway+"/headers?after=expiry"), aliceHeaders())
	expired = time.Now().Add(lifetime)
	if n := g.tokensIssued(t, "refresh_token"); n != 1 {
		t.Errorf("the provider issued %d tokens by refresh for one expired session, want 1", n)
	}
	if after := c.cookie(g.gateway+"/", "authgate"); after == nil || before == nil || after.Value == before.Value {
		t.Errorf("the session cookie did not change with the refresh")
	}

	t.Run("concurrent", func(t *testing.T) {
		cookie := c.cookieHeader(g.gateway + "/")
		ctx := testContext(t)
		waitPast(t, expired)
		const n = 20
		type result struct {
			status    int
			body      string
			setCookie string
		}
		results := make([]result, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.gateway+"/headers", nil)
				if err != nil {
					results[i].body = err.Error()
					return
				}
				req.Header.Set("Cookie", cookie)
				<-start
				resp, err := noRedirectClient.Do(req)
				if err != nil {
					results[i].body = err.Error()
					return
				}
				var b bytes.Buffer
				b.ReadFrom(resp.Body)
				resp.Body.Close()
				results[i] = result{status: resp.StatusCode, body: b.String()}
				for _, ck := range resp.Cookies() {
					if ck.Name == "authgate" {
						results[i].setCookie = ck.Value
					}
				}
			})
		}
		close(start)
		wg.Wait()
		for i, r := range results {
			if r.status != http.StatusOK {
				t.Errorf("request %d: status %d, want 200:\n%s", i, r.status, r.body)
				continue
			}
			checkIdentity(t, parseEcho(t, r.body), aliceHeaders())
			if r.setCookie == "" || r.setCookie != results[0].setCookie {
				t.Errorf("request %d got a session cookie unlike request 0's: all share one refresh", i)
			}
		}
		if n := g.tokensIssued(t, "refresh_token"); n != 2 {
			t.Errorf("the provider issued %d tokens by refresh in all, want 2: one for the browser's request, one for the 20 at once", n)
		}
	})
}

// TestGatewayReloadAndRestart: a session outlives `caddy reload` with a
// changed configuration and a restart on the same storage, where the
// gateway keeps its session key.
func TestGatewayReloadAndRestart(t *testing.T) {
	t.Parallel()
	g := newGatewaySite(t, gatewayConfig{})
	c := newChrome(t)
	g.Start(t)
	signIn(t, c, g, "/headers")
	if _, err := os.Stat(filepath.Join(g.Storage, "authgate", "gateway", "session_key")); err != nil {
		t.Errorf("the session key is not in Caddy's storage: %v", err)
	}

	if !t.Run("reload", func(t *testing.T) {
		g.reload(t, gatewayConfig{Gateway: []string{"header X-User-Email email"}})
		c.navigate(g.gateway + "/headers?after=reload")
		want := aliceHeaders()
		want["X-User-Email"] = "alice@example.com" // the new configuration serves
		checkIdentity(t, pageEcho(t, c, g.gateway+"/headers?after=reload"), want)
	}) {
		return
	}

	t.Run("restart", func(t *testing.T) {
		g.Stop(t)
		g.Start(t)
		c.navigate(g.gateway + "/headers?after=restart")
		checkIdentity(t, pageEcho(t, c, g.gateway+"/headers?after=restart"), aliceHeaders())
	})
}

// TestGatewayChunkedSession: a session too large for one cookie is split
// over several, and works as one: a large claim set still reaches the
// upstream whole. One too large for the cookie budget even with only the
// claims in use is refused with a page, and leaves the host usable: no
// cookies that would make every later request fail with 431.
func TestGatewayChunkedSession(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		nicknameLen int
		tooLarge    bool
	}{
		{name: "2000-char claim", nicknameLen: 2000},
		{name: "4000-char claim", nicknameLen: 4000},
		{name: "12000-char claim", nicknameLen: 12000, tooLarge: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nickname := strings.Repeat("0123456789", tt.nicknameLen/10)
			g := newGatewaySite(t, gatewayConfig{
				Claims:  []string{"nickname " + nickname},
				Gateway: []string{"header X-Nickname nickname"},
			})
			c := newChrome(t)
			g.Start(t)
			c.navigate(g.gateway + "/headers")
			expectLoginPage(t, c, g.issuer)
			resp := c.logIn("alice", password)

			var names []string
			total := 0
			for _, ck := range c.cookies(g.gateway + "/") {
				if ck.Name != "authgate" && !strings.HasPrefix(ck.Name, "authgate_") || strings.HasPrefix(ck.Name, "authgate_provider_") {
					continue
				}
				names = append(names, ck.Name)
				total += len(ck.Name) + len(ck.Value) + len("; ")
				if ck.Size > 4096 {
					t.Errorf("cookie %s has %d bytes, over browsers' 4096", ck.Name, ck.Size)
				}
			}
			slices.Sort(names)
			if tt.tooLarge {
				if resp.Status != http.StatusBadGateway || slices.Contains(names, "authgate") {
					t.Fatalf("after logging in: %d %s with session cookies %q; want the 502 page and no session", resp.Status, resp.StatusText, names)
				}
				// The host still answers: the provider normally, the gateway
				// with the same page (single sign-on brings the same identity
				// back), never 431.
				if r := c.navigate(g.issuer + "/.well-known/openid-configuration"); r.Status != http.StatusOK {
					t.Fatalf("provider after a refused login: %d", r.Status)
				}
				if r := c.navigate(g.gateway + "/headers"); r.Status != http.StatusBadGateway {
					t.Fatalf("gateway after a refused login: %d, want the 502 page again", r.Status)
				}
				return
			}
			if resp.Status != http.StatusOK {
				t.Fatalf("after logging in: %d %s; the session takes %d cookies %q, %d bytes of Cookie header",
					resp.Status, resp.StatusText, len(names), names, total)
			}
			want := aliceHeaders()
			want["X-Nickname"] = nickname
			checkIdentity(t, pageEcho(t, c, g.gateway+"/headers"), want)
			if !slices.Contains(names, "authgate") || !slices.Contains(names, "authgate_1") {
				t.Errorf("session cookies %q, want authgate and authgate_1", names)
			}
		})
	}
}

// TestGatewaySessionKeyRotation: with session keys B then A, sessions made
// under A stay valid, and cookies written from then on use B.
func TestGatewaySessionKeyRotation(t *testing.T) {
	t.Parallel()
	const (
		keyA     = "e2e-session-key-A-0123456789"
		keyB     = "e2e-session-key-B-0123456789"
		lifetime = 5 * time.Second
	)
	cfg := func(keys ...string) gatewayConfig {
		c := gatewayConfig{AccessTokenLifetime: "5s", Gateway: []string{"refresh_before 1s"}}
		for _, k := range keys {
			c.Gateway = append(c.Gateway, "session_key "+k)
		}
		return c
	}
	g := newGatewaySite(t, cfg(keyA))
	c := newChrome(t)
	g.Start(t)
	signIn(t, c, g, "/headers")
	expired := time.Now().Add(lifetime)
	cookieA := c.cookieHeader(g.gateway + "/")

	g.reload(t, cfg(keyB, keyA))
	c.navigate(g.gateway + "/headers?keys=BA")
	checkIdentity(t, pageEcho(t, c, g.gateway+"/headers?keys=BA"), aliceHeaders())

	// The refresh writes a new cookie, with B.
	waitPast(t, expired)
	c.navigate(g.gateway + "/headers?keys=BA&after=expiry")
	checkIdentity(t, pageEcho(t, c, g.gateway+"/headers?keys=BA&after=expiry"), aliceHeaders())
	if n := g.tokensIssued(t, "refresh_token"); n != 1 {
		t.Errorf("the provider issued %d tokens by refresh, want 1", n)
	}
	cookieB := c.cookieHeader(g.gateway + "/")
	if cookieB == cookieA {
		t.Fatal("the session cookie did not change with the refresh")
	}

	// Only B now: the new cookie is valid, the old one is not.
	g.reload(t, cfg(keyB))
	accept := http.Header{"Accept": {"application/json"}}
	if resp, body := apiGet(t, g.gateway+"/headers?keys=B", cookieB, accept); resp.StatusCode != http.StatusOK {
		t.Errorf("with key B only, the cookie written after the rotation: status %d, want 200:\n%s", resp.StatusCode, body)
	}
	if resp, body := apiGet(t, g.gateway+"/headers?keys=B", cookieA, accept); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("with key B only, the cookie written under A: status %d, want 401:\n%s", resp.StatusCode, body)
	}
}
