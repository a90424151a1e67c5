package e2e_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/caddytest"
)

// TestService builds examples/service and runs it against the test's
// Caddy: it gets a client_credentials token as client service and prints
// what the API answers, the service's own identity.
func TestService(t *testing.T) {
	t.Parallel()
	sp := newSPASite(t)
	bin := filepath.Join(t.TempDir(), "service")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	build := exec.CommandContext(testContext(t), "go", "build", "-o", bin, "./examples/service")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building examples/service: %v\n%s", err, out)
	}
	sp.Start(t)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(),
		"ISSUER="+sp.issuer,
		"CLIENT_ID=service",
		"CLIENT_SECRET="+serviceSecret,
		"API_URL="+sp.spa+"/api/identity",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("examples/service: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	checkIdentityAnswer(t, http.StatusOK, strings.TrimSpace(stdout.String()), "service", "service")
}

// TestSPAClientRules checks, from a Go client, what the provider refuses
// the SPA's public client and the service: grants they have not been
// given, a post-logout URI nobody registered, and CORS for an origin no
// client registered.
func TestSPAClientRules(t *testing.T) {
	t.Parallel()
	sp := newSPASite(t)
	sp.Start(t)
	tokenURL := sp.issuer + "/connect/token"
	// basic is client_secret_basic (RFC 6749 §2.3.1): both parts
	// form-encoded, then base64.
	basic := func(id, secret string) http.Header {
		creds := url.QueryEscape(id) + ":" + url.QueryEscape(secret)
		return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(creds))}}
	}

	t.Run("token", func(t *testing.T) {
		tests := []struct {
			name   string
			form   url.Values
			header http.Header
			status int      // 0: 400 or 401
			errors []string // any of these; none: success
		}{
			{
				name:   "client_credentials by the public client",
				form:   url.Values{"grant_type": {"client_credentials"}, "client_id": {"spa"}, "scope": {"api"}},
				errors: []string{"unauthorized_client", "invalid_client"},
			},
			{
				name:   "password grant by the public client, which has not enabled it",
				form:   url.Values{"grant_type": {"password"}, "client_id": {"spa"}, "username": {"alice"}, "password": {password}, "scope": {"openid api"}},
				status: http.StatusBadRequest,
				errors: []string{"unauthorized_client"},
			},
			{
				name:   "password grant by the service, which has not enabled it",
				form:   url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {password}, "scope": {"api"}},
				header: basic("service", serviceSecret),
				status: http.StatusBadRequest,
				errors: []string{"unauthorized_client"},
			},
			{
				name:   "client_credentials by the service with a wrong secret",
				form:   url.Values{"grant_type": {"client_credentials"}, "scope": {"api"}},
				header: basic("service", "not-"+serviceSecret),
				status: http.StatusUnauthorized,
				errors: []string{"invalid_client"},
			},
			{
				name:   "client_credentials by the service",
				form:   url.Values{"grant_type": {"client_credentials"}, "scope": {"api"}},
				header: basic("service", serviceSecret),
				status: http.StatusOK,
			},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp, body := postForm(t, tokenURL, tt.form, tt.header)
				switch {
				case tt.status != 0 && resp.StatusCode != tt.status,
					tt.status == 0 && resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusUnauthorized:
					t.Errorf("status %d, want %d (0: 400 or 401):\n%s", resp.StatusCode, tt.status, body)
				}
				if len(tt.errors) == 0 {
					if !strings.Contains(body, `"access_token"`) || strings.Contains(body, `"refresh_token"`) {
						t.Errorf("want an access token and no refresh token:\n%s", body)
					}
					return
				}
				if got := oauthError(t, body); !slices.Contains(tt.errors, got) {
					t.Errorf("error %q, want one of %q:\n%s", got, tt.errors, body)
				}
			})
		}
	})

	t.Run("end session", func(t *testing.T) {
		tests := []struct {
			name     string
			target   string
			redirect bool
		}{
			{name: "registered", target: sp.spa + "/", redirect: true},
			{name: "unregistered path", target: sp.spa + "/elsewhere"},
			{name: "unregistered origin", target: sp.elsewhere + "/"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				q := url.Values{"client_id": {"spa"}, "post_logout_redirect_uri": {tt.target}}
				resp, body := apiGet(t, sp.issuer+"/connect/endsession?"+q.Encode(), "", nil)
				loc := resp.Header.Get("Location")
				if tt.redirect {
					if resp.StatusCode != http.StatusFound || loc != tt.target {
						t.Errorf("status %d, Location %q; want 302 to %s", resp.StatusCode, loc, tt.target)
					}
					return
				}
				if resp.StatusCode != http.StatusOK || loc != "" || !strings.Contains(body, "signed out") {
					t.Errorf("status %d, Location %q; want 200 and the signed-out page:\n%s", resp.StatusCode, loc, body)
				}
			})
		}
	})

	t.Run("CORS preflight", func(t *testing.T) {
		tests := []struct {
			name   string
			path   string
			origin string
			allow  bool
		}{
			{name: "token from the SPA", path: "/connect/token", origin: sp.spa, allow: true},
			{name: "revocation from the SPA", path: "/connect/revocation", origin: sp.spa, allow: true},
			{name: "userinfo from the SPA", path: "/connect/userinfo", origin: sp.spa, allow: true},
			{name: "token from elsewhere", path: "/connect/token", origin: sp.elsewhere},
			{name: "revocation from elsewhere", path: "/connect/revocation", origin: sp.elsewhere},
			{name: "userinfo from elsewhere", path: "/connect/userinfo", origin: sp.elsewhere},
			{name: "token from the SPA's host on another port", path: "/connect/token", origin: strings.Replace(sp.elsewhere, "127.0.0.1", "localhost", 1)},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				req, err := http.NewRequestWithContext(testContext(t), http.MethodOptions, sp.issuer+tt.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Origin", tt.origin)
				req.Header.Set("Access-Control-Request-Method", http.MethodPost)
				req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
				resp, err := noRedirectClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				caddytest.ReadBody(t, resp)
				got := resp.Header.Get("Access-Control-Allow-Origin")
				if tt.allow && got != tt.origin {
					t.Errorf("Access-Control-Allow-Origin %q, want %q", got, tt.origin)
				}
				if !tt.allow && got != "" {
					t.Errorf("Access-Control-Allow-Origin %q for an unregistered origin, want none", got)
				}
				if resp.StatusCode >= 500 {
					t.Errorf("status %d, want no server error", resp.StatusCode)
				}
			})
		}
	})
}
