package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/authgate/authgate/idp"
)

// logoutClaimsFor are the claims of a valid logout token of op for the
// gateway's client, with sid (and sub) as given (none when "").
func logoutClaimsFor(op *opServer, sid, sub string) map[string]any {
	c := map[string]any{
		"iss": op.URL, "aud": "demo-app", "iat": time.Now().Unix(), "exp": time.Now().Add(2 * time.Minute).Unix(),
		"jti":    "jti-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		"events": map[string]any{backchannelLogoutEvent: map[string]any{}},
	}
	if sid != "" {
		c["sid"] = sid
	}
	if sub != "" {
		c["sub"] = sub
	}
	return c
}

// postLogoutToken posts token to the gateway's back-channel logout
// endpoint as a provider does (§2.5) and returns the response and its
// decoded JSON body, if any.
func postLogoutToken(t *testing.T, gw *gwServer, token string) (*http.Response, map[string]string) {
	t.Helper()
	resp, err := http.PostForm(gw.URL+defaultBackchannelLogoutPath, url.Values{"logout_token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp, body
}

// signWithOtherKey signs claims with a key the provider never published,
// under the kid of its real key.
func signWithOtherKey(t *testing.T, claims map[string]any) string {
	t.Helper()
	k, err := idp.GenerateKey(idp.RS256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k.Key, KeyID: gwKeys[0].ID}}, (&jose.SignerOptions{}).WithType("logout+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signUntyped signs claims with the provider's key and no typ header, as
// providers that predate explicit typing do.
func signUntyped(t *testing.T, claims map[string]any) string {
	t.Helper()
	k := gwKeys[0]
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k.Key, KeyID: k.ID}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestGatewayBackchannelLogout: each rule of Back-Channel Logout 1.0 §2.6
// broken once gets 400 with a JSON error and no-store, and revokes
// nothing; a valid logout token gets 200 and ends the sessions of its sid
// (or sub). The endpoint needs no cookie and ignores the allow rules.
func TestGatewayBackchannelLogout(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, func(g *Gateway) { g.Allow = []GatewayRule{{Group: "nobody-has-it"}} })
	list := gw.gw.revocations.list
	revoked := func(sid, sub string) bool {
		return list.revoked(sessionIdentityOf(op.URL, "some-session", sid, sub, time.Now().Add(-time.Minute).Unix()), time.Now().Unix())
	}
	edit := func(f func(map[string]any)) map[string]any {
		c := logoutClaimsFor(op, "sid-bad", "sub-bad")
		f(c)
		return c
	}

	invalid := []struct {
		name  string
		token string
	}{
		{name: "bad signature", token: signWithOtherKey(t, logoutClaimsFor(op, "sid-bad", "sub-bad"))},
		{name: "wrong aud", token: forgeTyped(t, "logout+jwt", edit(func(c map[string]any) { c["aud"] = "other-app" }))},
		{name: "wrong iss", token: forgeTyped(t, "logout+jwt", edit(func(c map[string]any) { c["iss"] = "https://evil.example" }))},
		{name: "nonce present", token: forgeTyped(t, "logout+jwt", edit(func(c map[string]any) { c["nonce"] = "n" }))},
		{name: "missing events", token: forgeTyped(t, "logout+jwt", edit(func(c map[string]any) { delete(c, "events") }))},
		{name: "wrong event", token: forgeTyped(t, "logout+jwt", edit(func(c map[string]any) {
			c["events"] = map[string]any{"http://schemas.openid.net/event/other": map[string]any{}}
		}))},
		{name: "event not an object", token: forgeTyped(t, "logout+jwt", edit(func(c map[string]any) {
			c["events"] = map[string]any{backchannelLogoutEvent: "yes"}
		}))},
		{name: "neither sid nor sub", token: forgeTyped(t, "logout+jwt", edit(func(c map[string]any) { delete(c, "sid"); delete(c, "sub") }))},
		{name: "iat in the future", token: forgeTyped(t, "logout+jwt", edit(func(c map[string]any) { c["iat"] = time.Now().Add(10 * time.Minute).Unix() }))},
		{name: "iat too old", token: forgeTyped(t, "logout+jwt", edit(func(c map[string]any) {
			c["iat"] = time.Now().Add(-time.Hour).Unix()
			c["exp"] = time.Now().Add(time.Hour).Unix()
		}))},
		{name: "no iat", token: forgeTyped(t, "logout+jwt", edit(func(c map[string]any) { delete(c, "iat") }))},
		{name: "no exp", token: forgeTyped(t, "logout+jwt", edit(func(c map[string]any) { delete(c, "exp") }))},
		{name: "expired", token: forgeTyped(t, "logout+jwt", edit(func(c map[string]any) { c["exp"] = time.Now().Add(-5 * time.Minute).Unix() }))},
		{name: "no jti", token: forgeTyped(t, "logout+jwt", edit(func(c map[string]any) { delete(c, "jti") }))},
		{name: "an ID token's typ", token: forgeTyped(t, "JWT", logoutClaimsFor(op, "sid-bad", "sub-bad"))},
		{name: "not a JWS", token: "not.a.token"},
		{name: "empty", token: ""},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := postLogoutToken(t, gw, tt.token)
			if resp.StatusCode != http.StatusBadRequest || body["error"] != "invalid_request" || body["error_description"] == "" {
				t.Errorf("status %d, body %v; want 400 invalid_request with a description", resp.StatusCode, body)
			}
			if got := resp.Header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", got)
			}
			if revoked("sid-bad", "sub-bad") {
				t.Fatal("an invalid logout token revoked sessions")
			}
		})
	}

	t.Run("not a POST", func(t *testing.T) {
		resp, err := http.Get(gw.URL + defaultBackchannelLogoutPath + "?logout_token=x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost {
			t.Errorf("GET: %d, Allow %q; want 405, Allow POST", resp.StatusCode, resp.Header.Get("Allow"))
		}
	})
	t.Run("not a form", func(t *testing.T) {
		resp, err := http.Post(gw.URL+defaultBackchannelLogoutPath, "application/json", strings.NewReader(`{"logout_token":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("JSON body: %d, want 400", resp.StatusCode)
		}
	})
	t.Run("body too large", func(t *testing.T) {
		resp, _ := postLogoutToken(t, gw, strings.Repeat("a", 100<<10))
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("a 100 KB token: %d, want 400", resp.StatusCode)
		}
	})

	t.Run("valid sid, then replayed", func(t *testing.T) {
		token := forgeTyped(t, "logout+jwt", logoutClaimsFor(op, "sid-1", ""))
		resp, _ := postLogoutToken(t, gw, token)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("valid token: %d, Cache-Control %q; want 200, no-store", resp.StatusCode, resp.Header.Get("Cache-Control"))
		}
		if !revoked("sid-1", "someone") {
			t.Error("the sessions of sid-1 are not revoked")
		}
		if revoked("sid-2", "someone") {
			t.Error("the sessions of another sid are revoked")
		}
		if resp, body := postLogoutToken(t, gw, token); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("the same token again: %d %v, want 400", resp.StatusCode, body)
		}
	})
	t.Run("valid sub, no typ", func(t *testing.T) {
		token := signUntyped(t, logoutClaimsFor(op, "", "sub-1"))
		if resp, body := postLogoutToken(t, gw, token); resp.StatusCode != http.StatusOK {
			t.Fatalf("valid token: %d %v, want 200", resp.StatusCode, body)
		}
		if !revoked("", "sub-1") {
			t.Error("the sessions of sub-1 are not revoked")
		}
	})
}

// TestGatewayBackchannelLogoutEndsSession: a real session of the
// provider, logged out by a logout token naming its sid, is refused on
// its next request.
func TestGatewayBackchannelLogoutEndsSession(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, nil)
	u := newUser(t, gw, op)
	u.signIn("/")
	cookie := sessionCookieValue(t, u, "authgate")
	s, err := gw.gw.openSession(cookie)
	if err != nil || s.SID == "" {
		t.Fatalf("the session: %+v, %v; want the provider's sid", s, err)
	}
	if resp := sendCookie(t, u, "/headers", cookie, false); resp.StatusCode != http.StatusOK {
		t.Fatalf("before the logout: %d, want 200", resp.StatusCode)
	}
	if resp, body := postLogoutToken(t, gw, forgeTyped(t, "logout+jwt", logoutClaimsFor(op, s.SID, s.Subject))); resp.StatusCode != http.StatusOK {
		t.Fatalf("logout token: %d %v, want 200", resp.StatusCode, body)
	}
	if resp := sendCookie(t, u, "/headers", cookie, false); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after the logout: %d, want 401", resp.StatusCode)
	}
}
