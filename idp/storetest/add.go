package storetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

// addTests are the cases of [idp.Adder], for a store that has it.
var addTests = []struct {
	name string
	run  func(t *testing.T, s idp.Store, c *Clock)
}{
	{"add", func(t *testing.T, s idp.Store, c *Clock) {
		ctx := context.Background()
		a := s.(idp.Adder)
		if ok, err := a.Add(ctx, "dpopjti/a", []byte("one"), time.Minute); !ok || err != nil {
			t.Fatalf("Add of an absent key = %v, %v; want true, nil", ok, err)
		}
		wantValue(t, s, "dpopjti/a", "one")
		if ok, err := a.Add(ctx, "dpopjti/a", []byte("two"), time.Minute); ok || err != nil {
			t.Fatalf("Add of a present key = %v, %v; want false, nil", ok, err)
		}
		wantValue(t, s, "dpopjti/a", "one")
		c.Advance(time.Minute)
		if ok, err := a.Add(ctx, "dpopjti/a", []byte("three"), time.Minute); !ok || err != nil {
			t.Fatalf("Add of an expired key = %v, %v; want true, nil", ok, err)
		}
		wantValue(t, s, "dpopjti/a", "three")
	}},
	{"concurrent add: exactly one wins", func(t *testing.T, s idp.Store, c *Clock) {
		ctx := context.Background()
		a := s.(idp.Adder)
		for round := range 5 {
			key := fmt.Sprintf("dpopjti/race-%d", round)
			var wins atomic.Int32
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					ok, err := a.Add(ctx, key, []byte{1}, time.Minute)
					if err != nil {
						t.Errorf("Add: %v", err)
					}
					if ok {
						wins.Add(1)
					}
				})
			}
			wg.Wait()
			if wins.Load() != 1 {
				t.Fatalf("round %d: %d Adds won, want 1", round, wins.Load())
			}
		}
	}},
}
