package idp_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
)

// TestAMR: ID tokens say how the user signed in (RFC 8176), from the login
// through the code, every refresh of its family, and the password grant.
func TestAMR(t *testing.T) {
	ts := offlineServer(t)
	first := offlineTokens(t, ts)
	if got := fmt.Sprint(claimsOf(t, first.IDToken)["amr"]); got != "[pwd]" {
		t.Errorf("amr after a password login = %s, want [pwd]", got)
	}
	st, second, body := refreshWith(t, ts, "demo-app", testSecret, first.RefreshToken, "")
	if st != http.StatusOK {
		t.Fatalf("refresh: %d %s", st, body)
	}
	if got := fmt.Sprint(claimsOf(t, second.IDToken)["amr"]); got != "[pwd]" {
		t.Errorf("amr after a refresh = %s, want [pwd]", got)
	}
	if _, ok := claimsOf(t, first.IDToken)["acr"]; ok {
		t.Errorf("acr in a password login's ID token: %v", claimsOf(t, first.IDToken))
	}

	lc := lifecycleServer(t, nil)
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {testPassword}, "scope": {"openid"}}
	resp, body := postToken(t, lc, "legacy", "legacy-secret", form)
	var tk tokens
	json.Unmarshal([]byte(body), &tk)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("password grant: %d %s", resp.StatusCode, body)
	}
	if got := fmt.Sprint(claimsOf(t, tk.IDToken)["amr"]); got != "[pwd]" {
		t.Errorf("amr of the password grant = %s, want [pwd]", got)
	}
}
