package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/internal/caddytest"
)

// These tests run examples/oidc-client-js, IdentityServer4's quickstart
// "JavaScript client" on the legacy oidc-client 1.11, in Chromium against
// the Caddy binary, configured as that quickstart configures it: public
// client js, code flow, post_logout_redirect_uri index.html, its API
// scope, plus offline_access and automatic silent renew with rotated
// refresh tokens, and monitorSession (oidc-client's default). As in
// spa_test.go, the provider and the client are on different origins.

// jsTokenLifetime is client js's access_token_lifetime. oidc-client
// renews 60s (accessTokenExpiringNotificationTime) before expiry, which a
// lifetime this short makes right away: jsExpiringNotice moves that to
// 3s after each token is issued, as in TestSPA.
const (
	jsTokenLifetime  = 10 * time.Second
	jsExpiringNotice = 7
)

// jsSite is a Caddy with the provider, the client's site and its API, and
// the app behind the API.
type jsSite struct {
	*site
	origin    string // http://host:port, the client's origin
	configDir string // holds the test's config.js
	accessLog string // the provider's access log, JSON lines
}

// jsTemplate is the Caddyfile: the client's site serves the files of
// examples/oidc-client-js but for config.js, which the test writes with
// its ports; /api/ takes only bearer tokens with the api1 scope's
// audience.
var jsTemplate = template.Must(template.New("Caddyfile").Delims("[[", "]]").Parse(`{
	admin [[.Admin]]
	storage file_system [[.Storage]]
	persist_config off
	grace_period 2s
}

[[.Issuer]] {
	log {
		output file [[.AccessLog]]
		format json
	}
	oidc_provider [[.Issuer]] {
		[[if .SessionManagement]]session_management[[end]]
		client js {
			public
			redirect_uri [[.Origin]]/callback.html
			redirect_uri [[.Origin]]/silent-renew.html
			post_logout_redirect_uri [[.Origin]]/index.html
			cors_origin [[.Origin]]
			scopes openid profile api1
			offline_access
			access_token_lifetime [[.TokenLifetime]]
			refresh_token_usage one_time
		}
		api_scope api1
		api_resource demo-api api1
		user alice {
			password_hash [[.Hash]]
			claim name "Alice Smith"
		}
	}
}

[[.Origin]] {
	handle /api/* {
		oidc_gateway {
			issuer [[.Issuer]]
			mode bearer
			audience demo-api
			header X-Client-Id client_id
			header X-Scope scope
		}
		reverse_proxy [[.Upstream]]
	}
	handle /config.js {
		root * [[.ConfigDir]]
		file_server
	}
	handle {
		root * [[.Root]]
		@private not path / /index.html /callback.html /silent-renew.html /app.js /node_modules/oidc-client/dist/oidc-client.min.js
		error @private 404
		file_server
	}
}

http://:[[.UpstreamPort]] {
	bind 127.0.0.1
	route /api/identity {
		header Content-Type application/json
		templates {
			mime application/json
		}
		respond ` + "`" + `{{ dict "sub" (.Req.Header.Get "X-Auth-Request-User") "client_id" (.Req.Header.Get "X-Client-Id") "scope" (.Req.Header.Get "X-Scope") | toJson }}` + "`" + `
	}
}
`))

// newJSSite picks ports and a directory for a test's Caddy and writes its
// Caddyfile and the client's config.js, which asks for scope; Start runs
// it. The client's origin is on host: localhost is another site than the
// provider's 127.0.0.1, 127.0.0.1 the same site on another port. It fails
// the test if the example's npm packages are not installed.
func newJSSite(t testing.TB, host, scope string) *jsSite {
	t.Helper()
	return newJSSiteWith(t, host, scope, false)
}

// newJSSiteWith is newJSSite with the provider's session_management on
// or off.
func newJSSiteWith(t testing.TB, host, scope string, sessionManagement bool) *jsSite {
	t.Helper()
	s := newEmptySite(t)
	root, err := filepath.Abs(filepath.Join("..", "examples", "oidc-client-js"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "node_modules", "oidc-client", "dist", "oidc-client.min.js")); err != nil {
		t.Fatalf("the example's oidc-client is not installed (%v): run: (cd examples/oidc-client-js && npm ci)", err)
	}
	js := &jsSite{
		site:      s,
		origin:    fmt.Sprintf("http://%s:%d", host, caddytest.FreePort(t)),
		configDir: filepath.Join(s.Dir, "js-config"),
		accessLog: filepath.Join(s.Dir, "provider-access.log"),
	}
	upstreamPort := caddytest.FreePort(t)
	s.WriteConfig(t, jsTemplate, map[string]any{
		"Admin":         s.AdminAddr,
		"Storage":       s.Storage,
		"Issuer":        s.issuer,
		"Origin":        js.origin,
		"Upstream":      fmt.Sprintf("127.0.0.1:%d", upstreamPort),
		"UpstreamPort":  upstreamPort,
		"TokenLifetime": jsTokenLifetime.String(),
		"Hash":          passwordHash,
		"Root":          root,
		"ConfigDir":     js.configDir,
		"AccessLog":     js.accessLog,

		"SessionManagement": sessionManagement,
	})
	// The settings of examples/oidc-client-js/config.js, with the test's
	// ports and scopes.
	cfg := map[string]any{
		"authority":                           js.issuer,
		"client_id":                           "js",
		"redirect_uri":                        js.origin + "/callback.html",
		"response_type":                       "code",
		"scope":                               scope,
		"post_logout_redirect_uri":            js.origin + "/index.html",
		"automaticSilentRenew":                true,
		"silent_redirect_uri":                 js.origin + "/silent-renew.html",
		"monitorSession":                      true,
		"accessTokenExpiringNotificationTime": jsExpiringNotice,
		"apiURL":                              js.origin + "/api/identity",
	}
	src, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(js.configDir, 0o700); err != nil {
		t.Fatal(err)
	}
	body := "// Written by the end-to-end test.\nwindow.authgateConfig = " + string(src) + ";\n"
	if err := os.WriteFile(filepath.Join(js.configDir, "config.js"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return js
}

// jsState is what the example's page shows.
type jsState struct {
	Status       string `json:"status"`
	Sub          string `json:"sub"`
	Name         string `json:"name"`
	Session      string `json:"session"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	Renewals     string `json:"renewals"`
	Results      string `json:"results"`
}

const jsStateJS = `(() => {
	const text = (id) => { const e = document.getElementById(id); return e ? e.textContent : ""; };
	return {status: text("status"), sub: text("sub"), name: text("name"), session: text("session"),
		access_token: text("access_token"), refresh_token: text("refresh_token"),
		renewals: text("renewals"), results: text("results")};
})()`

func (c *chrome) jsState() jsState {
	c.t.Helper()
	return browserRun(c, "reading the page", chromedp.Evaluate[jsState](jsStateJS))
}

// waitForJSStatus waits until the example's page at path shows status.
func (c *chrome) waitForJSStatus(js *jsSite, path, status string) jsState {
	c.t.Helper()
	c.waitFor("the page "+path+" to show "+status,
		`location.origin === `+jsString(js.origin)+` && location.pathname === `+jsString(path)+` && `+
			`document.getElementById("status") !== null && document.getElementById("status").textContent === `+jsString(status),
		browserStepTimeout)
	return c.jsState()
}

// callJSAPI clicks #api and returns the status and body the page shows.
func (c *chrome) callJSAPI() (int, string) {
	c.t.Helper()
	c.do("clearing #results", chromedp.Evaluate[chromedp.Void](`document.getElementById("results").textContent = ""`))
	c.click("api")
	c.waitFor("the API's answer in #results", `document.getElementById("results").textContent !== ""`, browserStepTimeout)
	shown := c.jsState().Results
	head, body, _ := strings.Cut(shown, "\n")
	var status int
	if _, err := fmt.Sscanf(head, "%d", &status); err != nil {
		c.t.Fatalf("#results shows %q, want a status and the body", shown)
	}
	return status, body
}

// checkJSIdentity checks an answer of the API: 200 and alice's identity
// through client js with scope api1.
func checkJSIdentity(t testing.TB, status int, body string) {
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("API: status %d, want 200:\n%s", status, body)
	}
	var id apiIdentity
	if err := json.Unmarshal([]byte(body), &id); err != nil {
		t.Fatalf("API answer is not the identity JSON: %v\n%s", err, body)
	}
	if sub := idp.DeriveSubject("alice"); id.Sub != sub || id.ClientID != "js" || !strings.Contains(" "+id.Scope+" ", " api1 ") {
		t.Errorf("API answered sub %q, client_id %q, scope %q; want %q, js and the api1 scope", id.Sub, id.ClientID, id.Scope, sub)
	}
}

// providerRequest is a request the provider's access log shows.
type providerRequest struct {
	URI  string // path and query
	Dest string // Sec-Fetch-Dest: document, iframe, empty (a script's fetch)
	Site string // Sec-Fetch-Site
}

// providerRequests reads the provider's access log.
func (js *jsSite) providerRequests(t testing.TB) []providerRequest {
	t.Helper()
	raw, err := os.ReadFile(js.accessLog)
	if err != nil {
		t.Fatal(err)
	}
	var reqs []providerRequest
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var entry struct {
			Request struct {
				URI     string              `json:"uri"`
				Headers map[string][]string `json:"headers"`
			} `json:"request"`
		}
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("the provider's access log has a line that is not JSON: %v", err)
		}
		first := func(name string) string {
			if v := entry.Request.Headers[name]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		reqs = append(reqs, providerRequest{URI: entry.Request.URI, Dest: first("Sec-Fetch-Dest"), Site: first("Sec-Fetch-Site")})
	}
	return reqs
}

// resourcesJS lists the URLs the page has fetched since it loaded
// (Resource Timing): XHRs and iframes.
const resourcesJS = `performance.getEntriesByType("resource").map((e) => e.initiatorType + " " + e.name)`

// TestOIDCClientJS runs IdentityServer4's quickstart JavaScript client on
// oidc-client 1.11: log in, profile, API, silent renew with refresh token
// rotation, log out back to index.html.
func TestOIDCClientJS(t *testing.T) {
	t.Parallel()
	js := newJSSite(t, "localhost", "openid profile offline_access api1")
	c := newChrome(t)
	js.Start(t)
	aliceSub := idp.DeriveSubject("alice")

	var signedIn jsState
	if !t.Run("login", func(t *testing.T) {
		c.navigate(js.origin + "/index.html")
		c.waitForJSStatus(js, "/index.html", "signed out")
		c.click("login")
		c.waitFor("the provider's login page",
			`location.href.startsWith(`+jsString(js.issuer+"/account/login")+`) && document.getElementById("username") !== null`,
			browserStepTimeout)
		c.logIn("alice", password)
		// callback.html sends the browser on to index.html.
		signedIn = c.waitForJSStatus(js, "/index.html", "signed in")
		if signedIn.Sub != aliceSub || signedIn.Name != "Alice Smith" {
			t.Errorf("profile: sub %q, name %q; want %q and Alice Smith (from the ID token and userinfo)", signedIn.Sub, signedIn.Name, aliceSub)
		}
		if signedIn.AccessToken == "" || signedIn.RefreshToken == "" {
			t.Errorf("after login the page shows access token %q and refresh token %q; want both (offline_access)", signedIn.AccessToken, signedIn.RefreshToken)
		}
	}) {
		return
	}

	if !t.Run("call the API", func(t *testing.T) {
		status, body := c.callJSAPI()
		checkJSIdentity(t, status, body)
	}) {
		return
	}

	if !t.Run("silent renew", func(t *testing.T) {
		// With a refresh token, oidc-client 1.11 renews at the token
		// endpoint, not in an iframe; one_time usage rotates the token.
		c.waitFor("a silent renewal", `document.getElementById("renewals").textContent !== "0"`,
			jsTokenLifetime+browserStepTimeout)
		renewed := c.jsState()
		if renewed.Status != "signed in" || renewed.Sub != aliceSub {
			t.Errorf("after the renewal: status %q, sub %q; want signed in as %q", renewed.Status, renewed.Sub, aliceSub)
		}
		if renewed.AccessToken == "" || renewed.AccessToken == signedIn.AccessToken {
			t.Errorf("the access token did not change with the renewal")
		}
		if renewed.RefreshToken == "" || renewed.RefreshToken == signedIn.RefreshToken {
			t.Errorf("the refresh token did not rotate with the renewal (one_time usage)")
		}
		fetched := browserRun(c, "listing the page's requests", chromedp.Evaluate[[]string](resourcesJS))
		var token, frames []string
		for _, f := range fetched {
			if strings.Contains(f, js.issuer+"/connect/token") {
				token = append(token, f)
			}
			if strings.Contains(f, "/connect/authorize") || strings.Contains(f, "silent-renew.html") {
				frames = append(frames, f)
			}
		}
		if len(token) == 0 || len(frames) != 0 {
			t.Errorf("the renewal fetched %q from the token endpoint and %q through an iframe; want the refresh token grant only", token, frames)
		}
		for _, r := range js.providerRequests(t) {
			if strings.HasPrefix(r.URI, "/connect/authorize?") && r.Dest != "document" {
				t.Errorf("the provider got an authorization request in a %q, want none but the login's document: %s", r.Dest, r.URI)
			}
		}
		status, body := c.callJSAPI()
		checkJSIdentity(t, status, body)

		// The rotated refresh token is spent.
		resp, body := postForm(t, js.issuer+"/connect/token", url.Values{
			"grant_type": {"refresh_token"}, "client_id": {"js"}, "refresh_token": {signedIn.RefreshToken},
		}, nil)
		if resp.StatusCode != http.StatusBadRequest || oauthError(t, body) != "invalid_grant" {
			t.Errorf("refresh with the rotated refresh token: status %d, want 400 invalid_grant:\n%s", resp.StatusCode, body)
		}
	}) {
		return
	}

	t.Run("logout", func(t *testing.T) {
		// oidc-client forgets the user first, then sends the browser to
		// the provider's end_session_endpoint with id_token_hint and
		// post_logout_redirect_uri, which ends the provider's session and
		// sends it back to a new index.html: the mark set here is gone.
		c.do("marking the page", chromedp.Evaluate[chromedp.Void](`window.beforeLogout = true`))
		c.click("logout")
		c.waitFor("the redirect back to index.html from the provider",
			`location.origin === `+jsString(js.origin)+` && location.pathname === "/index.html" && window.beforeLogout === undefined`,
			browserStepTimeout)
		after := c.waitForJSStatus(js, "/index.html", "signed out")
		if after.AccessToken != "" || after.Sub != "" {
			t.Errorf("the page still shows a user after logout: %+v", after)
		}
		// The provider's session has ended: login asks for the password.
		c.click("login")
		c.waitFor("the provider's login page",
			`location.href.startsWith(`+jsString(js.issuer+"/account/login")+`) && document.getElementById("username") !== null`,
			browserStepTimeout)
	})
}

// TestOIDCClientJSIframeRenew runs the client with the quickstart's own
// scopes, without offline_access: oidc-client 1.11 then renews in a hidden
// iframe, an authorization request with prompt=none that the provider's
// session answers with a code, redirected to silent-renew.html. The
// provider's pages still refuse to be framed: only its redirect is loaded
// in the iframe. The provider's session cookie is SameSite=Lax, which a
// browser sends in an iframe only when the page is on the same site as
// the provider (app.example.com and login.example.com): here the client
// is on 127.0.0.1 as the provider, on another port. From another site the
// provider sees no session and answers login_required, so a client there
// needs offline_access, as TestOIDCClientJS has.
func TestOIDCClientJSIframeRenew(t *testing.T) {
	t.Parallel()
	js := newJSSite(t, "127.0.0.1", "openid profile api1")
	c := newChrome(t)
	js.Start(t)
	aliceSub := idp.DeriveSubject("alice")

	c.navigate(js.origin + "/index.html")
	c.waitForJSStatus(js, "/index.html", "signed out")
	c.click("login")
	c.logIn("alice", password)
	signedIn := c.waitForJSStatus(js, "/index.html", "signed in")
	if signedIn.RefreshToken != "" {
		t.Fatalf("the client got a refresh token without offline_access")
	}

	c.waitFor("a silent renewal", `document.getElementById("renewals").textContent !== "0"`,
		jsTokenLifetime+browserStepTimeout)
	renewed := c.jsState()
	if renewed.Status != "signed in" || renewed.Sub != aliceSub || renewed.AccessToken == "" || renewed.AccessToken == signedIn.AccessToken {
		t.Errorf("after the renewal: status %q, sub %q, a new access token %v; want signed in as %q with a new token",
			renewed.Status, renewed.Sub, renewed.AccessToken != signedIn.AccessToken, aliceSub)
	}
	// The provider's log shows the renewal's authorization request,
	// loaded in an iframe, and the code exchange after it.
	var authorize, framed []providerRequest
	for _, r := range js.providerRequests(t) {
		if strings.HasPrefix(r.URI, "/connect/authorize?") {
			authorize = append(authorize, r)
			if r.Dest == "iframe" && strings.Contains(r.URI, "prompt=none") {
				framed = append(framed, r)
			}
		}
	}
	if len(authorize) != 2 || len(framed) != 1 {
		t.Errorf("the provider got the authorization requests %+v; want the login's, then the renewal's in an iframe with prompt=none", authorize)
	}
	fetched := browserRun(c, "listing the page's requests", chromedp.Evaluate[[]string](resourcesJS))
	if !slices.ContainsFunc(fetched, func(f string) bool { return f == "xmlhttprequest "+js.issuer+"/connect/token" }) {
		t.Errorf("the page fetched %q; want the renewal's code exchange at the token endpoint", fetched)
	}
	status, body := c.callJSAPI()
	checkJSIdentity(t, status, body)
}

// TestOIDCClientJSMonitorSession runs the quickstart's client with the
// provider's session_management on, on the same site as the provider:
// oidc-client 1.11's monitorSession polls the check_session_iframe, which
// answers "unchanged" while alice is signed in; when she signs out at the
// provider's end_session_endpoint in another tab, the iframe answers
// "changed", the client's prompt=none check gets login_required, and the
// page shows the userSignedOut event.
func TestOIDCClientJSMonitorSession(t *testing.T) {
	t.Parallel()
	js := newJSSiteWith(t, "127.0.0.1", "openid profile offline_access api1", true)
	c := newChrome(t)
	js.Start(t)

	if !t.Run("sign in", func(t *testing.T) {
		c.navigate(js.origin + "/index.html")
		c.waitForJSStatus(js, "/index.html", "signed out")
		c.click("login")
		c.logIn("alice", password)
		if st := c.waitForJSStatus(js, "/index.html", "signed in"); st.Sub != idp.DeriveSubject("alice") {
			t.Errorf("signed in as %q", st.Sub)
		}
	}) {
		return
	}

	if !t.Run("unchanged while signed in", func(t *testing.T) {
		c.listenCheckSession(js.issuer)
		// oidc-client checks every 2s (checkSessionInterval).
		c.waitFor("two unchanged answers from the check_session_iframe",
			`(window.opAnswers.unchanged || 0) >= 2`, 3*time.Second+browserStepTimeout)
		answers := browserRun(c, "reading the answers", chromedp.Evaluate[map[string]int](`window.opAnswers`))
		if answers["changed"] != 0 || answers["error"] != 0 {
			t.Errorf("the iframe answered %v; want only unchanged", answers)
		}
		if st := c.jsState(); st.Status != "signed in" || st.Session != "" {
			t.Errorf("the page shows status %q, session %q; want signed in, nothing about the session", st.Status, st.Session)
		}
	}) {
		return
	}

	t.Run("sign-out in another tab", func(t *testing.T) {
		other := c.newTab(t)
		other.navigate(js.issuer + "/connect/endsession")
		other.waitVisible("logout")
		other.click("logout")
		other.waitFor("the signed-out page", `document.body.innerText.includes("You are signed out.")`, browserStepTimeout)

		c.waitFor("the page to show the userSignedOut event",
			`document.getElementById("session").textContent === "signed out at the provider"`, 3*time.Second+browserStepTimeout)
		if st := c.waitForJSStatus(js, "/index.html", "signed out"); st.AccessToken != "" {
			t.Errorf("the page still shows a user: %+v", st)
		}
		var framed []providerRequest
		for _, r := range js.providerRequests(t) {
			if strings.HasPrefix(r.URI, "/connect/authorize?") && r.Dest == "iframe" && strings.Contains(r.URI, "prompt=none") {
				framed = append(framed, r)
			}
		}
		if len(framed) == 0 {
			t.Errorf("the provider got no prompt=none check in an iframe after the change")
		}
	})
}
