package caddymodule

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/idp/storetest"
)

func newTestStorageStore(t testing.TB, storage certmagic.Storage, now func() time.Time) *storageStore {
	t.Helper()
	s := newStorageStore(storage, "authgate/test/store", now, zap.NewNop())
	t.Cleanup(func() { s.Destruct() })
	return s
}

func TestStorageStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, c *storetest.Clock) idp.Store {
		return newTestStorageStore(t, &certmagic.FileStorage{Path: t.TempDir()}, c.Now)
	})
}

func TestStorageStoreSharedStorage(t *testing.T) {
	// Two stores on one storage stand for two processes: what one puts the
	// other takes, once.
	ctx := context.Background()
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	a := newTestStorageStore(t, storage, nil)
	b := newTestStorageStore(t, storage, nil)
	if err := a.Put(ctx, "code/x", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Take(ctx, "code/x"); err != nil || string(v) != "v" {
		t.Fatalf("b.Take = %q, %v; want v, nil", v, err)
	}
	if _, err := a.Take(ctx, "code/x"); !errors.Is(err, idp.ErrNotFound) {
		t.Fatalf("a.Take after b.Take: error = %v, want ErrNotFound", err)
	}
}

func TestStorageStoreTakeAcrossStores(t *testing.T) {
	if testing.Short() {
		t.Skip("waits on the file storage's lock polling")
	}
	// Goroutines of two stores on one storage race for one key: only the
	// storage lock keeps them apart.
	ctx := context.Background()
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	stores := []*storageStore{newTestStorageStore(t, storage, nil), newTestStorageStore(t, storage, nil)}
	if err := stores[0].Put(ctx, "code/race", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			_, err := stores[i%2].Take(ctx, "code/race")
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, idp.ErrNotFound):
				t.Errorf("Take: %v", err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d Takes won, want 1", wins.Load())
	}
}

func TestStorageStoreSweep(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	s := newTestStorageStore(t, storage, clock.Now)

	puts := []struct {
		key string
		ttl time.Duration
	}{
		{"code/short", time.Minute},
		{"code/long", time.Hour},
		{"revoked/short", 30 * time.Second},
		{"revoked/a/b", 2 * time.Hour},
	}
	for _, p := range puts {
		if err := s.Put(ctx, p.key, []byte(p.key), p.ttl); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep before expiry = %d, %v; want 0, nil", n, err)
	}
	clock.Advance(time.Minute)
	if n, err := s.sweep(ctx); err != nil || n != 2 {
		t.Fatalf("sweep = %d, %v; want 2, nil", n, err)
	}

	var left []string
	names, err := storage.List(ctx, s.prefix, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if info, err := storage.Stat(ctx, name); err == nil && info.IsTerminal {
			left = append(left, name)
		}
	}
	slices.Sort(left)
	want := []string{"authgate/test/store/code/long", "authgate/test/store/revoked/a/b"}
	if !slices.Equal(left, want) {
		t.Fatalf("left after sweep: %q, want %q", left, want)
	}
	if n, err := s.sweep(ctx); err != nil || n != 0 {
		t.Fatalf("second sweep = %d, %v; want 0, nil", n, err)
	}
}

func TestStorageStoreSweepEmpty(t *testing.T) {
	s := newTestStorageStore(t, &certmagic.FileStorage{Path: t.TempDir()}, nil)
	if n, err := s.sweep(context.Background()); err != nil || n != 0 {
		t.Fatalf("sweep of nothing = %d, %v; want 0, nil", n, err)
	}
}

func TestStorageStoreKeys(t *testing.T) {
	ctx := context.Background()
	s := newTestStorageStore(t, &certmagic.FileStorage{Path: t.TempDir()}, nil)
	tests := []struct {
		name  string
		key   string
		valid bool
	}{
		{"plain", "code/AbC-1_x", true},
		{"nested", "a/b/c", true},
		{"empty", "", false},
		{"parent", "code/../x", false},
		{"dot", "code/.x", false},
		{"leading slash", "/code", false},
		{"trailing slash", "code/", false},
		{"empty segment", "code//x", false},
		{"space", "code/a b", false},
		{"backslash", `code\x`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Put(ctx, tt.key, []byte("v"), time.Minute)
			if (err == nil) != tt.valid {
				t.Fatalf("Put(%q) error = %v, want valid %v", tt.key, err, tt.valid)
			}
			for _, op := range []func() error{
				func() error { _, err := s.Get(ctx, tt.key); return err },
				func() error { _, err := s.Take(ctx, tt.key); return err },
				func() error { return s.Delete(ctx, tt.key) },
			} {
				if err := op(); !tt.valid && (err == nil || errors.Is(err, idp.ErrNotFound)) {
					t.Fatalf("key %q accepted: %v", tt.key, err)
				}
			}
		})
	}
}

func TestKeyedMutexFreesEntries(t *testing.T) {
	var k keyedMutex
	unlockA := k.lock("a")
	unlockB := k.lock("b")
	unlockA()
	unlockB()
	if len(k.m) != 0 {
		t.Fatalf("%d mutexes left after unlocking all", len(k.m))
	}
}
