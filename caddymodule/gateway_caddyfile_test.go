package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestGatewayCaddyfileRepeatedOption: an option that takes one value, or
// none, is an error when given twice (as forward_auth's "cannot re-declare
// uri"), naming the option and the line of the second; only the options
// documented as repeatable add up.
func TestGatewayCaddyfileRepeatedOption(t *testing.T) {
	tests := []struct {
		option string // the line, given twice
		want   string // the error, "" for none
	}{
		{option: "client_id app", want: "client_id is declared twice"},
		{option: "client_secret s3cret", want: "client_secret is declared twice"},
		{option: "public_client", want: "public_client is declared twice"},
		{option: "scopes openid", want: "cannot re-declare scopes"},
		{option: "audience api", want: "audience is declared twice"},
		{option: "sign_out_id_token_hint", want: "sign_out_id_token_hint is declared twice"},
		{option: "backchannel_logout_path /bcl", want: "backchannel_logout_path is declared twice"},
		{option: "pass_access_token", want: "pass_access_token is declared twice"},
		{option: "allow_unverified_email", want: "allow_unverified_email is declared twice"},
		{option: "allow_dot_segments", want: "allow_dot_segments is declared twice"},
		{option: "introspect", want: "introspect is declared twice"},
		{option: "refresh_before 30s", want: "refresh_before is declared twice"},
		{option: "cors http://spa.test", want: "cors is declared twice"},
		{option: "session_key 0123456789abcdef"},
		{option: "allow group admins"},
	}
	for _, tt := range tests {
		t.Run(strings.Fields(tt.option)[0], func(t *testing.T) {
			input := "oidc_gateway https://login.example {\n\t" + tt.option + "\n\t" + tt.option + "\n}"
			err := new(Gateway).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("%q twice: %v, want no error", tt.option, err)
			case tt.want == "":
			case err == nil:
				t.Fatalf("%q twice: no error, want %q", tt.option, tt.want)
			case !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), ":3"):
				t.Fatalf("%q twice: %v, want %q at line 3", tt.option, err, tt.want)
			}
		})
	}
}
