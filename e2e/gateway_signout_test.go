package e2e_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// signOut signs out as a user does: the sign-out link leads to the
// gateway's page, whose button signs out.
func signOut(t testing.TB, c *chrome, g *gatewaySite) {
	t.Helper()
	expectSignOutPage(t, c, g, c.navigate(g.gateway+"/oauth2/sign_out"))
	c.submit(t, "sign-out")
}

// expectSignOutPage checks that the tab shows the gateway's sign-out page.
func expectSignOutPage(t testing.TB, c *chrome, g *gatewaySite, resp *network.Response) {
	t.Helper()
	if loc := c.location(); loc != g.gateway+"/oauth2/sign_out" || resp == nil {
		t.Fatalf("the browser is at %s, want the sign-out page; the page says:\n%s", loc, c.text())
	}
	c.waitVisible("sign-out")
}

// expectSignedIn checks that the gateway still lets alice through.
func expectSignedIn(t testing.TB, c *chrome, g *gatewaySite, path string) {
	t.Helper()
	c.navigate(g.gateway + path)
	checkIdentity(t, pageEcho(t, c, g.gateway+path), aliceHeaders())
}

// TestGatewaySignOutCSRF: a page of another site can send the browser to
// the sign-out path, by a link or a form, and a script of the gateway's
// own origin can post to it, but only the button of the gateway's page
// signs out.
func TestGatewaySignOutCSRF(t *testing.T) {
	t.Parallel()
	g := newGatewaySite(t, gatewayConfig{Gateway: []string{"sign_out_id_token_hint"}})
	link := pageServer(t, "link", `<p><a id="go" href="`+g.gateway+`/oauth2/sign_out">win a prize</a></p>`)
	form := pageServer(t, "form", `<form method="post" action="`+g.gateway+`/oauth2/sign_out"><input type="hidden" name="token" value="forged"><button id="go">win a prize</button></form>`)
	c := newChrome(t)
	g.Start(t)
	signIn(t, c, g, "/headers")

	t.Run("cross-site link", func(t *testing.T) {
		c.navigate(link + "/")
		// A top-level GET carries the SameSite=Lax session: the page asks.
		expectSignOutPage(t, c, g, c.submit(t, "go"))
		expectSignedIn(t, c, g, "/headers?after=link")
	})
	t.Run("cross-site form", func(t *testing.T) {
		c.navigate(form + "/")
		c.submit(t, "go")
		expectSignedIn(t, c, g, "/headers?after=form")
	})
	t.Run("same-origin script without the token", func(t *testing.T) {
		c.navigate(g.gateway + "/public/page")
		script := `fetch("/oauth2/sign_out", {method: "POST", body: new URLSearchParams({token: "forged"})}).then(async r => ({status: r.status, body: await r.text()}))`
		res := browserRun(c, "posting to the sign-out path", chromedp.Evaluate[fetchResult](script, chromedp.EvalAwaitPromise))
		if res.Status != http.StatusForbidden {
			t.Errorf("POST with a forged token: status %d, want 403:\n%s", res.Status, res.Body)
		}
		expectSignedIn(t, c, g, "/headers?after=script")
	})
	t.Run("link, page, button", func(t *testing.T) {
		signOut(t, c, g)
		// With the gateway's state, which only a page it protects reads.
		if loc := c.location(); !strings.HasPrefix(loc, g.gateway+"/public/signed-out?state=") {
			t.Fatalf("after sign-out the browser is at %s, want %s/public/signed-out; the page says:\n%s", loc, g.gateway, c.text())
		}
		if ck := c.cookie(g.gateway+"/", "authgate"); ck != nil {
			t.Errorf("the session cookie is still there after sign-out")
		}
		c.navigate(g.gateway + "/headers")
		expectLoginPage(t, c, g.issuer)
	})
}
