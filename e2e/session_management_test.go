package e2e_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
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

// OpenID Connect Session Management 1.0 in Chromium: the SPA of
// examples/spa (oidc-client-ts, monitorSession) polls the provider's
// check_session_iframe, and notices a sign-out made at the provider in
// another tab. The SPA is on 127.0.0.1 as the provider, on another port:
// the same site, where the provider's SameSite=Lax cookies reach its
// frames.

// smTemplate is the Caddyfile: the provider with session management, the
// SPA's files with the test's config.js, and a page on an origin that no
// client registered.
var smTemplate = template.Must(template.New("Caddyfile").Delims("[[", "]]").Parse(`{
	admin [[.Admin]]
	storage file_system [[.Storage]]
	persist_config off
	grace_period 2s
}

[[.Issuer]] {
	oidc_provider [[.Issuer]] {
		session_management
		client spa {
			public
			redirect_uri [[.SPA]]/callback.html
			redirect_uri [[.SPA]]/silent-callback.html
			post_logout_redirect_uri [[.SPA]]/
			cors_origin [[.SPA]]
			scopes openid profile
			offline_access
		}
		user alice {
			password_hash [[.Hash]]
			claim name "Alice Smith"
		}
	}
}

[[.SPA]] {
	handle /config.js {
		root * [[.ConfigDir]]
		file_server
	}
	handle {
		root * [[.SPARoot]]
		@private not path / /index.html /callback.html /silent-callback.html /app.js /node_modules/oidc-client-ts/dist/browser/*
		error @private 404
		file_server
	}
}

[[.Elsewhere]] {
	header Content-Type "text/html; charset=utf-8"
	respond ` + "`" + `<!doctype html><title>elsewhere</title><h1 id="elsewhere">elsewhere</h1>` + "`" + `
}
`))

// newSMSite writes the Caddyfile and the SPA's config.js, its settings as
// examples/spa/config.js has them (monitorSession, silent_redirect_uri),
// pointed at the test's provider; Start runs it.
func newSMSite(t testing.TB) *spaSite {
	t.Helper()
	s := newEmptySite(t)
	spaRoot, err := filepath.Abs(filepath.Join("..", "examples", "spa"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(spaRoot, "node_modules", "oidc-client-ts", "dist", "browser", "oidc-client-ts.min.js")); err != nil {
		t.Fatalf("the SPA's oidc-client-ts is not installed (%v): run: (cd examples/spa && npm ci)", err)
	}
	sp := &spaSite{
		site:      s,
		spa:       fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t)),
		elsewhere: fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t)),
		spaRoot:   spaRoot,
		configDir: filepath.Join(s.Dir, "spa-config"),
	}
	s.WriteConfig(t, smTemplate, map[string]any{
		"Admin":     s.AdminAddr,
		"Storage":   s.Storage,
		"Issuer":    s.issuer,
		"SPA":       sp.spa,
		"Elsewhere": sp.elsewhere,
		"Hash":      passwordHash,
		"SPARoot":   spaRoot,
		"ConfigDir": sp.configDir,
	})
	cfg := map[string]any{
		"authority":                sp.issuer,
		"client_id":                "spa",
		"redirect_uri":             sp.spa + "/callback.html",
		"post_logout_redirect_uri": sp.spa + "/",
		"response_type":            "code",
		"scope":                    "openid profile offline_access",
		"automaticSilentRenew":     true,
		"monitorSession":           true,
		"silent_redirect_uri":      sp.spa + "/silent-callback.html",
	}
	src, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(sp.configDir, 0o700); err != nil {
		t.Fatal(err)
	}
	body := "// Written by the end-to-end test.\nwindow.authgateConfig = " + string(src) + ";\n"
	if err := os.WriteFile(filepath.Join(sp.configDir, "config.js"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return sp
}

// listenCheckSession makes the tab's page count the answers of the
// provider's check_session_iframe, by kind, in window.opAnswers.
func (c *chrome) listenCheckSession(issuer string) {
	c.t.Helper()
	c.do("listening to the check_session_iframe", chromedp.Evaluate[chromedp.Void](`(() => {
		window.opAnswers = {};
		window.addEventListener("message", (e) => {
			if (e.origin === `+jsString(issuer)+` && typeof e.data === "string") {
				window.opAnswers[e.data] = (window.opAnswers[e.data] || 0) + 1;
			}
		});
	})()`))
}

// TestSessionManagementSPA: oidc-client-ts with monitorSession. While
// alice is signed in, the check_session_iframe answers the SPA's checks
// "unchanged"; a sign-out at the provider in another tab makes it answer
// "changed", the SPA's prompt=none check gets login_required, and the SPA
// shows userSignedOut.
func TestSessionManagementSPA(t *testing.T) {
	t.Parallel()
	sp := newSMSite(t)
	c := newChrome(t)
	sp.Start(t)

	if !t.Run("sign in", func(t *testing.T) {
		c.navigate(sp.spa + "/")
		c.waitForStatus(sp, "signed out")
		c.click("signin")
		c.logIn("alice", password)
		if st := c.waitForStatus(sp, "signed in"); st.Sub != idp.DeriveSubject("alice") {
			t.Errorf("signed in as %q", st.Sub)
		}
		// The provider's state cookie is readable by the iframe's script.
		ck := c.cookie(sp.issuer+"/connect/checksession", idp.BrowserStateCookie)
		if ck == nil || ck.HTTPOnly || ck.Value == "" {
			t.Fatalf("the OP browser state cookie: %+v; want one the iframe's script can read", ck)
		}
	}) {
		return
	}

	if !t.Run("unchanged while signed in", func(t *testing.T) {
		c.listenCheckSession(sp.issuer)
		// oidc-client-ts checks every 2s.
		c.waitFor("two unchanged answers from the check_session_iframe",
			`(window.opAnswers.unchanged || 0) >= 2`, 3*time.Second+browserStepTimeout)
		answers := browserRun(c, "reading the answers", chromedp.Evaluate[map[string]int](`window.opAnswers`))
		if answers["changed"] != 0 || answers["error"] != 0 {
			t.Errorf("the iframe answered %v; want only unchanged", answers)
		}
		if st := c.spaState(); st.Status != "signed in" {
			t.Errorf("the SPA shows %q, want signed in", st.Status)
		}
	}) {
		return
	}

	if !t.Run("a new login in another tab", func(t *testing.T) {
		// Another login of alice (prompt=login, as another app would ask)
		// gives a new OP browser state: the iframe answers changed, and
		// the SPA's prompt=none check finds alice still signed in, which
		// is userSessionChanged, not a sign-out.
		other := c.newTab(t)
		_, challenge := pkceChallenge()
		other.navigate(sp.issuer + "/connect/authorize?" + url.Values{
			"client_id": {"spa"}, "redirect_uri": {sp.spa + "/callback.html"}, "response_type": {"code"},
			"scope": {"openid"}, "prompt": {"login"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"},
		}.Encode())
		other.logIn("alice", password)
		c.waitFor("the SPA to notice the new session",
			`document.getElementById("session").textContent === "session changed at the provider"`, 3*time.Second+browserStepTimeout)
		if st := c.spaState(); st.Status != "signed in" {
			t.Errorf("the SPA shows %q, want still signed in", st.Status)
		}
		// It watches the new session: unchanged again.
		c.do("resetting the answers", chromedp.Evaluate[chromedp.Void](`window.opAnswers = {}`))
		c.waitFor("an unchanged answer for the new session", `(window.opAnswers.unchanged || 0) >= 1`, 3*time.Second+browserStepTimeout)
	}) {
		return
	}

	t.Run("sign-out in another tab", func(t *testing.T) {
		other := c.newTab(t)
		other.navigate(sp.issuer + "/account/logout")
		other.waitVisible("logout")
		other.click("logout")
		other.waitFor("the signed-out page", `document.body.innerText.includes("You are signed out.")`, browserStepTimeout)

		c.waitFor("the SPA to notice the sign-out",
			`document.getElementById("session").textContent === "signed out at the provider"`, 3*time.Second+browserStepTimeout)
		if st := c.waitForStatus(sp, "signed out"); st.AccessToken != "" {
			t.Errorf("the SPA still shows a user: %+v", st)
		}
		answers := browserRun(c, "reading the answers", chromedp.Evaluate[map[string]int](`window.opAnswers`))
		if answers["changed"] == 0 {
			t.Errorf("the iframe answered %v; want changed after the sign-out", answers)
		}
	})
}

// pkceChallenge returns a PKCE verifier and its S256 challenge.
func pkceChallenge() (verifier, challenge string) {
	verifier = rand.Text() + rand.Text()
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestCheckSessionIframeOrigins drives the check_session_iframe as an
// attacker's page would: framed by an origin no client registered, it
// answers nothing; framed by the SPA, it answers a check for a client that
// did not register the SPA's origin with nothing either, and a message
// that is no "client_id session_state" with "error".
func TestCheckSessionIframeOrigins(t *testing.T) {
	t.Parallel()
	sp := newSMSite(t)
	c := newChrome(t)
	sp.Start(t)

	// ask frames the iframe in the tab's page, posts each message to it,
	// and returns its answers a second after the last.
	ask := func(t *testing.T, messages ...string) []string {
		t.Helper()
		msgs, _ := json.Marshal(messages)
		script := `new Promise((resolve, reject) => {
			const answers = [];
			const f = document.createElement("iframe");
			f.src = ` + jsString(sp.issuer+idp.PathCheckSession) + `;
			window.addEventListener("message", (e) => {
				if (e.source === f.contentWindow) { answers.push(String(e.data)); }
			});
			f.onload = () => {
				for (const m of ` + string(msgs) + `) { f.contentWindow.postMessage(m, ` + jsString(sp.issuer) + `); }
				setTimeout(() => resolve(answers), 1000);
			};
			f.onerror = () => reject(new Error("the iframe did not load"));
			document.body.appendChild(f);
		})`
		return browserRun(c, "asking the check_session_iframe", chromedp.Evaluate[[]string](script, chromedp.EvalAwaitPromise))
	}
	state := "0000000000000000000000000000000000000000000000000000000000000000.c2FsdA"

	t.Run("an origin no client registered", func(t *testing.T) {
		c.navigate(sp.elsewhere + "/")
		if got := ask(t, "spa "+state); len(got) != 0 {
			t.Errorf("the iframe answered %q to a page on an unregistered origin; want nothing", got)
		}
	})
	t.Run("the SPA's origin", func(t *testing.T) {
		c.navigate(sp.spa + "/")
		got := ask(t, "spa "+state, "other-client "+state, "no session state", "spa nosalt")
		slices.Sort(got) // the checks answer once their hashes are computed
		if strings.Join(got, ",") != "changed,error,error" {
			t.Errorf("the iframe answered %q; want error for the two malformed messages, changed for spa's, nothing for other-client's", got)
		}
	})
}
