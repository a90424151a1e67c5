package idp

import (
	"sync"
	"time"
)

// throttle slows password guessing: after cfg.Free failures in a row for a
// key (a username or a client IP), each further failure doubles the time
// the key must wait before the next attempt.
type throttle struct {
	cfg ThrottleConfig
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*throttleEntry
}

type throttleEntry struct {
	failures int
	until    time.Time // no attempt before this
	last     time.Time // last failure
}

// maxThrottleEntries bounds the table; past it, entries that no longer
// delay anyone are dropped.
const maxThrottleEntries = 100_000

func newThrottle(cfg ThrottleConfig, now func() time.Time) *throttle {
	if cfg.Free <= 0 {
		cfg.Free = 3
	}
	if cfg.Base <= 0 {
		cfg.Base = time.Second
	}
	if cfg.Max <= 0 {
		cfg.Max = 15 * time.Minute
	}
	return &throttle{cfg: cfg, now: now, entries: make(map[string]*throttleEntry)}
}

// wait returns how long the longest-throttled of keys must still wait.
func (t *throttle) wait(keys ...string) time.Duration {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var longest time.Duration
	for _, k := range keys {
		if e := t.entries[k]; e != nil {
			longest = max(longest, e.until.Sub(now))
		}
	}
	return longest
}

// fail records a failed attempt for each key.
func (t *throttle) fail(keys ...string) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.entries) >= maxThrottleEntries {
		t.prune(now)
	}
	for _, k := range keys {
		e := t.entries[k]
		if e == nil {
			e = &throttleEntry{}
			t.entries[k] = e
		}
		if now.Sub(e.last) > t.cfg.Max {
			e.failures = 0 // a long quiet spell forgives
		}
		e.failures++
		e.last = now
		if n := e.failures - t.cfg.Free; n > 0 {
			d := t.cfg.Max
			if n <= 30 {
				d = min(t.cfg.Base<<(n-1), t.cfg.Max)
			}
			e.until = now.Add(d)
		}
	}
}

// succeed forgets the failures of key.
func (t *throttle) succeed(key string) {
	t.mu.Lock()
	delete(t.entries, key)
	t.mu.Unlock()
}

func (t *throttle) prune(now time.Time) {
	for k, e := range t.entries {
		if now.After(e.until) && now.Sub(e.last) > t.cfg.Max {
			delete(t.entries, k)
		}
	}
}
