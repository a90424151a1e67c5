package idp_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

// TestPasskeysNeedRecentSignIn: a session cookie alone, its sign-in more
// than 5 minutes old (a stolen cookie, a browser left open), neither
// starts a passkey registration nor adds or removes a passkey: the
// browser signs in again, and is back on the passkeys page.
func TestPasskeysNeedRecentSignIn(t *testing.T) {
	ts := newServer(t, func(cfg *idp.Config) { cfg.Issuer = "http://login.test" })
	c := signInDirect(t, ts)
	st, body := page(t, c, ts, idp.PathPasskeys)
	if st != http.StatusOK || !strings.Contains(body, `id="passkey-register"`) {
		t.Fatalf("passkeys page right after signing in: %d %s", st, body)
	}
	csrf := csrfOf(t, body)
	// Fresh: the registration starts.
	resp, body := post(t, c, ts, idp.PathPasskeyOptions, url.Values{"purpose": {"register"}, "csrf_token": {csrf}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("registration options right after signing in: %d %s", resp.StatusCode, body)
	}

	ts.clock.Advance(6 * time.Minute)
	resp, body = post(t, c, ts, idp.PathPasskeyOptions, url.Values{"purpose": {"register"}, "csrf_token": {csrf}})
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "login_required") {
		t.Errorf("registration options 6 minutes after signing in: %d %s", resp.StatusCode, body)
	}
	for _, action := range []url.Values{
		{"action": {"register"}, "name": {"mine"}, "credential": {"{}"}},
		{"action": {"remove"}, "id": {"AAAA"}},
	} {
		action.Set("csrf_token", csrf)
		resp, body = post(t, c, ts, idp.PathPasskeys, action)
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.Contains(loc, idp.PathLogin+"?request=") {
			t.Errorf("%s 6 minutes after signing in: %d %q %s, want the login page", action.Get("action"), resp.StatusCode, loc, body)
		}
	}
	resp, err := c.Get(ts.URL + idp.PathPasskeys)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	loc := resp.Header.Get("Location")
	if !strings.Contains(loc, idp.PathLogin+"?request=") {
		t.Fatalf("passkeys page 6 minutes after signing in: %d %q, want the login page", resp.StatusCode, loc)
	}
	if st, body := page(t, c, ts, loc); st != http.StatusOK || !strings.Contains(body, "sign in again") {
		t.Errorf("the login page does not say why: %d %s", st, body)
	}
	// Signed in again, back on the page, which works.
	form := loginForm(t, c, ts.URL, loc)
	form.Set("username", "alice")
	form.Set("password", testPassword)
	resp, body = post(t, c, ts, idp.PathLogin, form)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != idp.PathPasskeys {
		t.Fatalf("signing in again: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	st, body = page(t, c, ts, idp.PathPasskeys)
	if st != http.StatusOK {
		t.Fatalf("passkeys page after signing in again: %d %s", st, body)
	}
	resp, body = post(t, c, ts, idp.PathPasskeyOptions, url.Values{"purpose": {"register"}, "csrf_token": {csrfOf(t, body)}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("registration options after signing in again: %d %s", resp.StatusCode, body)
	}
	// The account page itself needs no recent sign-in.
	ts.clock.Advance(6 * time.Minute)
	if st, body := page(t, c, ts, idp.PathAccount); st != http.StatusOK {
		t.Errorf("account page 6 minutes after signing in: %d %s", st, body)
	}
}
