package e2e_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/caddytest"
)

// TestDisabledUserReload: a reload that disables alice ends her session
// at a gateway in another Caddy, by back-channel logout, and her login
// fails from then on as a wrong password does.
func TestDisabledUserReload(t *testing.T) {
	t.Parallel()
	s := newSplitSites(t, "", "")
	cookie := s.gatewayLogin(t, caddytest.NewBrowser(t))

	s.writeProvider(t, "", "\n\t\t\tdisabled")
	s.provider.Reload(t)
	s.waitRefused(t, cookie, 10*time.Second)

	// A fresh login through the gateway fails at the provider's form.
	browser := caddytest.NewBrowser(t)
	resp, _ := browse(t, browser, http.MethodGet, s.gwURL+"/", nil)
	authorize, err := resp.Location()
	if err != nil {
		t.Fatalf("gateway: %d, no redirect to the provider", resp.StatusCode)
	}
	resp, _ = browse(t, browser, http.MethodGet, authorize.String(), nil)
	loginURL, err := resp.Location()
	if err != nil {
		t.Fatalf("authorize: %d, no redirect to the login page", resp.StatusCode)
	}
	if resp, page := caddytest.LoginAttempt(t, browser, loginURL, "alice", password); resp.StatusCode != http.StatusOK || !strings.Contains(page, "Invalid username or password.") {
		t.Fatalf("login of a disabled user: %d\n%s", resp.StatusCode, page)
	}
}
