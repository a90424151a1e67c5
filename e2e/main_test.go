// Package e2e_test drives the Caddy binary of ./cmd/caddy as its users do:
// it writes a Caddyfile, runs `caddy run`, `caddy reload` and
// `caddy validate`, and talks to the provider over HTTP with
// golang.org/x/oauth2 and go-oidc as the relying party.
package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"golang.org/x/crypto/bcrypt"
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
	// caddyBin is the binary built from ./cmd/caddy, empty under -short.
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
	if testing.Short() {
		return m.Run()
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hashing password:", err)
		return 1
	}
	passwordHash = string(h)

	dir, err := os.MkdirTemp("", "authgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin, err := buildCaddy(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	caddyBin = bin
	return m.Run()
}

// buildCaddy builds ./cmd/caddy of this module into dir.
func buildCaddy(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("finding the module root: not inside a module")
	}
	bin := filepath.Join(dir, "caddy")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/caddy")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building ./cmd/caddy: %w\n%s", err, out)
	}
	return bin, nil
}

// site is one Caddy configuration of a test: its ports, its storage and
// its Caddyfile, kept across restarts and reloads.
type site struct {
	dir       string
	adminAddr string // host:port of the admin endpoint
	issuer    string // http://127.0.0.1:port, the provider's issuer and site
	config    string // path of the Caddyfile
	logPath   string // Caddy's stdout and stderr, across restarts

	proc *exec.Cmd
	done chan struct{} // closed when proc has exited
}

// newSite picks free ports and a directory for a test's Caddy and writes
// its Caddyfile with extra oidc_provider options, as writeConfig.
func newSite(t testing.TB, extra string) *site {
	t.Helper()
	if caddyBin == "" {
		t.Skip("end-to-end tests do not run under -short")
	}
	dir := t.TempDir()
	s := &site{
		dir:       dir,
		adminAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		issuer:    fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		config:    filepath.Join(dir, "Caddyfile"),
		logPath:   filepath.Join(dir, "caddy.log"),
	}
	// Cleanups run last first: stop Caddy, then show its log.
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpLog(t)
		}
	})
	t.Cleanup(func() { s.stop(t) })
	s.writeConfig(t, extra)
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
	var b bytes.Buffer
	err := configTemplate.Execute(&b, map[string]string{
		"Admin":       s.adminAddr,
		"Storage":     filepath.Join(s.dir, "storage"),
		"Issuer":      s.issuer,
		"SecretEnv":   secretEnv,
		"RedirectURI": redirectURI,
		"Hash":        passwordHash,
		"Extra":       extra,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.config, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// command returns a caddy command with an environment of its own: the
// client secret, and XDG folders inside the test's directory so that
// nothing is written to the user's home.
func (s *site) command(args ...string) *exec.Cmd {
	cmd := exec.Command(caddyBin, args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(),
		secretEnv+"="+clientSecret,
		"XDG_CONFIG_HOME="+filepath.Join(s.dir, "xdg-config"),
		"XDG_DATA_HOME="+filepath.Join(s.dir, "xdg-data"),
		"XDG_CACHE_HOME="+filepath.Join(s.dir, "xdg-cache"),
	)
	return cmd
}

// start runs `caddy run` on the site's Caddyfile and returns once both the
// admin endpoint and the provider's discovery document answer.
func (s *site) start(t testing.TB) {
	t.Helper()
	log, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close() // the child has its own copy
	cmd := s.command("run", "--config", s.config, "--adapter", "caddyfile")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting caddy: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.proc, s.done = cmd, done
	s.waitReady(t)
}

// waitReady polls until Caddy serves both the admin API and the provider,
// failing at once if Caddy exits.
func (s *site) waitReady(t testing.TB) {
	t.Helper()
	urls := []string{
		"http://" + s.adminAddr + "/config/",
		s.issuer + "/.well-known/openid-configuration",
	}
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for len(urls) > 0 && answers(urls[0]) {
			urls = urls[1:]
		}
		if len(urls) == 0 {
			return
		}
		select {
		case <-s.done:
			t.Fatalf("caddy exited before it was ready: %v", s.proc.ProcessState)
		case <-timeout.C:
			t.Fatalf("caddy is not ready after 30s: no answer from %s", urls[0])
		case <-tick.C:
		}
	}
}

func answers(url string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// stop ends the Caddy this site started, if it runs: SIGTERM, then a kill
// if it has not exited within 10 seconds.
func (s *site) stop(t testing.TB) {
	t.Helper()
	if s.proc == nil {
		return
	}
	proc, done := s.proc, s.done
	s.proc, s.done = nil, nil
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("stopping caddy: %v", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("caddy did not exit 10s after SIGTERM; killing it")
		proc.Process.Kill()
		<-done
	}
}

func (s *site) dumpLog(t testing.TB) {
	t.Helper()
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			t.Logf("reading caddy's log: %v", err)
		}
		return
	}
	t.Logf("caddy's log:\n%s", b)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
