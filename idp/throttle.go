package idp

import (
	"context"
	"strings"
	"sync"
	"time"
)

// ThrottleLimit is how failed logins are throttled for one kind of key:
// after Free failures, each further failure doubles the wait before the
// next attempt, starting at Base and capped at Max.
type ThrottleLimit struct {
	Free int
	Base time.Duration
	Max  time.Duration
}

// Wait returns how long a key must wait after its failures-th failure.
func (l ThrottleLimit) Wait(failures int) time.Duration {
	n := failures - l.Free
	switch {
	case n <= 0:
		return 0
	case n > 30: // Base<<n would overflow long before
		return l.Max
	}
	return min(l.Base<<(n-1), l.Max)
}

// ThrottleKey is one thing that failed logins are counted against (a
// username, a client IP, ...), and its limit.
type ThrottleKey struct {
	Key   string
	Limit ThrottleLimit
}

// ThrottleStore keeps the counts of the login throttle. An attempt is
// counted as a failure before its password is checked, and taken back
// when the password was right: counting after the check would let every
// guess that arrives while the first ones are being checked through
// unthrottled. Implementations must be safe for concurrent use; a store
// shared by several processes must make Reserve atomic across all of them.
type ThrottleStore interface {
	// Reserve counts one failure against every key at now, unless one of
	// them must still wait: then it counts nothing and returns the longest
	// wait. The check and the count are one atomic step over all keys, so
	// that attempts at the same time are counted as if they came one after
	// the other.
	Reserve(ctx context.Context, now time.Time, keys []ThrottleKey) (time.Duration, error)

	// Release takes back one failure from every key, for an attempt that
	// Reserve counted and that succeeded.
	Release(ctx context.Context, now time.Time, keys []ThrottleKey) error

	// Forget deletes every failure counted against the keys.
	Forget(ctx context.Context, keys []string) error
}

// memoryThrottle is the [ThrottleStore] of a single process.
type memoryThrottle struct {
	mu      sync.Mutex
	entries map[string]*throttleEntry
}

type throttleEntry struct {
	failures int
	last     time.Time // of the last failure
	until    time.Time // no attempt before this
	forgive  time.Duration
}

// maxThrottleEntries bounds the table; past it, entries that no longer
// delay anyone are dropped.
const maxThrottleEntries = 100_000

func newMemoryThrottle() *memoryThrottle {
	return &memoryThrottle{entries: make(map[string]*throttleEntry)}
}

// Reserve implements [ThrottleStore].
func (t *memoryThrottle) Reserve(_ context.Context, now time.Time, keys []ThrottleKey) (time.Duration, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var longest time.Duration
	for _, k := range keys {
		if e := t.entries[k.Key]; e != nil {
			longest = max(longest, e.until.Sub(now))
		}
	}
	if longest > 0 {
		return longest, nil
	}
	if len(t.entries) >= maxThrottleEntries {
		t.prune(now)
	}
	for _, k := range keys {
		e := t.entries[k.Key]
		if e == nil {
			e = &throttleEntry{}
			t.entries[k.Key] = e
		}
		if now.Sub(e.last) > k.Limit.Max {
			e.failures = 0 // a long quiet spell forgives
		}
		e.failures++
		e.last = now
		e.forgive = k.Limit.Max
		if d := k.Limit.Wait(e.failures); d > 0 {
			e.until = now.Add(d)
		}
	}
	return 0, nil
}

// Release implements [ThrottleStore].
func (t *memoryThrottle) Release(_ context.Context, now time.Time, keys []ThrottleKey) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		e := t.entries[k.Key]
		if e == nil {
			continue
		}
		if e.failures > 0 {
			e.failures--
		}
		if k.Limit.Wait(e.failures) == 0 {
			e.until = time.Time{}
		}
	}
	return nil
}

// Forget implements [ThrottleStore].
func (t *memoryThrottle) Forget(_ context.Context, keys []string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		delete(t.entries, k)
	}
	return nil
}

func (t *memoryThrottle) prune(now time.Time) {
	for k, e := range t.entries {
		if now.After(e.until) && now.Sub(e.last) > e.forgive {
			delete(t.entries, k)
		}
	}
}

// loginAttempt is a password check that the throttle has let through.
type loginAttempt struct {
	forget  []string      // keys whose failures a success forgets
	release []ThrottleKey // keys that a success takes its count back from
}

// reserveLogin counts an attempt to log in as username from the client IP
// ip before its password is checked. It returns how long to wait instead
// when the throttle holds the attempt back.
func (p *Provider) reserveLogin(ctx context.Context, username, ip string) (*loginAttempt, time.Duration, error) {
	user := ThrottleKey{Key: "user:" + strings.ToLower(username), Limit: p.throttleLimit}
	addr := ThrottleKey{Key: "ip:" + ip, Limit: p.throttleLimit}
	wait, err := p.throttle.Reserve(ctx, p.now(), []ThrottleKey{user, addr})
	if err != nil || wait > 0 {
		return nil, wait, err
	}
	return &loginAttempt{forget: []string{user.Key}, release: []ThrottleKey{addr}}, 0, nil
}

// succeeded settles an attempt whose password was right: the user's
// failures are forgotten, and the client IP's count is as if the attempt
// had not been made, so that logging in to an account of one's own does
// not wipe the failures from one's address.
func (p *Provider) succeeded(ctx context.Context, a *loginAttempt) {
	if err := p.throttle.Forget(ctx, a.forget); err != nil {
		p.log.ErrorContext(ctx, "login throttle", "error", err)
	}
	if err := p.throttle.Release(ctx, p.now(), a.release); err != nil {
		p.log.ErrorContext(ctx, "login throttle", "error", err)
	}
}

// retryAfter is a wait in whole seconds, rounded up.
func retryAfter(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }
