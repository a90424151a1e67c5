package idp_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/authgate/authgate/idp"
)

// lifecycleServer has, besides demo-app: a public SPA client with CORS, a
// service client with client_credentials and claims, a legacy client with
// the password grant, and an API resource with a secret.
func lifecycleServer(t *testing.T, edit func(*idp.Config)) *testServer {
	return newServer(t, func(c *idp.Config) {
		empty := ""
		c.Clients[0].AllowOfflineAccess = true
		c.Clients = append(c.Clients,
			idp.Client{ID: "spa", Public: true, RedirectURIs: []string{"http://spa.test/callback.html"}, CORSOrigins: []string{"http://spa.test"},
				AllowOfflineAccess: true, AllowedScopes: []string{"openid", "profile", "api"}},
			idp.Client{ID: "service", Secret: "service-secret", AllowClientCredentials: true, AllowedScopes: []string{"api"},
				Claims: map[string]any{"tier": "gold"}},
			idp.Client{ID: "service-noprefix", Secret: "s2", AllowClientCredentials: true, AllowedScopes: []string{"api"},
				Claims: map[string]any{"tier": "silver"}, ClientClaimsPrefix: &empty},
			idp.Client{ID: "legacy", Secret: "legacy-secret", AllowPasswordGrant: true, AllowOfflineAccess: true},
		)
		c.APIResources[0].Secret = "api-secret"
		if edit != nil {
			edit(c)
		}
	})
}

func claimsOf(t *testing.T, token string) map[string]any {
	t.Helper()
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	tok.UnsafeClaimsWithoutVerification(&c)
	return c
}

func TestClientCredentials(t *testing.T) {
	ts := lifecycleServer(t, nil)
	tests := []struct {
		name, id, secret, scope string
		wantStatus              int
		wantErr                 string
	}{
		{name: "default scopes", id: "service", secret: "service-secret", wantStatus: 200},
		{name: "api scope", id: "service", secret: "service-secret", scope: "api", wantStatus: 200},
		{name: "identity scope", id: "service", secret: "service-secret", scope: "openid", wantStatus: 400, wantErr: "invalid_scope"},
		{name: "client not allowed", id: "demo-app", secret: testSecret, scope: "api", wantStatus: 400, wantErr: "unauthorized_client"},
		{name: "public client", id: "spa", wantStatus: 400, wantErr: "unauthorized_client"},
		{name: "wrong secret", id: "service", secret: "x", wantStatus: 401, wantErr: "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form := url.Values{"grant_type": {"client_credentials"}}
			if tt.scope != "" {
				form.Set("scope", tt.scope)
			}
			var resp *http.Response
			var body string
			if tt.secret == "" {
				form.Set("client_id", tt.id)
				resp, body = postToken(t, ts, "", "", form)
			} else {
				resp, body = postToken(t, ts, tt.id, tt.secret, form)
			}
			if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.wantErr) {
				t.Fatalf("%d %s; want %d %s", resp.StatusCode, body, tt.wantStatus, tt.wantErr)
			}
			if tt.wantStatus != 200 {
				return
			}
			var tk tokens
			json.Unmarshal([]byte(body), &tk)
			if tk.IDToken != "" || tk.RefreshToken != "" {
				t.Errorf("client_credentials issued an ID or refresh token: %s", body)
			}
			c := claimsOf(t, tk.AccessToken)
			if c["sub"] != "service" || c["client_id"] != "service" || c["scope"] != "api" || c["client_tier"] != "gold" {
				t.Errorf("claims = %v", c)
			}
			if aud, _ := c["aud"].([]any); len(aud) != 1 || aud[0] != "demo-api" {
				t.Errorf("aud = %v", c["aud"])
			}
		})
	}
	t.Run("empty claims prefix", func(t *testing.T) {
		resp, body := postToken(t, ts, "service-noprefix", "s2", url.Values{"grant_type": {"client_credentials"}})
		var tk tokens
		json.Unmarshal([]byte(body), &tk)
		if resp.StatusCode != 200 || claimsOf(t, tk.AccessToken)["tier"] != "silver" {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
}

func TestPasswordGrant(t *testing.T) {
	ts := lifecycleServer(t, func(c *idp.Config) {
		c.Throttle = idp.ThrottleConfig{UserIP: idp.ThrottleLimit{Free: 1, Base: time.Minute, Max: time.Hour}}
	})
	form := func(user, pw, scope string) url.Values {
		return url.Values{"grant_type": {"password"}, "username": {user}, "password": {pw}, "scope": {scope}}
	}
	resp, body := postToken(t, ts, "demo-app", testSecret, form("alice", testPassword, "openid"))
	if resp.StatusCode != 400 || !strings.Contains(body, "unauthorized_client") {
		t.Fatalf("client without the grant: %d %s", resp.StatusCode, body)
	}
	resp, body = postToken(t, ts, "legacy", "legacy-secret", form("alice", testPassword, "openid profile offline_access"))
	var tk tokens
	json.Unmarshal([]byte(body), &tk)
	if resp.StatusCode != 200 || tk.IDToken == "" || tk.RefreshToken == "" {
		t.Fatalf("password grant: %d %s", resp.StatusCode, body)
	}
	for i, want := range []string{"invalid username or password", "invalid username or password", "try again in"} {
		resp, body = postToken(t, ts, "legacy", "legacy-secret", form("alice", "wrong", "openid"))
		if resp.StatusCode != 400 || !strings.Contains(body, "invalid_grant") || !strings.Contains(body, want) {
			t.Fatalf("attempt %d: %d %s; want invalid_grant %q", i+1, resp.StatusCode, body, want)
		}
	}
}

func TestPublicClientAndCORS(t *testing.T) {
	ts := lifecycleServer(t, nil)
	verifier, challenge := pkce("s")
	q := url.Values{
		"client_id": {"spa"}, "redirect_uri": {"http://spa.test/callback.html"}, "response_type": {"code"},
		"scope": {"openid profile offline_access"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"},
	}
	u := login(t, ts, browser(t), q, "alice", testPassword)
	form := url.Values{"grant_type": {"authorization_code"}, "code": {u.Query().Get("code")}, "redirect_uri": {"http://spa.test/callback.html"},
		"code_verifier": {verifier}, "client_id": {"spa"}}
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/connect/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://spa.test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "http://spa.test" || !strings.Contains(resp.Header.Get("Vary"), "Origin") {
		t.Fatalf("public token request: %d ACAO %q Vary %q: %s", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), resp.Header.Get("Vary"), body)
	}
	var tk tokens
	json.Unmarshal([]byte(body), &tk)

	t.Run("public client must not send a secret", func(t *testing.T) {
		resp, body := postToken(t, ts, "spa", "guess", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.RefreshToken}})
		if resp.StatusCode != 401 || !strings.Contains(body, "invalid_client") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("public client refreshes", func(t *testing.T) {
		resp, body := postToken(t, ts, "", "", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.RefreshToken}, "client_id": {"spa"}})
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("confidential client without secret", func(t *testing.T) {
		resp, body := postToken(t, ts, "", "", url.Values{"grant_type": {"client_credentials"}, "client_id": {"service"}})
		if resp.StatusCode != 401 || !strings.Contains(body, "invalid_client") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	for _, path := range []string{"/.well-known/openid-configuration", "/.well-known/openid-configuration/jwks", "/connect/token", "/connect/userinfo", "/connect/revocation"} {
		for _, origin := range []string{"http://spa.test", "http://evil.test"} {
			t.Run("preflight "+path+" from "+origin, func(t *testing.T) {
				req, _ := http.NewRequest(http.MethodOptions, ts.URL+path, nil)
				req.Header.Set("Origin", origin)
				req.Header.Set("Access-Control-Request-Method", "POST")
				req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				readBody(t, resp)
				acao := resp.Header.Get("Access-Control-Allow-Origin")
				if origin == "http://spa.test" && (acao != origin || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization")) {
					t.Fatalf("registered origin: ACAO %q, headers %q", acao, resp.Header.Get("Access-Control-Allow-Headers"))
				}
				if origin == "http://evil.test" && acao != "" {
					t.Fatalf("unregistered origin got ACAO %q", acao)
				}
			})
		}
	}
}

func TestRefreshTokenPolicies(t *testing.T) {
	t.Run("reuse", func(t *testing.T) {
		ts := offlineServerWith(t, func(c *idp.Client) { c.RefreshTokenUsage = idp.RefreshReuse })
		tk := offlineTokens(t, ts)
		for i := range 3 {
			st, next, body := refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, "")
			if st != 200 || next.RefreshToken != tk.RefreshToken {
				t.Fatalf("use %d: %d %s; want the same refresh token back", i+1, st, body)
			}
		}
	})
	t.Run("sliding", func(t *testing.T) {
		ts := offlineServerWith(t, func(c *idp.Client) {
			c.RefreshTokenExpiration = idp.RefreshSliding
			c.SlidingRefreshTokenLifetime = 10 * time.Minute
			c.AbsoluteRefreshTokenLifetime = 25 * time.Minute
		})
		rt := offlineTokens(t, ts).RefreshToken
		for i := range 2 { // 8 + 8 minutes: each use slides the window on
			ts.clock.Advance(8 * time.Minute)
			st, next, body := refreshWith(t, ts, "demo-app", testSecret, rt, "")
			if st != 200 {
				t.Fatalf("use %d after 8 min: %d %s", i+1, st, body)
			}
			rt = next.RefreshToken
		}
		ts.clock.Advance(8 * time.Minute) // 24 min: still inside absolute, inside sliding
		st, next, _ := refreshWith(t, ts, "demo-app", testSecret, rt, "")
		if st != 200 {
			t.Fatalf("third use: %d", st)
		}
		ts.clock.Advance(2 * time.Minute) // 26 min: past the absolute end
		if st, _, body := refreshWith(t, ts, "demo-app", testSecret, next.RefreshToken, ""); st != 400 {
			t.Fatalf("past the absolute lifetime: %d %s", st, body)
		}
	})
	t.Run("sliding window lapses", func(t *testing.T) {
		ts := offlineServerWith(t, func(c *idp.Client) {
			c.RefreshTokenExpiration = idp.RefreshSliding
			c.SlidingRefreshTokenLifetime = 10 * time.Minute
		})
		rt := offlineTokens(t, ts).RefreshToken
		ts.clock.Advance(11 * time.Minute)
		if st, _, body := refreshWith(t, ts, "demo-app", testSecret, rt, ""); st != 400 {
			t.Fatalf("unused for longer than the sliding lifetime: %d %s", st, body)
		}
	})
	t.Run("grace", func(t *testing.T) {
		ts := offlineServerWith(t, func(c *idp.Client) { c.RefreshTokenReuseGrace = 10 * time.Second })
		first := offlineTokens(t, ts).RefreshToken
		_, second, _ := refreshWith(t, ts, "demo-app", testSecret, first, "")
		st, again, body := refreshWith(t, ts, "demo-app", testSecret, first, "")
		if st != 200 || again.RefreshToken != second.RefreshToken {
			t.Fatalf("replay within grace: %d %s; want the same successor", st, body)
		}
		ts.clock.Advance(11 * time.Second)
		if st, _, body := refreshWith(t, ts, "demo-app", testSecret, first, ""); st != 400 {
			t.Fatalf("replay after grace: %d %s", st, body)
		}
		if st, _, _ := refreshWith(t, ts, "demo-app", testSecret, second.RefreshToken, ""); st != 400 {
			t.Fatalf("family not revoked after a replay past the grace period: %d", st)
		}
	})
}

func offlineServerWith(t *testing.T, edit func(*idp.Client)) *testServer {
	return newServer(t, func(c *idp.Config) {
		c.Clients[0].AllowOfflineAccess = true
		edit(&c.Clients[0])
	})
}

func postForm(t *testing.T, ts *testServer, path, id, secret string, form url.Values) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if id != "" {
		req.SetBasicAuth(id, secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, readBody(t, resp)
}

func TestRevocationAndIntrospection(t *testing.T) {
	ts := lifecycleServer(t, nil)
	v, ch := pkce("v")
	q := authorizeParams(ch)
	q.Set("scope", "openid api offline_access")
	u := login(t, ts, browser(t), q, "alice", testPassword)
	_, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(u.Query().Get("code"), v))
	var tk tokens
	json.Unmarshal([]byte(body), &tk)

	introspect := func(id, secret, token string) map[string]any {
		st, body := postForm(t, ts, "/connect/introspect", id, secret, url.Values{"token": {token}})
		if st != 200 {
			t.Fatalf("introspect: %d %s", st, body)
		}
		var out map[string]any
		json.Unmarshal([]byte(body), &out)
		return out
	}
	if r := introspect("demo-api", "api-secret", tk.AccessToken); r["active"] != true || r["sub"] != idp.DeriveSubject("alice") || r["client_id"] != "demo-app" {
		t.Fatalf("api resource introspecting its token: %v", r)
	}
	if r := introspect("demo-app", testSecret, tk.RefreshToken); r["active"] != true || r["token_type"] != "refresh_token" {
		t.Fatalf("client introspecting its refresh token: %v", r)
	}
	if r := introspect("service", "service-secret", tk.AccessToken); r["active"] != false {
		t.Fatalf("another client sees the token: %v", r)
	}
	if st, _ := postForm(t, ts, "/connect/introspect", "demo-api", "wrong", url.Values{"token": {tk.AccessToken}}); st != 401 {
		t.Fatalf("wrong resource secret: %d", st)
	}

	// Another client cannot revoke it; the answer is 200 all the same.
	if st, _ := postForm(t, ts, "/connect/revocation", "service", "service-secret", url.Values{"token": {tk.AccessToken}}); st != 200 {
		t.Fatalf("foreign revocation: %d", st)
	}
	if st, _ := userinfo(t, ts, tk.AccessToken); st != 200 {
		t.Fatalf("a foreign client revoked the token: userinfo %d", st)
	}
	if st, _ := postForm(t, ts, "/connect/revocation", "demo-app", testSecret, url.Values{"token": {tk.AccessToken}, "token_type_hint": {"access_token"}}); st != 200 {
		t.Fatalf("revocation: %d", st)
	}
	if st, h := userinfo(t, ts, tk.AccessToken); st != 401 || !strings.Contains(h, "invalid_token") {
		t.Fatalf("userinfo after revocation: %d %q", st, h)
	}
	if r := introspect("demo-api", "api-secret", tk.AccessToken); r["active"] != false {
		t.Fatalf("introspection after revocation: %v", r)
	}
	if st, _ := postForm(t, ts, "/connect/revocation", "demo-app", testSecret, url.Values{"token": {tk.RefreshToken}}); st != 200 {
		t.Fatalf("refresh revocation: %d", st)
	}
	if st, _, body := refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, ""); st != 400 {
		t.Fatalf("refresh after revocation: %d %s", st, body)
	}
	if st, _ := postForm(t, ts, "/connect/revocation", "demo-app", testSecret, url.Values{"token": {"unknown"}}); st != 200 {
		t.Fatalf("unknown token: %d, want 200 (RFC 7009 §2.2)", st)
	}
	if st, body := postForm(t, ts, "/connect/revocation", "demo-app", testSecret, url.Values{}); st != 400 || !strings.Contains(body, "invalid_request") {
		t.Fatalf("no token: %d %s", st, body)
	}
}

func TestConsent(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) { c.Clients[0].RequireConsent = true })
	c := browser(t)
	_, ch := pkce("v")
	consentForm := func(q url.Values) url.Values {
		t.Helper()
		resp, err := c.Get(ts.URL + "/connect/authorize?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		loc := resp.Header.Get("Location")
		if strings.Contains(loc, "/account/login") {
			form := loginForm(t, c, ts.URL, loc)
			form.Set("username", "alice")
			form.Set("password", testPassword)
			resp, _ = c.PostForm(ts.URL+"/account/login", form)
			readBody(t, resp)
			loc = resp.Header.Get("Location")
		}
		if !strings.Contains(loc, "/account/consent") {
			t.Fatalf("want the consent page, redirected to %s", loc)
		}
		resp, _ = c.Get(resolve(ts.URL, loc))
		if body := readBody(t, resp); !strings.Contains(body, `data-scope="email"`) {
			t.Fatalf("consent page does not list the scopes: %s", body)
		}
		return loginForm(t, c, ts.URL, loc)
	}

	// prompt=none before any consent: consent_required. (Log in first.)
	form := consentForm(authorizeParams(ch))
	form.Set("decision", "deny")
	resp, _ := c.PostForm(ts.URL+"/account/consent", form)
	readBody(t, resp)
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "error=access_denied") || !strings.Contains(loc, "state=st-123") {
		t.Fatalf("deny: redirected to %s", loc)
	}
	q := authorizeParams(ch)
	q.Set("prompt", "none")
	resp = authorize(t, ts, c, q)
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "error=consent_required") {
		t.Fatalf("prompt=none without consent: %s", loc)
	}

	form = consentForm(authorizeParams(ch))
	form.Set("decision", "allow")
	form.Set("remember", "1")
	resp, _ = c.PostForm(ts.URL+"/account/consent", form)
	readBody(t, resp)
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "code=") {
		t.Fatalf("allow: redirected to %s", loc)
	}
	// Remembered: the next request for the same (or fewer) scopes skips the page.
	q = authorizeParams(ch)
	q.Set("scope", "openid email")
	resp = authorize(t, ts, c, q)
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "code=") {
		t.Fatalf("remembered consent: %s", loc)
	}
	// prompt=consent shows the page even when remembered, and a forged
	// decision without the CSRF token is refused.
	q = authorizeParams(ch)
	q.Set("prompt", "consent")
	form = consentForm(q)
	form.Set("decision", "allow")
	form.Set("csrf_token", "forged-forged-forged-forged")
	resp, _ = c.PostForm(ts.URL+"/account/consent", form)
	if readBody(t, resp); resp.StatusCode != 400 {
		t.Fatalf("forged consent: %d", resp.StatusCode)
	}
}

// TestFamilyRevocationReachesAccessTokens: revoking a refresh token, or
// replaying a rotated-out one, also invalidates the access tokens of that
// login (RFC 7009 §2.1).
func TestFamilyRevocationReachesAccessTokens(t *testing.T) {
	t.Run("refresh token revoked", func(t *testing.T) {
		ts := lifecycleServer(t, nil)
		tk := offlineTokens(t, ts)
		if st, _ := postForm(t, ts, "/connect/revocation", "demo-app", testSecret, url.Values{"token": {tk.RefreshToken}, "token_type_hint": {"refresh_token"}}); st != 200 {
			t.Fatalf("revocation: %d", st)
		}
		if st, h := userinfo(t, ts, tk.AccessToken); st != 401 || !strings.Contains(h, "invalid_token") {
			t.Fatalf("access token after its refresh token was revoked: %d %q", st, h)
		}
	})
	t.Run("rotated-out token replayed", func(t *testing.T) {
		ts := lifecycleServer(t, nil)
		first := offlineTokens(t, ts)
		_, second, _ := refreshWith(t, ts, "demo-app", testSecret, first.RefreshToken, "")
		if st, _ := userinfo(t, ts, second.AccessToken); st != 200 {
			t.Fatalf("current access token before the replay: %d", st)
		}
		refreshWith(t, ts, "demo-app", testSecret, first.RefreshToken, "")
		if st, _ := userinfo(t, ts, second.AccessToken); st != 401 {
			t.Fatalf("current access token after a replay revoked the family: %d", st)
		}
	})
	t.Run("other logins unaffected", func(t *testing.T) {
		ts := lifecycleServer(t, nil)
		a, b := offlineTokens(t, ts), offlineTokens(t, ts)
		postForm(t, ts, "/connect/revocation", "demo-app", testSecret, url.Values{"token": {a.RefreshToken}})
		if st, _ := userinfo(t, ts, b.AccessToken); st != 200 {
			t.Fatalf("another login's access token: %d", st)
		}
	})
}

// TestConsentTakesOnlyConsentRequests: the login page's sealed request,
// replayed at the consent page by a user who is signed in, gets no code
// (it would skip prompt=login, max_age and the sign-in requirements that
// sent the user to the login page), and a consent request is good only
// for the session it was made for.
func TestConsentTakesOnlyConsentRequests(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) { c.Clients[0].RequireConsent = true })
	c := browser(t)
	_, ch := pkce("v")
	login(t, ts, c, promptLogin(ch), "alice", testPassword)

	// prompt=login sends the signed-in user to the login page...
	q := authorizeParams(ch)
	q.Set("prompt", "login")
	resp := authorize(t, ts, c, q)
	loc := resp.Header.Get("Location")
	if !strings.Contains(loc, "/account/login") {
		t.Fatalf("prompt=login: redirected to %s, want the login page", loc)
	}
	sealed := mustParse(t, resolve(ts.URL, loc)).Query().Get("request")
	// ...whose request, taken to the consent page, is refused.
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		var resp *http.Response
		var err error
		if method == http.MethodGet {
			resp, err = c.Get(ts.URL + "/account/consent?" + url.Values{"request": {sealed}}.Encode())
		} else {
			form := loginForm(t, c, ts.URL, loc)
			form.Set("decision", "allow")
			resp, err = c.PostForm(ts.URL+"/account/consent", form)
		}
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(resp.Header.Get("Location"), "code=") {
			t.Fatalf("%s consent with the login page's request: %d to %q; want 400 and no code: %s", method, resp.StatusCode, resp.Header.Get("Location"), body)
		}
	}

	// A consent request made for one session sends another to the login page.
	resp = authorize(t, ts, c, authorizeParams(ch))
	consentLoc := resp.Header.Get("Location")
	if !strings.Contains(consentLoc, "/account/consent") {
		t.Fatalf("want the consent page, redirected to %s", consentLoc)
	}
	other := browser(t)
	login(t, ts, other, promptLogin(ch), "alice", testPassword)
	resp, err := other.Get(resolve(ts.URL, consentLoc))
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if l := resp.Header.Get("Location"); !strings.Contains(l, "/account/login") {
		t.Fatalf("another session's consent request: %d to %q; want the login page", resp.StatusCode, l)
	}
}

// promptLogin is an authorization request that always lands on the login
// page (prompt=login).
func promptLogin(ch string) url.Values {
	q := authorizeParams(ch)
	q.Set("prompt", "login")
	return q
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
