package idp

import (
	"context"
	"sync"
	"testing"
	"time"
)

// guesses returns how many attempts a guesser who tries again as soon as
// the throttle lets it gets through in each hour of hours, all wrong.
func guesses(t *testing.T, l ThrottleLimit, hours int) []int {
	t.Helper()
	th := newMemoryThrottle()
	key := []ThrottleKey{{Key: "k", Limit: l}}
	start := time.Unix(1_700_000_000, 0)
	now := start
	perHour := make([]int, hours)
	for range 1_000_000 {
		h := int(now.Sub(start) / time.Hour)
		if h >= hours {
			return perHour
		}
		wait, err := th.Reserve(context.Background(), now, key)
		if err != nil {
			t.Fatal(err)
		}
		if wait > 0 {
			now = now.Add(wait)
			continue
		}
		perHour[h]++
	}
	t.Fatal("the guesser never ran out of time")
	return nil
}

// TestThrottleDefaultsPerHour pins what the default limits allow, as the
// README states it: the first hour, then every hour after.
func TestThrottleDefaultsPerHour(t *testing.T) {
	tests := []struct {
		name             string
		limit            ThrottleLimit
		firstHour, later int
	}{
		{name: "per username and client IP", limit: DefaultThrottleUserIP, firstHour: 18, later: 4},
		{name: "per username", limit: DefaultThrottleUser, firstHour: 40, later: 12},
		{name: "per client IP", limit: DefaultThrottleIP, firstHour: 95, later: 60},
		{name: "per device", limit: DefaultThrottleDevice, firstHour: 18, later: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := guesses(t, tt.limit, 24)
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

// TestThrottleForgiveness: each Max without a failure forgives one, so a
// pause buys back no more than the guesses it gave up.
func TestThrottleForgiveness(t *testing.T) {
	l := ThrottleLimit{Free: 2, Base: time.Second, Max: time.Minute}
	key := []ThrottleKey{{Key: "k", Limit: l}}
	th := newMemoryThrottle()
	now := time.Unix(1_700_000_000, 0)
	ctx := context.Background()
	reserve := func() time.Duration {
		t.Helper()
		w, err := th.Reserve(ctx, now, key)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	for i := range 5 { // 2 free, then waits of 1, 2 and 4 s
		if w := reserve(); w != 0 {
			t.Fatalf("attempt %d: wait %s", i+1, w)
		}
		now = now.Add(l.Wait(i + 1))
	}
	if got := th.entries["k"].failures; got != 5 {
		t.Fatalf("%d failures, want 5", got)
	}
	now = now.Add(3*time.Minute - 4*time.Second) // 3 Max after the last failure
	if w := reserve(); w != 0 {
		t.Fatalf("after the pause: wait %s", w)
	}
	if got := th.entries["k"].failures; got != 5-3+1 {
		t.Errorf("after 3 Max and a failure: %d failures, want 3", got)
	}
	if w := reserve(); w != time.Second {
		t.Errorf("next attempt at once: wait %s, want 1s", w)
	}

	// A success takes its own count back; within Free no wait is left.
	th.Forget(ctx, []string{"k"})
	reserve()
	reserve() // the second: Free used up, no wait yet
	if w := reserve(); w != 0 {
		t.Fatalf("third attempt: wait %s, want none (Free is 2)", w)
	}
	th.Release(ctx, now, key)
	th.Release(ctx, now, key)
	if w := reserve(); w != 0 {
		t.Errorf("after two releases: wait %s, want none", w)
	}
}

// TestMemoryThrottleAtomic reserves from many goroutines at once: exactly
// Free+1 get through, as one after the other would.
func TestMemoryThrottleAtomic(t *testing.T) {
	th := newMemoryThrottle()
	keys := []ThrottleKey{{Key: "a", Limit: DefaultThrottleUserIP}, {Key: "b", Limit: DefaultThrottleIP}}
	now := time.Unix(1_700_000_000, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var passed int
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w, _ := th.Reserve(context.Background(), now, keys); w == 0 {
				mu.Lock()
				passed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if want := DefaultThrottleUserIP.Free + 1; passed != want {
		t.Errorf("%d of 100 concurrent reservations passed, want %d", passed, want)
	}
	if got := th.entries["b"].failures; got != passed {
		t.Errorf("key b counted %d, want %d: a refused reservation must count nothing", got, passed)
	}
}

// TestThrottleReleaseLeavesNoTrace: a released attempt (a right password)
// leaves a key past its free failures as if it had not been made, alone
// or while other attempts are counted: it sets no wait, and it does not
// put off the forgiving of the failures before it.
func TestThrottleReleaseLeavesNoTrace(t *testing.T) {
	l := ThrottleLimit{Free: 2, Base: time.Second, Max: time.Minute}
	key := []ThrottleKey{{Key: "k", Limit: l}}
	ctx := context.Background()
	start := time.Unix(1_700_000_000, 0)
	// failed counts three failures at start, the two free ones and one that
	// makes the key wait, and returns when that wait is over.
	failed := func(t *testing.T, th *memoryThrottle) time.Time {
		t.Helper()
		for i := range 3 {
			if w, _ := th.Reserve(ctx, start, key); w != 0 {
				t.Fatalf("failure %d: wait %s", i+1, w)
			}
		}
		return start.Add(l.Wait(3))
	}
	tests := []struct {
		name string
		// run makes the attempts after the three failures, from free on
		// (when the key's wait is over), and returns when the key's next
		// attempt may come (at once, as if the successes had not been made)
		// and how many failures it then counts.
		run func(t *testing.T, th *memoryThrottle, free time.Time) (time.Time, int)
	}{
		{
			name: "a success",
			run: func(t *testing.T, th *memoryThrottle, free time.Time) (time.Time, int) {
				th.Reserve(ctx, free, key)
				th.Release(ctx, free, key)
				return free, 3 + 1
			},
		},
		{
			name: "a success checked past the wait it set, and a failure meanwhile",
			run: func(t *testing.T, th *memoryThrottle, free time.Time) (time.Time, int) {
				th.Reserve(ctx, free, key) // the 4th: a wait of 2s
				failure := free.Add(l.Wait(4))
				if w, _ := th.Reserve(ctx, failure, key); w != 0 {
					t.Fatalf("the failure after the success's wait: wait %s", w)
				}
				th.Release(ctx, free, key)
				// Without the success, the failure was the 4th.
				return failure.Add(l.Wait(4)), 4 + 1
			},
		},
		{
			name: "forgiveness counts from the last failure, not the success",
			run: func(t *testing.T, th *memoryThrottle, free time.Time) (time.Time, int) {
				ok := free.Add(30 * time.Second)
				th.Reserve(ctx, ok, key)
				th.Release(ctx, ok, key)
				// Two Max after the last failure, two of the three are
				// forgiven: the next failure is the second, within Free.
				return start.Add(2 * l.Max), 1 + 1
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th := newMemoryThrottle()
			next, count := tt.run(t, th, failed(t, th))
			if w, _ := th.Reserve(ctx, next, key); w != 0 {
				t.Fatalf("the next attempt: wait %s, want none", w)
			}
			if got := th.entries["k"].failures; got != count {
				t.Errorf("%d failures counted with the next attempt, want %d", got, count)
			}
		})
	}
}
