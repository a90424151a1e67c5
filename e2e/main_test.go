// Package e2e_test drives the Caddy binary of ./cmd/caddy as its users do:
// it writes a Caddyfile, runs `caddy run`, `caddy reload` and
// `caddy validate`, and talks to the provider over HTTP with
// golang.org/x/oauth2 and go-oidc as the relying party.
package e2e_test

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"text/template"

	"golang.org/x/crypto/bcrypt"

	"github.com/authgate/authgate/internal/caddytest"
)

const (
	// clientSecret is demo-app's secret, handed to Caddy in the
	// environment as the demo's DEMO_APP_SECRET is.
	clientSecret = "e2e-demo-app-secret"
	secretEnv    = "AUTHGATE_E2E_SECRET"

	password    = "Abcd@1234"
	redirectURI = "http://app.test/oauth2/callback"
)

var (
	// caddyBin is the binary built from ./cmd/caddy.
	caddyBin string
	// passwordHash is alice's bcrypt hash, made at the lowest cost so that
	// logins stay fast.
	passwordHash string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hashing password:", err)
		return 1
	}
	passwordHash = string(h)

	defer caddytest.RemoveBinary()
	bin, err := caddytest.Binary()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	caddyBin = bin
	return m.Run()
}

// site is one Caddy configuration of a test: its Caddy, with its ports,
// storage and Caddyfile kept across restarts and reloads, and the
// provider's issuer.
type site struct {
	*caddytest.Caddy
	issuer string // http://127.0.0.1:port, the provider's issuer and site
}

// newSite picks free ports and a directory for a test's Caddy and writes
// its Caddyfile with extra oidc_provider options, as writeConfig.
func newSite(t testing.TB, extra string) *site {
	t.Helper()
	s := newEmptySite(t)
	s.writeConfig(t, extra)
	return s
}

// newEmptySite picks free ports and a directory for a test's Caddy, which
// is ready once the provider's discovery document answers too; the
// Caddyfile is the caller's to write.
func newEmptySite(t testing.TB) *site {
	t.Helper()
	s := &site{
		Caddy:  caddytest.New(t, secretEnv+"="+clientSecret),
		issuer: fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t)),
	}
	s.Ready = []string{s.issuer + "/.well-known/openid-configuration"}
	return s
}

var configTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

{{.Issuer}} {
	oidc_provider {{.Issuer}} {
		client demo-app {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.RedirectURI}}
			post_logout_redirect_uri http://app.test/
		}
		user alice {
			password_hash {{.Hash}}
			claim name "Alice Smith"
			claim given_name Alice
			claim family_name Smith
			claim email AliceSmith@email.com
			claim email_verified true
			claim website http://alice.com
		}{{.Extra}}
	}
}
`))

// writeConfig writes the site's Caddyfile with extra, lines that start
// with a newline, at the end of the oidc_provider block.
func (s *site) writeConfig(t testing.TB, extra string) {
	t.Helper()
	s.WriteConfig(t, configTemplate, map[string]string{
		"Admin":       s.AdminAddr,
		"Storage":     s.Storage,
		"Issuer":      s.issuer,
		"SecretEnv":   secretEnv,
		"RedirectURI": redirectURI,
		"Hash":        passwordHash,
		"Extra":       extra,
	})
}
