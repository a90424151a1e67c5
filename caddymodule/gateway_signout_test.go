package caddymodule

import (
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

var signOutForm = regexp.MustCompile(`<form method="post" action="([^"]*)"><input type="hidden" name="token" value="([^"]*)">`)

// signOutPage opens the sign-out path as a link would and returns the
// form's action and token.
func (u *user) signOutPage() (action, token string) {
	u.t.Helper()
	resp, body := u.get("http://gw.test/oauth2/sign_out", nil)
	m := signOutForm.FindStringSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil {
		u.t.Fatalf("sign-out page: %d, no form:\n%s", resp.StatusCode, body)
	}
	return html.UnescapeString(m[1]), html.UnescapeString(m[2])
}

// postSignOut posts the sign-out form with token.
func (u *user) postSignOut(token string) (*http.Response, string) {
	u.t.Helper()
	form := url.Values{}
	if token != "" {
		form.Set("token", token)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://gw.test/oauth2/sign_out", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	resp, err := u.c.Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// signOut signs out as a user does: the link, then the button. It returns
// the answer to the button.
func (u *user) signOut() *http.Response {
	u.t.Helper()
	action, token := u.signOutPage()
	if action != "/oauth2/sign_out" {
		u.t.Fatalf("sign-out form posts to %q", action)
	}
	resp, _ := u.postSignOut(token)
	return resp
}

// TestGatewaySignOutCSRF: only the gateway's own sign-out page, with its
// token bound to the session, signs out; a link, a forged form or another
// session's token shows the page again.
func TestGatewaySignOutCSRF(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, nil)
	u := newUser(t, gw, op)
	u.signIn("/")

	// stillSignedIn checks that the session survived.
	stillSignedIn := func(t *testing.T) {
		t.Helper()
		if resp, body := u.get("http://gw.test/headers", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("the session did not survive: %d %s", resp.StatusCode, body)
		}
	}

	t.Run("GET shows a page", func(t *testing.T) {
		resp, body := u.get("http://gw.test/oauth2/sign_out", nil)
		if resp.StatusCode != http.StatusOK || clears(resp) || !signOutForm.MatchString(body) {
			t.Fatalf("GET: %d, clears session %v:\n%s", resp.StatusCode, clears(resp), body)
		}
		for name, want := range map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
			if got := resp.Header.Get(name); got != want {
				t.Errorf("%s: %q, want %q", name, got, want)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("Content-Security-Policy %q: the page must not be framed", csp)
		}
		stillSignedIn(t)
	})

	// Another user's valid token for their own session.
	other := newUser(t, gw, op)
	other.signIn("/")
	_, otherToken := other.signOutPage()
	_, token := u.signOutPage()
	tests := []struct {
		name  string
		token string
	}{
		{"no token", ""},
		{"garbage token", "x" + token[1:]},
		{"another session's token", otherToken},
	}
	for _, tt := range tests {
		t.Run("POST with "+tt.name, func(t *testing.T) {
			resp, body := u.postSignOut(tt.token)
			if resp.StatusCode != http.StatusForbidden || clears(resp) || !signOutForm.MatchString(body) {
				t.Fatalf("POST: %d, clears session %v, want 403 and the page again:\n%s", resp.StatusCode, clears(resp), body)
			}
			stillSignedIn(t)
		})
	}

	t.Run("other methods", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPut, "http://gw.test/oauth2/sign_out", nil)
		resp, err := u.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || clears(resp) {
			t.Fatalf("PUT: %d, want 405", resp.StatusCode)
		}
		stillSignedIn(t)
	})

	t.Run("the page's token signs out", func(t *testing.T) {
		resp := u.signOut()
		if resp.StatusCode != http.StatusSeeOther || !clears(resp) || !strings.HasPrefix(resp.Header.Get("Location"), op.URL+"/connect/endsession?") {
			t.Fatalf("POST: %d to %q, clears session %v; want 303 to the provider's end_session", resp.StatusCode, resp.Header.Get("Location"), clears(resp))
		}
		if resp, _ := u.get("http://gw.test/headers", nil); resp.StatusCode != http.StatusFound {
			t.Fatalf("after sign-out: %d, want a login", resp.StatusCode)
		}
	})

	t.Run("no session", func(t *testing.T) {
		// Nothing to end here: on to the provider, which asks by itself
		// when nothing proves who sent the user.
		nobody := newUser(t, gw, op)
		for method, status := range map[string]int{http.MethodGet: http.StatusFound, http.MethodPost: http.StatusSeeOther} {
			req, _ := http.NewRequest(method, "http://gw.test/oauth2/sign_out", nil)
			resp, err := nobody.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			if resp.StatusCode != status || !strings.HasPrefix(loc, op.URL+"/connect/endsession?") || strings.Contains(loc, "id_token_hint") || len(resp.Cookies()) != 0 {
				t.Errorf("%s: %d to %q, cookies %v; want %d to end_session without id_token_hint, no cookies", method, resp.StatusCode, loc, resp.Cookies(), status)
			}
		}
		// A cookie the browser has but did not send (a cross-site POST
		// leaves SameSite=Lax cookies behind) must not be cleared.
		resp, _ := other.postSignOut("")
		if clears(resp) {
			t.Errorf("a token-less POST cleared the session")
		}
	})
}
