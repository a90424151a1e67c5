package caddymodule

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/authgate/authgate/idp"
)

// sweepInterval is how often a storageStore removes expired entries.
const sweepInterval = 5 * time.Minute

// storageStore is an [idp.Store] on Caddy's configured storage, so that
// codes and revocations outlive a restart and are shared by every instance
// that shares the storage.
//
// Each entry is one storage key (see entryKey) whose value is the expiry
// as 8 bytes of big-endian Unix nanoseconds followed by the data.
//
// On Caddy's file_system storage, Take renames the entry's file to a name
// of its own, then reads and removes it: rename(2) is atomic, so of several
// Takes, in this process or in any other sharing the folder, exactly one
// finds the file. That costs one rename where the storage's lock costs a
// lock file created, synced and removed per Take (and a goroutine keeping
// it fresh), which was most of a refresh's file work.
//
// On any other storage, Take holds the storage's lock for the entry, which
// makes it atomic across processes; an in-process mutex per entry is taken
// first, so that goroutines of one process queue on it rather than on the
// storage lock (certmagic's FileStorage polls a held lock only once a
// second). Put takes only the in-process mutex: nothing puts a key that
// another process may be taking.
//
// Creating a file is what a file_system store pays most for: on ext4 an
// inode allocation costs far more CPU than writing over a file that exists
// (measured: ~0.8 ms against ~0.04 ms per file on the benchmark machine).
// So a file taken on file_system is not removed but kept as a spare, in a
// folder of this store's own (spareDir), and Put writes the next entry
// into a spare and renames it into place, as certmagic's Store does with
// a new temporary file: written and synced first, so that readers and a
// restart see the old entry or the whole new one. Spares still hold the
// taken entry and its expiry, so that the sweep removes those of a store
// that stopped without removing its own; a spare gone when Put wants it
// only sends Put back to the storage's Store.
//
// Expired entries read as absent, and a background sweep deletes them
// every [sweepInterval] until Destruct. No request lists the storage.
type storageStore struct {
	storage certmagic.Storage
	files   *certmagic.FileStorage // storage, when it is Caddy's file_system
	spares  spareFiles             // with files: taken files to write again
	prefix  string
	now     func() time.Time
	logger  *zap.Logger
	locks   keyedMutex

	stop context.CancelFunc // stops the sweep
	done chan struct{}      // closed when the sweep has stopped
}

// newStorageStore returns a store keeping its entries in storage under
// prefix (a storage key without a trailing slash) and starts its sweep.
// now may be nil for time.Now.
func newStorageStore(storage certmagic.Storage, prefix string, now func() time.Time, logger *zap.Logger) *storageStore {
	if now == nil {
		now = time.Now
	}
	s := &storageStore{
		storage: storage,
		prefix:  prefix,
		now:     now,
		logger:  logger,
		done:    make(chan struct{}),
	}
	if s.files, _ = storage.(*certmagic.FileStorage); s.files != nil {
		// ".spare" is no entry's kind (see validKind), so no key's entry
		// can fall in it; the random folder keeps each store to its own.
		s.spares.dir = s.files.Filename(prefix + "/.spare/" + randomHex(8))
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.sweepEvery(ctx, sweepInterval)
	return s
}

// Put implements [idp.Store].
func (s *storageStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	name := s.entryKey(key)
	entry := make([]byte, 8+len(value))
	binary.BigEndian.PutUint64(entry, uint64(s.now().Add(ttl).UnixNano()))
	copy(entry[8:], value)

	unlock := s.locks.lock(name)
	defer unlock()
	if s.files != nil && s.putSpare(name, entry) {
		return nil
	}
	if err := s.storage.Store(ctx, name, entry); err != nil {
		return fmt.Errorf("storing %s: %w", name, err)
	}
	return nil
}

// Get implements [idp.Store].
func (s *storageStore) Get(ctx context.Context, key string) ([]byte, error) {
	name := s.entryKey(key)
	value, _, err := s.load(ctx, name)
	return value, err
}

// Take implements [idp.Store].
func (s *storageStore) Take(ctx context.Context, key string) (value []byte, err error) {
	name := s.entryKey(key)
	if s.files != nil {
		return s.takeFile(name)
	}
	unlock, err := s.lock(ctx, name)
	if err != nil {
		return nil, err
	}
	defer func() {
		if uerr := unlock(); uerr != nil && err == nil {
			value, err = nil, uerr
		}
	}()

	value, expires, err := s.load(ctx, name)
	if err != nil {
		if errors.Is(err, idp.ErrNotFound) && !expires.IsZero() {
			// Expired: nobody can have it any more, so it goes now
			// rather than at the next sweep.
			if derr := s.storage.Delete(ctx, name); derr != nil {
				return nil, fmt.Errorf("deleting %s: %w", name, derr)
			}
		}
		return nil, err
	}
	if err := s.storage.Delete(ctx, name); err != nil {
		return nil, fmt.Errorf("deleting %s: %w", name, err)
	}
	return value, nil
}

// Add implements [idp.Adder]. It holds the storage's lock for the entry
// while it checks and stores, on every storage: nothing else writes a key
// that is added (the ids of client assertions), so Adds exclude each
// other, in this process and in any other sharing the storage.
func (s *storageStore) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (added bool, err error) {
	name := s.entryKey(key)
	unlock, err := s.lock(ctx, name)
	if err != nil {
		return false, err
	}
	defer func() {
		if uerr := unlock(); uerr != nil && err == nil {
			added, err = false, uerr
		}
	}()
	if _, _, err := s.load(ctx, name); err == nil {
		return false, nil
	} else if !errors.Is(err, idp.ErrNotFound) {
		return false, err
	}
	entry := make([]byte, 8+len(value))
	binary.BigEndian.PutUint64(entry, uint64(s.now().Add(ttl).UnixNano()))
	copy(entry[8:], value)
	if err := s.storage.Store(ctx, name, entry); err != nil {
		return false, fmt.Errorf("storing %s: %w", name, err)
	}
	return true, nil
}

// takeFile takes the entry name of a file_system storage by renaming its
// file. The new name keeps the entry's folder, so that if this process
// stops before removing the file, the sweep finds and removes it once it
// has expired; ".taken-" and the random suffix keep it from being any
// entry's name.
func (s *storageStore) takeFile(name string) ([]byte, error) {
	path := s.files.Filename(name)
	taken, spare := s.spares.name()
	if !spare {
		taken = path + ".taken-" + randomHex(8)
	}
	err := os.Rename(path, taken)
	if spare && errors.Is(err, fs.ErrNotExist) {
		// Either the entry is absent or the spare folder is: it is made
		// on first use (a miss makes no folder), and made again if
		// something removed it.
		if _, serr := os.Stat(path); serr == nil {
			if err = s.spares.mkdir(); err == nil {
				err = os.Rename(path, taken)
			}
		}
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, idp.ErrNotFound
		}
		return nil, fmt.Errorf("taking %s: %w", name, err)
	}
	entry, err := os.ReadFile(taken)
	if !spare || err != nil || !s.spares.put(taken) {
		if rerr := os.Remove(taken); rerr != nil && err == nil {
			err = rerr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("taking %s: %w", name, err)
	}
	value, _, err := s.decode(name, entry)
	return value, err
}

// putSpare writes entry into a spare file and renames it to name; false
// if there is no spare or it failed, for Put to fall back on the
// storage's Store.
func (s *storageStore) putSpare(name string, entry []byte) bool {
	spare, ok := s.spares.get()
	if !ok {
		return false
	}
	f, err := os.OpenFile(spare, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		// Removed by a sweep, here or in another process: it had expired.
		return false
	}
	_, err = f.Write(entry)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		path := s.files.Filename(name)
		err = os.Rename(spare, path)
		if errors.Is(err, fs.ErrNotExist) {
			// The entry's folder is missing (a first entry of its kind).
			if err = os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
				err = os.Rename(spare, path)
			}
		}
	}
	if err != nil {
		os.Remove(spare)
		return false
	}
	return true
}

// spareFiles are the paths of files this store has taken and may write
// again, all in dir, which is the store's own.
type spareFiles struct {
	dir string

	mu     sync.Mutex
	paths  []string
	exists bool // dir has been made
}

// maxSpares bounds the files a store keeps to write again.
const maxSpares = 1024

// name returns a new path in dir for a file to take, and whether the
// store has room for another spare.
func (sp *spareFiles) name() (string, bool) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if len(sp.paths) >= maxSpares {
		return "", false
	}
	return filepath.Join(sp.dir, randomHex(8)), true
}

func (sp *spareFiles) mkdir() error {
	if err := os.MkdirAll(sp.dir, 0o700); err != nil {
		return err
	}
	sp.mu.Lock()
	sp.exists = true
	sp.mu.Unlock()
	return nil
}

// put keeps path as a spare; false if there are enough.
func (sp *spareFiles) put(path string) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if len(sp.paths) >= maxSpares {
		return false
	}
	sp.paths = append(sp.paths, path)
	return true
}

func (sp *spareFiles) get() (string, bool) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if len(sp.paths) == 0 {
		return "", false
	}
	p := sp.paths[len(sp.paths)-1]
	sp.paths = sp.paths[:len(sp.paths)-1]
	return p, true
}

// removeAll removes the spares and their folder.
func (sp *spareFiles) removeAll() error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.paths = nil
	if sp.dir == "" || !sp.exists {
		return nil
	}
	sp.exists = false
	return os.RemoveAll(sp.dir)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Delete implements [idp.Store].
func (s *storageStore) Delete(ctx context.Context, key string) error {
	name := s.entryKey(key)
	if err := s.storage.Delete(ctx, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}

// Destruct stops the sweep and removes the spare files; it implements [caddy.Destructor] for the
// store's usage pool.
func (s *storageStore) Destruct() error {
	s.stop()
	<-s.done
	return s.spares.removeAll()
}

// entryKey returns the storage key of a store key: the prefix, the key's
// first segment (its kind, such as "code") if it has one, then the SHA-256
// of the whole key in hex. Hashing keeps codes and token ids out of file
// names, lock names and the logs that mention them, makes any key a safe
// file name, and spares case-insensitive file systems keys that differ
// only in case.
func (s *storageStore) entryKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	hash := hex.EncodeToString(sum[:])
	if kind, _, ok := strings.Cut(key, "/"); ok && validKind(kind) {
		return s.prefix + "/" + kind + "/" + hash
	}
	return s.prefix + "/" + hash
}

func validKind(kind string) bool {
	if kind == "" {
		return false
	}
	for _, c := range []byte(kind) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// load reads the entry at name: its data and expiry, or idp.ErrNotFound if
// it is absent or expired.
func (s *storageStore) load(ctx context.Context, name string) ([]byte, time.Time, error) {
	entry, err := s.storage.Load(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, time.Time{}, idp.ErrNotFound
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("loading %s: %w", name, err)
	}
	return s.decode(name, entry)
}

// decode splits the entry at name into its data and expiry, or returns
// idp.ErrNotFound and the expiry if it has expired.
func (s *storageStore) decode(name string, entry []byte) ([]byte, time.Time, error) {
	if len(entry) < 8 {
		return nil, time.Time{}, fmt.Errorf("loading %s: entry of %d bytes has no expiry", name, len(entry))
	}
	expires := time.Unix(0, int64(binary.BigEndian.Uint64(entry)))
	if !s.now().Before(expires) {
		return nil, expires, idp.ErrNotFound
	}
	return entry[8:], expires, nil
}

// lock takes the in-process mutex of the entry name, then the storage's
// lock for it. The returned function releases both.
func (s *storageStore) lock(ctx context.Context, name string) (func() error, error) {
	release := s.locks.lock(name)
	lockName := strings.ReplaceAll(name, "/", "_")
	if err := s.storage.Lock(ctx, lockName); err != nil {
		release()
		return nil, fmt.Errorf("locking %s: %w", name, err)
	}
	return func() error {
		defer release()
		// Unlock even when the request is gone: a lock left behind blocks
		// the entry until it goes stale.
		if err := s.storage.Unlock(context.WithoutCancel(ctx), lockName); err != nil {
			return fmt.Errorf("unlocking %s: %w", name, err)
		}
		return nil
	}, nil
}

func (s *storageStore) sweepEvery(ctx context.Context, d time.Duration) {
	defer close(s.done)
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.sweep(ctx)
		if err != nil && ctx.Err() == nil {
			if c := s.logger.Check(zapcore.WarnLevel, "sweeping expired store entries"); c != nil {
				c.Write(zap.String("prefix", s.prefix), zap.Int("deleted", n), zap.Error(err))
			}
		} else if c := s.logger.Check(zapcore.DebugLevel, "swept expired store entries"); c != nil {
			c.Write(zap.String("prefix", s.prefix), zap.Int("deleted", n))
		}
	}
}

// sweep deletes every expired entry and reports how many it deleted. An
// entry that looks expired is checked again under its lock, so that one
// put again meanwhile stays.
func (s *storageStore) sweep(ctx context.Context) (int, error) {
	names, err := s.storage.List(ctx, s.prefix, true)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("listing %s: %w", s.prefix, err)
	}
	var deleted int
	var errs []error
	for _, name := range names {
		if ctx.Err() != nil {
			return deleted, ctx.Err()
		}
		_, expires, err := s.load(ctx, name)
		if err == nil || expires.IsZero() {
			// Live, or absent, or not an entry: List also returns the
			// "directories" of some storages, which do not load.
			continue
		}
		ok, err := s.deleteIfExpired(ctx, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			deleted++
		}
	}
	return deleted, errors.Join(errs...)
}

func (s *storageStore) deleteIfExpired(ctx context.Context, name string) (deleted bool, err error) {
	unlock, err := s.lock(ctx, name)
	if err != nil {
		return false, err
	}
	defer func() {
		if uerr := unlock(); uerr != nil && err == nil {
			err = uerr
		}
	}()
	_, expires, err := s.load(ctx, name)
	if !errors.Is(err, idp.ErrNotFound) || expires.IsZero() {
		return false, nil
	}
	if err := s.storage.Delete(ctx, name); err != nil {
		return false, fmt.Errorf("deleting %s: %w", name, err)
	}
	return true, nil
}

// keyedMutex is a set of mutexes by name, each existing while someone
// holds or waits for it.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*refMutex
}

type refMutex struct {
	sync.Mutex
	refs int
}

// lock locks the mutex of name and returns its unlock function.
func (k *keyedMutex) lock(name string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]*refMutex)
	}
	m, ok := k.m[name]
	if !ok {
		m = new(refMutex)
		k.m[name] = m
	}
	m.refs++
	k.mu.Unlock()

	m.Lock()
	return func() {
		m.Unlock()
		k.mu.Lock()
		m.refs--
		if m.refs == 0 {
			delete(k.m, name)
		}
		k.mu.Unlock()
	}
}

// Interface guards
var (
	_ idp.Store = (*storageStore)(nil)
	_ idp.Adder = (*storageStore)(nil)
)
