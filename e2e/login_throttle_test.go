package e2e_test

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"text/template"

	"golang.org/x/crypto/bcrypt"

	"github.com/authgate/authgate/internal/caddytest"
)

// throttleTemplate is a provider behind which the test plays several
// client IPs: Caddy trusts X-Forwarded-For from 127.0.0.1, and the
// provider throttles by Caddy's client IP.
var throttleTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
	servers {
		trusted_proxies static 127.0.0.1/32
	}
}

{{.Issuer}} {
	oidc_provider {{.Issuer}} {
		client demo-app {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.RedirectURI}}
		}
		user alice {
			password_hash {{.Hash}}
		}
		user bob {
			password_hash {{.SlowHash}}
		}{{.Extra}}
	}
}
`))

// newThrottleSite starts a provider of throttleTemplate with extra
// oidc_provider options. Bob's hash costs 10, so that a password check
// takes long enough for parallel requests to overlap.
func newThrottleSite(t *testing.T, extra string) *site {
	t.Helper()
	s := newEmptySite(t)
	slow, err := bcrypt.GenerateFromPassword([]byte(password), 10)
	if err != nil {
		t.Fatal(err)
	}
	s.WriteConfig(t, throttleTemplate, map[string]string{
		"Admin":       s.AdminAddr,
		"Storage":     s.Storage,
		"Issuer":      s.issuer,
		"SecretEnv":   secretEnv,
		"RedirectURI": redirectURI,
		"Hash":        passwordHash,
		"SlowHash":    string(slow),
		"Extra":       extra,
	})
	s.Start(t)
	return s
}

var csrfRE = regexp.MustCompile(`name="csrf_token" value="([^"]*)"`)

// loginAs is a browser at the provider's login page (a direct visit),
// from client IP ip, ready to post credentials.
type loginAs struct {
	client *http.Client
	issuer string
	ip     string
	csrf   string
}

func openLogin(t *testing.T, issuer, ip string) *loginAs {
	t.Helper()
	l := &loginAs{client: caddytest.NewBrowser(t), issuer: issuer, ip: ip}
	resp, err := l.do(http.MethodGet, nil)
	if err != nil {
		t.Fatal(err)
	}
	page := caddytest.ReadBody(t, resp)
	m := csrfRE.FindStringSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("login page: status %d:\n%s", resp.StatusCode, page)
	}
	l.csrf = m[1]
	return l
}

func (l *loginAs) do(method string, form url.Values) (*http.Response, error) {
	req, err := http.NewRequest(method, l.issuer+"/account/login", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("X-Forwarded-For", l.ip)
	return l.client.Do(req)
}

// post submits username and password and returns the status and page.
func (l *loginAs) post(username, pw string) (int, string, error) {
	resp, err := l.do(http.MethodPost, url.Values{"csrf_token": {l.csrf}, "username": {username}, "password": {pw}})
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	page, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(page), err
}

// TestLoginThrottleParallel sends many wrong passwords for one user at
// once, from one client IP: the throttle must answer as many of them as
// it would answer one after the other, and hold back the rest with 429.
func TestLoginThrottleParallel(t *testing.T) {
	t.Parallel()
	const n = 20
	s := newThrottleSite(t, "\n\t\tlogin_throttle 3 1m 1h")
	const allowed = 3 + 1 // the free failures, then one that starts the wait

	browsers := make([]*loginAs, n)
	for i := range browsers {
		browsers[i] = openLogin(t, s.issuer, "203.0.113.7")
	}
	start := make(chan struct{})
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for _, b := range browsers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			code, _, err := b.post("bob", "wrong")
			if err != nil {
				code = 0
			}
			codes <- code
		}()
	}
	close(start)
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	if count[http.StatusOK] != allowed || count[http.StatusTooManyRequests] != n-allowed {
		t.Errorf("%d parallel wrong passwords got %v; want %d × 200 (checked) and %d × 429", n, count, allowed, n-allowed)
	}
}
