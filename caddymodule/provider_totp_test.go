package caddymodule

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProvisionTOTPSecret: an operator's TOTP secret, in the
// configuration (from an environment variable) or in the users file, is
// checked when the configuration loads; the error names the user and
// never holds the secret.
func TestProvisionTOTPSecret(t *testing.T) {
	const good = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	const bad = "JBSWY3DPEHPK3PX1JBSWY3DPEHPK3PXP" // 1 is no base32 digit
	t.Setenv("AUTHGATE_TEST_TOTP", good)
	t.Setenv("AUTHGATE_TEST_BAD_TOTP", bad)
	t.Setenv("AUTHGATE_TEST_SHORT_TOTP", "JBSWY3DPEHPK3PXP")
	dir := t.TempDir()
	usersFile := func(secret string) string {
		t.Helper()
		name := filepath.Join(dir, "users.json")
		content := "[\n  {\"username\": \"bob\", \"password_hash\": \"" + testBcryptHash + "\",\n   \"totp_secret\": \"" + secret + "\"}\n]"
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return name
	}
	tests := []struct {
		name      string
		secret    string // alice's
		fileTOTP  string // bob's in the users file, if any
		wantErr   string // "" for success
		forbidden string // must not be in the error
	}{
		{name: "from the environment", secret: "{env.AUTHGATE_TEST_TOTP}"},
		{name: "spaced lower case", secret: strings.ToLower("JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP")},
		{name: "in the users file", fileTOTP: good},
		{name: "not base32", secret: "{env.AUTHGATE_TEST_BAD_TOTP}", wantErr: `user "alice": totp_secret is not base32`, forbidden: bad},
		{name: "too short", secret: "{env.AUTHGATE_TEST_SHORT_TOTP}", wantErr: `user "alice": totp_secret is 80 bits long`, forbidden: "JBSWY3DPEHPK3PXP"},
		{name: "bad in the users file", fileTOTP: bad, wantErr: `line 2, column 3: user "bob": totp_secret is not base32`, forbidden: bad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testProvider("https://login.example.com")
			p.Users[0].TOTPSecret = tt.secret
			if tt.fileTOTP != "" {
				p.UsersFile = usersFile(tt.fileTOTP)
				p.UsersFilePoll = -1
			}
			err := p.Provision(newTestContext(t, t.TempDir()))
			defer p.Cleanup()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Provision: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), tt.forbidden) {
				t.Fatalf("error %q reveals the secret", err)
			}
		})
	}
}
