package idp

import (
	"testing"
	"time"
)

// FuzzParseAssertion feeds client_assertion values, which anyone can send
// to the token endpoint, to the parser and the claim checks: no panic,
// and nothing accepted that has no exp or jti.
func FuzzParseAssertion(f *testing.F) {
	f.Add("eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjIiwidHlwIjoiSldUIn0.eyJhdWQiOiJodHRwczovL2lkLmV4YW1wbGUiLCJleHAiOjE3OTk5OTk5OTksImlzcyI6InN2YyIsImp0aSI6IngiLCJzdWIiOiJzdmMifQ.c2ln")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJzdmMifQ.")
	f.Add("eyJhbGciOiJSUzI1NiIsInR5cCI6MX0.e30.AA")
	f.Add("a.b.c")
	p := &Provider{issuer: "https://id.example"}
	now := time.Unix(1799999000, 0)
	f.Fuzz(func(t *testing.T, s string) {
		_, claims, err := parseAssertion(s)
		if err != nil {
			return
		}
		if p.checkAssertionClaims(claims, now) == nil && (claims.Expiry == nil || claims.ID == "" || len(claims.Audience) != 1) {
			t.Fatalf("claims accepted without exp, jti or one aud: %+v", claims)
		}
	})
}
