package e2e_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/internal/caddytest"
)

// csrfCookiePrefix starts the names of the provider's double-submit CSRF
// cookies.
const csrfCookiePrefix = "authgate_provider_csrf_"

// csrfCookieIn returns the CSRF cookie of the provider at issuer in c, or
// nil; it fails the test if there are several.
func csrfCookieIn(t testing.TB, c *chrome, issuer string) *network.Cookie {
	t.Helper()
	var found *network.Cookie
	for _, ck := range c.cookies(issuer + "/") {
		if strings.HasPrefix(ck.Name, csrfCookiePrefix) {
			if found != nil {
				t.Fatalf("two CSRF cookies: %s and %s", found.Name, ck.Name)
			}
			found = ck
		}
	}
	return found
}

// TestProviderForms: the provider's forms in a real browser, through the
// gateway. Two tabs that open the login page at once both sign in on the
// first try (issue 7, finding 8), and a third-party page cannot sign the
// user out at the provider (issue 7, finding 6).
func TestProviderForms(t *testing.T) {
	t.Parallel()
	g := newGatewaySite(t, gatewayConfig{})
	c := newChrome(t)
	g.Start(t)

	if !t.Run("two tabs", func(t *testing.T) {
		first, second := c.newTab(t), c.newTab(t)
		first.navigate(g.gateway + "/headers?tab=1")
		expectLoginPage(t, first, g.issuer)
		ck := csrfCookieIn(t, first, g.issuer)
		if ck == nil {
			t.Fatal("the login page set no CSRF cookie")
		}
		// At once: the second tab's request leaves before the first
		// tab's answer has set the cookie, so it carries none, and its
		// answer sets one too.
		first.deleteCookie(g.issuer+"/", ck.Name)
		second.navigate(g.gateway + "/headers?tab=2")
		expectLoginPage(t, second, g.issuer)
		if now := csrfCookieIn(t, second, g.issuer); now == nil || now.Value == ck.Value {
			t.Fatalf("the second tab did not get a cookie of its own: the test did not set up the race")
		}
		first.setCookie(g.issuer+"/", ck.Name, ck.Value, true)

		for i, tab := range []*chrome{first, second} {
			path := []string{"/headers?tab=1", "/headers?tab=2"}[i]
			if resp := tab.logIn("alice", password); resp == nil || resp.Status != http.StatusOK {
				t.Fatalf("tab %d: after logging in: status %d, want 200 from the upstream; the page says:\n%s", i+1, respStatus(resp), tab.text())
			}
			checkIdentity(t, pageEcho(t, tab, g.gateway+path), aliceHeaders())
		}
	}) {
		return
	}

	// The third party is a page of another origin: the gateway's.
	// (127.0.0.1 on another port is the same site, so the browser sends
	// the provider's SameSite=Lax cookies along, as to a sibling
	// subdomain.)
	elsewhere := g.gateway + "/public/elsewhere"
	endSession := g.issuer + "/connect/endsession?" + url.Values{
		"client_id":                {"demo-app"},
		"post_logout_redirect_uri": {g.gateway + "/public/signed-out"},
		"state":                    {"s1"},
	}.Encode()

	t.Run("third-party end session", func(t *testing.T) {
		tab := c.newTab(t)
		tab.navigate(elsewhere)
		tab.fromPage(t, "sending the browser to the end-session endpoint", `location.assign(`+jsString(endSession)+`)`)
		if loc := tab.location(); loc != endSession {
			t.Fatalf("the browser is at %s, want %s", loc, endSession)
		}
		tab.waitVisible("logout")
		stillSignedIn(t, tab, g, "after-link")

		// "Stay signed in" goes back to the application, signed in.
		tab.navigate(endSession)
		if resp := tab.submit(t, "cancel"); resp.Status != http.StatusOK {
			t.Fatalf("after cancel: status %d", resp.Status)
		}
		if loc := tab.location(); loc != g.gateway+"/public/signed-out?state=s1" {
			t.Fatalf("after cancel the browser is at %s, want the post-logout URI with the state", loc)
		}
		stillSignedIn(t, tab, g, "after-cancel")
	})

	t.Run("third-party form post", func(t *testing.T) {
		tab := c.newTab(t)
		tab.navigate(elsewhere)
		form := `const f = document.createElement("form"); f.method = "post"; f.action = ` + jsString(g.issuer+"/account/logout") + `;` +
			`for (const [k, v] of [["decision", "logout"], ["csrf_token", "forged"]]) { const i = document.createElement("input"); i.name = k; i.value = v; f.append(i) }` +
			`document.body.append(f); f.submit()`
		resp := tab.fromPage(t, "posting a sign-out form", form)
		if resp.Status != http.StatusBadRequest {
			t.Errorf("the provider answered %d to a sign-out form from another origin, want 400", resp.Status)
		}
		stillSignedIn(t, tab, g, "after-post")
	})

	t.Run("the user signs out", func(t *testing.T) {
		tab := c.newTab(t)
		tab.navigate(endSession)
		tab.submit(t, "logout")
		if loc := tab.location(); loc != g.gateway+"/public/signed-out?state=s1" {
			t.Fatalf("after signing out the browser is at %s, want the post-logout URI with the state", loc)
		}
		if tab.cookie(g.issuer+"/", idp.SessionCookie) != nil {
			t.Errorf("the provider's session cookie is still there")
		}
		tab.deleteCookie(g.gateway+"/", "authgate")
		tab.navigate(g.gateway + "/headers?after=signout")
		expectLoginPage(t, tab, g.issuer)
	})
}

// respStatus is a response's status, 0 for none.
func respStatus(resp *network.Response) int64 {
	if resp == nil {
		return 0
	}
	return resp.Status
}

// fromPage runs script in the tab's page, which navigates it, and returns
// the response of the document the tab then shows.
func (c *chrome) fromPage(t testing.TB, what, script string) *network.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, browserStepTimeout)
	defer cancel()
	// The navigation starts after the script has returned its value.
	run := chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		_, err := chromedp.Evaluate[int](`setTimeout(() => { `+script+` }, 0); 1`)(ctx, tgt)
		return err
	})
	resp, err := chromedp.RunResponse(ctx, run)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return resp
}

// submit clicks the element with id as a user would (a form's button, or
// a link) and returns the response of the document the tab then shows.
func (c *chrome) submit(t testing.TB, id string) *network.Response {
	t.Helper()
	c.waitVisible(id)
	ctx, cancel := context.WithTimeout(c.ctx, browserStepTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID(id)))
	if err != nil {
		t.Fatalf("clicking #%s: %v", id, err)
	}
	return resp
}

// stillSignedIn checks that the provider's session is alive: without the
// gateway's session, a visit to the app comes back through single sign-on
// without the login form.
func stillSignedIn(t testing.TB, c *chrome, g *gatewaySite, mark string) {
	t.Helper()
	c.deleteCookie(g.gateway+"/", "authgate")
	path := "/headers?" + mark
	c.navigate(g.gateway + path)
	if loc := c.location(); strings.HasPrefix(loc, g.issuer) {
		t.Fatalf("the provider's session has ended: the browser is at %s", loc)
	}
	checkIdentity(t, pageEcho(t, c, g.gateway+path), aliceHeaders())
}

// TestProviderTwoTabsPlainHTTP: two tabs of a browser that says neither
// where a form comes from (Sec-Fetch-Site) nor its origin open the login
// page at once, so that neither request carries a CSRF cookie, and both
// sign in on the first try: the double-submit cookie of the one is not
// replaced by the other's (issue 7, finding 8).
func TestProviderTwoTabsPlainHTTP(t *testing.T) {
	t.Parallel()
	s := newSite(t, "")
	s.Start(t)
	u, err := url.Parse(s.issuer + "/")
	if err != nil {
		t.Fatal(err)
	}
	browser := caddytest.NewBrowser(t)
	var tokens []string
	for i := range 2 {
		tab := caddytest.NewBrowser(t) // no cookie yet
		resp, err := tab.Get(s.issuer + "/account/login")
		if err != nil {
			t.Fatal(err)
		}
		page := caddytest.ReadBody(t, resp)
		m := csrfRE.FindStringSubmatch(page)
		if resp.StatusCode != http.StatusOK || m == nil {
			t.Fatalf("tab %d: login page: status %d:\n%s", i+1, resp.StatusCode, page)
		}
		tokens = append(tokens, m[1])
		browser.Jar.SetCookies(u, tab.Jar.Cookies(u))
	}
	for i, token := range tokens {
		form := url.Values{"csrf_token": {token}, "username": {"alice"}, "password": {password}}
		resp, err := browser.PostForm(s.issuer+"/account/login", form)
		if err != nil {
			t.Fatal(err)
		}
		if page := caddytest.ReadBody(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(page, "signed in as alice") {
			t.Errorf("tab %d: status %d, want 200 and signed in:\n%s", i+1, resp.StatusCode, page)
		}
	}
}
