package caddymodule

import (
	"net/http"
	"testing"

	"github.com/authgate/authgate/idp"
)

// TestGatewayEmailVerified: an allow email rule admits an address only
// when email_verified is true, as a boolean or the string "true" in any
// case (AWS Cognito sends strings); a missing claim or anything else
// refuses, unless allow_unverified_email turns the check off.
func TestGatewayEmailVerified(t *testing.T) {
	tests := []struct {
		name       string
		verified   any // nil: no email_verified claim
		unverified bool
		allow      bool
	}{
		{"true", true, false, true},
		{"false", false, false, false},
		{"string true", "true", false, true},
		{"string TRUE", "TRUE", false, true},
		{"string false", "false", false, false},
		{"missing", nil, false, false},
		{"empty string", "", false, false},
		{"string yes", "yes", false, false},
		{"number 1", float64(1), false, false},
		{"list", []any{true}, false, false},
		{"option on: true", true, true, true},
		{"option on: missing", nil, true, true},
		{"option on: false", false, true, true},
		{"option on: string false", "false", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &Gateway{
				Issuer: "https://login.example.com", ClientID: "app", ClientSecret: "secret",
				SessionKeys:          []string{"a-test-session-key-of-enough-length"},
				Allow:                []GatewayRule{{Email: "*@example.com"}},
				AllowUnverifiedEmail: tt.unverified,
			}
			if err := provisionErr(t, g); err != nil {
				t.Fatal(err)
			}
			claims := map[string]any{"email": "alice@example.com"}
			if tt.verified != nil {
				claims["email_verified"] = tt.verified
			}
			if got := g.allowed(g.newIdentity("alice", claims)); got != tt.allow {
				t.Errorf("email_verified %#v, allow_unverified_email %v: allowed = %v, want %v", tt.verified, tt.unverified, got, tt.allow)
			}
			// A rule other than email does not look at email_verified.
			g.Allow = []GatewayRule{{Claim: "email", Value: "alice@example.com"}}
			if !g.allowed(g.newIdentity("alice", claims)) {
				t.Errorf("claim rule refused with email_verified %#v", tt.verified)
			}
		})
	}
}

// TestGatewayEmailRule: an email rule compares addresses in ASCII case
// only, and a *@domain rule takes the domain after the only "@": an
// address with two, or one at a look-alike of the domain in other
// scripts, is not at the domain.
func TestGatewayEmailRule(t *testing.T) {
	tests := []struct {
		name  string
		rule  string
		email string
		allow bool
	}{
		{"domain", "*@corp.example", "a@corp.example", true},
		{"domain in upper case", "*@corp.example", "A@CORP.EXAMPLE", true},
		{"rule in upper case", "*@CORP.example", "a@corp.example", true},
		{"two @", "*@corp.example", "a@evil.com@corp.example", false},
		{"quoted @", "*@corp.example", `"a@evil.com"@corp.example`, false},
		{"domain as a prefix", "*@corp.example", "x@corp.example.evil.com", false},
		{"subdomain", "*@corp.example", "x@sub.corp.example", false},
		{"domain as a suffix", "*@corp.example", "x@evilcorp.example", false},
		{"Kelvin sign in the domain", "*@kelvin.example", "x@\u212aelvin.example", false},
		{"no local part", "*@corp.example", "@corp.example", false},
		{"trailing dot", "*@corp.example", "x@corp.example.", false},
		{"exact", "alice@corp.example", "Alice@Corp.Example", true},
		{"exact, Kelvin sign", "kim@corp.example", "\u212aim@corp.example", false},
		{"exact, long s", "sam@corp.example", "\u017fam@corp.example", false},
		{"exact, two @", "a@evil.com@corp.example", "a@evil.com@corp.example", false},
		{"empty", "*@corp.example", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &Gateway{
				Issuer: "https://login.example.com", ClientID: "app", ClientSecret: "secret",
				SessionKeys: []string{"a-test-session-key-of-enough-length"},
				Allow:       []GatewayRule{{Email: tt.rule}},
			}
			if err := provisionErr(t, g); err != nil {
				t.Fatal(err)
			}
			claims := map[string]any{"email": tt.email, "email_verified": true}
			if got := g.allowed(g.newIdentity("u", claims)); got != tt.allow {
				t.Errorf("allow email %s, email %q: allowed = %v, want %v", tt.rule, tt.email, got, tt.allow)
			}
		})
	}
}

// TestGatewayClaimHeaderValues: a claim that cannot be a header value (a
// control character, as a user may put in a self-service profile) is not
// sent, rather than fail the request at the proxy with a 502; it is never
// cut down to the rest of the value, which could read as another user.
func TestGatewayClaimHeaderValues(t *testing.T) {
	g := &Gateway{
		Issuer: "https://login.example.com", ClientID: "app", ClientSecret: "secret",
		SessionKeys: []string{"a-test-session-key-of-enough-length"},
		Headers:     map[string]string{"X-User-Name": "name"},
	}
	if err := provisionErr(t, g); err != nil {
		t.Fatal(err)
	}
	id := g.newIdentity("alice", map[string]any{
		"email":              "admin@corp.example\x00",
		"name":               "Alice\r\nX-Auth-Request-User: admin",
		"preferred_username": "alice\tsmith",
		"groups":             []any{"staff", "admins\x7f"},
	})
	got := map[string]string{}
	for _, h := range id.headers {
		got[h.name] = h.value
	}
	want := map[string]string{"X-Auth-Request-User": "alice", "X-Auth-Request-Preferred-Username": "alice\tsmith"}
	if len(got) != len(want) {
		t.Errorf("headers %q, want only %q", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

// TestGatewaySubjectControlCharacter: a sub that cannot be sent as the
// X-Auth-Request-User header is no identity at all, at login and in a
// bearer token: leaving the header out would pass the user upstream as
// no one in particular.
func TestGatewaySubjectControlCharacter(t *testing.T) {
	const sub = "alice\nX-Auth-Request-User: admin"
	op := newOP(t, func(c *idp.Config) { c.Users[0].Subject = sub })

	t.Run("login", func(t *testing.T) {
		gw := newGateway(t, op, nil)
		u := newUser(t, gw, op)
		resp, _ := u.get("http://gw.test/", map[string]string{"Accept": "text/html"})
		resp = u.login(resp)
		if resp.StatusCode == http.StatusFound {
			t.Fatalf("callback: 302 to %q, want the login refused", resp.Header.Get("Location"))
		}
		for _, c := range resp.Cookies() {
			if c.Name == "authgate" && c.MaxAge >= 0 {
				t.Errorf("callback set a session cookie")
			}
		}
	})

	t.Run("bearer", func(t *testing.T) {
		gw := newGateway(t, op, func(g *Gateway) {
			g.Mode, g.Audience = "bearer", []string{"demo-api"}
		})
		token := issuedToken(t, gw, op, "openid api")
		if status := bearerStatus(t, gw, token); status != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", status)
		}
	})
}
