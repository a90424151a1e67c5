package idp_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/authgate/authgate/idp"
)

// disabledAfter returns a provider on ts's store and issuer with alice
// disabled, as a restart or reload with `disabled` in her configuration
// makes it, served on a server of its own; its worker is not started.
func disabledAfter(t *testing.T, ts *testServer, rc *receiver) *testServer {
	t.Helper()
	cfg := testConfig(t)
	cfg.Issuer = ts.URL
	cfg.Now = ts.clock.Now
	withBackchannel(rc)(&cfg)
	cfg.Clients[0].AllowPasswordGrant = true
	cfg.Users[0].Disabled = true
	p, err := idp.New(cfg, ts.Store)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return &testServer{Server: srv, Provider: p, Store: ts.Store, clock: ts.clock}
}

// TestDisabledUser: a disabled user cannot log in (the login page and the
// password grant answer as for a wrong password, so that nobody learns
// which users exist or are disabled), her single sign-on session and
// refresh tokens no longer work, and a provider that starts with her
// disabled ends her sessions, telling the clients by back channel.
func TestDisabledUser(t *testing.T) {
	rc := newReceiver(t, nil)
	ts := newServer(t, func(c *idp.Config) {
		withBackchannel(rc)(c)
		c.Clients[0].AllowPasswordGrant = true
	})
	c := browser(t)
	tk := signInOffline(t, ts, c)
	next := disabledAfter(t, ts, rc)

	t.Run("login page", func(t *testing.T) {
		answer := func(pw string) (int, string) {
			t.Helper()
			b := browser(t)
			_, ch := pkce("v")
			resp := authorize(t, next, b, authorizeParams(ch))
			form := loginForm(t, b, next.URL, resp.Header.Get("Location"))
			form.Set("username", "alice")
			form.Set("password", pw)
			resp, err := b.PostForm(next.URL+"/account/login", form)
			if err != nil {
				t.Fatal(err)
			}
			return resp.StatusCode, readBody(t, resp)
		}
		wrongStatus, wrongPage := answer("wrong")
		status, page := answer(testPassword)
		const msg = "Invalid username or password."
		if status != wrongStatus || !strings.Contains(page, msg) || !strings.Contains(wrongPage, msg) {
			t.Fatalf("right password of a disabled user: %d %q; wrong password: %d; want the same error", status, page, wrongStatus)
		}
	})
	t.Run("password grant", func(t *testing.T) {
		grant := func(pw string) (int, string) {
			resp, body := postToken(t, next, "demo-app", testSecret, url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {pw}, "scope": {"openid"}})
			return resp.StatusCode, body
		}
		wrongStatus, wrongBody := grant("wrong")
		if status, body := grant(testPassword); status != http.StatusBadRequest || status != wrongStatus || body != wrongBody {
			t.Fatalf("right password of a disabled user: %d %s; wrong password: %d %s; want the same", status, body, wrongStatus, wrongBody)
		}
	})
	t.Run("single sign-on", func(t *testing.T) {
		_, ch := pkce("v")
		q := authorizeParams(ch)
		q.Set("prompt", "none")
		if loc := authorize(t, next, c, q).Header.Get("Location"); !strings.Contains(loc, "error=login_required") {
			t.Fatalf("authorize with a disabled user's session: %s; want login_required", loc)
		}
	})
	t.Run("refresh", func(t *testing.T) {
		if status, _, body := refreshWith(t, next, "demo-app", testSecret, tk.RefreshToken, ""); status != http.StatusBadRequest || !strings.Contains(body, "invalid_grant") {
			t.Fatalf("refresh of a disabled user's token: %d %s; want invalid_grant", status, body)
		}
	})
	t.Run("introspection", func(t *testing.T) {
		for _, tok := range []string{tk.AccessToken, tk.RefreshToken} {
			req, _ := http.NewRequest(http.MethodPost, next.URL+idp.PathIntrospect, strings.NewReader(url.Values{"token": {tok}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth("demo-app", testSecret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if body := readBody(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"active":false`) {
				t.Fatalf("introspection of a disabled user's token: %s; want inactive", body)
			}
		}
	})
	t.Run("start ends her sessions", func(t *testing.T) {
		started(t, next)
		_, claims := logoutClaimsOf(t, next, rc.await(t))
		if claims["sub"] != idp.DeriveSubject("alice") {
			t.Fatalf("logout token %v; want alice's", claims)
		}
		if s, err := next.Provider.UserSessions(context.Background(), "alice"); err != nil || len(s) != 0 {
			t.Fatalf("sessions after the start: %v %v; want none", s, err)
		}
		if f, err := next.Provider.UserFamilies(context.Background(), "alice"); err != nil || len(f) != 0 {
			t.Fatalf("refresh families after the start: %v %v; want none", f, err)
		}
	})
}
