package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/internal/caddytest"
)

// These tests run the SPA of examples/spa (oidc-client-ts, public client
// spa) in a real Chromium against the Caddy binary, with a Caddyfile
// modelled on the demo's: the provider, the SPA's site with its
// bearer-only API, and the app that answers the API.
//
// Browsers share cookies across the ports of one host, and an origin is
// scheme, host and port: the provider is on http://127.0.0.1:<port> and
// the SPA on http://localhost:<port>, so that they are different sites as
// in a deployment, and the SPA's calls to the provider are cross-origin,
// allowed by cors_origin.

const (
	// serviceSecret is the secret of client service; apiSecret is the
	// secret of api_resource demo-api, with which the API's gateway
	// introspects tokens. Both are written into the test's Caddyfile.
	serviceSecret = "e2e-service-secret"
	apiSecret     = "e2e-api-secret"

	// spaTokenLifetime is the spa client's access_token_lifetime, and
	// spaExpiringNotice the SPA's accessTokenExpiringNotificationTimeInSeconds:
	// oidc-client-ts renews that long before expiry, here 3s after each
	// token is issued. The lifetime is longer than the gap so that a token
	// taken right after a renewal still has several seconds to live when
	// the test checks it after sign-out.
	spaTokenLifetime  = 10 * time.Second
	spaExpiringNotice = 7
)

// spaSite is a Caddy with the provider, the SPA and its API, the app
// behind the API, and a page on an origin no client registered.
type spaSite struct {
	*site
	spa       string // http://localhost:port, the SPA's origin
	elsewhere string // http://127.0.0.1:port, an origin no client registered
	spaRoot   string // examples/spa of this repository
	configDir string // holds the test's config.js
}

// spaTemplate is the Caddyfile. The SPA's site serves the SPA's files
// from examples/spa as the demo does, but for config.js, which the test
// writes with its own ports; /api/ asks the provider about every token
// (introspect, cached 1s), /local/api/ checks tokens only as JWTs.
var spaTemplate = template.Must(template.New("Caddyfile").Delims("[[", "]]").Parse(`{
	admin [[.Admin]]
	storage file_system [[.Storage]]
	persist_config off
	grace_period 2s
}

[[.Issuer]] {
	oidc_provider [[.Issuer]] {
		client spa {
			public
			redirect_uri [[.SPA]]/callback.html
			post_logout_redirect_uri [[.SPA]]/
			cors_origin [[.SPA]]
			scopes openid profile api
			offline_access
			access_token_lifetime [[.TokenLifetime]]
			refresh_token_usage one_time
			refresh_token_expiration sliding
			absolute_refresh_token_lifetime 1h
			sliding_refresh_token_lifetime 10m
		}
		client service {
			secret [[.ServiceSecret]]
			client_credentials
			scopes api
		}
		api_scope api
		api_resource demo-api api {
			secret [[.APISecret]]
		}
		user alice {
			password_hash [[.Hash]]
			claim name "Alice Smith"
			claim email alice@example.com
		}
	}
}

[[.SPA]] {
	handle /api/* {
		oidc_gateway {
			issuer [[.Issuer]]
			mode bearer
			audience demo-api
			introspect 1s
			client_id demo-api
			client_secret [[.APISecret]]
			header X-Client-Id client_id
			header X-Scope scope
		}
		reverse_proxy [[.Upstream]]
	}
	handle_path /local/* {
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
		root * [[.SPARoot]]
		@private not path / /index.html /callback.html /app.js /node_modules/oidc-client-ts/dist/browser/*
		error @private 404
		file_server
	}
}

[[.Elsewhere]] {
	header Content-Type "text/html; charset=utf-8"
	respond ` + "`" + `<!doctype html><title>elsewhere</title><h1 id="elsewhere">elsewhere</h1>` + "`" + `
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

// newSPASite picks free ports and a directory for a test's Caddy, and
// writes its Caddyfile and the SPA's config.js; Start runs it. It fails
// the test if the SPA's npm packages are not installed.
func newSPASite(t testing.TB) *spaSite {
	t.Helper()
	s := newEmptySite(t)
	spaRoot, err := filepath.Abs(filepath.Join("..", "examples", "spa"))
	if err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(spaRoot, "node_modules", "oidc-client-ts", "dist", "browser", "oidc-client-ts.min.js")
	if _, err := os.Stat(lib); err != nil {
		t.Fatalf("the SPA's oidc-client-ts is not installed (%v): run: (cd examples/spa && npm ci)", err)
	}
	sp := &spaSite{
		site:      s,
		spa:       fmt.Sprintf("http://localhost:%d", caddytest.FreePort(t)),
		elsewhere: fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t)),
		spaRoot:   spaRoot,
		configDir: filepath.Join(s.Dir, "spa-config"),
	}
	// The app's site matches any host, as the demo's: reverse_proxy
	// passes the SPA's Host on.
	upstreamPort := caddytest.FreePort(t)
	s.WriteConfig(t, spaTemplate, map[string]any{
		"Admin":         s.AdminAddr,
		"Storage":       s.Storage,
		"Issuer":        s.issuer,
		"SPA":           sp.spa,
		"Elsewhere":     sp.elsewhere,
		"Upstream":      fmt.Sprintf("127.0.0.1:%d", upstreamPort),
		"UpstreamPort":  upstreamPort,
		"TokenLifetime": spaTokenLifetime.String(),
		"ServiceSecret": serviceSecret,
		"APISecret":     apiSecret,
		"Hash":          passwordHash,
		"SPARoot":       spaRoot,
		"ConfigDir":     sp.configDir,
	})
	sp.writeSPAConfig(t)
	return sp
}

// writeSPAConfig writes the config.js the SPA's site serves: the settings
// of examples/spa/config.js, pointed at the test's provider, renewing
// spaExpiringNotice seconds before expiry.
func (sp *spaSite) writeSPAConfig(t testing.TB) {
	t.Helper()
	cfg := map[string]any{
		"authority":                sp.issuer,
		"client_id":                "spa",
		"redirect_uri":             sp.spa + "/callback.html",
		"post_logout_redirect_uri": sp.spa + "/",
		"response_type":            "code",
		"scope":                    "openid profile api offline_access",
		"automaticSilentRenew":     true,
		"accessTokenExpiringNotificationTimeInSeconds": spaExpiringNotice,
		"revokeTokensOnSignout":                        true,
		"revokeTokenTypes":                             []string{"access_token", "refresh_token"},
		"apiURL":                                       sp.spa + "/api/identity",
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(sp.configDir, 0o700); err != nil {
		t.Fatal(err)
	}
	src := "// Written by the end-to-end test.\nwindow.authgateConfig = " + string(js) + ";\n"
	if err := os.WriteFile(filepath.Join(sp.configDir, "config.js"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
}

// spaState is what the SPA's index page shows.
type spaState struct {
	Status       string `json:"status"`
	Sub          string `json:"sub"`
	IDToken      string `json:"id_token"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresAt    string `json:"expires_at"`
	API          string `json:"api"`
}

// spaStateJS reads spaState from the page.
const spaStateJS = `(() => {
	const text = (id) => { const e = document.getElementById(id); return e ? e.textContent : ""; };
	return {status: text("status"), sub: text("sub"), id_token: text("id_token"),
		access_token: text("access_token"), refresh_token: text("refresh_token"),
		expires_at: text("expires_at"), api: text("api")};
})()`

// spaState reads what the SPA's page shows.
func (c *chrome) spaState() spaState {
	c.t.Helper()
	return browserRun(c, "reading the SPA's page", chromedp.Evaluate[spaState](spaStateJS))
}

// waitFor evaluates the JavaScript expression in the tab's page every 50ms
// until it is true, for at most timeout, through navigations: an
// evaluation that fails while a page is replaced is tried again.
func (c *chrome) waitFor(what, expression string, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(c.ctx, time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expression))
		cancel()
		if err == nil && ok {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-c.ctx.Done():
			c.t.Fatalf("waiting for %s: the browser has gone: %v", what, c.ctx.Err())
		}
	}
	var page string
	ctx, cancel := context.WithTimeout(c.ctx, time.Second)
	defer cancel()
	if v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`)); err == nil {
		page = v
	}
	c.t.Fatalf("waiting for %s: not after %v (last error: %v); the page:\n%s", what, timeout, lastErr, page)
}

// waitForStatus waits until the SPA's page at the SPA's origin shows
// status.
func (c *chrome) waitForStatus(sp *spaSite, status string) spaState {
	c.t.Helper()
	c.waitFor("the SPA to show "+status,
		`location.origin === `+jsString(sp.spa)+` && location.pathname === "/" && `+
			`document.getElementById("status") !== null && document.getElementById("status").textContent === `+jsString(status),
		browserStepTimeout)
	return c.spaState()
}

// click clicks the element with id, as a user would.
func (c *chrome) click(id string) {
	c.t.Helper()
	c.do("clicking #"+id, chromedp.Click(chromedp.ID(id)))
}

// callAPI clicks the SPA's #callapi and returns the status and body the
// page then shows in #api.
func (c *chrome) callAPI() (int, string) {
	c.t.Helper()
	c.do("clearing #api", chromedp.Evaluate[chromedp.Void](`document.getElementById("api").textContent = ""`))
	c.click("callapi")
	c.waitFor("the API's answer in #api", `document.getElementById("api").textContent !== ""`, browserStepTimeout)
	shown := c.spaState().API
	head, body, _ := strings.Cut(shown, "\n")
	var status int
	if _, err := fmt.Sscanf(head, "%d", &status); err != nil {
		c.t.Fatalf("#api shows %q, want a status and the body", shown)
	}
	return status, body
}

// apiIdentity is what the app behind the API answers: the identity the
// API's gateway passed on.
type apiIdentity struct {
	Sub      string `json:"sub"`
	ClientID string `json:"client_id"`
	Scope    string `json:"scope"`
}

// checkIdentityAnswer checks an answer of the API: 200 and the JSON of sub
// and clientID with the api scope.
func checkIdentityAnswer(t testing.TB, status int, body, sub, clientID string) {
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("API: status %d, want 200:\n%s", status, body)
	}
	var id apiIdentity
	if err := json.Unmarshal([]byte(body), &id); err != nil {
		t.Fatalf("API answer is not the identity JSON: %v\n%s", err, body)
	}
	if id.Sub != sub || id.ClientID != clientID || !strings.Contains(" "+id.Scope+" ", " api ") {
		t.Errorf("API answered sub %q, client_id %q, scope %q; want %q, %q and the api scope", id.Sub, id.ClientID, id.Scope, sub, clientID)
	}
}

// bearerGet sends a GET to url with the access token, from outside the
// browser, and returns the response with its body read.
func bearerGet(t testing.TB, url, token string) (*http.Response, string) {
	t.Helper()
	return apiGet(t, url, "", http.Header{"Authorization": {"Bearer " + token}})
}

// postForm posts form to url from outside the browser, with extra headers,
// without following redirects, and returns the response with its body
// read.
func postForm(t testing.TB, url string, form url.Values, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, url, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for name, values := range header {
		req.Header[name] = values
	}
	resp, err := noRedirectClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, caddytest.ReadBody(t, resp)
}

// oauthError decodes the error of a JSON OAuth error answer.
func oauthError(t testing.TB, body string) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("the answer is not a JSON OAuth error: %v\n%s", err, body)
	}
	return e.Error
}

// corsFetch is what a script got from a POST to the token endpoint:
// the status it could read, or the error the promise rejected with.
type corsFetch struct {
	Status int    `json:"status"`
	Body   string `json:"body"`
	Error  string `json:"error"`
}

// fetchTokenEndpoint posts a refresh_token grant with a junk token to the
// token endpoint from the tab's page, as a script there would.
func (c *chrome) fetchTokenEndpoint(tokenURL string) corsFetch {
	c.t.Helper()
	script := `fetch(` + jsString(tokenURL) + `, {
		method: "POST",
		headers: {"Content-Type": "application/x-www-form-urlencoded"},
		body: "grant_type=refresh_token&client_id=spa&refresh_token=junk",
	}).then(
		async (r) => ({status: r.status, body: await r.text(), error: ""}),
		(e) => ({status: 0, body: "", error: String(e)}))`
	return browserRun(c, "fetch "+tokenURL, chromedp.Evaluate[corsFetch](script, chromedp.EvalAwaitPromise))
}

// TestSPA runs the SPA as its user does: sign in at the provider, call
// the API, let oidc-client-ts renew the tokens, sign out with revocation;
// and checks that only the SPA's origin may read the provider's answers.
func TestSPA(t *testing.T) {
	t.Parallel()
	sp := newSPASite(t)
	c := newChrome(t)
	sp.Start(t)
	aliceSub := idp.DeriveSubject("alice")
	tokenURL := sp.issuer + "/connect/token"

	var signedIn spaState
	if !t.Run("sign in", func(t *testing.T) {
		c.navigate(sp.spa + "/")
		c.waitForStatus(sp, "signed out")
		c.click("signin")
		c.waitFor("the provider's login page",
			`location.href.startsWith(`+jsString(sp.issuer+"/account/login")+`) && document.getElementById("username") !== null`,
			browserStepTimeout)
		c.logIn("alice", password)
		signedIn = c.waitForStatus(sp, "signed in")
		if signedIn.Sub != aliceSub {
			t.Errorf("#sub = %q, want alice's subject %q", signedIn.Sub, aliceSub)
		}
		for name, v := range map[string]string{
			"id_token": signedIn.IDToken, "access_token": signedIn.AccessToken,
			"refresh_token": signedIn.RefreshToken, "expires_at": signedIn.ExpiresAt,
		} {
			if v == "" {
				t.Errorf("#%s is empty after sign-in", name)
			}
		}
	}) {
		return
	}

	if !t.Run("call the API", func(t *testing.T) {
		status, body := c.callAPI()
		checkIdentityAnswer(t, status, body, aliceSub, "spa")
	}) {
		return
	}

	if !t.Run("renew", func(t *testing.T) {
		// oidc-client-ts renews spaExpiringNotice seconds before expiry
		// with the refresh token, which one_time usage rotates.
		c.waitFor("the SPA to renew its access token",
			`document.getElementById("access_token").textContent !== ""`+
				` && document.getElementById("access_token").textContent !== `+jsString(signedIn.AccessToken),
			spaTokenLifetime+browserStepTimeout)
		renewed := c.spaState()
		if renewed.Status != "signed in" || renewed.Sub != aliceSub {
			t.Errorf("after the renewal: status %q, sub %q; want signed in as %q", renewed.Status, renewed.Sub, aliceSub)
		}
		if renewed.RefreshToken == "" || renewed.RefreshToken == signedIn.RefreshToken {
			t.Errorf("the refresh token did not rotate with the renewal (one_time usage)")
		}
		status, body := c.callAPI()
		checkIdentityAnswer(t, status, body, aliceSub, "spa")
	}) {
		return
	}

	if !t.Run("sign out", func(t *testing.T) {
		// Sign out right after a renewal, so that none runs during the
		// sign-out and the token taken here is the one it revokes: the
		// script reads the tokens and clicks in one go. Just before, the
		// SPA calls the API with that token, whose gateway caches the
		// provider's answer that it is active.
		current := c.spaState().AccessToken
		c.waitFor("the next renewal",
			`document.getElementById("access_token").textContent !== ""`+
				` && document.getElementById("access_token").textContent !== `+jsString(current),
			spaTokenLifetime+browserStepTimeout)
		renewedAt := time.Now() // the access token was issued just before
		renewed := c.spaState()
		status, body := c.callAPI()
		checkIdentityAnswer(t, status, body, aliceSub, "spa")
		before := browserRun(c, "reading the tokens and clicking #signout", chromedp.Evaluate[spaState](
			`(() => { const s = `+spaStateJS+`; document.getElementById("signout").click(); return s; })()`))
		if before.AccessToken != renewed.AccessToken {
			t.Fatalf("the SPA renewed its tokens again within %v: the test cannot tell which token sign-out revoked", time.Since(renewedAt))
		}
		signedOutAt := time.Now()
		after := c.waitForStatus(sp, "signed out")
		if after.AccessToken != "" || after.RefreshToken != "" || after.Sub != "" {
			t.Errorf("the SPA still shows tokens after sign-out: %+v", after)
		}
		if loc := c.location(); !strings.HasPrefix(loc, sp.spa+"/") {
			t.Errorf("after sign-out the browser is at %s, want the post-logout URI %s/", loc, sp.spa)
		}

		// First what is bound by the token's expiry: the API that checks
		// tokens only as JWTs still takes it, until it expires.
		resp, body := bearerGet(t, sp.spa+"/local/api/identity", before.AccessToken)
		if elapsed := time.Since(renewedAt); resp.StatusCode != http.StatusOK && elapsed > spaTokenLifetime-time.Second {
			t.Fatalf("the test was too slow: the access token (lifetime %v) had expired %v after it was issued, before the check", spaTokenLifetime, elapsed)
		}
		checkIdentityAnswer(t, resp.StatusCode, body, aliceSub, "spa")

		// The provider refuses the revoked access token...
		resp, body = bearerGet(t, sp.issuer+"/connect/userinfo", before.AccessToken)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
			t.Errorf("userinfo with the revoked access token: status %d, WWW-Authenticate %q; want 401 with invalid_token:\n%s",
				resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
		// ... and so does the API that asks it, once its cache (1s) has
		// let go of the answer from before the sign-out.
		deadline := signedOutAt.Add(5 * time.Second)
		for {
			resp, body = bearerGet(t, sp.spa+"/api/identity", before.AccessToken)
			if resp.StatusCode == http.StatusUnauthorized {
				t.Logf("the introspecting API refuses the revoked access token %v after the click on #signout",
					time.Since(signedOutAt).Round(time.Millisecond))
				break
			}
			if resp.StatusCode != http.StatusOK || time.Now().After(deadline) {
				t.Errorf("the introspecting API answers %d to the revoked access token %v after sign-out, want 401 within 5s:\n%s",
					resp.StatusCode, time.Since(signedOutAt).Round(time.Millisecond), body)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		// The refresh token was revoked too.
		resp, body = postForm(t, tokenURL, url.Values{
			"grant_type": {"refresh_token"}, "client_id": {"spa"}, "refresh_token": {before.RefreshToken},
		}, nil)
		if resp.StatusCode != http.StatusBadRequest || oauthError(t, body) != "invalid_grant" {
			t.Errorf("refresh with the revoked refresh token: status %d, want 400 invalid_grant:\n%s", resp.StatusCode, body)
		}
		// An unregistered post-logout URI gets the signed-out page, not
		// a redirect, even with the client's own ID token as the hint.
		q := url.Values{"id_token_hint": {before.IDToken}, "post_logout_redirect_uri": {sp.spa + "/not-registered"}}
		resp, body = apiGet(t, sp.issuer+"/connect/endsession?"+q.Encode(), "", nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" || !strings.Contains(body, "signed out") {
			t.Errorf("end session with an unregistered post_logout_redirect_uri: status %d, Location %q; want 200 and the signed-out page:\n%s",
				resp.StatusCode, resp.Header.Get("Location"), body)
		}
	}) {
		return
	}

	t.Run("CORS", func(t *testing.T) {
		// A script on an origin no client registered sends the request,
		// but may not read the answer: fetch rejects.
		c.navigate(sp.elsewhere + "/")
		c.waitVisible("elsewhere")
		got := c.fetchTokenEndpoint(tokenURL)
		if got.Error == "" || !strings.Contains(got.Error, "Failed to fetch") {
			t.Errorf("fetch from %s: %+v; want the promise rejected with TypeError: Failed to fetch", sp.elsewhere, got)
		}
		// The SPA's origin reads it.
		c.navigate(sp.spa + "/")
		c.waitForStatus(sp, "signed out")
		got = c.fetchTokenEndpoint(tokenURL)
		if got.Error != "" || got.Status != http.StatusBadRequest || !strings.Contains(got.Body, "invalid_grant") {
			t.Errorf("fetch from the SPA's origin: %+v; want status 400 with invalid_grant, readable", got)
		}
	})
}
