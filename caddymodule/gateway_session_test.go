package caddymodule

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

// sessionCookieValue returns the value of the session cookie name in u's
// jar for gw.test.
func sessionCookieValue(t testing.TB, u *user, name string) string {
	t.Helper()
	gwURL, _ := url.Parse("http://gw.test/")
	for _, c := range u.jar.Cookies(gwURL) {
		if c.Name == name {
			return c.Value
		}
	}
	t.Fatalf("no cookie %s in the jar", name)
	return ""
}

// sendCookie requests path of u's gateway with only cookie as the session
// cookie, as a navigation or as an API call, and returns the response.
func sendCookie(t testing.TB, u *user, path, cookie string, navigation bool) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://gw.test"+path, nil)
	req.Header.Set("Accept", "application/json")
	if navigation {
		req.Header.Set("Accept", "text/html")
	}
	req.Header.Set("Cookie", "authgate="+cookie)
	resp, err := (&http.Client{Transport: u.c.Transport, CheckRedirect: u.c.CheckRedirect, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// clears reports whether resp expires the session cookie.
func clears(resp *http.Response) bool {
	for _, c := range resp.Cookies() {
		if c.Name == "authgate" && c.MaxAge < 0 {
			return true
		}
	}
	return false
}

// TestGatewaySessionBinding: a session is accepted only by gateways of its
// issuer and client_id, even when their operator gave them the same
// session_key; gateways of the same issuer and client share it. Another
// gateway's cookie is the same as none, and is left alone for its owner.
func TestGatewaySessionBinding(t *testing.T) {
	const sharedKey = "one-session-key-for-every-gateway"
	corpOP := newOP(t, nil)
	// A provider of its own, with a user that corpOP has never heard of
	// (who logs in as "alice" there) and who is in "admins".
	socialOP := newOP(t, func(c *idp.Config) {
		c.Clients[0].ID = "gw-b"
		c.Users[0].Subject = "social-user-7"
		c.Users[0].Claims = map[string]any{"email": "mallory@social.example", "email_verified": true, "groups": []any{"admins"}}
	})
	groups := []string{"openid", "profile", "email", "groups"}
	corp := newGateway(t, corpOP, func(g *Gateway) {
		g.SessionKeys, g.Scopes = []string{sharedKey}, groups
		g.Allow = []GatewayRule{{Group: "admins"}}
	})
	social := newGateway(t, socialOP, func(g *Gateway) {
		g.ClientID, g.SessionKeys, g.Scopes = "gw-b", []string{sharedKey}, groups
	})

	mallory := newUser(t, social, socialOP)
	if got := echoHeader(mallory.signIn("/"), "X-Auth-Request-User"); got != "social-user-7" {
		t.Fatalf("signed in at social as %q", got)
	}
	socialCookie := sessionCookieValue(t, mallory, "authgate")

	t.Run("another gateway's cookie is no session", func(t *testing.T) {
		atCorp := newUser(t, corp, corpOP)
		resp := sendCookie(t, atCorp, "/dashboard", socialCookie, true)
		if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), corpOP.URL) {
			t.Errorf("navigation: %d %s, want a login at corp's provider", resp.StatusCode, resp.Header.Get("Location"))
		}
		if clears(resp) {
			t.Error("navigation: corp cleared social's session cookie")
		}
		resp = sendCookie(t, atCorp, "/dashboard", socialCookie, false)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("API call: status %d, want 401", resp.StatusCode)
		}
		if clears(resp) {
			t.Error("API call: corp cleared social's session cookie")
		}
		// Still social's, and still good there.
		if resp := sendCookie(t, mallory, "/", socialCookie, false); resp.StatusCode != http.StatusOK {
			t.Errorf("social's own cookie at social: status %d, want 200", resp.StatusCode)
		}
	})

	t.Run("the same key opens only its own gateway's sessions", func(t *testing.T) {
		// Without the unsealed tag that names the gateway, the sealed part
		// must still not open at corp: keys are derived per issuer and
		// client_id.
		_, sealed, ok := strings.Cut(socialCookie, ".")
		if !ok {
			t.Fatalf("social's cookie has no gateway tag")
		}
		atCorp := newUser(t, corp, corpOP)
		forged := corp.gw.codec.tag + "." + sealed
		if resp := sendCookie(t, atCorp, "/dashboard", forged, false); resp.StatusCode != http.StatusUnauthorized || !clears(resp) {
			t.Errorf("social's session under corp's tag: status %d, cleared %v; want 401, cleared", resp.StatusCode, clears(resp))
		}
		// Sealed by corp's keys but recorded for social: refused too.
		s := &session{ID: "i", Subject: "social-user-7", Claims: map[string]any{"groups": []any{"admins"}}, Created: time.Now().Unix(), Binding: social.gw.binding}
		value, err := corp.gw.codec.encode(corp.gw.cookieName, s)
		if err != nil {
			t.Fatal(err)
		}
		if resp := sendCookie(t, atCorp, "/dashboard", value, false); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a session sealed for social under corp's keys: status %d, want 401", resp.StatusCode)
		}
	})

	t.Run("sign-out leaves another gateway's cookie alone", func(t *testing.T) {
		atCorp := newUser(t, corp, corpOP)
		req, _ := http.NewRequest(http.MethodGet, "http://gw.test/oauth2/sign_out", nil)
		req.Header.Set("Cookie", "authgate="+socialCookie)
		resp, err := atCorp.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if clears(resp) {
			t.Error("corp's sign-out cleared social's session cookie")
		}
		if resp := sendCookie(t, mallory, "/", socialCookie, false); resp.StatusCode != http.StatusOK {
			t.Errorf("social's cookie after corp's sign-out: status %d, want 200 (its refresh token not revoked)", resp.StatusCode)
		}
	})

	t.Run("same issuer and client share the login", func(t *testing.T) {
		// The per-route policy pattern: another gateway of corp's issuer
		// and client, with its own rules.
		reports := newGateway(t, corpOP, func(g *Gateway) { g.SessionKeys, g.Scopes = []string{sharedKey}, groups })
		alice := newUser(t, corp, corpOP)
		alice.signIn("/dashboard")
		corpCookie := sessionCookieValue(t, alice, "authgate")
		if resp := sendCookie(t, newUser(t, reports, corpOP), "/reports", corpCookie, false); resp.StatusCode != http.StatusOK {
			t.Errorf("corp's cookie at another gateway of corp's issuer and client: status %d, want 200", resp.StatusCode)
		}
	})
}

// TestGatewayForeignFlowCookies: starting a login does not expire the
// login flows of another gateway on the same host.
func TestGatewayForeignFlowCookies(t *testing.T) {
	corpOP, socialOP := newOP(t, nil), newOP(t, func(c *idp.Config) { c.Clients[0].ID = "gw-b" })
	corp := newGateway(t, corpOP, nil)
	social := newGateway(t, socialOP, func(g *Gateway) { g.ClientID = "gw-b" })
	u := newUser(t, social, socialOP)
	var flows []string
	for range maxFlows {
		resp, _ := u.get("http://gw.test/", nil)
		for _, c := range resp.Cookies() {
			if strings.HasPrefix(c.Name, "authgate_flow_") {
				flows = append(flows, c.Name+"="+c.Value)
			}
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "http://gw.test/", nil)
	req.Header.Set("Accept", "text/html")
	req.Header.Set("Cookie", strings.Join(flows, "; "))
	resp, err := newUser(t, corp, corpOP).c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("status %d, want a login", resp.StatusCode)
	}
	for _, c := range resp.Cookies() {
		if c.MaxAge < 0 {
			t.Errorf("corp expired %s, a login flow of social", c.Name)
		}
	}
}
