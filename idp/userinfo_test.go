package idp_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/authgate/authgate/idp"
)

// userinfo calls the userinfo endpoint with a Bearer token and returns the
// status and WWW-Authenticate header.
func userinfo(t testing.TB, ts *testServer, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/connect/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

func headerAlg(t testing.TB, tok string) string {
	t.Helper()
	h, _, _ := strings.Cut(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	json.Unmarshal(b, &hdr)
	return hdr.Alg
}

// tokensFor runs the flow for scope and returns the token response.
func tokensFor(t testing.TB, ts *testServer, scope string) (access, id string) {
	t.Helper()
	v, ch := pkce("v")
	q := authorizeParams(ch)
	q.Set("scope", scope)
	u := login(t, ts, browser(t), q, "alice", testPassword)
	resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(u.Query().Get("code"), v))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("exchange: %d %s", resp.StatusCode, body)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		IDToken     string `json:"id_token"`
	}
	json.Unmarshal([]byte(body), &tr)
	return tr.AccessToken, tr.IDToken
}

func TestUserinfo(t *testing.T) {
	ts := newServer(t, nil)
	access, _ := tokensFor(t, ts, "openid email")
	noOpenID, idTok := tokensFor(t, ts, "api")
	if idTok != "" {
		t.Errorf("an id token was issued without the openid scope")
	}

	// A token signed by a key the provider does not have.
	foreign, err := idp.GenerateKey(idp.RS256)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: foreign.Key, KeyID: signingKeys(t)[0].ID}},
		(&jose.SignerOptions{}).WithType("at+jwt"))
	forged, _ := jwt.Signed(signer).Claims(map[string]any{
		"iss": ts.URL, "sub": idp.DeriveSubject("alice"), "scope": "openid", "jti": "x", "exp": time.Now().Add(time.Hour).Unix(),
	}).Serialize()
	parts := strings.Split(access, ".")
	unsigned := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." + parts[1] + "."

	tests := []struct {
		name       string
		req        func() *http.Request
		wantStatus int
		wantAuth   string // substring of WWW-Authenticate
		wantClaims map[string]any
	}{
		{name: "bearer header", req: func() *http.Request { return bearer(ts, http.MethodGet, access) }, wantStatus: 200,
			wantClaims: map[string]any{"email": "AliceSmith@email.com", "email_verified": true}},
		{name: "form body", req: func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, ts.URL+"/connect/userinfo", strings.NewReader(url.Values{"access_token": {access}}.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}, wantStatus: 200},
		{name: "no token", req: func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, ts.URL+"/connect/userinfo", nil)
			return r
		}, wantStatus: 401, wantAuth: "Bearer"},
		{name: "garbage token", req: func() *http.Request { return bearer(ts, http.MethodGet, "abc") }, wantStatus: 401, wantAuth: `error="invalid_token"`},
		{name: "tampered token", req: func() *http.Request { return bearer(ts, http.MethodGet, access[:len(access)-4]+"AAAA") }, wantStatus: 401, wantAuth: `error="invalid_token"`},
		{name: "alg none", req: func() *http.Request { return bearer(ts, http.MethodGet, unsigned) }, wantStatus: 401, wantAuth: `error="invalid_token"`},
		{name: "foreign key, our kid", req: func() *http.Request { return bearer(ts, http.MethodGet, forged) }, wantStatus: 401, wantAuth: `error="invalid_token"`},
		{name: "id token is not an access token", req: func() *http.Request { _, id := tokensFor(t, ts, "openid"); return bearer(ts, http.MethodGet, id) }, wantStatus: 401, wantAuth: `error="invalid_token"`},
		{name: "no openid scope", req: func() *http.Request { return bearer(ts, http.MethodGet, noOpenID) }, wantStatus: 403, wantAuth: `error="insufficient_scope"`},
		{name: "basic scheme", req: func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, ts.URL+"/connect/userinfo", nil)
			r.SetBasicAuth("a", "b")
			return r
		}, wantStatus: 401, wantAuth: `Bearer realm=`},
		{name: "DELETE", req: func() *http.Request { return bearer(ts, http.MethodDelete, access) }, wantStatus: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.DefaultClient.Do(tt.req())
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.name == "basic scheme" || tt.name == "no token" {
				if h := resp.Header.Get("WWW-Authenticate"); strings.Contains(h, "error=") {
					t.Errorf("WWW-Authenticate = %q: no error code for a request without a Bearer token (RFC 6750 §3.1)", h)
				}
			}
			if !strings.Contains(resp.Header.Get("WWW-Authenticate"), tt.wantAuth) {
				t.Errorf("WWW-Authenticate = %q, want it to contain %q", resp.Header.Get("WWW-Authenticate"), tt.wantAuth)
			}
			if tt.wantStatus == 200 {
				var got map[string]any
				json.Unmarshal([]byte(body), &got)
				if got["sub"] != idp.DeriveSubject("alice") {
					t.Errorf("sub = %v", got["sub"])
				}
				if _, ok := got["name"]; ok {
					t.Errorf("profile claim released without the profile scope: %v", got)
				}
				for k, v := range tt.wantClaims {
					if got[k] != v {
						t.Errorf("%s = %v, want %v", k, got[k], v)
					}
				}
			}
		})
	}

	t.Run("expired token", func(t *testing.T) {
		ts.clock.Advance(time.Hour + time.Second)
		if st, h := userinfo(t, ts, access); st != 401 || !strings.Contains(h, "invalid_token") {
			t.Fatalf("expired: %d %q", st, h)
		}
	})
}

func bearer(ts *testServer, method, token string) *http.Request {
	r, _ := http.NewRequest(method, ts.URL+"/connect/userinfo", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	return r
}

func TestDiscoveryAndJWKS(t *testing.T) {
	ts := newServer(t, nil)
	resp, err := http.Get(ts.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	json.Unmarshal([]byte(readBody(t, resp)), &doc)
	want := map[string]string{
		"issuer":                 ts.URL,
		"authorization_endpoint": ts.URL + "/connect/authorize",
		"token_endpoint":         ts.URL + "/connect/token",
		"userinfo_endpoint":      ts.URL + "/connect/userinfo",
		"jwks_uri":               ts.URL + "/.well-known/openid-configuration/jwks",
	}
	for k, v := range want {
		if doc[k] != v {
			t.Errorf("%s = %v, want %s", k, doc[k], v)
		}
	}
	if doc["authorization_response_iss_parameter_supported"] != true {
		t.Errorf("authorization_response_iss_parameter_supported = %v", doc["authorization_response_iss_parameter_supported"])
	}
	if m, _ := json.Marshal(doc["code_challenge_methods_supported"]); string(m) != `["S256"]` {
		t.Errorf("code_challenge_methods_supported = %s", m)
	}
	if m, _ := json.Marshal(doc["response_types_supported"]); string(m) != `["code"]` {
		t.Errorf("response_types_supported = %s", m)
	}

	resp, err = http.Get(ts.URL + "/.well-known/openid-configuration/jwks")
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(readBody(t, resp)), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 {
		t.Fatalf("JWKS has %d keys, want 2", len(set.Keys))
	}
	for _, k := range set.Keys {
		if k.KeyID == "" || k.Use != "sig" || (k.Algorithm != "RS256" && k.Algorithm != "ES256") || !k.IsPublic() {
			t.Errorf("JWKS key %+v: want public key with kid, use sig, alg", k)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		edit func(*idp.Config)
		want string
	}{
		{"relative issuer", func(c *idp.Config) { c.Issuer = "/x" }, "issuer"},
		{"issuer with query", func(c *idp.Config) { c.Issuer = "https://a.example/?x=1" }, "query"},
		// The issuer's path prefixes every endpoint's ServeMux pattern.
		{"issuer path with a brace", func(c *idp.Config) { c.Issuer = "https://a.example/{" }, "path"},
		{"issuer path with a wildcard", func(c *idp.Config) { c.Issuer = "https://a.example/{tenant}" }, "path"},
		{"issuer path ending the pattern", func(c *idp.Config) { c.Issuer = "https://a.example/{$}" }, "path"},
		{"issuer path with a space", func(c *idp.Config) { c.Issuer = "https://a.example/a%20b" }, "path"},
		{"issuer path not clean", func(c *idp.Config) { c.Issuer = "https://a.example/a/../b" }, "path"},
		{"issuer path with an empty segment", func(c *idp.Config) { c.Issuer = "https://a.example/a//b" }, "path"},
		{"duplicate client", func(c *idp.Config) { c.Clients = append(c.Clients, c.Clients[0]) }, "twice"},
		{"client without secret", func(c *idp.Config) { c.Clients[0].Secret = "" }, "secret"},
		{"relative redirect", func(c *idp.Config) { c.Clients[0].RedirectURIs = []string{"/cb"} }, "not absolute"},
		{"redirect with fragment", func(c *idp.Config) { c.Clients[0].RedirectURIs = []string{"https://a/cb#x"} }, "fragment"},
		{"unknown scope", func(c *idp.Config) { c.Clients[0].AllowedScopes = []string{"openid", "nope"} }, "nope"},
		{"user without hash", func(c *idp.Config) { c.Users[0].PasswordHash = "" }, "password hash"},
		{"duplicate user", func(c *idp.Config) { c.Users = append(c.Users, c.Users[0]) }, "twice"},
		{"no keys", func(c *idp.Config) { c.Keys = nil }, "signing keys"},
		{"only ES256", func(c *idp.Config) { c.Keys = c.Keys[1:] }, "RS256"},
		{"bad id token alg", func(c *idp.Config) { c.Clients[0].IDTokenAlg = "HS256" }, "HS256"},
		{"no cookie keys", func(c *idp.Config) { c.CookieKeys = nil }, "cookie keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Issuer = "https://op.example"
			tt.edit(&cfg)
			_, err := idp.New(cfg, idp.NewMemoryStore(nil))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

// TestNewIssuerPaths: issuers with a path, as multi-tenant providers have
// them, serve their endpoints under it.
func TestNewIssuerPaths(t *testing.T) {
	for _, issuer := range []string{
		"https://op.example/",
		"https://op.example/tenant",
		"https://op.example/realms/my-realm_1.v2/",
		"https://op.example/a~b/c!$&'()*+,;=:@d",
	} {
		t.Run(issuer, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Issuer = issuer
			store := idp.NewMemoryStore(nil)
			defer store.Close()
			p, err := idp.New(cfg, store)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			base := strings.TrimSuffix(issuer, "/")
			r := httptest.NewRequest(http.MethodGet, base+"/.well-known/openid-configuration", nil)
			w := httptest.NewRecorder()
			p.ServeHTTP(w, r)
			var doc struct {
				Issuer string `json:"issuer"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || w.Code != http.StatusOK || doc.Issuer != issuer {
				t.Fatalf("discovery: status %d: %s", w.Code, w.Body)
			}
		})
	}
}
