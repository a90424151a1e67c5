package idp_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/authgate/authgate/idp"
)

// apiClaimsServer has two API resources, demo-api (scope api, carrying the
// user claims role and groups) and other-api (scope api2, no user
// claims), a password-grant client and a client_credentials client. Alice
// has role and groups but no department.
func apiClaimsServer(t *testing.T, emitStatic bool) *testServer {
	t.Helper()
	return newServer(t, func(c *idp.Config) {
		c.APIScopes = []string{"api", "api2"}
		c.APIResources = []idp.APIResource{
			{Name: "demo-api", Scopes: []string{"api"}, Secret: "api-secret", UserClaims: []string{"role", "groups", "department"}},
			{Name: "other-api", Scopes: []string{"api2"}},
		}
		c.EmitStaticAudience = emitStatic
		c.Users[0].Claims["role"] = "admin"
		c.Users[0].Claims["groups"] = []any{"ops", "dev"}
		c.Clients = append(c.Clients,
			idp.Client{ID: "legacy", Secret: "legacy-secret", AllowPasswordGrant: true, AllowOfflineAccess: true,
				AllowedScopes: []string{"openid", "profile", "api", "api2"}},
			idp.Client{ID: "service", Secret: "service-secret", AllowClientCredentials: true, AllowedScopes: []string{"api"},
				Claims: map[string]any{"role": "robot"}, ClientClaimsPrefix: new(string)},
		)
	})
}

func passwordTokens(t *testing.T, ts *testServer, scope string) tokens {
	t.Helper()
	resp, body := postToken(t, ts, "legacy", "legacy-secret", url.Values{
		"grant_type": {"password"}, "username": {"alice"}, "password": {testPassword}, "scope": {scope}})
	var tk tokens
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &tk) != nil {
		t.Fatalf("password grant: %d %s", resp.StatusCode, body)
	}
	return tk
}

func audOf(t *testing.T, token string) []string {
	t.Helper()
	var aud []string
	for _, a := range claimsOf(t, token)["aud"].([]any) {
		aud = append(aud, a.(string))
	}
	return aud
}

// TestStaticAudience: without EmitStaticAudience the static audience
// ({issuer}/resources) is the aud only of tokens that grant no API; with
// it, every token carries it beside the API resources granted.
func TestStaticAudience(t *testing.T) {
	tests := []struct {
		name       string
		emitStatic bool
		scope      string
		want       []string // "static" stands for {issuer}/resources
	}{
		{name: "off, no api", scope: "openid", want: []string{"static"}},
		{name: "off, one api", scope: "openid api", want: []string{"demo-api"}},
		{name: "off, two apis", scope: "api api2", want: []string{"demo-api", "other-api"}},
		{name: "on, no api", emitStatic: true, scope: "openid", want: []string{"static"}},
		{name: "on, one api", emitStatic: true, scope: "openid api", want: []string{"static", "demo-api"}},
		{name: "on, two apis", emitStatic: true, scope: "api api2", want: []string{"static", "demo-api", "other-api"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := apiClaimsServer(t, tt.emitStatic)
			want := slices.Clone(tt.want)
			if want[0] == "static" {
				want[0] = ts.URL + "/resources"
			}
			if got := audOf(t, passwordTokens(t, ts, tt.scope).AccessToken); !slices.Equal(got, want) {
				t.Errorf("aud = %v, want %v", got, want)
			}
		})
	}
	t.Run("client_credentials, on", func(t *testing.T) {
		ts := apiClaimsServer(t, true)
		resp, body := postToken(t, ts, "service", "service-secret", url.Values{"grant_type": {"client_credentials"}})
		var tk tokens
		json.Unmarshal([]byte(body), &tk)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if got, want := audOf(t, tk.AccessToken), []string{ts.URL + "/resources", "demo-api"}; !slices.Equal(got, want) {
			t.Errorf("aud = %v, want %v", got, want)
		}
	})
}

// TestAPIResourceUserClaims: a user's access token carries the user claims
// its API resources list, those the user has; tokens without that
// resource, and client_credentials tokens, do not.
func TestAPIResourceUserClaims(t *testing.T) {
	ts := apiClaimsServer(t, false)

	tk := passwordTokens(t, ts, "openid api offline_access")
	c := claimsOf(t, tk.AccessToken)
	if c["role"] != "admin" {
		t.Errorf("role = %v, want admin", c["role"])
	}
	if g, _ := c["groups"].([]any); len(g) != 2 || g[0] != "ops" || g[1] != "dev" {
		t.Errorf("groups = %v", c["groups"])
	}
	if _, ok := c["department"]; ok {
		t.Error("a claim the user does not have is in the token")
	}
	if _, ok := c["email"]; ok {
		t.Error("a claim no resource lists is in the token")
	}
	if c["sub"] == "admin" || c["client_id"] != "legacy" || c["scope"] != "openid api offline_access" {
		t.Errorf("registered claims changed: %v", c)
	}

	t.Run("refresh", func(t *testing.T) {
		resp, body := postToken(t, ts, "legacy", "legacy-secret", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.RefreshToken}})
		var next tokens
		if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &next) != nil {
			t.Fatalf("refresh: %d %s", resp.StatusCode, body)
		}
		if r := claimsOf(t, next.AccessToken)["role"]; r != "admin" {
			t.Errorf("refreshed token's role = %v", r)
		}
	})

	t.Run("introspection", func(t *testing.T) {
		form := url.Values{"token": {tk.AccessToken}}
		req, _ := http.NewRequest(http.MethodPost, ts.URL+idp.PathIntrospect, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("demo-api", "api-secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		var out map[string]any
		if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if out["active"] != true || out["role"] != "admin" || out["token_type"] != "Bearer" || out["sub"] != claimsOf(t, tk.AccessToken)["sub"] {
			t.Errorf("introspection = %s", body)
		}
	})

	t.Run("other resource only", func(t *testing.T) {
		c := claimsOf(t, passwordTokens(t, ts, "openid api2").AccessToken)
		if _, ok := c["role"]; ok {
			t.Errorf("a token for other-api carries demo-api's user claims: %v", c)
		}
	})

	t.Run("client_credentials", func(t *testing.T) {
		resp, body := postToken(t, ts, "service", "service-secret", url.Values{"grant_type": {"client_credentials"}})
		var tk tokens
		json.Unmarshal([]byte(body), &tk)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		c := claimsOf(t, tk.AccessToken)
		// The client's own claim (no prefix) is there; no user's groups.
		if c["role"] != "robot" || c["groups"] != nil {
			t.Errorf("client_credentials claims = %v", c)
		}
	})
}

// TestAPIResourceReservedUserClaims: a resource cannot take a claim the
// access token sets itself from the user.
func TestAPIResourceReservedUserClaims(t *testing.T) {
	for _, name := range []string{"sub", "iss", "aud", "exp", "scope", "client_id", "jti", "iat", ""} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Issuer = "https://id.example"
			cfg.APIResources[0].UserClaims = []string{"role", name}
			_, err := idp.New(cfg, idp.NewMemoryStore(nil))
			if err == nil || !strings.Contains(err.Error(), "set by the access token itself") {
				t.Fatalf("New: %v", err)
			}
		})
	}
}
