package idp_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/idp/throttletest"
)

// gateComparer is a PasswordComparer that rejects every password, counts
// its calls, and holds each call until release is closed, so that a test
// can have many password checks in flight at once.
type gateComparer struct {
	calls   atomic.Int32
	entered chan struct{}
	release chan struct{}
}

func newGateComparer(n int) *gateComparer {
	return &gateComparer{entered: make(chan struct{}, n), release: make(chan struct{})}
}

func (c *gateComparer) Compare(hashed, plaintext []byte) (bool, error) {
	c.calls.Add(1)
	c.entered <- struct{}{}
	<-c.release
	return false, nil
}

// race runs attempt n times at once and returns their status codes. It
// lets the held password checks go only once every attempt is either
// inside one or answered, so that no check can finish before another
// attempt was let through: the worst interleaving for a throttle that
// checks before and counts after.
func race(t *testing.T, c *gateComparer, n int, attempt func(i int) int) []int {
	t.Helper()
	start := make(chan struct{})
	done := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			done <- attempt(i)
		}()
	}
	close(start)
	var codes []int
	timeout := time.After(10 * time.Second)
	for inside := 0; inside+len(codes) < n; {
		select {
		case <-c.entered:
			inside++
		case code := <-done:
			codes = append(codes, code)
		case <-timeout:
			close(c.release)
			t.Fatalf("after 10 s: %d password checks in flight, %d answers, of %d attempts", inside, len(codes), n)
		}
	}
	close(c.release)
	wg.Wait()
	close(done)
	for code := range done {
		codes = append(codes, code)
	}
	return codes
}

// TestThrottleParallelGuesses fires many wrong passwords for one user at
// once, at the login form and at the password grant: no more passwords
// may be checked than the same guesses one after the other would get
// checked, the first failures free and then one before the first wait.
func TestThrottleParallelGuesses(t *testing.T) {
	const n = 20
	limit := idp.ThrottleConfig{UserIP: idp.ThrottleLimit{Free: 3, Base: time.Minute, Max: time.Hour}}
	const allowed = 3 + 1

	t.Run("login form", func(t *testing.T) {
		gate := newGateComparer(n)
		ts := newServer(t, func(c *idp.Config) { c.PasswordComparer = gate; c.Throttle = limit })
		forms := make([]url.Values, n)
		clients := make([]*http.Client, n)
		for i := range n {
			clients[i] = browser(t)
			forms[i] = loginForm(t, clients[i], ts.URL, "/account/login")
			forms[i].Set("username", "alice")
			forms[i].Set("password", "wrong")
		}
		codes := race(t, gate, n, func(i int) int {
			resp, err := clients[i].PostForm(ts.URL+"/account/login", forms[i])
			if err != nil {
				return 0
			}
			resp.Body.Close()
			return resp.StatusCode
		})
		checkRace(t, gate, codes, allowed, http.StatusOK, http.StatusTooManyRequests)
	})
	t.Run("password grant", func(t *testing.T) {
		gate := newGateComparer(n)
		ts := lifecycleServer(t, func(c *idp.Config) { c.PasswordComparer = gate; c.Throttle = limit })
		form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wrong"}, "scope": {"openid"}}
		codes := race(t, gate, n, func(int) int {
			req, _ := http.NewRequest(http.MethodPost, ts.URL+"/connect/token", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth("legacy", "legacy-secret")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return 0
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusBadRequest && !strings.Contains(string(body), "try again in") {
				return http.StatusOK // a checked, wrong password
			}
			return resp.StatusCode
		})
		checkRace(t, gate, codes, allowed, http.StatusOK, http.StatusBadRequest)
	})
}

// checkRace checks that exactly allowed passwords were checked, each
// answered with checked, and every other attempt with throttled.
func checkRace(t *testing.T, c *gateComparer, codes []int, allowed, checked, throttled int) {
	t.Helper()
	if got := int(c.calls.Load()); got != allowed {
		t.Errorf("%d passwords checked for %d parallel guesses, want %d as for sequential ones", got, len(codes), allowed)
	}
	count := map[int]int{}
	for _, code := range codes {
		count[code]++
	}
	if count[checked] != allowed || count[throttled] != len(codes)-allowed {
		t.Errorf("answers %v, want %d × %d and %d × %d", count, allowed, checked, len(codes)-allowed, throttled)
	}
}

// byHeader makes the test's X-Test-IP header the client IP, so that one
// test can be many addresses.
func byHeader(c *idp.Config) {
	c.ClientIP = func(r *http.Request) string { return r.Header.Get("X-Test-IP") }
}

// tryLogin opens the login page in c and posts username and password to
// it from client IP ip, and returns the status.
func tryLogin(t *testing.T, ts *testServer, c *http.Client, ip, username, pw string) int {
	t.Helper()
	form := loginForm(t, c, ts.URL, "/account/login")
	form.Set("username", username)
	form.Set("password", pw)
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/account/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Test-IP", ip)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	return resp.StatusCode
}

// TestThrottleNoLockout: failures from one address do not lock the user
// out elsewhere.
func TestThrottleNoLockout(t *testing.T) {
	ts := newServer(t, byHeader)
	attacker := browser(t)
	var throttled bool
	for range 10 {
		if tryLogin(t, ts, attacker, "198.51.100.1", "alice", "wrong") == http.StatusTooManyRequests {
			throttled = true
			break
		}
	}
	if !throttled {
		t.Fatal("10 wrong passwords from one address: never throttled")
	}
	if code := tryLogin(t, ts, browser(t), "198.51.100.2", "alice", testPassword); code != http.StatusOK {
		t.Fatalf("right password from another address: status %d, want 200", code)
	}
}

// flood sends wrong passwords for username from n addresses, one each,
// and reports whether the last was throttled.
func flood(t *testing.T, ts *testServer, username string, n int) bool {
	t.Helper()
	var code int
	for i := range n {
		code = tryLogin(t, ts, browser(t), fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), username, "wrong")
	}
	return code == http.StatusTooManyRequests
}

// TestThrottleDeviceCookie: a guessing campaign from many addresses holds
// back a username's logins, except from a browser that has logged in as
// that user before; and a stolen device cookie buys few guesses.
func TestThrottleDeviceCookie(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		byHeader(c)
		c.Users = append(c.Users, idp.User{Username: "bob", PasswordHash: passwordHash(t)})
		c.Throttle = idp.ThrottleConfig{
			User:   idp.ThrottleLimit{Free: 10, Base: time.Minute, Max: time.Hour},
			Device: idp.ThrottleLimit{Free: 2, Base: time.Minute, Max: time.Hour},
		}
	})
	u, _ := url.Parse(ts.URL)
	// endSession drops the login session, as its end would, so that the
	// browser sees the login form again; the device cookie stays.
	endSession := func(c *http.Client) {
		c.Jar.SetCookies(u, []*http.Cookie{{Name: idp.SessionCookie, Path: "/", MaxAge: -1}})
	}
	victim := browser(t)
	if code := tryLogin(t, ts, victim, "192.0.2.1", "alice", testPassword); code != http.StatusOK {
		t.Fatalf("first login: status %d", code)
	}
	endSession(victim)
	var device *http.Cookie
	for _, ck := range victim.Jar.Cookies(u) {
		if ck.Name == idp.DeviceCookie {
			device = ck
		}
	}
	if device == nil {
		t.Fatal("no device cookie after a login")
	}
	if strings.Contains(device.Value, "alice") {
		t.Errorf("device cookie is readable: %s", device.Value)
	}

	if !flood(t, ts, "alice", 12) || !flood(t, ts, "bob", 12) {
		t.Fatal("12 wrong passwords from 12 addresses: not throttled")
	}
	if code := tryLogin(t, ts, browser(t), "192.0.2.2", "alice", testPassword); code != http.StatusTooManyRequests {
		t.Errorf("new browser during the flood: status %d, want 429", code)
	}
	if code := tryLogin(t, ts, victim, "192.0.2.3", "alice", testPassword); code != http.StatusOK {
		t.Errorf("browser with a device cookie during the flood: status %d, want 200", code)
	}
	endSession(victim)
	if code := tryLogin(t, ts, victim, "192.0.2.3", "bob", testPassword); code != http.StatusTooManyRequests {
		t.Errorf("alice's device cookie, as bob: status %d, want 429", code)
	}

	// A copy of the cookie, from addresses of its own: its own limit.
	for _, ck := range victim.Jar.Cookies(u) {
		if ck.Name == idp.DeviceCookie {
			device = ck
		}
	}
	thief := browser(t)
	thief.Jar.SetCookies(u, []*http.Cookie{device})
	var codes []int
	for i := range 5 {
		codes = append(codes, tryLogin(t, ts, thief, fmt.Sprintf("203.0.113.%d", i+1), "alice", "wrong"))
	}
	if want := []int{200, 200, 200, 429, 429}; !slices.Equal(codes, want) {
		t.Errorf("stolen device cookie: statuses %v, want %v", codes, want)
	}
}

// TestThrottleIPv6Prefix: an IPv6 client is its /64, the least a host or
// a home network is given, so that an attacker cannot get a fresh limit
// per guess by walking the addresses of its own network; and an
// IPv4-mapped address is its IPv4 address.
func TestThrottleIPv6Prefix(t *testing.T) {
	tests := []struct {
		name string
		ip   func(i int) string // the address of the i-th guess
	}{
		{name: "one /64", ip: func(i int) string { return fmt.Sprintf("2001:db8:1:2:%x::%x", i, i+1) }},
		{name: "IPv4 and IPv4-mapped", ip: func(i int) string {
			if i%2 == 0 {
				return "198.51.100.7"
			}
			return "::ffff:198.51.100.7"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newServer(t, func(c *idp.Config) {
				byHeader(c)
				c.Throttle = idp.ThrottleConfig{UserIP: idp.ThrottleLimit{Free: 3, Base: time.Minute, Max: time.Hour}}
			})
			var codes []int
			for i := range 6 {
				codes = append(codes, tryLogin(t, ts, browser(t), tt.ip(i), "alice", "wrong"))
			}
			if want := []int{200, 200, 200, 200, 429, 429}; !slices.Equal(codes, want) {
				t.Errorf("wrong passwords: statuses %v, want %v", codes, want)
			}
			if code := tryLogin(t, ts, browser(t), "2001:db8:1:3::1", "alice", testPassword); code != http.StatusOK {
				t.Errorf("right password from another /64: status %d, want 200", code)
			}
		})
	}
}

// keyRecorder is a ThrottleStore that lets every attempt through and
// records the keys it was given.
type keyRecorder struct {
	mu   sync.Mutex
	keys []string
}

func (k *keyRecorder) Reserve(_ context.Context, _ time.Time, keys []idp.ThrottleKey) (time.Duration, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, key := range keys {
		k.keys = append(k.keys, key.Key)
	}
	return 0, nil
}

func (*keyRecorder) Release(context.Context, time.Time, []idp.ThrottleKey) error { return nil }
func (*keyRecorder) Forget(context.Context, []string) error                      { return nil }

// TestThrottleKeySize: the throttle keeps a key per username tried, for
// minutes; a username of tens of kilobytes must not make a key that size,
// or a few thousand guesses would fill the memory.
func TestThrottleKeySize(t *testing.T) {
	rec := &keyRecorder{}
	ts := newServer(t, func(c *idp.Config) {
		c.ThrottleStore = rec
		c.Clients[0].AllowPasswordGrant = true
	})
	long := strings.Repeat("a", 60<<10)
	if code := tryLogin(t, ts, browser(t), "192.0.2.1", long, "wrong"); code != http.StatusOK {
		t.Fatalf("status %d, want 200", code)
	}
	resp, _ := postToken(t, ts, "demo-app", testSecret, url.Values{"grant_type": {"password"}, "username": {long}, "password": {"wrong"}, "scope": {"openid"}})
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("password grant: status %d, want 400", resp.StatusCode)
	}
	if len(rec.keys) != 6 {
		t.Fatalf("%d throttle keys, want 3 for each attempt", len(rec.keys))
	}
	for _, k := range rec.keys {
		if len(k) > 128 {
			t.Errorf("a throttle key of %d bytes for a username of %d", len(k), len(long))
		}
	}
}

// lockedBuffer is a bytes.Buffer that a logger may write to from several
// requests at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestLoginLogLineSize: a failed or throttled login logs the username the
// client sent, and a failed client authentication its client_id, either
// of which may be tens of kilobytes: the log gets a bounded part of it,
// not a line of that size per guess.
func TestLoginLogLineSize(t *testing.T) {
	var logs lockedBuffer
	ts := newServer(t, func(c *idp.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		c.Clients[0].AllowPasswordGrant = true
		c.Throttle = idp.ThrottleConfig{UserIP: idp.ThrottleLimit{Free: 1, Base: time.Minute, Max: time.Hour}}
	})
	long := strings.Repeat("a", 60<<10)
	c := browser(t)
	for range 3 {
		tryLogin(t, ts, c, "192.0.2.1", long, "wrong")
		postToken(t, ts, "demo-app", testSecret, url.Values{"grant_type": {"password"}, "username": {long}, "password": {"wrong"}, "scope": {"openid"}})
	}
	// Likewise a client_id, whose failed authentication is logged.
	postToken(t, ts, long[:30<<10], "wrong", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wrong"}, "scope": {"openid"}})
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	var failed, throttled bool
	for _, line := range lines {
		failed = failed || strings.Contains(line, `"login failed"`)
		throttled = throttled || strings.Contains(line, `"login throttled"`)
		if len(line) > 1024 {
			t.Errorf("a log line of %d bytes: %.200s...", len(line), line)
		}
	}
	if !failed || !throttled {
		t.Fatalf("want a failed and a throttled login in the log:\n%.2000s", logs.String())
	}
}

// TestMemoryThrottle runs the throttle's behaviour table against the
// memory of one process.
func TestMemoryThrottle(t *testing.T) {
	throttletest.Run(t, func(t *testing.T) idp.ThrottleStore { return idp.NewMemoryThrottle() })
}
