// Package boltstore keeps the provider's state in one bbolt file, for a
// provider that runs as one process: an [idp.Store] whose every write is
// on disk before the call returns.
//
// The file holds three buckets:
//
//	entries   store key -> expiry (8 bytes, big-endian Unix nanoseconds) + value
//	expiry    expiry (8 bytes) + store key -> nothing: the entries in the
//	          order they expire, for the sweep
//	meta      "version" -> the layout's version
//
// Expired entries read as absent; a background sweep deletes them, walking
// the expiry bucket from its start, so that neither a request nor the
// sweep ever scans the entries.
//
// Writes from concurrent callers share commits (group commit): one
// goroutine commits what is waiting, all of it in one transaction and one
// sync, while the next callers queue for the next commit. One caller alone
// waits for no one; many share the syncs, which are most of a write's cost.
//
// bbolt locks the file: a second process opening it fails with
// [ErrLocked] after Options.LockTimeout.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/authgate/authgate/idp"
)

// Defaults of [Options].
const (
	// DefaultLockTimeout is how long Open waits for another process to
	// let go of the file: long enough for a process that is exiting, short
	// enough that a second process on the file is told at once.
	DefaultLockTimeout = time.Second
	// DefaultSweepInterval is how often expired entries are deleted.
	DefaultSweepInterval = time.Minute
)

// ErrLocked is Open's error when another process has the file open.
var ErrLocked = errors.New("boltstore: the file is open in another process")

// Options tunes a [Store]; the zero value is the defaults.
type Options struct {
	// LockTimeout bounds Open's wait for the file's lock. Default:
	// [DefaultLockTimeout].
	LockTimeout time.Duration
	// SweepInterval is the time between sweeps of expired entries.
	// Default: [DefaultSweepInterval].
	SweepInterval time.Duration
	// Now is the clock that entries expire by. Default: time.Now.
	Now func() time.Time
	// Logger receives the sweep's failures. Default: slog.Default().
	Logger *slog.Logger

	swept func(n int, err error) // for tests: called after each background sweep
}

var (
	bucketEntries = []byte("entries")
	bucketExpiry  = []byte("expiry")
	bucketMeta    = []byte("meta")

	metaVersion = []byte("version")
	// version is the layout described in the package comment.
	version = []byte{1}
)

// sweepBatch bounds the entries one sweep transaction deletes, so that
// writers wait at most that long for the sweep.
const sweepBatch = 1000

// maxGroup bounds the writes of one commit.
const maxGroup = 256

// Store is an [idp.Store] in a bbolt file, and a store of keys. It is safe
// for concurrent use. Close it to stop its sweep and release the file.
type Store struct {
	db     *bolt.DB
	path   string
	now    func() time.Time
	logger *slog.Logger
	swept  func(n int, err error)

	writes chan *write    // to the committer
	quit   chan struct{}  // closed by Close
	wg     sync.WaitGroup // the committer and the sweep
	once   sync.Once
}

var (
	_ idp.Store       = (*Store)(nil)
	_ idp.MultiPutter = (*Store)(nil)
	_ idp.Swapper     = (*Store)(nil)
	_ idp.Adder       = (*Store)(nil)
)

// write is one caller's part of a commit.
type write struct {
	fn   func(*bolt.Tx) error
	err  error
	done chan struct{}
}

// Open opens the store in the file at path, creating the file and its
// folder if they do not exist.
func Open(path string, opts Options) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = DefaultSweepInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.LockTimeout,
		// The free page list is rebuilt when the file is opened rather
		// than written at every commit: less to write and sync per
		// commit, nothing less durable (etcd runs so).
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: opening %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketEntries, bucketExpiry, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(metaVersion); {
		case v == nil:
			return meta.Put(metaVersion, version)
		case !bytes.Equal(v, version):
			return fmt.Errorf("layout version %x, want %x", v, version)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: %s: %w", path, err)
	}
	s := &Store{
		db:     db,
		path:   path,
		now:    opts.Now,
		logger: opts.Logger,
		swept:  opts.swept,
		writes: make(chan *write),
		quit:   make(chan struct{}),
	}
	s.wg.Add(2)
	go s.commitLoop()
	go s.sweepEvery(opts.SweepInterval)
	return s, nil
}

// Path returns the file's path.
func (s *Store) Path() string { return s.path }

// Close stops the sweep, waits for the writes under way, and closes the
// file. Calls after Close fail.
func (s *Store) Close() error {
	s.once.Do(func() { close(s.quit) })
	s.wg.Wait()
	return s.db.Close()
}

// errClosed is the error of a write after Close.
var errClosed = errors.New("boltstore: closed")

// update runs fn in a write transaction shared with the other callers
// waiting to write, and returns once that transaction is on disk. fn may
// run more than once (when another write of the group fails, each runs
// again alone), so it must set everything it reports afresh.
func (s *Store) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	w := &write{fn: fn, done: make(chan struct{})}
	select {
	case s.writes <- w:
	case <-s.quit:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, the write happens: waiting for it regardless of ctx
	// keeps a caller from reporting a failure of what was done.
	<-w.done
	return w.err
}

// commitLoop commits the queued writes, those that queued while a commit
// ran all together in the next, until Close.
func (s *Store) commitLoop() {
	defer s.wg.Done()
	group := make([]*write, 0, maxGroup)
	for {
		select {
		case w := <-s.writes:
			group = append(group[:0], w)
		case <-s.quit:
			return
		}
	gather:
		for len(group) < maxGroup {
			select {
			case w := <-s.writes:
				group = append(group, w)
			default:
				break gather
			}
		}
		s.commit(group)
		clear(group) // no reference to done writes while waiting
	}
}

// commit runs the writes of group in one transaction. If one fails, the
// transaction is rolled back and each runs again in its own, so that one
// write's failure is no other's.
func (s *Store) commit(group []*write) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, w := range group {
			if err := w.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && len(group) > 1 {
		for _, w := range group {
			w.err = s.db.Update(w.fn)
			close(w.done)
		}
		return
	}
	for _, w := range group {
		w.err = err
		close(w.done)
	}
}

// entry is the stored form of a value: its expiry, then the value.
func entry(value []byte, expires time.Time) []byte {
	e := make([]byte, 8+len(value))
	binary.BigEndian.PutUint64(e, uint64(expires.UnixNano()))
	copy(e[8:], value)
	return e
}

// indexKey is an entry's key in the expiry bucket: its expiry (the first
// 8 bytes of the entry), then its key.
func indexKey(expiry []byte, key []byte) []byte {
	k := make([]byte, 0, 8+len(key))
	return append(append(k, expiry[:8]...), key...)
}

// live returns the value of e, or nil and false if it has expired (or is
// not an entry).
func (s *Store) live(e []byte) ([]byte, bool) {
	if len(e) < 8 {
		return nil, false
	}
	if !s.now().Before(time.Unix(0, int64(binary.BigEndian.Uint64(e)))) {
		return nil, false
	}
	return e[8:], true
}

// remove deletes the entry of key and its index entry, returning the
// entry as it was (valid until the transaction ends).
func remove(tx *bolt.Tx, key []byte) ([]byte, error) {
	entries := tx.Bucket(bucketEntries)
	old := entries.Get(key)
	if old == nil {
		return nil, nil
	}
	if len(old) >= 8 {
		if err := tx.Bucket(bucketExpiry).Delete(indexKey(old, key)); err != nil {
			return nil, err
		}
	}
	return old, entries.Delete(key)
}

// Put implements [idp.Store].
func (s *Store) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := s.put(ctx, []idp.Entry{{Key: key, Value: value, TTL: ttl}}); err != nil {
		return fmt.Errorf("boltstore: put: %w", err)
	}
	return nil
}

// PutAll implements [idp.MultiPutter]: one transaction, one commit.
func (s *Store) PutAll(ctx context.Context, entries []idp.Entry) error {
	if err := s.put(ctx, entries); err != nil {
		return fmt.Errorf("boltstore: put all: %w", err)
	}
	return nil
}

// Swap implements [idp.Swapper]: the check, the delete and the puts are
// one transaction.
func (s *Store) Swap(ctx context.Context, key string, old []byte, entries []idp.Entry) (bool, error) {
	k := []byte(key)
	put := s.putFunc(entries)
	var swapped bool
	err := s.update(ctx, func(tx *bolt.Tx) error {
		swapped = false // this may be a second run
		v, ok := s.live(tx.Bucket(bucketEntries).Get(k))
		if !ok || !bytes.Equal(v, old) {
			return nil
		}
		if _, err := remove(tx, k); err != nil {
			return err
		}
		if err := put(tx); err != nil {
			return err
		}
		swapped = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("boltstore: swap: %w", err)
	}
	return swapped, nil
}

// Add implements [idp.Adder]: the check and the put are one transaction.
func (s *Store) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	k := []byte(key)
	put := s.putFunc([]idp.Entry{{Key: key, Value: value, TTL: ttl}})
	var added bool
	err := s.update(ctx, func(tx *bolt.Tx) error {
		added = false // this may be a second run
		if _, live := s.live(tx.Bucket(bucketEntries).Get(k)); live {
			return nil
		}
		if err := put(tx); err != nil {
			return err
		}
		added = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("boltstore: add: %w", err)
	}
	return added, nil
}

func (s *Store) put(ctx context.Context, entries []idp.Entry) error {
	return s.update(ctx, s.putFunc(entries))
}

// putFunc returns the function that stores entries in a transaction,
// their keys and values encoded beforehand: bbolt keeps what Put is given
// until the transaction ends.
func (s *Store) putFunc(entries []idp.Entry) func(*bolt.Tx) error {
	type stored struct{ key, entry, index []byte }
	now := s.now()
	all := make([]stored, len(entries))
	for i, e := range entries {
		all[i].key = []byte(e.Key)
		if e.TTL > 0 {
			// An entry with no time to live is expired as soon as stored:
			// it only replaces the one before.
			all[i].entry = entry(e.Value, now.Add(e.TTL))
			all[i].index = indexKey(all[i].entry, all[i].key)
		}
	}
	return func(tx *bolt.Tx) error {
		entries, index := tx.Bucket(bucketEntries), tx.Bucket(bucketExpiry)
		for _, e := range all {
			if _, err := remove(tx, e.key); err != nil {
				return err
			}
			if e.entry == nil {
				continue
			}
			if err := entries.Put(e.key, e.entry); err != nil {
				return err
			}
			if err := index.Put(e.index, nil); err != nil {
				return err
			}
		}
		return nil
	}
}

// Get implements [idp.Store].
func (s *Store) Get(_ context.Context, key string) ([]byte, error) {
	var value []byte
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		v, ok := s.live(tx.Bucket(bucketEntries).Get([]byte(key)))
		if ok {
			// Valid only in the transaction.
			value, found = bytes.Clone(v), true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: get: %w", err)
	}
	if !found {
		return nil, idp.ErrNotFound
	}
	if value == nil {
		value = []byte{}
	}
	return value, nil
}

// Take implements [idp.Store]: reading and deleting are one transaction,
// and bbolt has one writer at a time.
func (s *Store) Take(ctx context.Context, key string) ([]byte, error) {
	k := []byte(key)
	var e []byte
	err := s.update(ctx, func(tx *bolt.Tx) error {
		e = nil // this may be a second run
		old, err := remove(tx, k)
		if err != nil {
			return err
		}
		e = bytes.Clone(old)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: take: %w", err)
	}
	// An expired entry is deleted all the same: nobody can have it.
	v, ok := s.live(e)
	if !ok {
		return nil, idp.ErrNotFound
	}
	return v, nil
}

// Delete implements [idp.Store].
func (s *Store) Delete(ctx context.Context, key string) error {
	k := []byte(key)
	err := s.update(ctx, func(tx *bolt.Tx) error {
		_, err := remove(tx, k)
		return err
	})
	if err != nil {
		return fmt.Errorf("boltstore: delete: %w", err)
	}
	return nil
}

// Sweep deletes every expired entry, at most sweepBatch per transaction,
// and reports how many it deleted.
func (s *Store) Sweep() (int, error) {
	var total int
	for {
		n, err := s.sweepOnce()
		total += n
		if err != nil || n < sweepBatch {
			return total, err
		}
		select {
		case <-s.quit:
			return total, nil
		default:
		}
	}
}

// sweepOnce deletes up to sweepBatch expired entries in one transaction.
func (s *Store) sweepOnce() (int, error) {
	var n int
	now := make([]byte, 8)
	binary.BigEndian.PutUint64(now, uint64(s.now().UnixNano()))
	err := s.update(context.Background(), func(tx *bolt.Tx) error {
		n = 0
		var expired [][]byte
		c := tx.Bucket(bucketExpiry).Cursor()
		// Expired: expiry <= now, as live reads it.
		for k, _ := c.First(); k != nil && len(expired) < sweepBatch && bytes.Compare(k[:min(8, len(k))], now) <= 0; k, _ = c.Next() {
			expired = append(expired, bytes.Clone(k))
		}
		// Deleted after the walk: a cursor that deletes as it goes may
		// skip keys.
		entries, index := tx.Bucket(bucketEntries), tx.Bucket(bucketExpiry)
		for _, ik := range expired {
			if err := index.Delete(ik); err != nil {
				return err
			}
			if len(ik) < 8 {
				continue
			}
			key := ik[8:]
			// The entry is this index entry's unless it was put again
			// with another expiry, which Put indexes anew.
			if e := entries.Get(key); len(e) >= 8 && bytes.Equal(e[:8], ik[:8]) {
				if err := entries.Delete(key); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	return n, err
}

func (s *Store) sweepEvery(d time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		n, err := s.Sweep()
		if errors.Is(err, errClosed) {
			return // Close came while this pass waited to write
		}
		if err != nil {
			s.logger.Warn("boltstore: sweeping expired entries", "path", s.path, "deleted", n, "error", err)
		}
		if s.swept != nil {
			s.swept(n, err)
		}
	}
}
