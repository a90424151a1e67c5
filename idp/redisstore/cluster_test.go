package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/idp/storetest"
	"github.com/authgate/authgate/idp/throttletest"
	"github.com/authgate/authgate/internal/redistest"
)

// newClusterStore returns a store on the Redis Cluster c, under a fresh
// prefix, closed at the test's end.
func newClusterStore(t testing.TB, c *redistest.Cluster) *Store {
	t.Helper()
	s, err := New(Options{Addrs: c.Addrs(), Cluster: true, KeyPrefix: fmt.Sprintf("test%d:", prefixes.Add(1))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestCluster runs the store and throttle tables, and every call, on a
// real Redis Cluster of three masters: no command or script may touch keys
// of two slots (CROSSSLOT).
func TestCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	t.Run("store", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T, clock *storetest.Clock) idp.Store {
			a := &agingStore{Store: newClusterStore(t, c), t: t, keys: map[string]bool{}}
			clock.OnAdvance(a.age)
			return a
		})
	})
	t.Run("throttle", func(t *testing.T) {
		throttletest.Run(t, func(t *testing.T) idp.ThrottleStore { return newClusterStore(t, c) })
	})
	t.Run("every call", func(t *testing.T) {
		s := newClusterStore(t, c)
		works(t, s)
		if _, err := s.LoadOrCreate(context.Background(), "gateway/session_key", func() ([]byte, error) { return []byte("k"), nil }); err != nil {
			t.Errorf("LoadOrCreate: %v", err)
		}
	})
	t.Run("store keys spread, throttle keys share a slot", func(t *testing.T) {
		s := newClusterStore(t, c)
		ctx := context.Background()
		for i := range 32 {
			if err := s.Put(ctx, fmt.Sprintf("code/spread-%d", i), []byte("v"), time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		keys := []idp.ThrottleKey{
			{Key: "user-ip:192.0.2.1 alice", Limit: idp.DefaultThrottleUserIP},
			{Key: "ip:192.0.2.1", Limit: idp.DefaultThrottleIP},
			{Key: "user:alice", Limit: idp.DefaultThrottleUser},
		}
		if _, err := s.Reserve(ctx, time.Now(), keys); err != nil {
			t.Fatal(err)
		}
		// A node answers EXISTS for the keys of its own slots, and MOVED
		// for the others'.
		holding := map[string]bool{}
		for i := range 32 {
			for _, n := range c.Nodes {
				if v, err := n.Do("EXISTS", s.prefix+fmt.Sprintf("code/spread-%d", i)); err == nil && v == "1" {
					holding[n.Addr] = true
				}
			}
		}
		if len(holding) < 2 {
			t.Errorf("32 store entries are on %d of %d nodes; want them spread", len(holding), len(c.Nodes))
		}
		slot := map[string]bool{}
		for _, k := range keys {
			n, err := c.Nodes[0].Do("CLUSTER", "KEYSLOT", s.throttleKey(k.Key))
			if err != nil {
				t.Fatal(err)
			}
			slot[n] = true
		}
		if len(slot) != 1 {
			t.Errorf("the keys of one Reserve are in slots %v; want one", slot)
		}
	})
}
