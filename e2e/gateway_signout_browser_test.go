package e2e_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/authgate/authgate/internal/caddytest"
)

// These tests sign out in a real Chromium, as the user of a page that the
// browser keeps in its disk cache: the gateway's sign-out and the
// provider's, and the gateway's signed-out page (issue 9 §1 and §2).

// signOutBrowserTemplate is the Caddyfile of the tests: the provider, whose
// demo-app registered the gateway's back-channel logout endpoint, and the
// gateway with its defaults in front of a caching upstream. Its
// post_logout_redirect is the default, /, a page it protects: the way
// back from a sign-out shows its signed-out page there.
var signOutBrowserTemplate = template.Must(template.New("Caddyfile").Parse(`{
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
			post_logout_redirect_uri {{.Gateway}}/
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
	oidc_gateway {{.Issuer}} {
		client_id demo-app
		client_secret {env.{{.SecretEnv}}}
	}
	reverse_proxy {{.Upstream}}
}
`))

// cachingUpstream is an app whose pages the browser may keep: each is
// HTML with a marker of its own test, cacheable for ten minutes by the
// browser (private: by no shared cache). It counts the requests it gets.
type cachingUpstream struct {
	marker string
	mu     sync.Mutex
	hits   map[string]int // by path
}

// newCachingUpstream starts the app for the test; addr is its host:port.
func newCachingUpstream(t testing.TB) (u *cachingUpstream, addr string) {
	t.Helper()
	u = &cachingUpstream{marker: "protected-" + rand.Text(), hits: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.hits[r.URL.Path]++
		u.mu.Unlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "private, max-age=600")
		fmt.Fprintf(w, `<!doctype html><title>app</title><h1 id="marker">%s</h1><p>%s</p>`, u.marker, r.Header.Get("X-Auth-Request-Email"))
	}))
	t.Cleanup(srv.Close)
	return u, srv.Listener.Addr().String()
}

// hitsOf is how many requests for path reached the app.
func (u *cachingUpstream) hitsOf(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits[path]
}

// signOutSite is a running Caddy of signOutBrowserTemplate.
type signOutSite struct {
	*site
	gateway string
	app     *cachingUpstream
}

// newSignOutSite starts the Caddy of signOutBrowserTemplate for the test.
func newSignOutSite(t testing.TB) *signOutSite {
	t.Helper()
	app, addr := newCachingUpstream(t)
	s := &signOutSite{
		site:    newEmptySite(t),
		gateway: fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t)),
		app:     app,
	}
	s.WriteConfig(t, signOutBrowserTemplate, map[string]any{
		"Admin": s.AdminAddr, "Storage": s.Storage, "Issuer": s.issuer, "Gateway": s.gateway,
		"Upstream": addr, "SecretEnv": secretEnv, "Hash": passwordHash,
	})
	s.Start(t)
	return s
}

// showsApp reports whether the tab shows the app's page of this test.
func (s *signOutSite) showsApp(c *chrome) bool {
	c.t.Helper()
	return strings.Contains(c.text(), s.app.marker)
}

// logInTo opens path on the gateway, logs in as alice at the provider's
// form, and checks that the tab is back at path with the app's page.
func (s *signOutSite) logInTo(t testing.TB, c *chrome, path string) {
	t.Helper()
	c.navigate(s.gateway + path)
	expectLoginPage(t, c, s.issuer)
	c.logIn("alice", password)
	if loc := c.location(); loc != s.gateway+path || !s.showsApp(c) {
		t.Fatalf("after logging in the browser is at %s, want the app's page at %s; the page says:\n%s", loc, s.gateway+path, c.text())
	}
}

// signOutHere signs out with the gateway's sign-out page and its button,
// then confirms at the provider (the gateway sends no id_token_hint by
// default, so the provider asks), and checks that the tab ends on the
// gateway's signed-out page; it returns that page's URL.
func (s *signOutSite) signOutHere(t testing.TB, c *chrome) string {
	t.Helper()
	c.navigate(s.gateway + "/oauth2/sign_out")
	c.submit(t, "sign-out")
	if loc := c.location(); !strings.HasPrefix(loc, s.issuer+"/connect/endsession") {
		t.Fatalf("after the gateway's sign-out button the browser is at %s, want the provider's end-session page; the page says:\n%s", loc, c.text())
	}
	c.submit(t, "logout")
	return expectSignedOutPage(t, c, s.gateway)
}

// expectSignedOutPage checks that the tab shows the gateway's signed-out
// page, at its post_logout_redirect (/), and returns its URL.
func expectSignedOutPage(t testing.TB, c *chrome, gateway string) string {
	t.Helper()
	loc := c.location()
	if !strings.HasPrefix(loc, gateway+"/?state=") {
		t.Fatalf("the browser is at %s, want the signed-out page at %s/?state=...; the page says:\n%s", loc, gateway, c.text())
	}
	if msg := browserRun(c, "reading the message", chromedp.Evaluate[string](`document.getElementById("message")?.textContent ?? ""`)); msg != "You have signed out." {
		t.Fatalf("the signed-out page says %q, want \"You have signed out.\"; the page says:\n%s", msg, c.text())
	}
	return loc
}

// backTo goes back in the tab's history to the last entry before the
// current one whose URL is target, as the browser's back button does
// (several times), and waits until the tab has left the current page
// and loaded the one it went to. A page restored from the back/forward
// cache fires no load event, so this polls the document, bounded.
func (c *chrome) backTo(target string) {
	c.t.Helper()
	hist := browserRun(c, "reading the history", chromedp.NavigationEntries())
	var entry *page.NavigationEntry
	for i := hist.CurrentIndex - 1; i >= 0 && entry == nil; i-- {
		if hist.Entries[i].URL == target {
			entry = hist.Entries[i]
		}
	}
	if entry == nil {
		var urls []string
		for _, e := range hist.Entries {
			urls = append(urls, e.URL)
		}
		c.t.Fatalf("no %s in the history before its current entry: %q", target, urls)
	}
	from := hist.Entries[hist.CurrentIndex]
	c.do("going back to "+target, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		_, err := chromedp.Call(ctx, page.NavigateToHistoryEntry, page.NavigateToHistoryEntryParams{EntryID: entry.ID})
		return err
	}))
	deadline := time.Now().Add(browserStepTimeout)
	for {
		ctx, cancel := context.WithTimeout(c.ctx, time.Second)
		// Errors are the page going away under the script: poll again.
		h, err := chromedp.Run(ctx, chromedp.NavigationEntries())
		state, err2 := chromedp.Run(ctx, chromedp.Evaluate[string](`document.readyState`))
		cancel()
		if err == nil && err2 == nil && h.Entries[h.CurrentIndex].ID != from.ID && state == "complete" {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the tab has not gone back to %s within %v", target, browserStepTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGatewaySignOutClearsCache: the app's page is cacheable, and
// Chromium shows it from its disk cache without asking the gateway; after
// the sign-out, neither the back button nor opening the page again shows
// it: the gateway's answers cleared the cache (Clear-Site-Data), and the
// page is a fresh login.
func TestGatewaySignOutClearsCache(t *testing.T) {
	t.Parallel()
	s := newSignOutSite(t)
	c := newChrome(t)
	const path = "/app"
	s.logInTo(t, c, path)

	// The setting: opened again, the page comes from the disk cache,
	// not from the app, nor through the gateway.
	c.navigate(s.gateway + "/other")
	if resp := c.navigate(s.gateway + path); !resp.FromDiskCache || !s.showsApp(c) || s.app.hitsOf(path) != 1 {
		t.Fatalf("before the sign-out the page was not served from the disk cache (from cache %v, app reached %d times); the test proves nothing", resp.FromDiskCache, s.app.hitsOf(path))
	}

	s.signOutHere(t, c)
	t.Run("back", func(t *testing.T) {
		c.backTo(s.gateway + path)
		if s.showsApp(c) {
			t.Fatalf("back after the sign-out, the browser shows the app's page at %s:\n%s", c.location(), c.text())
		}
		expectLoginPage(t, c, s.issuer)
	})
	t.Run("open again", func(t *testing.T) {
		c.navigate(s.gateway + path)
		if s.showsApp(c) {
			t.Fatalf("opened after the sign-out, the browser shows the app's page at %s:\n%s", c.location(), c.text())
		}
		expectLoginPage(t, c, s.issuer)
	})
	if n := s.app.hitsOf(path); n != 1 {
		t.Errorf("the app got %d requests for %s, want 1: only the one of the first login", n, path)
	}
}

// TestGatewayProviderLogoutInBrowser: alice signs in to the app through
// the gateway in one tab, and signs out at the provider's own page in
// another; the provider tells the gateway by its back-channel, and the
// first tab's next visit to the app is a fresh login.
func TestGatewayProviderLogoutInBrowser(t *testing.T) {
	t.Parallel()
	s := newSignOutSite(t)
	c := newChrome(t)
	s.logInTo(t, c, "/app")

	other := c.newTab(t)
	other.navigate(s.issuer + "/account/logout")
	other.submit(t, "logout")
	if msg := other.text(); !strings.Contains(msg, "signed out") {
		t.Fatalf("the provider's sign-out page says:\n%s", msg)
	}

	// The delivery is asynchronous: visit, bounded, until the gateway has
	// had it. Each visit is to a page the browser has not cached: the
	// gateway cannot clear the cache of a browser it does not see (the
	// provider's Clear-Site-Data would only reach the provider's origin).
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		path := fmt.Sprintf("/app?visit=%d", i)
		c.navigate(s.gateway + path)
		if !s.showsApp(c) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the provider's sign-out the gateway still lets the first tab through to %s", path)
		}
		time.Sleep(100 * time.Millisecond)
	}
	expectLoginPage(t, c, s.issuer)
}

// TestGatewaySignedOutPage: the page the sign-out ends on says that the
// user signed out, needs no login (a browser without any cookie sees it
// too), and its link signs in again, at the login form: the page has
// cleared the provider's single sign-on cookie as well. Without a valid
// state, the same URL is a login.
func TestGatewaySignedOutPage(t *testing.T) {
	t.Parallel()
	s := newSignOutSite(t)
	c := newChrome(t)
	s.logInTo(t, c, "/app")
	signedOut := s.signOutHere(t, c)
	if cks := c.cookies(s.gateway + "/"); len(cks) != 0 {
		var names []string
		for _, ck := range cks {
			names = append(names, ck.Name)
		}
		t.Errorf("on the signed-out page the browser still has cookies for the site: %q", names)
	}

	// Another browser, without any cookie yet.
	fresh := newChrome(t)
	t.Run("without cookies", func(t *testing.T) {
		resp := fresh.navigate(signedOut)
		expectSignedOutPage(t, fresh, s.gateway)
		if resp.Status != http.StatusOK || !strings.Contains(fmt.Sprint(resp.Headers["Cache-Control"]), "no-store") {
			t.Errorf("the signed-out page: status %d, Cache-Control %v; want 200, no-store", resp.Status, resp.Headers["Cache-Control"])
		}
	})
	t.Run("forged state", func(t *testing.T) {
		fresh.navigate(s.gateway + "/?state=forged")
		expectLoginPage(t, fresh, s.issuer)
	})
	t.Run("sign in again", func(t *testing.T) {
		c.navigate(signedOut)
		expectSignedOutPage(t, c, s.gateway)
		if text := browserRun(c, "reading the link", chromedp.Evaluate[string](`document.getElementById("action")?.textContent ?? ""`)); text != "Sign in again" {
			t.Fatalf("the signed-out page's link says %q, want \"Sign in again\"", text)
		}
		c.submit(t, "action")
		expectLoginPage(t, c, s.issuer)
		c.logIn("alice", password)
		if loc := c.location(); loc != s.gateway+"/" || !s.showsApp(c) {
			t.Fatalf("after signing in again the browser is at %s, want the app at %s/; the page says:\n%s", loc, s.gateway, c.text())
		}
	})
}

// TestGatewaySignOutClearsCacheAtOnce: the gateway's own answer to the
// sign-out button clears the cache, before the provider and the
// signed-out page have their say: a user who goes back from the
// provider's confirmation page, still signed in there, gets the app's
// page through the gateway (a single sign-on login and a request to the
// app), not from the browser's cache.
func TestGatewaySignOutClearsCacheAtOnce(t *testing.T) {
	t.Parallel()
	s := newSignOutSite(t)
	c := newChrome(t)
	const path = "/app"
	s.logInTo(t, c, path)
	c.navigate(s.gateway + "/other")
	if resp := c.navigate(s.gateway + path); !resp.FromDiskCache || s.app.hitsOf(path) != 1 {
		t.Fatalf("before the sign-out the page was not served from the disk cache (from cache %v, app reached %d times); the test proves nothing", resp.FromDiskCache, s.app.hitsOf(path))
	}

	c.navigate(s.gateway + "/oauth2/sign_out")
	c.submit(t, "sign-out")
	if loc := c.location(); !strings.HasPrefix(loc, s.issuer+"/connect/endsession") {
		t.Fatalf("after the gateway's sign-out button the browser is at %s, want the provider's end-session page; the page says:\n%s", loc, c.text())
	}
	c.waitVisible("logout")
	c.backTo(s.gateway + path)
	if loc := c.location(); loc != s.gateway+path || !s.showsApp(c) {
		t.Fatalf("back at the app, still signed in at the provider, the browser is at %s, want the app's page; the page says:\n%s", loc, c.text())
	}
	if n := s.app.hitsOf(path); n != 2 {
		t.Errorf("the app got %d requests for %s, want 2: the page shown after the sign-out came from the browser's cache", n, path)
	}
}
