package idp_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/authgate/authgate/idp"
)

// idTokenOf logs username in with c and returns the ID token of the code.
func idTokenOf(t testing.TB, ts *testServer, c *http.Client, username string) string {
	t.Helper()
	v, ch := pkce("v")
	u := login(t, ts, c, authorizeParams(ch), username, testPassword)
	resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(u.Query().Get("code"), v))
	var tk tokens
	if err := jsonUnmarshal(body, &tk); err != nil || resp.StatusCode != http.StatusOK || tk.IDToken == "" {
		t.Fatalf("exchange: %d %s", resp.StatusCode, body)
	}
	return tk.IDToken
}

// signedIn reports whether c has a provider session: prompt=none gets a
// code.
func signedIn(t testing.TB, ts *testServer, c *http.Client) bool {
	t.Helper()
	_, ch := pkce("v")
	q := authorizeParams(ch)
	q.Set("prompt", "none")
	return strings.Contains(authorize(t, ts, c, q).Header.Get("Location"), "code=")
}

// sessionCleared reports whether resp deletes the provider's session
// cookie.
func sessionCleared(resp *http.Response) bool {
	for _, ck := range resp.Cookies() {
		if ck.Name == idp.SessionCookie && ck.MaxAge < 0 {
			return true
		}
	}
	return false
}

// withBob adds the user bob, with alice's password.
func withBob(c *idp.Config) {
	c.Users = append(c.Users, idp.User{Username: "bob", PasswordHash: c.Users[0].PasswordHash})
}

// TestEndSessionAsks: RP-Initiated Logout 1.0 §2: without an id_token_hint
// of the browser's current session, the provider asks before it signs the
// user out, so that a third-party page cannot (issue 7, finding 6).
func TestEndSessionAsks(t *testing.T) {
	tests := []struct {
		name string
		// hint returns the id_token_hint to send, given alice's browser;
		// nil sends none.
		hint   func(t *testing.T, ts *testServer, alice *http.Client) string
		post   http.Header // POST with these headers instead of GET
		ask    bool
		cookie bool // the request carries alice's cookies
	}{
		{name: "no hint", cookie: true, ask: true},
		{name: "hint of another user", cookie: true, ask: true, hint: func(t *testing.T, ts *testServer, _ *http.Client) string {
			return idTokenOf(t, ts, browser(t), "bob")
		}},
		{name: "hint of alice's session in another browser", cookie: true, ask: true, hint: func(t *testing.T, ts *testServer, _ *http.Client) string {
			return idTokenOf(t, ts, browser(t), "alice")
		}},
		{name: "hint without sid (password grant)", cookie: true, ask: true, hint: func(t *testing.T, ts *testServer, _ *http.Client) string {
			resp, body := postToken(t, ts, "demo-app", testSecret, url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {testPassword}, "scope": {"openid"}})
			var tk tokens
			if err := jsonUnmarshal(body, &tk); err != nil || resp.StatusCode != http.StatusOK || tk.IDToken == "" {
				t.Fatalf("password grant: %d %s", resp.StatusCode, body)
			}
			return tk.IDToken
		}},
		{name: "hint of the session", cookie: true, hint: func(t *testing.T, ts *testServer, alice *http.Client) string {
			return idTokenOf(t, ts, alice, "alice") // single sign-on: the same session
		}},
		{name: "hint of the session, posted", cookie: true, post: sameOrigin, hint: func(t *testing.T, ts *testServer, alice *http.Client) string {
			return idTokenOf(t, ts, alice, "alice")
		}},
		// A cross-site POST comes without the SameSite=Lax session
		// cookie: the provider cannot tell whether there is a session.
		{name: "cross-site POST without the cookie", post: http.Header{"Sec-Fetch-Site": {"cross-site"}}, ask: true, hint: func(t *testing.T, ts *testServer, alice *http.Client) string {
			return idTokenOf(t, ts, alice, "alice")
		}},
		{name: "no session", hint: func(t *testing.T, ts *testServer, alice *http.Client) string {
			return idTokenOf(t, ts, alice, "alice")
		}},
		{name: "no session, no hint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newServer(t, func(c *idp.Config) {
				withBob(c)
				c.Clients[0].AllowPasswordGrant = true
			})
			alice := browser(t)
			idTokenOf(t, ts, alice, "alice")
			q := url.Values{"client_id": {"demo-app"}, "post_logout_redirect_uri": {"https://app.example/"}, "state": {"s1"}}
			if tt.hint != nil {
				q.Set("id_token_hint", tt.hint(t, ts, alice))
			}
			c := alice
			if !tt.cookie {
				c = browser(t)
			}
			var resp *http.Response
			var body string
			if tt.post != nil {
				resp, body = postFrom(t, ts, c, "/connect/endsession", q, tt.post)
			} else {
				r, err := c.Get(ts.URL + "/connect/endsession?" + q.Encode())
				if err != nil {
					t.Fatal(err)
				}
				resp, body = r, readBody(t, r)
			}
			if !tt.ask {
				want := http.StatusFound
				if tt.post != nil {
					want = http.StatusSeeOther // RFC 9700 §4.12
				}
				if loc := resp.Header.Get("Location"); resp.StatusCode != want || loc != "https://app.example/?state=s1" {
					t.Fatalf("status %d, Location %q; want %d to https://app.example/?state=s1:\n%s", resp.StatusCode, loc, want, body)
				}
				if tt.cookie && signedIn(t, ts, alice) {
					t.Fatal("still signed in")
				}
				if !tt.cookie && sessionCleared(resp) {
					t.Fatal("cleared a session cookie it did not see")
				}
				return
			}
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" {
				t.Fatalf("status %d, Location %q; want 200 and the question:\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
			}
			for _, want := range []string{"Sign out?", `method="post"`, `action="/account/logout"`, `name="csrf_token"`, `name="request"`, `id="logout"`, `id="cancel"`} {
				if !strings.Contains(body, want) {
					t.Errorf("the page has no %s:\n%s", want, body)
				}
			}
			for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "Cache-Control"} {
				if resp.Header.Get(h) == "" {
					t.Errorf("the page has no %s header", h)
				}
			}
			if sessionCleared(resp) {
				t.Error("asking cleared the session cookie")
			}
			if !signedIn(t, ts, alice) {
				t.Fatal("asking signed alice out")
			}
		})
	}
}

// TestLogoutConfirm: the answer to the question, and the provider's own
// sign-out form, sign out only when posted with the form's token.
func TestLogoutConfirm(t *testing.T) {
	// ask signs alice in and returns her browser with the question's form
	// for the end-session request q.
	ask := func(t *testing.T, ts *testServer, q url.Values) (*http.Client, url.Values) {
		t.Helper()
		c := browser(t)
		idTokenOf(t, ts, c, "alice")
		return c, loginForm(t, c, ts.URL, "/connect/endsession?"+q.Encode())
	}
	registered := url.Values{"client_id": {"demo-app"}, "post_logout_redirect_uri": {"https://app.example/"}, "state": {"s1"}}

	tests := []struct {
		name     string
		q        url.Values // the end-session request; nil: the page at page
		page     string     // default /account/logout
		edit     func(form url.Values)
		header   http.Header
		want     int
		location string
		out      bool // signed out
	}{
		{name: "confirmed", q: registered, header: sameOrigin, want: http.StatusSeeOther, location: "https://app.example/?state=s1", out: true},
		{name: "confirmed by an older browser", q: registered, want: http.StatusSeeOther, location: "https://app.example/?state=s1", out: true},
		{name: "confirmed, unregistered URI", q: url.Values{"client_id": {"demo-app"}, "post_logout_redirect_uri": {"https://evil.example/"}, "state": {"s1"}},
			header: sameOrigin, want: http.StatusOK, out: true},
		{name: "own sign-out form", header: sameOrigin, want: http.StatusOK, out: true},
		{name: "signed-in page's button", page: "/account/login", header: sameOrigin, want: http.StatusOK, out: true},
		{name: "cancelled", q: registered, header: sameOrigin, edit: func(f url.Values) { f.Set("decision", "cancel") }, want: http.StatusSeeOther, location: "https://app.example/?state=s1"},
		{name: "cancelled, own form", header: sameOrigin, edit: func(f url.Values) { f.Set("decision", "cancel") }, want: http.StatusOK},
		{name: "no token", q: registered, header: sameOrigin, edit: func(f url.Values) { f.Del("csrf_token") }, want: http.StatusBadRequest},
		{name: "no token, own form", header: sameOrigin, edit: func(f url.Values) { f.Del("csrf_token") }, want: http.StatusBadRequest},
		{name: "forged token", q: registered, header: sameOrigin, edit: func(f url.Values) { f.Set("csrf_token", "forged-forged-forged-forged") }, want: http.StatusBadRequest},
		{name: "from another site", q: registered, header: http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://evil.example"}}, want: http.StatusBadRequest},
		{name: "from another origin", header: http.Header{"Origin": {"https://evil.example"}}, want: http.StatusBadRequest},
		{name: "tampered request", q: registered, header: sameOrigin, edit: func(f url.Values) { f.Set("request", f.Get("request")[:20]+"xyz") }, want: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newServer(t, nil)
			var c *http.Client
			var form url.Values
			if tt.q != nil {
				c, form = ask(t, ts, tt.q)
			} else {
				c = browser(t)
				idTokenOf(t, ts, c, "alice")
				page := tt.page
				if page == "" {
					page = "/account/logout"
				}
				form = loginForm(t, c, ts.URL, page)
			}
			form.Set("decision", "logout")
			if tt.edit != nil {
				tt.edit(form)
			}
			resp, body := postFrom(t, ts, c, "/account/logout", form, tt.header)
			if resp.StatusCode != tt.want || resp.Header.Get("Location") != tt.location {
				t.Fatalf("status %d, Location %q; want %d, %q:\n%s", resp.StatusCode, resp.Header.Get("Location"), tt.want, tt.location, body)
			}
			if out := !signedIn(t, ts, c); out != tt.out {
				t.Fatalf("signed out: %v, want %v", out, tt.out)
			}
			if !tt.out && sessionCleared(resp) {
				t.Fatal("the session cookie was cleared")
			}
		})
	}
}
