package caddymodule

import (
	"testing"
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
