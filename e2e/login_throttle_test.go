package e2e_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/authgate/authgate/idp"
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

// openLogin opens the login page in a new browser from client IP ip.
func openLogin(t *testing.T, issuer, ip string) *loginAs {
	t.Helper()
	l := &loginAs{client: caddytest.NewBrowser(t), issuer: issuer}
	l.open(t, ip)
	return l
}

// open opens the login page again, from client IP ip.
func (l *loginAs) open(t *testing.T, ip string) {
	t.Helper()
	l.ip = ip
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

// endSession drops l's provider session cookie, as the session's end
// would, so that it sees the login form again; other cookies stay.
func (l *loginAs) endSession(t *testing.T) {
	t.Helper()
	u, err := url.Parse(l.issuer + "/")
	if err != nil {
		t.Fatal(err)
	}
	l.client.Jar.SetCookies(u, []*http.Cookie{{Name: idp.SessionCookie, Path: "/", MaxAge: -1}})
}

// TestLoginThrottleNoLockout plays an attacker against alice with the
// default throttle: wrong passwords from one client IP do not keep her
// out from another, and once she has logged in in a browser, a flood
// from many addresses does not keep her out of that browser.
func TestLoginThrottleNoLockout(t *testing.T) {
	t.Parallel()
	s := newThrottleSite(t, "")

	attacker := openLogin(t, s.issuer, "198.51.100.66")
	for i := range 6 { // the 5 free failures, then one that starts a wait
		if code, page, err := attacker.post("alice", "wrong"); err != nil || code != http.StatusOK {
			t.Fatalf("wrong password %d: status %d, %v:\n%s", i+1, code, err, page)
		}
	}
	if code, _, err := attacker.post("alice", password); err != nil || code != http.StatusTooManyRequests {
		t.Fatalf("attacker's address after 6 failures: status %d, %v; want 429", code, err)
	}

	alice := openLogin(t, s.issuer, "192.0.2.10")
	if code, page, err := alice.post("alice", password); err != nil || code != http.StatusOK || !strings.Contains(page, "signed in as alice") {
		t.Fatalf("alice from her own address: status %d, %v:\n%s", code, err, page)
	}
	alice.endSession(t)

	// A flood from many addresses, one guess each: past the per-username
	// limit (20 free by default), browsers alice never used are held back.
	var last int
	for i := range 30 {
		code, _, err := openLogin(t, s.issuer, fmt.Sprintf("203.0.113.%d", i+1)).post("alice", "wrong")
		if err != nil {
			t.Fatal(err)
		}
		last = code
	}
	if last != http.StatusTooManyRequests {
		t.Fatalf("30 wrong passwords from 30 addresses: last status %d, want 429", last)
	}
	if code, _, _ := openLogin(t, s.issuer, "192.0.2.11").post("alice", password); code != http.StatusTooManyRequests {
		t.Errorf("a new browser during the flood: status %d, want 429", code)
	}

	// Her browser has the device cookie of her login: it gets in, from
	// any address.
	alice.open(t, "192.0.2.12")
	if code, page, err := alice.post("alice", password); err != nil || code != http.StatusOK || !strings.Contains(page, "signed in as alice") {
		t.Fatalf("alice's browser during the flood: status %d, %v:\n%s", code, err, page)
	}
}

// TestLoginThrottleIPv6 walks the addresses of one IPv6 /64, as a host
// given one can, through a proxy Caddy trusts: they are one client IP to
// the throttle, so a guess from each new address is no fresh start.
func TestLoginThrottleIPv6(t *testing.T) {
	t.Parallel()
	s := newThrottleSite(t, "\n\t\tlogin_throttle 3 1m 1h")
	var codes []int
	for i := range 6 {
		code, page, err := openLogin(t, s.issuer, fmt.Sprintf("2001:db8:7:7:%x::1", i+1)).post("alice", "wrong")
		if err != nil {
			t.Fatalf("guess %d: %v:\n%s", i+1, err, page)
		}
		codes = append(codes, code)
	}
	if want := []int{200, 200, 200, 200, 429, 429}; !slices.Equal(codes, want) {
		t.Errorf("wrong passwords from 6 addresses of one /64: statuses %v, want %v", codes, want)
	}
	if code, page, _ := openLogin(t, s.issuer, "2001:db8:7:8::1").post("alice", password); code != http.StatusOK || !strings.Contains(page, "signed in as alice") {
		t.Errorf("right password from another /64: status %d:\n%s", code, page)
	}
}

// TestLoginThrottleSharedAddress plays the people of an office behind one
// address: once the address has used up its free failures, a right
// password is still no failure. It neither makes the next person wait nor
// is counted against the address, which waits only for its real failures.
func TestLoginThrottleSharedAddress(t *testing.T) {
	t.Parallel()
	s := newThrottleSite(t, "\n\t\tlogin_throttle {\n\t\t\tip 2 1s 1m\n\t\t}")
	const office = "198.51.100.7"

	// Three typos: the two free failures, then one that makes the address
	// wait 1s.
	typist := openLogin(t, s.issuer, office)
	for i := range 3 {
		if code, page, err := typist.post("alice", "wrong"); err != nil || code != http.StatusOK {
			t.Fatalf("wrong password %d: status %d, %v:\n%s", i+1, code, err, page)
		}
	}
	waitedFrom := time.Now()
	resp, err := typist.do(http.MethodPost, url.Values{"csrf_token": {typist.csrf}, "username": {"alice"}, "password": {"wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	caddytest.ReadBody(t, resp)
	retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusTooManyRequests || retry < 1 {
		t.Fatalf("a fourth guess at once: status %d, Retry-After %q; want 429 and a wait", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	waitPast(t, waitedFrom.Add(time.Duration(retry)*time.Second))

	// The wait is over: one person after the other signs in.
	for _, user := range []string{"bob", "alice", "bob"} {
		code, page, err := openLogin(t, s.issuer, office).post(user, password)
		if err != nil || code != http.StatusOK || !strings.Contains(page, "signed in as "+user) {
			t.Fatalf("%s with the right password after the wait: status %d, %v:\n%s", user, code, err, page)
		}
	}
}
