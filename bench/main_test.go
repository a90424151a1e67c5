// Package bench_test measures what oidc_gateway costs in front of
// reverse_proxy: one Caddy built from ./cmd/caddy serves a tiny upstream,
// the upstream through plain reverse_proxy (also with the session's Cookie
// header, dropped), through oidc_gateway with a session cookie, and
// through oidc_gateway in bearer mode, and a load generator in this
// process compares them. Run it with `make bench`; without -bench it does
// nothing.
package bench_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"golang.org/x/crypto/bcrypt"
)

const (
	// clientSecret is demo-app's secret, handed to Caddy in the
	// environment.
	clientSecret = "bench-demo-app-secret"
	secretEnv    = "AUTHGATE_BENCH_SECRET"

	password = "Abcd@1234"
)

// The binary and alice's password hash are made once, by the first
// benchmark that needs them, so that `go test` without -bench builds
// nothing.
var (
	buildOnce sync.Once
	buildDir  string
	caddyBin  string
	// passwordHash is alice's bcrypt hash at the lowest cost: logins stay
	// fast and the provider is not what is measured.
	passwordHash string
	buildErr     error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// caddyBinary returns the binary built from ./cmd/caddy, building it on
// the first call.
func caddyBinary(b *testing.B) string {
	b.Helper()
	buildOnce.Do(func() {
		h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		if err != nil {
			buildErr = fmt.Errorf("hashing password: %w", err)
			return
		}
		passwordHash = string(h)
		if buildDir, buildErr = os.MkdirTemp("", "authgate-bench-"); buildErr != nil {
			return
		}
		caddyBin, buildErr = buildCaddy(buildDir)
	})
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	return caddyBin
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

// server is the one Caddy of the benchmark and the addresses of its sites.
type server struct {
	dir       string
	adminAddr string // host:port of the admin endpoint
	upstream  string // http://127.0.0.1:port: respond "ok"
	plain     string // reverse_proxy to upstream
	noCookie  string // reverse_proxy to upstream without the Cookie header
	gateway   string // oidc_gateway (browser mode) + reverse_proxy
	bearer    string // oidc_gateway (bearer mode) + reverse_proxy
	issuer    string // oidc_provider
	logPath   string

	proc *exec.Cmd
	done chan struct{} // closed when proc has exited
}

var configTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 1s
}

{{.Upstream}} {
	bind 127.0.0.1
	respond "ok"
}

{{.Plain}} {
	bind 127.0.0.1
	reverse_proxy {{.UpstreamHost}}
}

{{.NoCookie}} {
	bind 127.0.0.1
	reverse_proxy {{.UpstreamHost}} {
		header_up -Cookie
	}
}

{{.Gateway}} {
	bind 127.0.0.1
	oidc_gateway {
		issuer {{.Issuer}}
		client_id demo-app
		client_secret {env.{{.SecretEnv}}}
	}
	reverse_proxy {{.UpstreamHost}}
}

{{.Bearer}} {
	bind 127.0.0.1
	oidc_gateway {
		issuer {{.Issuer}}
		mode bearer
		audience demo-api
	}
	reverse_proxy {{.UpstreamHost}}
}

{{.Issuer}} {
	bind 127.0.0.1
	oidc_provider {{.Issuer}} {
		client demo-app {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.Gateway}}/oauth2/callback
			scopes openid profile email api
			access_token_lifetime 1h
		}
		user alice {
			password_hash {{.Hash}}
			claim name "Alice Smith"
			claim given_name Alice
			claim family_name Smith
			claim email AliceSmith@email.com
			claim email_verified true
		}
		api_scope api
		api_resource demo-api api
	}
}
`))

// startServer writes the Caddyfile, runs Caddy and returns once every
// site answers. Caddy is stopped when the benchmark ends.
func startServer(b *testing.B) *server {
	b.Helper()
	bin := caddyBinary(b)
	dir := b.TempDir()
	url := func() string { return fmt.Sprintf("http://127.0.0.1:%d", freePort(b)) }
	s := &server{
		dir:       dir,
		adminAddr: fmt.Sprintf("127.0.0.1:%d", freePort(b)),
		upstream:  url(),
		plain:     url(),
		noCookie:  url(),
		gateway:   url(),
		bearer:    url(),
		issuer:    url(),
		logPath:   filepath.Join(dir, "caddy.log"),
	}
	var cfg bytes.Buffer
	err := configTemplate.Execute(&cfg, map[string]string{
		"Admin":        s.adminAddr,
		"Storage":      filepath.Join(dir, "storage"),
		"Upstream":     s.upstream,
		"UpstreamHost": strings.TrimPrefix(s.upstream, "http://"),
		"Plain":        s.plain,
		"NoCookie":     s.noCookie,
		"Gateway":      s.gateway,
		"Bearer":       s.bearer,
		"Issuer":       s.issuer,
		"SecretEnv":    secretEnv,
		"Hash":         passwordHash,
	})
	if err != nil {
		b.Fatal(err)
	}
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, cfg.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}

	log, err := os.Create(s.logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close() // the child has its own copy
	cmd := exec.Command(bin, "run", "--config", config, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		secretEnv+"="+clientSecret,
		"XDG_CONFIG_HOME="+filepath.Join(dir, "xdg-config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "xdg-data"),
		"XDG_CACHE_HOME="+filepath.Join(dir, "xdg-cache"),
	)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting caddy: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.proc, s.done = cmd, done
	// Cleanups run last first: stop Caddy, then show its log.
	b.Cleanup(func() {
		if b.Failed() {
			s.dumpLog(b)
		}
	})
	b.Cleanup(func() { s.stop(b) })
	s.waitReady(b)
	return s
}

// waitReady polls until Caddy serves the admin API, the upstream and the
// provider, failing at once if Caddy exits.
func (s *server) waitReady(b *testing.B) {
	b.Helper()
	urls := []string{
		"http://" + s.adminAddr + "/config/",
		s.upstream + "/",
		s.plain + "/",
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
			b.Fatalf("caddy exited before it was ready: %v", s.proc.ProcessState)
		case <-timeout.C:
			b.Fatalf("caddy is not ready after 30s: no answer from %s", urls[0])
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

// stop ends Caddy: SIGTERM, then a kill if it has not exited within 10
// seconds.
func (s *server) stop(b *testing.B) {
	b.Helper()
	if s.proc == nil {
		return
	}
	proc, done := s.proc, s.done
	s.proc, s.done = nil, nil
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		b.Errorf("stopping caddy: %v", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		b.Errorf("caddy did not exit 10s after SIGTERM; killing it")
		proc.Process.Kill()
		<-done
	}
}

func (s *server) dumpLog(b *testing.B) {
	b.Helper()
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		b.Logf("reading caddy's log: %v", err)
		return
	}
	b.Logf("caddy's log:\n%s", data)
}

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// which Linux fixes at 100 for user space whatever the kernel's HZ.
const clockTick = 10 * time.Millisecond

// cpuTime returns the CPU time, user plus system, that Caddy has used so
// far, from /proc/<pid>/stat (proc(5)); ok is false where there is no
// such file.
func (s *server) cpuTime() (d time.Duration, ok bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.proc.Process.Pid))
	if err != nil {
		return 0, false
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// count fields from the last ')'. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * clockTick, true
}

// ownCPUTime returns the CPU time this process, the load generator, has
// used so far.
func ownCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(b *testing.B) int {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
