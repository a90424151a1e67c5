package idp_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

func TestAuthorizeErrors(t *testing.T) {
	_, challenge := pkce("v")
	tests := []struct {
		name string
		edit func(url.Values)
		// page: an error page and no redirect; otherwise the error code
		// expected at the redirect URI.
		page    bool
		wantErr string
	}{
		{name: "unknown client", edit: func(q url.Values) { q.Set("client_id", "nope") }, page: true},
		{name: "no client", edit: func(q url.Values) { q.Del("client_id") }, page: true},
		{name: "no redirect_uri", edit: func(q url.Values) { q.Del("redirect_uri") }, page: true},
		{name: "unregistered redirect_uri", edit: func(q url.Values) { q.Set("redirect_uri", "https://evil.example/cb") }, page: true},
		{name: "redirect_uri with extra path", edit: func(q url.Values) { q.Set("redirect_uri", testRedirect+"/x") }, page: true},
		{name: "redirect_uri with extra query", edit: func(q url.Values) { q.Set("redirect_uri", testRedirect+"?a=b") }, page: true},
		{name: "redirect_uri differing in case", edit: func(q url.Values) { q.Set("redirect_uri", strings.ToUpper(testRedirect)) }, page: true},
		{name: "two redirect_uris", edit: func(q url.Values) { q.Add("redirect_uri", testRedirect) }, page: true},
		{name: "no response_type", edit: func(q url.Values) { q.Del("response_type") }, wantErr: "invalid_request"},
		{name: "token response_type", edit: func(q url.Values) { q.Set("response_type", "token") }, wantErr: "unsupported_response_type"},
		{name: "hybrid response_type", edit: func(q url.Values) { q.Set("response_type", "code id_token") }, wantErr: "unsupported_response_type"},
		{name: "unknown response_mode", edit: func(q url.Values) { q.Set("response_mode", "web_message") }, wantErr: "invalid_request"},
		{name: "no scope", edit: func(q url.Values) { q.Del("scope") }, wantErr: "invalid_scope"},
		{name: "unknown scope", edit: func(q url.Values) { q.Set("scope", "openid admin") }, wantErr: "invalid_scope"},
		{name: "scope not allowed for client", edit: func(q url.Values) { q.Set("scope", "openid phone") }, wantErr: "invalid_scope"},
		{name: "no code_challenge", edit: func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") }, wantErr: "invalid_request"},
		{name: "plain code_challenge_method", edit: func(q url.Values) { q.Set("code_challenge_method", "plain") }, wantErr: "invalid_request"},
		{name: "default method is plain", edit: func(q url.Values) { q.Del("code_challenge_method") }, wantErr: "invalid_request"},
		{name: "unknown code_challenge_method", edit: func(q url.Values) { q.Set("code_challenge_method", "S512") }, wantErr: "invalid_request"},
		{name: "short code_challenge", edit: func(q url.Values) { q.Set("code_challenge", "abc") }, wantErr: "invalid_request"},
		{name: "method without challenge", edit: func(q url.Values) { q.Del("code_challenge") }, wantErr: "invalid_request"},
		{name: "request object", edit: func(q url.Values) { q.Set("request", "eyJ.x.y") }, wantErr: "request_not_supported"},
		{name: "request_uri", edit: func(q url.Values) { q.Set("request_uri", "https://x/r") }, wantErr: "request_uri_not_supported"},
		{name: "prompt none with login", edit: func(q url.Values) { q.Set("prompt", "none login") }, wantErr: "invalid_request"},
		{name: "unknown prompt", edit: func(q url.Values) { q.Set("prompt", "maybe") }, wantErr: "invalid_request"},
		{name: "bad max_age", edit: func(q url.Values) { q.Set("max_age", "-1") }, wantErr: "invalid_request"},
		{name: "repeated scope parameter", edit: func(q url.Values) { q.Add("scope", "openid") }, wantErr: "invalid_request"},
		{name: "prompt none without session", edit: func(q url.Values) { q.Set("prompt", "none") }, wantErr: "login_required"},
	}
	ts := newServer(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := authorizeParams(challenge)
			tt.edit(q)
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				var resp *http.Response
				var err error
				if method == http.MethodGet {
					resp, err = browser(t).Get(ts.URL + "/connect/authorize?" + q.Encode())
				} else {
					resp, err = browser(t).PostForm(ts.URL+"/connect/authorize", q)
				}
				if err != nil {
					t.Fatal(err)
				}
				body := readBody(t, resp)
				if tt.page {
					if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
						t.Fatalf("%s: status %d, Location %q; want 400 page without redirect", method, resp.StatusCode, resp.Header.Get("Location"))
					}
					if !strings.Contains(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(body, "<h1>") {
						t.Fatalf("%s: want an HTML error page, got %q", method, body)
					}
					continue
				}
				// A POST is redirected with 303 (RFC 9700 §4.12), a GET with 302.
				want := map[string]int{http.MethodGet: http.StatusFound, http.MethodPost: http.StatusSeeOther}[method]
				loc, err := resp.Location()
				if resp.StatusCode != want || err != nil {
					t.Fatalf("%s: status %d, want %d to the client", method, resp.StatusCode, want)
				}
				if !strings.HasPrefix(loc.String(), testRedirect+"?") {
					t.Fatalf("%s: redirected to %s, want the client's redirect URI", method, loc)
				}
				got := loc.Query()
				if got.Get("error") != tt.wantErr || got.Get("iss") != ts.URL || got.Has("code") {
					t.Fatalf("%s: callback query %v; want error %s and iss", method, got, tt.wantErr)
				}
				if q.Get("state") != "" && len(q["state"]) == 1 && got.Get("state") != "st-123" {
					t.Fatalf("%s: state not echoed: %v", method, got)
				}
			}
		})
	}
}

func TestAuthorizeMethodNotAllowed(t *testing.T) {
	ts := newServer(t, nil)
	req, _ := http.NewRequest(http.MethodPut, ts.URL+"/connect/authorize", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
		t.Fatalf("status %d, Allow %q; want 405 with Allow", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func TestAuthorizeOptions(t *testing.T) {
	t.Run("plain PKCE for a client that opts in", func(t *testing.T) {
		ts := newServer(t, func(c *idp.Config) { c.Clients[0].AllowPlainPKCE = true })
		verifier := strings.Repeat("p", 50)
		q := authorizeParams(verifier)
		q.Set("code_challenge_method", "plain")
		u := login(t, ts, browser(t), q, "alice", testPassword)
		resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(u.Query().Get("code"), verifier))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("exchange: %d %s", resp.StatusCode, body)
		}
		disc, _ := http.Get(ts.URL + "/.well-known/openid-configuration")
		if b := readBody(t, disc); !strings.Contains(b, `"code_challenge_methods_supported":["S256","plain"]`) {
			t.Errorf("discovery does not advertise plain: %s", b)
		}
	})
	t.Run("PKCE optional for a client that opts out", func(t *testing.T) {
		ts := newServer(t, func(c *idp.Config) { c.Clients[0].InsecurePKCEOptional = true })
		q := authorizeParams("")
		q.Del("code_challenge")
		q.Del("code_challenge_method")
		u := login(t, ts, browser(t), q, "alice", testPassword)
		form := exchangeForm(u.Query().Get("code"), "")
		form.Del("code_verifier")
		if resp, body := postToken(t, ts, "demo-app", testSecret, form); resp.StatusCode != http.StatusOK {
			t.Fatalf("exchange: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("verifier for a code issued without challenge", func(t *testing.T) {
		ts := newServer(t, func(c *idp.Config) { c.Clients[0].InsecurePKCEOptional = true })
		q := authorizeParams("")
		q.Del("code_challenge")
		q.Del("code_challenge_method")
		u := login(t, ts, browser(t), q, "alice", testPassword)
		v, _ := pkce("x")
		resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(u.Query().Get("code"), v))
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "invalid_grant") {
			t.Fatalf("exchange: %d %s; want invalid_grant (PKCE downgrade)", resp.StatusCode, body)
		}
	})
	t.Run("login_hint fills the username", func(t *testing.T) {
		ts := newServer(t, nil)
		_, ch := pkce("v")
		q := authorizeParams(ch)
		q.Set("login_hint", "alice@hint")
		c := browser(t)
		resp := authorize(t, ts, c, q)
		resp, _ = c.Get(resolve(ts.URL, resp.Header.Get("Location")))
		if b := readBody(t, resp); !strings.Contains(b, `value="alice@hint"`) {
			t.Errorf("login page does not prefill the hint: %s", b)
		}
	})
	t.Run("single sign-on, prompt and max_age", func(t *testing.T) {
		ts := newServer(t, nil)
		c := browser(t)
		_, ch := pkce("v")
		login(t, ts, c, authorizeParams(ch), "alice", testPassword)
		cases := []struct {
			name      string
			edit      func(url.Values)
			wantLogin bool
			wantErr   string
		}{
			{name: "session reused", edit: func(url.Values) {}},
			{name: "prompt=none with session", edit: func(q url.Values) { q.Set("prompt", "none") }},
			{name: "prompt=login forces the login page", edit: func(q url.Values) { q.Set("prompt", "login") }, wantLogin: true},
			{name: "max_age within", edit: func(q url.Values) { q.Set("max_age", "3600") }},
			{name: "max_age exceeded", edit: func(q url.Values) { q.Set("max_age", "0") }, wantLogin: true},
			{name: "max_age exceeded with prompt=none", edit: func(q url.Values) { q.Set("max_age", "0"); q.Set("prompt", "none") }, wantErr: "login_required"},
		}
		ts.clock.Advance(2 * time.Second)
		for _, tc := range cases {
			q := authorizeParams(ch)
			tc.edit(q)
			resp, err := c.Get(ts.URL + "/connect/authorize?" + q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
			loc := resp.Header.Get("Location")
			switch {
			case tc.wantLogin:
				if !strings.Contains(loc, "/account/login") {
					t.Errorf("%s: redirected to %s, want the login page", tc.name, loc)
				}
			case tc.wantErr != "":
				if !strings.Contains(loc, "error="+tc.wantErr) {
					t.Errorf("%s: redirected to %s, want error %s", tc.name, loc, tc.wantErr)
				}
			default:
				if !strings.HasPrefix(loc, testRedirect+"?code=") && !strings.Contains(loc, "code=") {
					t.Errorf("%s: redirected to %s, want a code", tc.name, loc)
				}
			}
		}
	})
	t.Run("prompt=login then login completes", func(t *testing.T) {
		ts := newServer(t, nil)
		c := browser(t)
		v, ch := pkce("v")
		login(t, ts, c, authorizeParams(ch), "alice", testPassword)
		q := authorizeParams(ch)
		q.Set("prompt", "login")
		q.Set("max_age", "0")
		u := login(t, ts, c, q, "alice", testPassword)
		if resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(u.Query().Get("code"), v)); resp.StatusCode != http.StatusOK {
			t.Fatalf("exchange after forced login: %d %s", resp.StatusCode, body)
		}
	})
}
