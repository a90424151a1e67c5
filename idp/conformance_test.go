package idp_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/authgate/authgate/idp"
)

// TestSpecLetter covers details black-box clients rely on.
func TestSpecLetter(t *testing.T) {
	t.Run("long state survives the login page", func(t *testing.T) {
		ts := newServer(t, nil)
		_, ch := pkce("v")
		q := authorizeParams(ch)
		q.Set("state", strings.Repeat("s", 6000))
		u := login(t, ts, browser(t), q, "alice", testPassword)
		if u.Query().Get("state") != q.Get("state") || u.Query().Get("code") == "" {
			t.Fatalf("state of %d bytes not echoed with a code", len(q.Get("state")))
		}
	})
	t.Run("empty parameters are omitted", func(t *testing.T) {
		ts := newServer(t, nil)
		_, ch := pkce("v")
		q := authorizeParams(ch)
		q.Set("request", "")
		q.Set("request_uri", "")
		q.Add("state", "")
		resp := authorize(t, ts, browser(t), q)
		loc := resp.Header.Get("Location")
		if !strings.Contains(loc, "/account/login") {
			t.Fatalf("redirected to %s; empty request, request_uri and a second empty state should be ignored", loc)
		}
		code, verifier := codeFor(t, ts)
		form := exchangeForm(code, verifier)
		form.Set("client_secret", "")
		if resp, body := postToken(t, ts, "demo-app", testSecret, form); resp.StatusCode != 200 {
			t.Fatalf("Basic auth with an empty client_secret parameter: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("unknown parameters may repeat", func(t *testing.T) {
		ts := newServer(t, nil)
		_, ch := pkce("v")
		q := authorizeParams(ch)
		q["resource"] = []string{"https://a.example", "https://b.example"}
		resp := authorize(t, ts, browser(t), q)
		if loc := resp.Header.Get("Location"); !strings.Contains(loc, "/account/login") {
			t.Fatalf("redirected to %s", loc)
		}
	})
	t.Run("error_description stays within its character set", func(t *testing.T) {
		ts := newServer(t, nil)
		_, ch := pkce("v")
		q := authorizeParams(ch)
		q.Set("scope", `openid é"x\`)
		resp := authorize(t, ts, browser(t), q)
		u, _ := url.Parse(resp.Header.Get("Location"))
		desc := u.Query().Get("error_description")
		if u.Query().Get("error") != "invalid_scope" || strings.ContainsAny(desc, "\"\\é") {
			t.Fatalf("error_description %q", desc)
		}
		for _, c := range desc {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("error_description %q has %q", desc, c)
			}
		}
	})
	t.Run("huge max_age is no limit", func(t *testing.T) {
		ts := newServer(t, nil)
		c := browser(t)
		_, ch := pkce("v")
		login(t, ts, c, authorizeParams(ch), "alice", testPassword)
		q := authorizeParams(ch)
		q.Set("prompt", "none")
		q.Set("max_age", "99999999999999999999")
		resp := authorize(t, ts, c, q)
		if loc := resp.Header.Get("Location"); !strings.Contains(loc, "code=") {
			t.Fatalf("redirected to %s, want a code", loc)
		}
	})
	t.Run("id_token_hint", func(t *testing.T) {
		ts := newServer(t, func(c *idp.Config) {
			c.Users = append(c.Users, idp.User{Username: "bob", PasswordHash: passwordHash(t)})
		})
		alice, bob := browser(t), browser(t)
		v, ch := pkce("v")
		u := login(t, ts, alice, authorizeParams(ch), "alice", testPassword)
		_, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(u.Query().Get("code"), v))
		aliceID := tokensOf(t, body).IDToken
		login(t, ts, bob, authorizeParams(ch), "bob", testPassword)
		cases := []struct {
			name string
			c    *http.Client
			hint string
			want string
		}{
			{"matching session", alice, aliceID, "code="},
			{"another user's session", bob, aliceID, "error=login_required"},
			{"not our token", alice, "garbage", "error=invalid_request"},
		}
		for _, tc := range cases {
			q := authorizeParams(ch)
			q.Set("prompt", "none")
			q.Set("id_token_hint", tc.hint)
			resp := authorize(t, ts, tc.c, q)
			if loc := resp.Header.Get("Location"); !strings.Contains(loc, tc.want) {
				t.Errorf("%s: redirected to %s, want %s", tc.name, loc, tc.want)
			}
		}
	})
	t.Run("loopback redirect on any port", func(t *testing.T) {
		ts := newServer(t, func(c *idp.Config) {
			c.Clients[0].RedirectURIs = append(c.Clients[0].RedirectURIs, "http://127.0.0.1/cb", "http://localhost:8000/cb")
		})
		_, ch := pkce("v")
		cases := []struct {
			uri  string
			page bool
		}{
			{"http://127.0.0.1:53124/cb", false},
			{"http://127.0.0.1:53124/other", true},
			{"http://localhost:9000/cb", true}, // only IP literals may vary (RFC 8252 §7.3)
		}
		for _, tc := range cases {
			q := authorizeParams(ch)
			q.Set("redirect_uri", tc.uri)
			resp := authorize(t, ts, browser(t), q)
			if got := resp.StatusCode == http.StatusBadRequest; got != tc.page {
				t.Errorf("%s: status %d, error page %v, want %v", tc.uri, resp.StatusCode, got, tc.page)
			}
		}
	})
	t.Run("prompt=consent asks any client", func(t *testing.T) {
		ts := newServer(t, nil)
		c := browser(t)
		_, ch := pkce("v")
		login(t, ts, c, authorizeParams(ch), "alice", testPassword)
		q := authorizeParams(ch)
		q.Set("prompt", "consent")
		resp := authorize(t, ts, c, q)
		if loc := resp.Header.Get("Location"); !strings.Contains(loc, "/account/consent") {
			t.Fatalf("redirected to %s, want the consent page", loc)
		}
	})
	t.Run("public client cannot introspect", func(t *testing.T) {
		ts := lifecycleServer(t, nil)
		st, body := postForm(t, ts, "/connect/introspect", "", "", url.Values{"token": {"x"}, "client_id": {"spa"}})
		if st != http.StatusUnauthorized || !strings.Contains(body, "invalid_client") {
			t.Fatalf("%d %s", st, body)
		}
	})
	t.Run("public client refresh tokens must rotate", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Issuer = "https://op.example"
		cfg.Clients = append(cfg.Clients, idp.Client{ID: "spa", Public: true, RedirectURIs: []string{"https://spa/cb"}, RefreshTokenUsage: idp.RefreshReuse})
		// The error says why (RFC 9700 §4.14.2) and what to use instead.
		if _, err := idp.New(cfg, idp.NewMemoryStore(nil)); err == nil || !strings.Contains(err.Error(), `use "one_time"`) || !strings.Contains(err.Error(), "RFC 9700 §4.14.2") {
			t.Fatalf("New = %v", err)
		}
	})
}

func tokensOf(t *testing.T, body string) tokens {
	t.Helper()
	var tk tokens
	if err := jsonUnmarshal(body, &tk); err != nil {
		t.Fatalf("token response %s: %v", body, err)
	}
	return tk
}

func TestHeadWhereGetWorks(t *testing.T) {
	ts := newServer(t, nil)
	access, _ := tokensFor(t, ts, "openid")
	for _, path := range []string{"/.well-known/openid-configuration", "/connect/userinfo", "/connect/endsession", "/account/login"} {
		req, _ := http.NewRequest(http.MethodHead, ts.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+access)
		resp, err := browser(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if resp.StatusCode == http.StatusMethodNotAllowed {
			t.Errorf("HEAD %s: 405", path)
		}
	}
}
