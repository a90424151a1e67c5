package caddymodule

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/authgate/authgate/idp"
)

// provisionErr provisions and validates g as Caddy does at start and at
// `caddy validate`, and returns the first error.
func provisionErr(t testing.TB, g *Gateway) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := g.Provision(ctx); err != nil {
		return err
	}
	return g.Validate()
}

// TestGatewayClientSecretRequired: a gateway that runs the code flow needs
// a client secret, unless it is a public client on purpose; the mistake
// shows at start, not after the first login.
func TestGatewayClientSecretRequired(t *testing.T) {
	const unset = "AUTHGATE_TEST_SURELY_UNSET_SECRET"
	t.Setenv(unset, "")
	tests := []struct {
		name    string
		gw      Gateway
		wantErr []string // substrings; none: valid
	}{
		{
			name:    "no client_secret",
			gw:      Gateway{Issuer: "https://login.example.com", ClientID: "app"},
			wantErr: []string{"oidc_gateway", "client_secret is required", "public_client"},
		},
		{
			name:    "unset environment variable",
			gw:      Gateway{Issuer: "https://login.example.com", ClientID: "app", ClientSecret: "{env." + unset + "}"},
			wantErr: []string{"oidc_gateway", "client_secret is required", "empty after resolving placeholders", "environment variable"},
		},
		{
			name:    "blank client_secret",
			gw:      Gateway{Issuer: "https://login.example.com", ClientID: "app", ClientSecret: " \t "},
			wantErr: []string{"oidc_gateway", "client_secret is required"},
		},
		{
			name:    "api mode without a secret",
			gw:      Gateway{Issuer: "https://login.example.com", ClientID: "app", Mode: "api", Audience: []string{"api"}},
			wantErr: []string{"oidc_gateway", "client_secret is required"},
		},
		{
			name: "secret",
			gw:   Gateway{Issuer: "https://login.example.com", ClientID: "app", ClientSecret: "s3cret-value"},
		},
		{
			name: "public client",
			gw:   Gateway{Issuer: "https://login.example.com", ClientID: "app", PublicClient: true},
		},
		{
			name:    "public client with a secret",
			gw:      Gateway{Issuer: "https://login.example.com", ClientID: "app", PublicClient: true, ClientSecret: "s3cret-value"},
			wantErr: []string{"oidc_gateway", "public_client", "client_secret"},
		},
		{
			name: "bearer mode needs no secret",
			gw:   Gateway{Issuer: "https://login.example.com", Mode: "bearer", Audience: []string{"api"}},
		},
		{
			name:    "bearer mode with introspect needs one",
			gw:      Gateway{Issuer: "https://login.example.com", ClientID: "api", Mode: "bearer", Audience: []string{"api"}, Introspect: true},
			wantErr: []string{"oidc_gateway", "introspect", "client_secret"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.gw
			g.SessionKeys = []string{"a-test-session-key-of-enough-length"}
			err := provisionErr(t, &g)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want one naming %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret-value") {
				t.Errorf("error %q shows the secret", err)
			}
		})
	}
}

// TestGatewayPublicClient: a public gateway logs in with PKCE alone,
// sending its client_id and no secret to the token endpoint (token endpoint
// auth "none", RFC 6749 §2.3), and revokes at sign-out the same way (RFC
// 7009 §2.1).
func TestGatewayPublicClient(t *testing.T) {
	op := newOP(t, func(c *idp.Config) {
		c.Clients = append(c.Clients, idp.Client{
			ID: "public-gw", Public: true, RedirectURIs: []string{"http://gw.test/oauth2/callback"},
			PostLogoutRedirectURIs: []string{"http://gw.test/"}, AllowOfflineAccess: true,
		})
	})
	gw := newGateway(t, op, func(g *Gateway) {
		g.ClientID, g.ClientSecret, g.PublicClient = "public-gw", "", true
		g.Scopes = []string{"openid", "profile", "email", "offline_access"}
	})
	u := newUser(t, gw, op)
	echo := u.signIn("/")
	if got := echoHeader(echo, "X-Auth-Request-User"); got != idp.DeriveSubject("alice") {
		t.Fatalf("upstream got user %q, want alice's sub", got)
	}
	if resp := u.signOut(); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: status %d", resp.StatusCode)
	}
	want := []string{"/connect/token none public-gw", "/connect/revocation none public-gw"}
	if got := op.clientAuthLog(); !slices.Equal(got, want) {
		t.Fatalf("client authentication at the provider: %q, want %q", got, want)
	}
}
