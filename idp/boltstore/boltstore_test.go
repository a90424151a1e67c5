package boltstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/idp/storetest"
)

func open(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T, c *storetest.Clock) idp.Store {
		return open(t, filepath.Join(t.TempDir(), "store.db"), Options{Now: c.Now})
	})
}

func TestReopenKeepsEntries(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "store.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "rt/a", []byte("grant"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "rt/b", []byte("x"), time.Hour); err == nil {
		t.Fatal("Put after Close succeeded")
	}

	s = open(t, path, Options{})
	if v, err := s.Take(ctx, "rt/a"); err != nil || string(v) != "grant" {
		t.Fatalf("Take after reopening = %q, %v; want grant, nil", v, err)
	}
}

func TestSecondOpenFails(t *testing.T) {
	// As a second process would: bbolt's lock on the file is held by the
	// first open file.
	path := filepath.Join(t.TempDir(), "store.db")
	open(t, path, Options{})
	deadline := time.AfterFunc(time.Minute, func() { panic("second Open still waiting after a minute") })
	defer deadline.Stop()
	_, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Open: %v; want ErrLocked naming %s", err, path)
	}
}

func TestConcurrentWritesWithAFailure(t *testing.T) {
	// Takes of one key, Swaps of another and Puts of others, with writes
	// that fail (an empty key, which bbolt refuses) among them, share
	// commits: a failing write must fail alone, and the Takes and the
	// Swaps still have exactly one winner each though their functions may
	// run twice.
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "store.db"), Options{})
	for round := range 10 {
		key := fmt.Sprintf("code/%d", round)
		if err := s.Put(ctx, key, []byte("v"), time.Minute); err != nil {
			t.Fatal(err)
		}
		swapKey := fmt.Sprintf("rt/%d", round)
		if err := s.Put(ctx, swapKey, []byte("v"), time.Minute); err != nil {
			t.Fatal(err)
		}
		var wins, swaps, failed atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				switch i % 4 {
				case 0:
					if err := s.Put(ctx, "", []byte("v"), time.Minute); err != nil {
						failed.Add(1)
					}
				case 1:
					if err := s.Put(ctx, fmt.Sprintf("rt/%d-%d", round, i), []byte("v"), time.Minute); err != nil {
						t.Errorf("Put: %v", err)
					}
				case 2:
					_, err := s.Take(ctx, key)
					switch {
					case err == nil:
						wins.Add(1)
					case !errors.Is(err, idp.ErrNotFound):
						t.Errorf("Take: %v", err)
					}
				default:
					ok, err := s.Swap(ctx, swapKey, []byte("v"), []idp.Entry{{Key: fmt.Sprintf("rt/next-%d-%d", round, i), Value: []byte("n"), TTL: time.Minute}})
					if err != nil {
						t.Errorf("Swap: %v", err)
					}
					if ok {
						swaps.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 || swaps.Load() != 1 || failed.Load() != 4 {
			t.Fatalf("round %d: %d Takes won, %d Swaps won, %d bad Puts failed; want 1, 1 and 4", round, wins.Load(), swaps.Load(), failed.Load())
		}
		for i := 1; i < 16; i += 4 {
			if _, err := s.Get(ctx, fmt.Sprintf("rt/%d-%d", round, i)); err != nil {
				t.Fatalf("round %d: Put %d lost: %v", round, i, err)
			}
		}
	}
}

// count returns how many entries and index entries the file holds.
func count(t *testing.T, s *Store) (entries, index int) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		entries = tx.Bucket(bucketEntries).Stats().KeyN
		index = tx.Bucket(bucketExpiry).Stats().KeyN
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return entries, index
}

func TestSweep(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	s := open(t, filepath.Join(t.TempDir(), "store.db"), Options{Now: clock.Now})
	puts := []struct {
		key string
		ttl time.Duration
	}{
		{"code/short", time.Minute},
		{"code/long", time.Hour},
		{"revoked/short", 30 * time.Second},
		{"rt/again", time.Minute}, // put again below, for an hour
	}
	for _, p := range puts {
		if err := s.Put(ctx, p.key, []byte(p.key), p.ttl); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, "rt/again", []byte("again"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if e, i := count(t, s); e != 4 || i != 4 {
		t.Fatalf("%d entries, %d index entries; want 4 and 4 (a Put again replaces its index entry)", e, i)
	}
	if n, err := s.Sweep(); err != nil || n != 0 {
		t.Fatalf("sweep before expiry = %d, %v; want 0, nil", n, err)
	}
	clock.Advance(time.Minute)
	if n, err := s.Sweep(); err != nil || n != 2 {
		t.Fatalf("sweep = %d, %v; want 2, nil", n, err)
	}
	if e, i := count(t, s); e != 2 || i != 2 {
		t.Fatalf("after sweep: %d entries, %d index entries; want 2 and 2", e, i)
	}
	if v, err := s.Get(ctx, "rt/again"); err != nil || string(v) != "again" {
		t.Fatalf("Get(rt/again) = %q, %v; want again, nil", v, err)
	}
}

func TestSweepBounded(t *testing.T) {
	// More expired entries than one transaction deletes: the sweep takes
	// several, and deletes them all.
	ctx := context.Background()
	clock := storetest.NewClock()
	s := open(t, filepath.Join(t.TempDir(), "store.db"), Options{Now: clock.Now})
	const n = sweepBatch*2 + 10
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := s.Put(ctx, fmt.Sprintf("code/%d", i), []byte("v"), time.Minute); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	clock.Advance(time.Minute)
	if got, err := s.sweepOnce(); err != nil || got != sweepBatch {
		t.Fatalf("one pass = %d, %v; want %d, nil", got, err, sweepBatch)
	}
	if got, err := s.Sweep(); err != nil || got != n-sweepBatch {
		t.Fatalf("sweep = %d, %v; want %d, nil", got, err, n-sweepBatch)
	}
	if e, i := count(t, s); e != 0 || i != 0 {
		t.Fatalf("after sweep: %d entries, %d index entries; want none", e, i)
	}
}

func TestBackgroundSweep(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	swept := make(chan int, 100)
	s := open(t, filepath.Join(t.TempDir(), "store.db"), Options{
		Now: clock.Now, SweepInterval: time.Millisecond,
		swept: func(n int, err error) {
			if err != nil {
				t.Errorf("sweep: %v", err)
			}
			select {
			case swept <- n:
			default:
			}
		},
	})
	if err := s.Put(ctx, "code/a", []byte("v"), time.Second); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	timeout := time.After(time.Minute)
	for deleted := 0; deleted == 0; {
		select {
		case deleted = <-swept:
		case <-timeout:
			t.Fatal("expired entry not swept within a minute")
		}
	}
	if e, _ := count(t, s); e != 0 {
		t.Fatalf("%d entries after the sweep, want 0", e)
	}
	// Close stops the sweep: it returns, so its goroutine has ended.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
