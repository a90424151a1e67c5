package idp_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
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
	limit := idp.ThrottleConfig{Free: 3, Base: time.Minute, Max: time.Hour}
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
