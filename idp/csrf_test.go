package idp_test

import (
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

// postFrom posts form to path with c and the request headers in header, as
// a browser labels a form it submits, and returns the response with its
// body read.
func postFrom(t testing.TB, ts *testServer, c *http.Client, path string, form url.Values, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for name, values := range header {
		req.Header[name] = values
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readBody(t, resp)
}

// sameOrigin is what Chromium sends with a form posted from one of the
// provider's pages: fetch metadata, and an Origin of "null" because those
// pages have Referrer-Policy: no-referrer (Fetch standard, "serializing a
// request origin").
var sameOrigin = http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {"null"}}

// csrfCookieOf returns one of the browser's CSRF cookies for the provider.
func csrfCookieOf(t testing.TB, ts *testServer, c *http.Client) *http.Cookie {
	t.Helper()
	u, _ := url.Parse(ts.URL)
	for _, ck := range c.Jar.Cookies(u) {
		if strings.HasPrefix(ck.Name, "authgate_provider_csrf_") {
			return ck
		}
	}
	return nil
}

// TestLoginTwoTabs: two tabs open the login page at once, so that neither
// request carries a CSRF cookie and both answers set one. Both tabs sign
// in on the first try (issue 7, finding 8), also in a browser that does
// not say where a form comes from, where the double-submit cookie decides.
func TestLoginTwoTabs(t *testing.T) {
	tests := []struct {
		name   string
		header func(ts *testServer) http.Header
	}{
		{name: "fetch metadata", header: func(*testServer) http.Header { return sameOrigin }},
		{name: "origin header", header: func(ts *testServer) http.Header { return http.Header{"Origin": {ts.URL}} }},
		{name: "neither: double-submit cookie", header: func(*testServer) http.Header { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newServer(t, nil)
			u, _ := url.Parse(ts.URL)
			jar := browser(t)
			var forms []url.Values
			for range 2 {
				tab := browser(t) // no cookie yet
				forms = append(forms, startLogin(t, ts, tab))
				jar.Jar.SetCookies(u, tab.Jar.Cookies(u))
			}
			for i, form := range forms {
				form.Set("username", "alice")
				form.Set("password", testPassword)
				resp, body := postFrom(t, ts, jar, "/account/login", form, tt.header(ts))
				if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, testRedirect+"?code=") {
					t.Errorf("tab %d: status %d, Location %q; want 303 with a code:\n%s", i+1, resp.StatusCode, loc, body)
				}
			}
		})
	}
}

// TestFormCSRF: a login form posted from another site, or without a
// genuine, recent token of the provider, is refused (issue 7, finding 8).
func TestFormCSRF(t *testing.T) {
	other := newServer(t, func(c *idp.Config) {
		c.CookieKeys = [][2][]byte{{[]byte(strings.Repeat("o", 32)), []byte(strings.Repeat("p", 32))}}
	})
	otherToken := loginForm(t, browser(t), other.URL, "/account/login").Get("csrf_token")

	tests := []struct {
		name   string
		header http.Header
		// token returns the csrf_token to send, given the page's and the
		// browser's CSRF cookie; nil sends the page's.
		token func(page, cookie string) string
		// stranger posts from a browser that never saw the page.
		stranger bool
		// age is how long the form stays open before it is posted.
		age  time.Duration
		want int
	}{
		{name: "same origin", header: sameOrigin, want: http.StatusOK},
		{name: "origin header", header: http.Header{"Origin": {"ISSUER"}}, want: http.StatusOK},
		{name: "typed by the user", header: http.Header{"Sec-Fetch-Site": {"none"}}, want: http.StatusOK},
		{name: "no proof, cookie matches", want: http.StatusOK},
		{name: "no proof, null origin, cookie matches", header: http.Header{"Origin": {"null"}}, want: http.StatusOK},
		{name: "open for 25 minutes", header: sameOrigin, age: 25 * time.Minute, want: http.StatusOK},

		{name: "cross-site", header: http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://evil.example"}}, want: http.StatusBadRequest},
		{name: "cross-site, null origin", header: http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"null"}}, want: http.StatusBadRequest},
		{name: "same site, other origin", header: http.Header{"Sec-Fetch-Site": {"same-site"}, "Origin": {"http://sibling.127.0.0.1.example"}}, want: http.StatusBadRequest},
		{name: "other origin, no metadata", header: http.Header{"Origin": {"https://evil.example"}}, want: http.StatusBadRequest},
		{name: "other port", header: http.Header{"Origin": {"http://127.0.0.1:1"}}, want: http.StatusBadRequest},
		{name: "other origin despite metadata", header: http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {"https://evil.example"}}, want: http.StatusBadRequest},
		{name: "unknown metadata", header: http.Header{"Sec-Fetch-Site": {"nearby"}}, want: http.StatusBadRequest},
		{name: "no proof, no cookie", stranger: true, want: http.StatusBadRequest},
		{name: "null origin, no cookie", header: http.Header{"Origin": {"null"}}, stranger: true, want: http.StatusBadRequest},

		{name: "missing token", header: sameOrigin, token: func(string, string) string { return "" }, want: http.StatusBadRequest},
		{name: "forged token", header: sameOrigin, token: func(string, string) string { return "forged-forged-forged-forged" }, want: http.StatusBadRequest},
		{name: "tampered token", header: sameOrigin, token: func(page, _ string) string { return page[:len(page)/2] + "A" + page[len(page)/2+1:] }, want: http.StatusBadRequest},
		{name: "cookie value as token", header: sameOrigin, token: func(_, cookie string) string { return cookie }, want: http.StatusBadRequest},
		{name: "another provider's token", header: sameOrigin, token: func(string, string) string { return otherToken }, want: http.StatusBadRequest},
		{name: "expired token", header: sameOrigin, age: 31 * time.Minute, want: http.StatusBadRequest},
		{name: "expired token, cookie matches", age: 31 * time.Minute, want: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newServer(t, nil)
			c := browser(t)
			// A direct visit: no sealed authorization request to expire
			// with the form.
			form := loginForm(t, c, ts.URL, "/account/login")
			form.Set("username", "alice")
			form.Set("password", testPassword)
			if tt.token != nil {
				form.Set("csrf_token", tt.token(form.Get("csrf_token"), csrfCookieOf(t, ts, c).Value))
			}
			header := http.Header{}
			for name, values := range tt.header {
				header[name] = []string{strings.ReplaceAll(values[0], "ISSUER", ts.URL)}
			}
			if tt.stranger {
				c = browser(t)
			}
			ts.clock.Advance(tt.age)
			resp, body := postFrom(t, ts, c, "/account/login", form, header)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d:\n%s", resp.StatusCode, tt.want, body)
			}
			if tt.want != http.StatusOK {
				if strings.Contains(body, "signed in as") || sessionSet(resp) {
					t.Fatalf("refused, yet signed in:\n%s", body)
				}
				if !strings.Contains(body, `id="error"`) || !strings.Contains(body, `name="csrf_token"`) {
					t.Fatalf("want the login form again with an error:\n%s", body)
				}
				return
			}
			if !strings.Contains(body, "signed in as alice") || !sessionSet(resp) {
				t.Fatalf("not signed in:\n%s", body)
			}
		})
	}

	t.Run("the refusal's form works", func(t *testing.T) {
		ts := newServer(t, nil)
		c := browser(t)
		form := loginForm(t, c, ts.URL, "/account/login")
		form.Set("username", "alice")
		form.Set("password", testPassword)
		ts.clock.Advance(31 * time.Minute)
		resp, body := postFrom(t, ts, c, "/account/login", form, sameOrigin)
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("expired form: status %d, want 400", resp.StatusCode)
		}
		m := hiddenRE.FindStringSubmatch(body)
		if m == nil || m[1] != "csrf_token" {
			t.Fatalf("no fresh token:\n%s", body)
		}
		form.Set("csrf_token", html.UnescapeString(m[2]))
		if resp, body = postFrom(t, ts, c, "/account/login", form, sameOrigin); resp.StatusCode != http.StatusOK || !strings.Contains(body, "signed in as alice") {
			t.Fatalf("with the fresh token: status %d:\n%s", resp.StatusCode, body)
		}
	})

	t.Run("consent from another origin", func(t *testing.T) {
		ts := newServer(t, func(c *idp.Config) { c.Clients[0].RequireConsent = true })
		c := browser(t)
		_, ch := pkce("v")
		resp := authorize(t, ts, c, authorizeParams(ch))
		form := loginForm(t, c, ts.URL, resp.Header.Get("Location"))
		form.Set("username", "alice")
		form.Set("password", testPassword)
		resp, _ = postFrom(t, ts, c, "/account/login", form, sameOrigin)
		loc := resp.Header.Get("Location")
		if !strings.Contains(loc, "/account/consent") {
			t.Fatalf("want the consent page, redirected to %s", loc)
		}
		form = loginForm(t, c, ts.URL, loc)
		form.Set("decision", "allow")
		if resp, _ := postFrom(t, ts, c, "/account/consent", form, http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://evil.example"}}); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("cross-site consent: status %d, want 400", resp.StatusCode)
		}
		if resp, _ := postFrom(t, ts, c, "/account/consent", form, sameOrigin); !strings.HasPrefix(resp.Header.Get("Location"), testRedirect+"?code=") {
			t.Fatalf("same-origin consent: status %d, Location %q; want a code", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
}

// sessionSet reports whether resp sets the provider's session cookie.
func sessionSet(resp *http.Response) bool {
	for _, ck := range resp.Cookies() {
		if ck.Name == idp.SessionCookie && ck.Value != "" && ck.MaxAge >= 0 {
			return true
		}
	}
	return false
}
