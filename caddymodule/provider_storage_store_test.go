package caddymodule

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/idp/boltstore"
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
	// Goroutines of two stores on one storage race for one key: only the
	// rename of the entry's file (file_system) or the storage's lock (any
	// other storage) keeps them apart.
	tests := []struct {
		name    string
		storage func(dir string) certmagic.Storage
		slow    bool
	}{
		{"file_system", func(dir string) certmagic.Storage { return &certmagic.FileStorage{Path: dir} }, false},
		{"locked", func(dir string) certmagic.Storage { return opaqueStorage{&certmagic.FileStorage{Path: dir}} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rounds := 20
			if tt.slow && testing.Short() {
				rounds = 3 // each waits on the file storage's lock polling
			}
			ctx := context.Background()
			storage := tt.storage(t.TempDir())
			stores := []*storageStore{newTestStorageStore(t, storage, nil), newTestStorageStore(t, storage, nil)}
			for round := range rounds {
				key := fmt.Sprintf("code/race-%d", round)
				if err := stores[0].Put(ctx, key, []byte("v"), time.Minute); err != nil {
					t.Fatal(err)
				}
				var wins atomic.Int32
				var wg sync.WaitGroup
				for i := range 6 {
					wg.Go(func() {
						_, err := stores[i%2].Take(ctx, key)
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
					t.Fatalf("round %d: %d Takes won, want 1", round, wins.Load())
				}
				if tt.slow {
					break // each round waits on lock polling
				}
			}
		})
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

	for _, p := range puts {
		_, err := storage.Stat(ctx, s.entryKey(p.key))
		if gone := errors.Is(err, fs.ErrNotExist); gone != (p.ttl <= time.Minute) {
			t.Errorf("%s (ttl %s) after sweep: stat error %v", p.key, p.ttl, err)
		}
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
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	s := newTestStorageStore(t, storage, nil)
	tests := []struct {
		name     string
		key      string
		wantKind string // directory under the prefix, "" for none
	}{
		{"code", "code/AbC-1_x", "code/"},
		{"nested", "revoked/a/b", "revoked/"},
		{"no kind", "plain", ""},
		{"empty", "", ""},
		{"traversal", "../../etc/passwd", ""},
		{"odd kind", "a b/c", ""},
		{"leading slash", "/code", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Put(ctx, tt.key, []byte(tt.key), time.Minute); err != nil {
				t.Fatalf("Put(%q): %v", tt.key, err)
			}
			name := s.entryKey(tt.key)
			rest, ok := strings.CutPrefix(name, s.prefix+"/"+tt.wantKind)
			if !ok || len(rest) != 64 || strings.Contains(rest, "/") {
				t.Fatalf("storage key %q, want %s/%s and a SHA-256 in hex", name, s.prefix, tt.wantKind)
			}
			if _, err := storage.Stat(ctx, name); err != nil {
				t.Fatalf("entry not at %s: %v", name, err)
			}
			if v, err := s.Take(ctx, tt.key); err != nil || string(v) != tt.key {
				t.Fatalf("Take(%q) = %q, %v", tt.key, v, err)
			}
		})
	}
	if s.entryKey("code/abc") == s.entryKey("code/ABC") {
		t.Fatal("keys differing in case share an entry")
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

// opaqueStorage hides a storage's type, so that the store treats it as
// any storage plugin: Take goes through the storage's locks.
type opaqueStorage struct{ certmagic.Storage }

func TestStorageStoreConformanceLocked(t *testing.T) {
	storetest.Run(t, func(t *testing.T, c *storetest.Clock) idp.Store {
		return newTestStorageStore(t, opaqueStorage{&certmagic.FileStorage{Path: t.TempDir()}}, c.Now)
	})
}

func TestStorageStoreFileTakeNoLockFiles(t *testing.T) {
	// On Caddy's file_system storage, Take renames the entry away: no lock
	// file is created, synced and removed, no goroutine keeps it fresh.
	ctx := context.Background()
	dir := t.TempDir()
	s := newTestStorageStore(t, &certmagic.FileStorage{Path: dir}, nil)
	if err := s.Put(ctx, "code/x", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Take(ctx, "code/x"); err != nil || string(v) != "v" {
		t.Fatalf("Take = %q, %v; want v, nil", v, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "locks")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Take made the storage's locks folder (stat error %v)", err)
	}
	names, err := s.storage.List(ctx, s.prefix, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if !strings.HasSuffix(n, "/code") && !strings.Contains(n, "/.spare") {
			t.Errorf("left behind after Take: %s", n)
		}
	}
}

func TestStorageStoreFilePutReusesTakenFile(t *testing.T) {
	// A file taken on file_system is written again by the next Put rather
	// than a new file created: creating files is what costs most.
	ctx := context.Background()
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	s := newTestStorageStore(t, storage, nil)
	inode := func(key string) uint64 {
		t.Helper()
		fi, err := os.Stat(storage.Filename(s.entryKey(key)))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	if err := s.Put(ctx, "rt/a", []byte("a"), time.Minute); err != nil {
		t.Fatal(err)
	}
	taken := inode("rt/a")
	if _, err := s.Take(ctx, "rt/a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "rtused/a", []byte("used"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := inode("rtused/a"); got != taken {
		t.Errorf("Put after Take made a new file (inode %d), want the taken one (%d) written again", got, taken)
	}
	// Another store on the storage (a restart) reads it whole.
	other := newTestStorageStore(t, storage, nil)
	if v, err := other.Get(ctx, "rtused/a"); err != nil || string(v) != "used" {
		t.Fatalf("Get from another store = %q, %v; want used, nil", v, err)
	}

	// A spare removed meanwhile (by a sweep, here or in another process)
	// sends Put back to the storage's Store.
	if _, err := s.Take(ctx, "rtused/a"); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(s.spares.dir); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "rt/b", []byte("b"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Take(ctx, "rt/b"); err != nil || string(v) != "b" {
		t.Fatalf("Take after a lost spare = %q, %v; want b, nil", v, err)
	}

	// Destruct removes the spares.
	s.Destruct()
	if _, err := os.Stat(s.spares.dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("spares folder after Destruct: stat error %v", err)
	}
}

// BenchmarkStorageStoreRefresh does the store operations of a refresh
// with rotation (take the token, check its family, put its successor and
// the used record) from 8 goroutines, each with its own chain, on Caddy's
// file_system storage as any storage plugin, through its locks and a new
// file per Put (as before Take renamed and Put reused files), on it as the
// store uses it now, on bbolt (a candidate default, see boltStore), and
// on boltstore (bbolt with group commit, the default store), and on the
// memory store for scale.
func BenchmarkStorageStoreRefresh(b *testing.B) {
	stores := []struct {
		name string
		new  func(b *testing.B) idp.Store
	}{
		{"file_system-locks", func(b *testing.B) idp.Store {
			return newTestStorageStore(b, opaqueStorage{&certmagic.FileStorage{Path: b.TempDir()}}, nil)
		}},
		{"file_system", func(b *testing.B) idp.Store {
			return newTestStorageStore(b, &certmagic.FileStorage{Path: b.TempDir()}, nil)
		}},
		{"bbolt", func(b *testing.B) idp.Store { return newBoltStore(b, false) }},
		{"bbolt-batch", func(b *testing.B) idp.Store { return newBoltStore(b, true) }},
		{"boltstore", func(b *testing.B) idp.Store {
			s, err := boltstore.Open(filepath.Join(b.TempDir(), "store.db"), boltstore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
		{"memory", func(b *testing.B) idp.Store { return idp.NewMemoryStore(nil) }},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			s := st.new(b)
			ctx := context.Background()
			var chains atomic.Int64
			grant := []byte(strings.Repeat("g", 200))
			b.SetParallelism(4) // 8 goroutines on 2 CPUs
			cpu0 := processCPU()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				chain := chains.Add(1)
				n := 0
				key := func(kind string, i int) string { return fmt.Sprintf("%s/%d-%d", kind, chain, i) }
				if err := s.Put(ctx, key("rt", n), grant, time.Hour); err != nil {
					b.Error(err)
					return
				}
				for pb.Next() {
					if _, err := s.Take(ctx, key("rt", n)); err != nil {
						b.Error(err)
						return
					}
					if _, err := s.Get(ctx, fmt.Sprintf("rtfamily/%d", chain)); !errors.Is(err, idp.ErrNotFound) {
						b.Errorf("family: %v", err)
						return
					}
					if err := s.Put(ctx, key("rt", n+1), grant, time.Hour); err != nil {
						b.Error(err)
						return
					}
					if err := s.Put(ctx, key("rtused", n), grant, time.Hour); err != nil {
						b.Error(err)
						return
					}
					n++
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
		})
	}
}

// processCPU returns the CPU time, user and system, this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// boltStore is an idp.Store on one bbolt file, only for
// BenchmarkStorageStoreRefresh to measure an embedded database against the
// file_system store: each entry is its expiry (8 bytes) and its data, each
// operation one transaction, and batch makes concurrent writes share one
// commit (one sync) with bbolt's Batch, waiting at most a millisecond.
type boltStore struct {
	db    *bolt.DB
	batch bool
}

var boltBucket = []byte("store")

func newBoltStore(b *testing.B, batch bool) *boltStore {
	b.Helper()
	db, err := bolt.Open(filepath.Join(b.TempDir(), "store.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	// A commit waits at most this long for others to join it: bbolt's
	// default, 10 ms, is a full refresh's latency many times over.
	db.MaxBatchDelay = time.Millisecond
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	return &boltStore{db: db, batch: batch}
}

func (s *boltStore) update(fn func(*bolt.Tx) error) error {
	if s.batch {
		return s.db.Batch(fn)
	}
	return s.db.Update(fn)
}

func (s *boltStore) Put(_ context.Context, key string, value []byte, ttl time.Duration) error {
	entry := make([]byte, 8+len(value))
	binary.BigEndian.PutUint64(entry, uint64(time.Now().Add(ttl).UnixNano()))
	copy(entry[8:], value)
	return s.update(func(tx *bolt.Tx) error { return tx.Bucket(boltBucket).Put([]byte(key), entry) })
}

func boltValue(entry []byte) ([]byte, error) {
	if len(entry) < 8 || !time.Now().Before(time.Unix(0, int64(binary.BigEndian.Uint64(entry)))) {
		return nil, idp.ErrNotFound
	}
	return entry[8:], nil
}

func (s *boltStore) Get(_ context.Context, key string) (v []byte, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v, err = boltValue(slices.Clone(tx.Bucket(boltBucket).Get([]byte(key))))
		return err
	})
	return v, err
}

func (s *boltStore) Take(_ context.Context, key string) ([]byte, error) {
	var entry []byte
	// A function of a Batch that fails rolls back the whole batch and
	// runs again alone: "not found" is no failure here.
	err := s.update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(boltBucket)
		entry = slices.Clone(bk.Get([]byte(key)))
		if entry == nil {
			return nil
		}
		return bk.Delete([]byte(key))
	})
	if err != nil {
		return nil, err
	}
	return boltValue(entry)
}

func (s *boltStore) Delete(_ context.Context, key string) error {
	return s.update(func(tx *bolt.Tx) error { return tx.Bucket(boltBucket).Delete([]byte(key)) })
}

func TestStorageStoreSweepSpares(t *testing.T) {
	// Spares keep the expiry of the entry they held: the sweep removes
	// them once it has passed (those of a store that stopped uncleanly
	// too), and Put then does without.
	ctx := context.Background()
	clock := storetest.NewClock()
	s := newTestStorageStore(t, &certmagic.FileStorage{Path: t.TempDir()}, clock.Now)
	if err := s.Put(ctx, "code/a", []byte("a"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Take(ctx, "code/a"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep before expiry = %d, %v; want 0, nil", n, err)
	}
	clock.Advance(time.Minute)
	if n, err := s.sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep = %d, %v; want the spare, 1, nil", n, err)
	}
	if err := s.Put(ctx, "code/b", []byte("b"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(ctx, "code/b"); err != nil || string(v) != "b" {
		t.Fatalf("Get = %q, %v; want b, nil", v, err)
	}
}
