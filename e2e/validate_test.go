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
	if caddyBin == "" {
		t.Skip("end-to-end tests do not run under -short")
	}
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

// TestValidateDemo runs `caddy validate` on the demo Caddyfile of `make
// run`, with its secrets in the environment as make sets them.
func TestValidateDemo(t *testing.T) {
	t.Parallel()
	if caddyBin == "" {
		t.Skip("end-to-end tests do not run under -short")
	}
	config, err := filepath.Abs(filepath.Join("..", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(caddyBin, "validate", "--config", config, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"DEMO_APP_SECRET=validate-app-secret",
		"DEMO_SERVICE_SECRET=validate-service-secret",
		"DEMO_API_SECRET=validate-api-secret",
		// The demo keeps its keys in the default storage, under the
		// XDG data folder: the test's own.
		"XDG_CONFIG_HOME="+filepath.Join(dir, "xdg-config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "xdg-data"),
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("caddy validate %s: %v:\n%s", config, err, out)
	}
}
