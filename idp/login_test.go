package idp_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/authgate/authgate/idp"
)

// startLogin follows authorize to the login page and returns its form.
func startLogin(t *testing.T, ts *testServer, c *http.Client) url.Values {
	t.Helper()
	_, ch := pkce("v")
	resp, err := c.Get(ts.URL + "/connect/authorize?" + authorizeParams(ch).Encode())
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	return loginForm(t, c, ts.URL, resp.Header.Get("Location"))
}

func postLogin(t *testing.T, ts *testServer, c *http.Client, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(ts.URL+"/account/login", form)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readBody(t, resp)
}

func TestLoginPage(t *testing.T) {
	t.Run("same message for unknown user and wrong password", func(t *testing.T) {
		ts := newServer(t, nil)
		c := browser(t)
		form := startLogin(t, ts, c)
		var msgs []string
		for _, user := range []string{"alice", "mallory"} {
			form.Set("username", user)
			form.Set("password", "wrong")
			resp, body := postLogin(t, ts, c, form)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" {
				t.Fatalf("%s: status %d; want the form again", user, resp.StatusCode)
			}
			i := strings.Index(body, `id="error">`)
			if i < 0 {
				t.Fatalf("%s: no error shown: %s", user, body)
			}
			msgs = append(msgs, body[i:i+60])
		}
		if msgs[0] != msgs[1] {
			t.Errorf("messages differ: %q vs %q", msgs[0], msgs[1])
		}
	})
	t.Run("CSRF token required", func(t *testing.T) {
		ts := newServer(t, nil)
		c := browser(t)
		form := startLogin(t, ts, c)
		form.Set("username", "alice")
		form.Set("password", testPassword)
		for _, bad := range []string{"", "forged-token-forged-token"} {
			f := url.Values{}
			for k, v := range form {
				f[k] = v
			}
			f.Set("csrf_token", bad)
			if resp, _ := postLogin(t, ts, c, f); resp.StatusCode != http.StatusBadRequest {
				t.Errorf("csrf %q: status %d, want 400", bad, resp.StatusCode)
			}
		}
		// Another browser (no CSRF cookie) posting a stolen form fails too.
		if resp, _ := postLogin(t, ts, browser(t), form); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("form without cookie: status %d, want 400", resp.StatusCode)
		}
		if resp, _ := postLogin(t, ts, c, form); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("genuine form: status %d, want 303", resp.StatusCode)
		}
	})
	t.Run("tampered request", func(t *testing.T) {
		ts := newServer(t, nil)
		c := browser(t)
		form := startLogin(t, ts, c)
		form.Set("request", form.Get("request")[:20]+"xyz")
		form.Set("username", "alice")
		form.Set("password", testPassword)
		if resp, body := postLogin(t, ts, c, form); resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Fatalf("status %d: %s; want 400 page", resp.StatusCode, body)
		}
	})
	t.Run("throttled with backoff", func(t *testing.T) {
		ts := newServer(t, func(c *idp.Config) {
			c.Throttle = idp.ThrottleConfig{UserIP: idp.ThrottleLimit{Free: 2, Base: 4 * time.Second, Max: time.Minute}}
		})
		c := browser(t)
		form := startLogin(t, ts, c)
		form.Set("username", "alice")
		form.Set("password", "wrong")
		for i := range 3 {
			if resp, _ := postLogin(t, ts, c, form); resp.StatusCode != http.StatusOK {
				t.Fatalf("failure %d: status %d, want 200", i+1, resp.StatusCode)
			}
		}
		// The third failure set a 4 s wait: even the right password waits.
		form.Set("password", testPassword)
		resp, body := postLogin(t, ts, c, form)
		if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "Try again in 4\u00a0seconds.") || resp.Header.Get("Retry-After") != "4" {
			t.Fatalf("throttled: status %d Retry-After %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
		// Another username from the same IP has failures of its own.
		other := url.Values{}
		for k, v := range form {
			other[k] = v
		}
		other.Set("username", "bob")
		other.Set("password", "wrong")
		if resp, _ := postLogin(t, ts, c, other); resp.StatusCode != http.StatusOK {
			t.Errorf("same IP, other user: status %d, want 200", resp.StatusCode)
		}
		ts.clock.Advance(4 * time.Second)
		form.Set("password", "wrong")
		postLogin(t, ts, c, form) // fourth failure: 8 s
		form.Set("password", testPassword)
		ts.clock.Advance(7 * time.Second)
		if resp, body := postLogin(t, ts, c, form); !strings.Contains(body, "Try again in 1\u00a0second.") {
			t.Fatalf("after 7 of 8 s: status %d: %s", resp.StatusCode, body)
		}
		ts.clock.Advance(time.Second)
		if resp, _ := postLogin(t, ts, c, form); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("after the wait: status %d, want 303", resp.StatusCode)
		}
	})
	t.Run("session cookie flags", func(t *testing.T) {
		ts := newServer(t, nil)
		c := browser(t)
		form := startLogin(t, ts, c)
		form.Set("username", "alice")
		form.Set("password", testPassword)
		resp, _ := postLogin(t, ts, c, form)
		var found bool
		for _, ck := range resp.Cookies() {
			if ck.Name == idp.SessionCookie {
				found = true
				if !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" {
					t.Errorf("session cookie %+v: want HttpOnly, SameSite=Lax, Path=/", ck)
				}
				if strings.Contains(ck.Value, "alice") || strings.Contains(ck.Value, idp.DeriveSubject("alice")) {
					t.Errorf("session cookie is readable: %s", ck.Value)
				}
			}
		}
		if !found {
			t.Fatal("no session cookie set")
		}
	})
	t.Run("direct visit and logout", func(t *testing.T) {
		ts := newServer(t, nil)
		c := browser(t)
		form := loginForm(t, c, ts.URL, "/account/login")
		form.Set("username", "alice")
		form.Set("password", testPassword)
		resp, body := postLogin(t, ts, c, form)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "signed in as alice") {
			t.Fatalf("direct login: %d %s", resp.StatusCode, body)
		}
		var stolen *http.Cookie
		for _, ck := range resp.Cookies() {
			if ck.Name == idp.SessionCookie {
				stolen = ck
			}
		}
		// GET only asks; the session survives it.
		resp, _ = c.Get(ts.URL + "/account/logout")
		if body := readBody(t, resp); !strings.Contains(body, "Sign out?") || !strings.Contains(body, `method="post"`) {
			t.Fatalf("GET /account/logout: %s", body)
		}
		_, ch0 := pkce("v")
		q0 := authorizeParams(ch0)
		q0.Set("prompt", "none")
		resp, _ = c.Get(ts.URL + "/connect/authorize?" + q0.Encode())
		if readBody(t, resp); !strings.Contains(resp.Header.Get("Location"), "code=") {
			t.Fatalf("a GET of the logout page ended the session: %s", resp.Header.Get("Location"))
		}
		// A POST without the form's token does not sign out.
		resp, _ = c.Post(ts.URL+"/account/logout", "", nil)
		if readBody(t, resp); resp.StatusCode != http.StatusBadRequest || !signedIn(t, ts, c) {
			t.Fatalf("POST /account/logout without a token: status %d, signed in %v; want 400, still signed in", resp.StatusCode, signedIn(t, ts, c))
		}
		resp, _ = c.PostForm(ts.URL+"/account/logout", loginForm(t, c, ts.URL, "/account/logout"))
		readBody(t, resp)
		_, ch := pkce("v")
		q := authorizeParams(ch)
		q.Set("prompt", "none")
		resp = authorize(t, ts, c, q)
		if loc := resp.Header.Get("Location"); !strings.Contains(loc, "error=login_required") {
			t.Fatalf("after logout: redirected to %s, want login_required", loc)
		}
		// A copy of the cookie taken before logout is dead too.
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/connect/authorize?"+q.Encode(), nil)
		req.AddCookie(stolen)
		resp, _ = browser(t).Do(req)
		readBody(t, resp)
		if loc := resp.Header.Get("Location"); !strings.Contains(loc, "error=login_required") {
			t.Fatalf("stolen cookie after logout: redirected to %s, want login_required", loc)
		}
	})
	t.Run("operator templates", func(t *testing.T) {
		ts := newServer(t, func(c *idp.Config) {
			c.Templates = fstest.MapFS{"login.html": {Data: []byte(`<h1>ACME login</h1><input type="hidden" name="csrf_token" value="{{.CSRF}}">`)}}
		})
		resp, err := browser(t).Get(ts.URL + "/account/login")
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); !strings.Contains(body, "ACME login") {
			t.Fatalf("override not used: %s", body)
		}
	})
}
