// Package throttletest is the behaviour table that every
// [idp.ThrottleStore] implementation passes: the same guesses get the
// same waits from each, in one process or shared by several.
package throttletest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

// start is the time the tests begin at; stores take now from the caller.
var start = time.Unix(1_700_000_000, 0)

// Run runs the table. newStore returns an empty store.
func Run(t *testing.T, newStore func(t *testing.T) idp.ThrottleStore) {
	t.Run("defaults per hour", func(t *testing.T) { defaultsPerHour(t, newStore) })
	t.Run("forgiveness", func(t *testing.T) { forgiveness(t, newStore(t)) })
	t.Run("per-key limits", func(t *testing.T) { perKeyLimits(t, newStore(t)) })
	t.Run("release and forget", func(t *testing.T) { releaseAndForget(t, newStore(t)) })
	t.Run("release leaves no trace", func(t *testing.T) { releaseLeavesNoTrace(t, newStore) })
	t.Run("atomic", func(t *testing.T) { Atomic(t, newStore(t)) })
	t.Run("claim", func(t *testing.T) { Claim(t, newStore(t)) })
}

// Claim reserves, from 50 goroutines at once spread over stores, a key
// with no free attempt, as a provider whose store has no [idp.Adder]
// claims a TOTP code's time step (RFC 6238 §5.2: a code is accepted
// once): exactly one gets through, and the next only once the key's wait
// is over.
func Claim(t *testing.T, stores ...idp.ThrottleStore) {
	window := 2 * time.Minute
	keys := []idp.ThrottleKey{{Key: "totp-step:claim-test:56666666", Limit: idp.ThrottleLimit{Free: 0, Base: window, Max: window}}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var passed int
	for i := range 50 {
		wg.Go(func() {
			w, err := stores[i%len(stores)].Reserve(context.Background(), start, keys)
			if err != nil {
				t.Errorf("Reserve: %v", err)
				return
			}
			if w == 0 {
				mu.Lock()
				passed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if passed != 1 {
		t.Errorf("%d of 50 concurrent claims passed, want 1", passed)
	}
	r := &reserver{t: t, s: stores[0], now: start.Add(window - time.Second), keys: keys}
	if r.reserve() == 0 {
		t.Error("a claim passed before the wait was over")
	}
	r.now = start.Add(window + time.Second)
	if r.reserve() != 0 {
		t.Error("a claim was refused after the wait")
	}
}

// reserver reserves keys at a clock that the test moves.
type reserver struct {
	t    *testing.T
	s    idp.ThrottleStore
	now  time.Time
	keys []idp.ThrottleKey
}

func (r *reserver) reserve() time.Duration {
	r.t.Helper()
	w, err := r.s.Reserve(context.Background(), r.now, r.keys)
	if err != nil {
		r.t.Fatalf("Reserve: %v", err)
	}
	return w
}

func (r *reserver) release() {
	r.t.Helper()
	if err := r.s.Release(context.Background(), r.now, r.keys); err != nil {
		r.t.Fatalf("Release: %v", err)
	}
}

func (r *reserver) forget(keys ...string) {
	r.t.Helper()
	if err := r.s.Forget(context.Background(), keys); err != nil {
		r.t.Fatalf("Forget: %v", err)
	}
}

// guesses returns how many attempts a guesser who tries again as soon as
// the throttle lets it gets through in each hour of hours, all wrong.
func guesses(t *testing.T, s idp.ThrottleStore, l idp.ThrottleLimit, hours int) []int {
	t.Helper()
	r := &reserver{t: t, s: s, now: start, keys: []idp.ThrottleKey{{Key: "user-ip:198.51.100.1 k", Limit: l}}}
	perHour := make([]int, hours)
	for range 1_000_000 {
		h := int(r.now.Sub(start) / time.Hour)
		if h >= hours {
			return perHour
		}
		if wait := r.reserve(); wait > 0 {
			r.now = r.now.Add(wait)
			continue
		}
		perHour[h]++
	}
	t.Fatal("the guesser never ran out of time")
	return nil
}

// defaultsPerHour pins what the default limits allow, as the README
// states it: the first hour, then every hour after.
func defaultsPerHour(t *testing.T, newStore func(t *testing.T) idp.ThrottleStore) {
	tests := []struct {
		name             string
		limit            idp.ThrottleLimit
		firstHour, later int
	}{
		{name: "per username and client IP", limit: idp.DefaultThrottleUserIP, firstHour: 18, later: 4},
		{name: "per username", limit: idp.DefaultThrottleUser, firstHour: 40, later: 12},
		{name: "per client IP", limit: idp.DefaultThrottleIP, firstHour: 95, later: 60},
		{name: "per device", limit: idp.DefaultThrottleDevice, firstHour: 18, later: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := guesses(t, newStore(t), tt.limit, 24)
			if got[0] != tt.firstHour {
				t.Errorf("first hour: %d guesses, want %d", got[0], tt.firstHour)
			}
			for h, n := range got[1:] {
				if n != tt.later {
					t.Errorf("hour %d: %d guesses, want %d", h+2, n, tt.later)
				}
			}
		})
	}
}

// forgiveness: each Max without a failure forgives one, so a pause buys
// back no more than the guesses it gave up; a release takes one count back.
func forgiveness(t *testing.T, s idp.ThrottleStore) {
	l := idp.ThrottleLimit{Free: 2, Base: time.Second, Max: time.Minute}
	r := &reserver{t: t, s: s, now: start, keys: []idp.ThrottleKey{{Key: "k", Limit: l}}}
	for i := range 5 { // 2 free, then waits of 1, 2 and 4 s
		if w := r.reserve(); w != 0 {
			t.Fatalf("attempt %d: wait %s", i+1, w)
		}
		r.now = r.now.Add(l.Wait(i + 1))
	}
	r.now = r.now.Add(-l.Wait(5))
	if w := r.reserve(); w != l.Wait(5) {
		t.Fatalf("right after the 5th failure: wait %s, want %s", w, l.Wait(5))
	}
	r.now = r.now.Add(3 * time.Minute) // 3 Max after the last failure
	if w := r.reserve(); w != 0 {
		t.Fatalf("after the pause: wait %s", w)
	}
	// 5 - 3 forgiven + 1: the third failure, whose wait is Base.
	if w := r.reserve(); w != time.Second {
		t.Errorf("next attempt at once: wait %s, want 1s", w)
	}
	r.now = r.now.Add(time.Second + 500*time.Millisecond)
	if w := r.reserve(); w != 0 {
		t.Errorf("1.5 s later: wait %s, want none", w)
	}
	if w := r.reserve(); w != 2*time.Second {
		t.Errorf("the fourth failure: wait %s, want 2s", w)
	}

	// A success takes its own count back; within Free no wait is left.
	r.forget("k")
	r.reserve()
	r.reserve() // the second: Free used up, no wait yet
	if w := r.reserve(); w != 0 {
		t.Fatalf("third attempt: wait %s, want none (Free is 2)", w)
	}
	if w := r.reserve(); w != time.Second {
		t.Fatalf("fourth attempt at once: wait %s, want 1s", w)
	}
	r.release()
	r.release()
	if w := r.reserve(); w != 0 {
		t.Errorf("after two releases: wait %s, want none", w)
	}
}

// perKeyLimits: each key counts by its own limit, and a reservation held
// back by one key counts against none.
func perKeyLimits(t *testing.T, s idp.ThrottleStore) {
	a := idp.ThrottleKey{Key: "ip:198.51.100.1", Limit: idp.ThrottleLimit{Free: 1, Base: time.Second, Max: time.Minute}}
	b := idp.ThrottleKey{Key: "user:b", Limit: idp.ThrottleLimit{Free: 3, Base: 10 * time.Second, Max: time.Hour}}
	r := &reserver{t: t, s: s, now: start, keys: []idp.ThrottleKey{a, b}}
	steps := []struct {
		advance time.Duration
		want    time.Duration
	}{
		{0, 0},                // a 1, b 1
		{0, 0},                // a 2 (waits 1s), b 2
		{0, time.Second},      // held back by a: nothing counted
		{time.Second, 0},      // a 3 (2s), b 3
		{2 * time.Second, 0},  // a 4 (4s), b 4 (10s)
		{0, 10 * time.Second}, // the longer wait of the two
		{10 * time.Second, 0}, // a 5 (8s), b 5 (20s)
	}
	for i, st := range steps {
		r.now = r.now.Add(st.advance)
		if w := r.reserve(); w != st.want {
			t.Fatalf("step %d: wait %s, want %s", i+1, w, st.want)
		}
	}
	// a alone is held back by its own count only.
	r.keys = []idp.ThrottleKey{a}
	if w := r.reserve(); w != 8*time.Second {
		t.Errorf("a alone: wait %s, want 8s", w)
	}
}

// releaseAndForget: a release of an absent key counts nothing, and Forget
// drops only the keys it names.
func releaseAndForget(t *testing.T, s idp.ThrottleStore) {
	l := idp.ThrottleLimit{Free: 1, Base: time.Minute, Max: time.Hour}
	a := &reserver{t: t, s: s, now: start, keys: []idp.ThrottleKey{{Key: "device:a", Limit: l}}}
	b := &reserver{t: t, s: s, now: start, keys: []idp.ThrottleKey{{Key: "device:b", Limit: l}}}
	a.release()
	a.release()
	for _, r := range []*reserver{a, b} {
		r.reserve()
		r.reserve()
		if w := r.reserve(); w != time.Minute {
			t.Fatalf("%s: third attempt: wait %s, want 1m", r.keys[0].Key, w)
		}
	}
	a.forget("device:a", "device:unknown")
	if w := a.reserve(); w != 0 {
		t.Errorf("forgotten key: wait %s, want none", w)
	}
	if w := b.reserve(); w != time.Minute {
		t.Errorf("other key after Forget: wait %s, want 1m", w)
	}
}

// releaseLeavesNoTrace: a released attempt (a right password) leaves a
// key past its free failures as if it had not been made, alone or while
// other attempts are counted: it sets no wait, and it does not put off the
// forgiving of the failures before it.
func releaseLeavesNoTrace(t *testing.T, newStore func(t *testing.T) idp.ThrottleStore) {
	l := idp.ThrottleLimit{Free: 2, Base: time.Second, Max: time.Minute}
	key := []idp.ThrottleKey{{Key: "k", Limit: l}}
	ctx := context.Background()
	reserve := func(t *testing.T, s idp.ThrottleStore, at time.Time) time.Duration {
		t.Helper()
		w, err := s.Reserve(ctx, at, key)
		if err != nil {
			t.Fatalf("Reserve: %v", err)
		}
		return w
	}
	release := func(t *testing.T, s idp.ThrottleStore, at time.Time) {
		t.Helper()
		if err := s.Release(ctx, at, key); err != nil {
			t.Fatalf("Release: %v", err)
		}
	}
	tests := []struct {
		name string
		// run makes the attempts after three failures at start (the two
		// free ones and one that makes the key wait), from free on (when
		// that wait is over), and returns when the key's next attempt may
		// come (at once, as if the successes had not been made) and how
		// many failures it then counts.
		run func(t *testing.T, s idp.ThrottleStore, free time.Time) (time.Time, int)
	}{
		{
			name: "a success",
			run: func(t *testing.T, s idp.ThrottleStore, free time.Time) (time.Time, int) {
				reserve(t, s, free)
				release(t, s, free)
				return free, 3 + 1
			},
		},
		{
			name: "a success checked past the wait it set, and a failure meanwhile",
			run: func(t *testing.T, s idp.ThrottleStore, free time.Time) (time.Time, int) {
				reserve(t, s, free) // the 4th: a wait of 2s
				failure := free.Add(l.Wait(4))
				if w := reserve(t, s, failure); w != 0 {
					t.Fatalf("the failure after the success's wait: wait %s", w)
				}
				release(t, s, free)
				// Without the success, the failure was the 4th.
				return failure.Add(l.Wait(4)), 4 + 1
			},
		},
		{
			name: "forgiveness counts from the last failure, not the success",
			run: func(t *testing.T, s idp.ThrottleStore, free time.Time) (time.Time, int) {
				ok := free.Add(30 * time.Second)
				reserve(t, s, ok)
				release(t, s, ok)
				// Two Max after the last failure, two of the three are
				// forgiven: the next failure is the second, within Free.
				return start.Add(2 * l.Max), 1 + 1
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			for i := range 3 {
				if w := reserve(t, s, start); w != 0 {
					t.Fatalf("failure %d: wait %s", i+1, w)
				}
			}
			next, count := tt.run(t, s, start.Add(l.Wait(3)))
			if w := reserve(t, s, next); w != 0 {
				t.Fatalf("the next attempt: wait %s, want none", w)
			}
			if got := countedAt(t, s, key, next); got != count {
				t.Errorf("%d failures counted with the next attempt, want %d", got, count)
			}
		})
	}
}

// countedAt tells, from the waits s answers, how many failures it counts
// against key right after an attempt at at went through: reserving again
// at the same moment is held back by the wait that count sets, or, while
// the count is within Free, goes through and counts one more.
func countedAt(t *testing.T, s idp.ThrottleStore, key []idp.ThrottleKey, at time.Time) int {
	t.Helper()
	l := key[0].Limit
	for extra := 0; extra <= l.Free+1; extra++ {
		w, err := s.Reserve(context.Background(), at, key)
		if err != nil {
			t.Fatalf("Reserve: %v", err)
		}
		if w == 0 {
			continue
		}
		for n := l.Free + 1; n <= l.Free+30; n++ {
			if l.Wait(n) == w {
				return n - extra
			}
		}
		t.Fatalf("a wait of %s is no count's", w)
	}
	t.Fatalf("no wait after %d more attempts", l.Free+2)
	return 0
}

// Atomic reserves from 100 goroutines at once, spread over stores, which
// share their counts (one store, or clients of one server): exactly
// Free+1 get through, as one after the other would, and the refused ones
// count nothing.
func Atomic(t *testing.T, stores ...idp.ThrottleStore) {
	keys := []idp.ThrottleKey{
		{Key: "user-ip:198.51.100.1 a", Limit: idp.DefaultThrottleUserIP},
		{Key: "ip:198.51.100.1", Limit: idp.DefaultThrottleIP},
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var passed int
	for i := range 100 {
		wg.Go(func() {
			w, err := stores[i%len(stores)].Reserve(context.Background(), start, keys)
			if err != nil {
				t.Errorf("Reserve: %v", err)
				return
			}
			if w == 0 {
				mu.Lock()
				passed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if want := idp.DefaultThrottleUserIP.Free + 1; passed != want {
		t.Errorf("%d of 100 concurrent reservations passed, want %d", passed, want)
	}
	// The client IP's count is what got through: as many more as its own
	// limit leaves get through alone.
	r := &reserver{t: t, s: stores[0], now: start, keys: keys[1:]}
	left := 0
	for range 100 {
		if r.reserve() > 0 {
			break
		}
		left++
	}
	if want := idp.DefaultThrottleIP.Free + 1 - passed; left != want {
		t.Errorf("the client IP alone: %d more got through, want %d: a refused reservation must count nothing", left, want)
	}
}
