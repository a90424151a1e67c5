package e2e_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidate runs `caddy validate` on Caddyfiles with mistakes in
// oidc_provider: each must fail, and say where and what.
func TestValidate(t *testing.T) {
	t.Parallel()
	// Never echoed, whatever the error: errors name options, not secrets.
	const secret = "validate-secret-do-not-print"
	tests := []struct {
		name string
		// provider is the body of the oidc_provider block; the line
		// holding "# bad" is the one the error must point at, if any.
		provider string
		wantErr  bool
		want     []string // in the output
	}{
		{
			name: "valid",
			provider: `
		client demo-app {
			secret ` + secret + `
			redirect_uri http://app.test/oauth2/callback
		}`,
		},
		{
			name: "unknown option",
			provider: `
		client demo-app {
			secret ` + secret + `
			redirect_uri http://app.test/oauth2/callback
		}
		frobnicate yes # bad`,
			wantErr: true,
			want:    []string{"oidc_provider", "frobnicate"},
		},
		{
			// A passkey's RP ID must be the issuer's host or a parent
			// domain (WebAuthn §5.1.4).
			name: "passkey_rp_id of another domain",
			provider: `
		passkey_rp_id example.com`,
			wantErr: true,
			want:    []string{"oidc_provider", "passkey_rp_id", "example.com"},
		},
		{
			name: "unknown client option",
			provider: `
		client demo-app {
			secret ` + secret + `
			redirect_uri http://app.test/oauth2/callback
			frobnicate yes # bad
		}`,
			wantErr: true,
			want:    []string{"oidc_provider", "frobnicate"},
		},
		{
			name: "relative redirect_uri",
			provider: `
		client demo-app {
			secret ` + secret + `
			redirect_uri oauth2/callback
		}`,
			wantErr: true,
			want:    []string{"oidc_provider", "redirect_uri", "oauth2/callback"},
		},
		{
			// Front-Channel Logout 1.0 §2: on a redirect URI's origin,
			// which only provisioning, with every redirect_uri, can tell.
			name: "frontchannel_logout_uri on another origin",
			provider: `
		client demo-app {
			secret ` + secret + `
			redirect_uri http://app.test/oauth2/callback
			frontchannel_logout_uri http://app.test:8080/oauth2/frontchannel
		}`,
			wantErr: true,
			want:    []string{"oidc_provider", `client \"demo-app\"`, "frontchannel_logout_uri", "http://app.test:8080/oauth2/frontchannel", "redirect URI"},
		},
		{
			name: "frontchannel_logout_session_required without a URI",
			provider: `
		client demo-app {
			secret ` + secret + `
			redirect_uri http://app.test/oauth2/callback
			frontchannel_logout_session_required
		}`,
			wantErr: true,
			want:    []string{"oidc_provider", `client \"demo-app\"`, "frontchannel_logout_session_required without a frontchannel_logout_uri"},
		},
		{
			name: "frontchannel_logout_uri",
			provider: `
		client demo-app {
			secret ` + secret + `
			redirect_uri http://app.test/oauth2/callback
			frontchannel_logout_uri http://app.test/oauth2/frontchannel?a=b
			frontchannel_logout_session_required
		}`,
		},
		{
			name: "public client reusing refresh tokens without DPoP",
			provider: `
		client spa {
			public
			redirect_uri http://app.test/cb
			offline_access
			refresh_token_usage reuse
		} # bad`,
			wantErr: true,
			want:    []string{"oidc_provider", "spa", "require_dpop"},
		},
		{
			name: "public client reusing DPoP-bound refresh tokens",
			provider: `
		dpop_nonce 2m
		client spa {
			public
			redirect_uri http://app.test/cb
			offline_access
			refresh_token_usage reuse
			require_dpop
		}`,
		},
		{
			// Nothing listens there: validating needs no Redis.
			name: "redis store",
			provider: `
		client demo-app {
			secret ` + secret + `
			redirect_uri http://app.test/oauth2/callback
		}
		store redis {
			address 127.0.0.1:9
			password ` + secret + `
		}`,
		},
		{
			name: "redis store without address",
			provider: `
		store redis {
			password ` + secret + `
		} # bad`,
			wantErr: true,
			want:    []string{"oidc_provider", "store redis: address is required"},
		},
		{
			name: "redis store with several addresses and no mode",
			provider: `
		client demo-app {
			secret ` + secret + `
			redirect_uri http://app.test/oauth2/callback
		}
		store redis {
			address 127.0.0.1:9 127.0.0.1:10
			password ` + secret + `
		}`,
			wantErr: true,
			want:    []string{"oidc_provider", "store redis", "master_name"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			config := filepath.Join(dir, "Caddyfile")
			text := fmt.Sprintf(`{
	admin off
	storage file_system %s
	persist_config off
}

http://127.0.0.1:9 {
	oidc_provider {
		issuer http://127.0.0.1:9%s
	}
}
`, filepath.Join(dir, "storage"), tt.provider)
			if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			want := tt.want
			for i, line := range strings.Split(text, "\n") {
				if strings.Contains(line, "# bad") {
					want = append(want, fmt.Sprintf("Caddyfile:%d", i+1))
				}
			}

			cmd := exec.Command(caddyBin, "validate", "--config", config, "--adapter", "caddyfile")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(),
				"XDG_CONFIG_HOME="+filepath.Join(dir, "xdg-config"),
				"XDG_DATA_HOME="+filepath.Join(dir, "xdg-data"),
			)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			switch {
			case err != nil && !errors.As(err, &exit):
				t.Fatalf("running caddy validate: %v", err)
			case tt.wantErr && err == nil:
				t.Errorf("caddy validate succeeded, want an error:\n%s", out)
			case !tt.wantErr && err != nil:
				t.Errorf("caddy validate: %v:\n%s", err, out)
			}
			for _, w := range want {
				if !strings.Contains(string(out), w) {
					t.Errorf("caddy validate's output does not name %q:\n%s", w, out)
				}
			}
			if strings.Contains(string(out), secret) {
				t.Errorf("caddy validate's output shows the client secret:\n%s", out)
			}
		})
	}
}

// TestValidateGatewaySecret: `caddy validate` refuses an oidc_gateway that
// runs the code flow without a client secret, whether the option is missing
// or its environment variable is unset, naming the directive and the
// option; a public client on purpose validates.
func TestValidateGatewaySecret(t *testing.T) {
	t.Parallel()
	const secretVar = "AUTHGATE_E2E_GATEWAY_SECRET"
	tests := []struct {
		name    string
		gateway string // lines of the oidc_gateway block after issuer and client_id
		wantErr bool
		want    []string
	}{
		{name: "secret", gateway: "client_secret {env." + secretVar + "}"},
		{name: "no client_secret", wantErr: true, want: []string{"oidc_gateway", "client_secret is required", "public_client"}},
		{
			name:    "unset environment variable",
			gateway: "client_secret {env.AUTHGATE_E2E_UNSET_VAR}",
			wantErr: true,
			want:    []string{"oidc_gateway", "client_secret is required", "empty after resolving placeholders"},
		},
		{name: "public client", gateway: "public_client"},
		{name: "bearer mode", gateway: "mode bearer\n\t\taudience api"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			text := fmt.Sprintf(`{
	admin off
	storage file_system %s
	persist_config off
}

http://127.0.0.1:9 {
	oidc_gateway {
		issuer http://127.0.0.1:8
		client_id app
		%s
	}
	respond ok
}
`, filepath.Join(dir, "storage"), tt.gateway)
			out, err := caddyValidate(t, dir, text, secretVar+"=gateway-secret-do-not-print")
			switch {
			case tt.wantErr && err == nil:
				t.Errorf("caddy validate succeeded, want an error:\n%s", out)
			case !tt.wantErr && err != nil:
				t.Errorf("caddy validate: %v:\n%s", err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("caddy validate's output does not name %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "gateway-secret-do-not-print") {
				t.Errorf("caddy validate's output shows the client secret:\n%s", out)
			}
		})
	}
}

// TestValidateDemo: the demo Caddyfile validates with the environment that
// `make run` gives it.
func TestValidateDemo(t *testing.T) {
	t.Parallel()
	demo, err := os.ReadFile(filepath.Join("..", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The demo's sites and admin endpoint as they are; storage in the test's folder.
	text := strings.Replace(string(demo), "{\n", "{\n\tstorage file_system "+filepath.Join(dir, "storage")+"\n", 1)
	env := []string{"DEMO_APP_SECRET=demo-app-secret", "DEMO_SERVICE_SECRET=demo-service-secret", "DEMO_API_SECRET=demo-api-secret"}
	if out, err := caddyValidate(t, dir, text, env...); err != nil {
		t.Errorf("caddy validate of the demo: %v:\n%s", err, out)
	}
}

// TestValidateClusterExample: examples/cluster/Caddyfile validates as
// each node of examples/cluster/run.sh loads it, and names the missing
// Redis address when its variable is unset.
func TestValidateClusterExample(t *testing.T) {
	t.Parallel()
	text, err := os.ReadFile(filepath.Join("..", "examples", "cluster", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	shared := []string{"REDIS_ADDRESS=127.0.0.1:6380", "DEMO_APP_SECRET=demo-app-secret"}
	tests := []struct {
		name    string
		env     []string
		wantErr string
	}{
		{name: "node 1", env: shared},
		{name: "node 2", env: append([]string{"AUTHGATE_NODE=2", "AUTHGATE_ADMIN=localhost:2102",
			"AUTHGATE_PROVIDER_PORT=9002", "AUTHGATE_APP_PORT=8002"}, shared...)},
		{name: "no redis address", env: append([]string{"REDIS_ADDRESS="}, shared[1:]...), wantErr: "store redis: address is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := caddyValidate(t, t.TempDir(), string(text), tt.env...)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("caddy validate of examples/cluster/Caddyfile: %v:\n%s", err, out)
			case tt.wantErr != "" && (err == nil || !strings.Contains(out, tt.wantErr)):
				t.Errorf("caddy validate: %v, want an error naming %q:\n%s", err, tt.wantErr, out)
			}
		})
	}
}

// caddyValidate runs `caddy validate` on text as the Caddyfile in dir, with
// env added to the environment, and returns its output; err is nil when
// it succeeded, an *exec.ExitError when it failed.
func caddyValidate(t testing.TB, dir, text string, env ...string) (string, error) {
	t.Helper()
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBin, "validate", "--config", config, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "xdg-config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "xdg-data"),
	)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running caddy validate: %v", err)
	}
	return string(out), err
}
