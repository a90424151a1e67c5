package e2e_test

import (
	"net/http"
	"testing"
)

// csrfCookie is the provider's double-submit CSRF cookie.
const csrfCookie = "authgate_provider_csrf"

// TestProviderForms: the provider's forms in a real browser, through the
// gateway: two tabs that open the login page at once both sign in on the
// first try (issue 7, finding 8).
func TestProviderForms(t *testing.T) {
	t.Parallel()
	g := newGatewaySite(t, gatewayConfig{})
	c := newChrome(t)
	g.Start(t)

	t.Run("two tabs", func(t *testing.T) {
		first, second := c.newTab(t), c.newTab(t)
		first.navigate(g.gateway + "/headers?tab=1")
		expectLoginPage(t, first, g.issuer)
		ck := first.cookie(g.issuer+"/", csrfCookie)
		if ck == nil {
			t.Fatalf("the login page set no %s cookie", csrfCookie)
		}
		// At once: the second tab's request leaves before the first
		// tab's answer has set the cookie, so it carries none, and its
		// answer's cookie replaces the first one.
		first.deleteCookie(g.issuer+"/", csrfCookie)
		second.navigate(g.gateway + "/headers?tab=2")
		expectLoginPage(t, second, g.issuer)
		if now := second.cookie(g.issuer+"/", csrfCookie); now == nil || now.Value == ck.Value {
			t.Fatalf("the second tab did not get a cookie of its own: the test did not set up the race")
		}

		for i, tab := range []*chrome{first, second} {
			path := []string{"/headers?tab=1", "/headers?tab=2"}[i]
			if resp := tab.logIn("alice", password); resp == nil || resp.Status != http.StatusOK {
				status := int64(0)
				if resp != nil {
					status = resp.Status
				}
				t.Fatalf("tab %d: after logging in: status %d, want 200 from the upstream; the page says:\n%s", i+1, status, tab.text())
			}
			checkIdentity(t, pageEcho(t, tab, g.gateway+path), aliceHeaders())
		}
	})
}
