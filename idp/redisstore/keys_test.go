package redisstore

import (
	"context"
	"errors"
	"io/fs"
	"sync"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/redistest"
)

// TestKeyStore: values round-trip with no time to live, and an absent
// one is fs.ErrNotExist, as certmagic.Storage says.
func TestKeyStore(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv.Addr, Options{})
	k := s.Keys()
	ctx := context.Background()
	const key = "authgate/provider/abc/signing_keys.json"
	if _, err := k.Load(ctx, key); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of an absent key: %v, want fs.ErrNotExist", err)
	}
	if err := k.Store(ctx, key, []byte("ring")); err != nil {
		t.Fatal(err)
	}
	if v, err := k.Load(ctx, key); err != nil || string(v) != "ring" {
		t.Fatalf("Load = %q, %v", v, err)
	}
	if ttl, err := s.client.TTL(ctx, s.prefix+key).Result(); err != nil || ttl != -1 {
		t.Fatalf("TTL of a key = %v, %v; want none (-1)", ttl, err)
	}
}

// TestKeyStoreLock: of two clients, one holds the lock at a time; the
// other waits until it is released, or gives up when its context ends.
func TestKeyStoreLock(t *testing.T) {
	srv := redistest.Start(t)
	a := newStore(t, srv.Addr, Options{KeyPrefix: "lock-test:"}).Keys()
	b := newStore(t, srv.Addr, Options{KeyPrefix: "lock-test:"}).Keys()
	ctx := context.Background()

	if err := a.Lock(ctx, "ring"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := b.Lock(short, "ring"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock of a held lock: %v, want the context's deadline", err)
	}
	if err := b.Lock(ctx, "other"); err != nil {
		t.Fatalf("another lock name: %v", err)
	}
	if err := b.Unlock(ctx, "other"); err != nil {
		t.Fatal(err)
	}

	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx, "ring") }()
	select {
	case err := <-got:
		t.Fatalf("Lock of a held lock returned %v", err)
	default:
	}
	if err := a.Unlock(ctx, "ring"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
	if err := a.Unlock(ctx, "ring"); err == nil {
		t.Fatal("Unlock of a lock not held succeeded")
	}
	if err := b.Unlock(ctx, "ring"); err != nil {
		t.Fatal(err)
	}
}

// TestKeyStoreLockExpired: a lock whose holder outlived its time to live
// is taken by the next, and the late holder's Unlock fails without
// deleting the new holder's lock.
func TestKeyStoreLockExpired(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv.Addr, Options{})
	a, b := s.Keys(), s.Keys()
	ctx := context.Background()
	if err := a.Lock(ctx, "ring"); err != nil {
		t.Fatal(err)
	}
	s.client.Del(ctx, a.lockKey("ring")) // as if its time to live ran out
	if err := b.Lock(ctx, "ring"); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock(ctx, "ring"); err == nil {
		t.Fatal("Unlock of an expired hold succeeded")
	}
	if n, _ := s.client.Exists(ctx, a.lockKey("ring")).Result(); n != 1 {
		t.Fatal("the late Unlock deleted the new holder's lock")
	}
	if err := b.Unlock(ctx, "ring"); err != nil {
		t.Fatal(err)
	}
}

// TestKeyStoreLockExclusive: many goroutines on two clients increment a
// value under the lock; none is lost.
func TestKeyStoreLockExclusive(t *testing.T) {
	srv := redistest.Start(t)
	stores := [2]*KeyStore{
		newStore(t, srv.Addr, Options{KeyPrefix: "excl:"}).Keys(),
		newStore(t, srv.Addr, Options{KeyPrefix: "excl:"}).Keys(),
	}
	ctx := context.Background()
	const n = 16
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k := stores[i%2]
			if err := k.Lock(ctx, "counter"); err != nil {
				t.Error(err)
				return
			}
			v, err := k.Load(ctx, "counter")
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Error(err)
			}
			if err := k.Store(ctx, "counter", append(v, 'x')); err != nil {
				t.Error(err)
			}
			if err := k.Unlock(ctx, "counter"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if v, err := stores[0].Load(ctx, "counter"); err != nil || len(v) != n {
		t.Fatalf("counter %q, %v; want %d increments", v, err, n)
	}
}
