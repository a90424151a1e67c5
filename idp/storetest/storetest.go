// Package storetest is the conformance suite that every [idp.Store]
// implementation passes.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

// Clock is a settable time source for stores under test.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	advance []func(time.Duration)
}

// NewClock returns a clock at a fixed instant.
func NewClock() *Clock { return &Clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward, and calls the functions given to
// OnAdvance.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	hooks := c.advance
	c.mu.Unlock()
	for _, f := range hooks {
		f(d)
	}
}

// OnAdvance has Advance call f with each step: for a store whose entries
// expire by a clock that the test cannot set, such as a server's, f makes
// them as much older.
func (c *Clock) OnAdvance(f func(d time.Duration)) {
	c.mu.Lock()
	c.advance = append(c.advance, f)
	c.mu.Unlock()
}

// Run runs the suite. newStore returns an empty store reading time from the
// given clock.
func Run(t *testing.T, newStore func(t *testing.T, clock *Clock) idp.Store) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, s idp.Store, c *Clock)
	}{
		{"get missing", func(t *testing.T, s idp.Store, c *Clock) {
			if _, err := s.Get(ctx, "code/missing"); !errors.Is(err, idp.ErrNotFound) {
				t.Fatalf("Get(missing) error = %v, want ErrNotFound", err)
			}
		}},
		{"put then get", func(t *testing.T, s idp.Store, c *Clock) {
			mustPut(t, s, "code/a", "one", time.Minute)
			wantValue(t, s, "code/a", "one")
			wantValue(t, s, "code/a", "one") // Get does not consume
		}},
		{"put replaces", func(t *testing.T, s idp.Store, c *Clock) {
			mustPut(t, s, "code/a", "one", time.Minute)
			mustPut(t, s, "code/a", "two", time.Minute)
			wantValue(t, s, "code/a", "two")
		}},
		{"expires", func(t *testing.T, s idp.Store, c *Clock) {
			mustPut(t, s, "code/a", "one", time.Minute)
			c.Advance(59 * time.Second)
			wantValue(t, s, "code/a", "one")
			c.Advance(time.Second)
			if _, err := s.Get(ctx, "code/a"); !errors.Is(err, idp.ErrNotFound) {
				t.Fatalf("Get after ttl: error = %v, want ErrNotFound", err)
			}
			if _, err := s.Take(ctx, "code/a"); !errors.Is(err, idp.ErrNotFound) {
				t.Fatalf("Take after ttl: error = %v, want ErrNotFound", err)
			}
		}},
		{"take once", func(t *testing.T, s idp.Store, c *Clock) {
			mustPut(t, s, "code/a", "one", time.Minute)
			v, err := s.Take(ctx, "code/a")
			if err != nil || string(v) != "one" {
				t.Fatalf("Take = %q, %v; want one, nil", v, err)
			}
			if _, err := s.Take(ctx, "code/a"); !errors.Is(err, idp.ErrNotFound) {
				t.Fatalf("second Take error = %v, want ErrNotFound", err)
			}
			if _, err := s.Get(ctx, "code/a"); !errors.Is(err, idp.ErrNotFound) {
				t.Fatalf("Get after Take error = %v, want ErrNotFound", err)
			}
		}},
		{"delete", func(t *testing.T, s idp.Store, c *Clock) {
			mustPut(t, s, "code/a", "one", time.Minute)
			if err := s.Delete(ctx, "code/a"); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, "code/a"); err != nil {
				t.Fatalf("Delete(absent) = %v, want nil", err)
			}
			if _, err := s.Get(ctx, "code/a"); !errors.Is(err, idp.ErrNotFound) {
				t.Fatalf("Get after Delete error = %v, want ErrNotFound", err)
			}
		}},
		{"keys are independent", func(t *testing.T, s idp.Store, c *Clock) {
			mustPut(t, s, "code/a", "one", time.Minute)
			mustPut(t, s, "revoked/a", "two", time.Hour)
			if _, err := s.Take(ctx, "code/a"); err != nil {
				t.Fatal(err)
			}
			wantValue(t, s, "revoked/a", "two")
		}},
		{"put all", func(t *testing.T, s idp.Store, c *Clock) {
			mp := s.(idp.MultiPutter)
			mustPut(t, s, "rt/a", "old", time.Minute)
			err := mp.PutAll(ctx, []idp.Entry{
				{Key: "rt/a", Value: []byte("one"), TTL: time.Minute},
				{Key: "rtused/b", Value: []byte("two"), TTL: time.Hour},
			})
			if err != nil {
				t.Fatal(err)
			}
			wantValue(t, s, "rt/a", "one")
			wantValue(t, s, "rtused/b", "two")
			c.Advance(time.Minute)
			if _, err := s.Get(ctx, "rt/a"); !errors.Is(err, idp.ErrNotFound) {
				t.Fatalf("Get after its ttl: error = %v, want ErrNotFound", err)
			}
			wantValue(t, s, "rtused/b", "two")
		}},
		{"swap", func(t *testing.T, s idp.Store, c *Clock) {
			sw := s.(idp.Swapper)
			next := []idp.Entry{{Key: "rt/b", Value: []byte("next"), TTL: time.Minute}, {Key: "rtused/a", Value: []byte("one"), TTL: time.Hour}}
			if ok, err := sw.Swap(ctx, "rt/a", []byte("one"), next); ok || err != nil {
				t.Fatalf("Swap of an absent key = %v, %v; want false, nil", ok, err)
			}
			mustPut(t, s, "rt/a", "one", time.Minute)
			if ok, err := sw.Swap(ctx, "rt/a", []byte("other"), next); ok || err != nil {
				t.Fatalf("Swap of another value = %v, %v; want false, nil", ok, err)
			}
			wantValue(t, s, "rt/a", "one")
			if _, err := s.Get(ctx, "rt/b"); !errors.Is(err, idp.ErrNotFound) {
				t.Fatalf("a failed Swap stored its entries: %v", err)
			}
			if ok, err := sw.Swap(ctx, "rt/a", []byte("one"), next); !ok || err != nil {
				t.Fatalf("Swap = %v, %v; want true, nil", ok, err)
			}
			if _, err := s.Get(ctx, "rt/a"); !errors.Is(err, idp.ErrNotFound) {
				t.Fatalf("Get of the swapped key: %v, want ErrNotFound", err)
			}
			wantValue(t, s, "rt/b", "next")
			wantValue(t, s, "rtused/a", "one")
			mustPut(t, s, "rt/c", "three", time.Minute)
			c.Advance(time.Minute)
			if ok, err := sw.Swap(ctx, "rt/c", []byte("three"), next); ok || err != nil {
				t.Fatalf("Swap of an expired key = %v, %v; want false, nil", ok, err)
			}
		}},
		{"concurrent swap: exactly one wins", func(t *testing.T, s idp.Store, c *Clock) {
			sw := s.(idp.Swapper)
			for round := range 5 {
				key := fmt.Sprintf("rt/race-%d", round)
				mustPut(t, s, key, "v", time.Minute)
				var wins atomic.Int32
				var wg sync.WaitGroup
				for i := range 8 {
					wg.Go(func() {
						ok, err := sw.Swap(ctx, key, []byte("v"), []idp.Entry{{Key: fmt.Sprintf("rt/next-%d-%d", round, i), Value: []byte("n"), TTL: time.Minute}})
						if err != nil {
							t.Errorf("Swap: %v", err)
						}
						if ok {
							wins.Add(1)
						}
					})
				}
				wg.Wait()
				if wins.Load() != 1 {
					t.Fatalf("round %d: %d Swaps won, want 1", round, wins.Load())
				}
			}
		}},
		{"concurrent take: exactly one wins", func(t *testing.T, s idp.Store, c *Clock) {
			for round := range 5 {
				key := fmt.Sprintf("code/race-%d", round)
				mustPut(t, s, key, "v", time.Minute)
				var wins, losses atomic.Int32
				var wg sync.WaitGroup
				for range 8 {
					wg.Go(func() {
						_, err := s.Take(ctx, key)
						switch {
						case err == nil:
							wins.Add(1)
						case errors.Is(err, idp.ErrNotFound):
							losses.Add(1)
						default:
							t.Errorf("Take: %v", err)
						}
					})
				}
				wg.Wait()
				if wins.Load() != 1 || losses.Load() != 7 {
					t.Fatalf("round %d: %d wins, %d losses; want 1 and 7", round, wins.Load(), losses.Load())
				}
			}
		}},
	}
	// The cases of optional interfaces run only for a store that has
	// them: none is skipped, as a skip would read as a pass.
	probe := newStore(t, NewClock())
	_, multi := probe.(idp.MultiPutter)
	_, swap := probe.(idp.Swapper)
	if _, ok := probe.(idp.Adder); ok {
		tests = append(tests, addTests...)
	}
	for _, tt := range tests {
		if !multi && tt.name == "put all" || !swap && (tt.name == "swap" || tt.name == "concurrent swap: exactly one wins") {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			c := NewClock()
			tt.run(t, newStore(t, c), c)
		})
	}
}

func mustPut(t *testing.T, s idp.Store, key, value string, ttl time.Duration) {
	t.Helper()
	if err := s.Put(context.Background(), key, []byte(value), ttl); err != nil {
		t.Fatalf("Put(%s): %v", key, err)
	}
}

func wantValue(t *testing.T, s idp.Store, key, want string) {
	t.Helper()
	v, err := s.Get(context.Background(), key)
	if err != nil || string(v) != want {
		t.Fatalf("Get(%s) = %q, %v; want %q", key, v, err, want)
	}
}
