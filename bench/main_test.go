// Package bench_test measures what oidc_gateway costs in front of
// reverse_proxy: one Caddy built from ./cmd/caddy serves a tiny upstream,
// the upstream through plain reverse_proxy (also with the session's Cookie
// header, dropped), through oidc_gateway with a session cookie (and again
// with the gateway's metrics off), and through oidc_gateway in bearer
// mode, and a load generator in this process compares them. Run it with `make bench`; without -bench it does
// nothing.
package bench_test

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/authgate/authgate/internal/caddytest"
)

const (
	// clientSecret is demo-app's secret, handed to Caddy in the
	// environment.
	clientSecret = "bench-demo-app-secret"
	secretEnv    = "AUTHGATE_BENCH_SECRET"

	password = "Abcd@1234"
)

// aliceHash is alice's bcrypt hash at the lowest cost: logins stay fast
// and the provider is not what is measured. It is made by the first
// benchmark that needs it, as the binary is, so that `go test` without
// -bench does nothing slow.
var aliceHash = sync.OnceValues(func() ([]byte, error) {
	return bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
})

func TestMain(m *testing.M) {
	code := m.Run()
	caddytest.RemoveBinary()
	os.Exit(code)
}

// server is the one Caddy of the benchmark and the addresses of its sites.
type server struct {
	*caddytest.Caddy
	upstream string // http://127.0.0.1:port: respond "ok"
	plain    string // reverse_proxy to upstream
	noCookie string // reverse_proxy to upstream without the Cookie header
	gateway  string // oidc_gateway (browser mode) + reverse_proxy
	noMetric string // the same gateway with metrics off
	bearer   string // oidc_gateway (bearer mode) + reverse_proxy
	issuer   string // oidc_provider
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

{{.NoMetrics}} {
	bind 127.0.0.1
	oidc_gateway {
		issuer {{.Issuer}}
		client_id demo-app
		client_secret {env.{{.SecretEnv}}}
		metrics off
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
	hash, err := aliceHash()
	if err != nil {
		b.Fatalf("hashing password: %v", err)
	}
	url := func() string { return fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(b)) }
	s := &server{
		Caddy:    caddytest.New(b, secretEnv+"="+clientSecret),
		upstream: url(),
		plain:    url(),
		noCookie: url(),
		gateway:  url(),
		noMetric: url(),
		bearer:   url(),
		issuer:   url(),
	}
	s.WriteConfig(b, configTemplate, map[string]string{
		"Admin":        s.AdminAddr,
		"Storage":      s.Storage,
		"Upstream":     s.upstream,
		"UpstreamHost": strings.TrimPrefix(s.upstream, "http://"),
		"Plain":        s.plain,
		"NoCookie":     s.noCookie,
		"Gateway":      s.gateway,
		"NoMetrics":    s.noMetric,
		"Bearer":       s.bearer,
		"Issuer":       s.issuer,
		"SecretEnv":    secretEnv,
		"Hash":         string(hash),
	})
	s.Ready = []string{
		s.upstream + "/",
		s.plain + "/",
		s.issuer + "/.well-known/openid-configuration",
	}
	s.Start(b)
	return s
}

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// which Linux fixes at 100 for user space whatever the kernel's HZ.
const clockTick = 10 * time.Millisecond

// cpuTime returns the CPU time, user plus system, that Caddy has used so
// far, from /proc/<pid>/stat (proc(5)); ok is false where there is no
// such file.
func (s *server) cpuTime() (d time.Duration, ok bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.Pid()))
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
