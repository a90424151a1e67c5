package caddymodule

import (
	"net/http"
	"strings"
	"testing"
)

// TestGatewaySignOutRevokesCopies: a copy of the session cookie taken
// before sign-out is refused after it, with a fresh login for a browser
// and 401 for an API call; the sign-out clears the site's data, and the
// provider's way back ends on the gateway's signed-out page.
func TestGatewaySignOutRevokesCopies(t *testing.T) {
	op := newOP(t, nil)
	// With the hint, the provider signs out without asking.
	gw := newGateway(t, op, func(g *Gateway) { g.SignOutIDTokenHint = true })
	u := newUser(t, gw, op)
	u.signIn("/")
	copied := sessionCookieValue(t, u, "authgate")
	if resp := sendCookie(t, u, "/headers", copied, false); resp.StatusCode != http.StatusOK {
		t.Fatalf("the copy before sign-out: %d, want 200", resp.StatusCode)
	}

	out := u.signOut()
	if got := out.Header.Get("Clear-Site-Data"); got != `"cache", "cookies"` {
		t.Errorf("Clear-Site-Data: %q", got)
	}
	if resp := sendCookie(t, u, "/headers", copied, false); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the copy after sign-out, an API call: %d, want 401", resp.StatusCode)
	}
	if resp := sendCookie(t, u, "/headers", copied, true); resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), op.URL) {
		t.Errorf("the copy after sign-out, a navigation: %d to %q, want a login", resp.StatusCode, resp.Header.Get("Location"))
	}

	// The provider sends the browser back to post_logout_redirect ("/",
	// which the gateway protects) with the state the gateway gave it.
	resp, _ := u.get(out.Header.Get("Location"), nil)
	back := resp.Header.Get("Location")
	if !strings.HasPrefix(back, "http://gw.test/?") || !strings.Contains(back, "state=") {
		t.Fatalf("end_session redirected to %q, want / with the state", back)
	}
	resp, body := u.get(back, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "You have signed out") || !strings.Contains(body, `href="/oauth2/start?rd=%2f"`) && !strings.Contains(body, `href="/oauth2/start?rd=%2F"`) {
		t.Fatalf("back from the provider: %d, want the signed-out page with a link to sign in:\n%s", resp.StatusCode, body)
	}
	// The page is for the way back only: / itself still asks to log in.
	if resp, _ := u.get("http://gw.test/", nil); resp.StatusCode != http.StatusFound {
		t.Errorf("/ after the signed-out page: %d, want a login", resp.StatusCode)
	}
}
