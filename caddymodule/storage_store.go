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
// Expired entries read as absent, and a background sweep deletes them
// every [sweepInterval] until Destruct. No request lists the storage.
type storageStore struct {
	storage certmagic.Storage
	files   *certmagic.FileStorage // storage, when it is Caddy's file_system
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
	s.files, _ = storage.(*certmagic.FileStorage)
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

// takeFile takes the entry name of a file_system storage by renaming its
// file. The new name keeps the entry's folder, so that if this process
// stops before removing the file, the sweep finds and removes it once it
// has expired; ".taken-" and the random suffix keep it from being any
// entry's name.
func (s *storageStore) takeFile(name string) ([]byte, error) {
	path := s.files.Filename(name)
	var suffix [8]byte
	rand.Read(suffix[:])
	taken := path + ".taken-" + hex.EncodeToString(suffix[:])
	if err := os.Rename(path, taken); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, idp.ErrNotFound
		}
		return nil, fmt.Errorf("taking %s: %w", name, err)
	}
	entry, err := os.ReadFile(taken)
	if rerr := os.Remove(taken); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		return nil, fmt.Errorf("taking %s: %w", name, err)
	}
	value, _, err := s.decode(name, entry)
	return value, err
}

// Delete implements [idp.Store].
func (s *storageStore) Delete(ctx context.Context, key string) error {
	name := s.entryKey(key)
	if err := s.storage.Delete(ctx, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}

// Destruct stops the sweep; it implements [caddy.Destructor] for the
// store's usage pool.
func (s *storageStore) Destruct() error {
	s.stop()
	<-s.done
	return nil
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
)
