package caddymodule

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/authgate/authgate/idp"
)

// The provider's stores remember each DPoP proof's jti once (idp.Adder),
// atomically across the processes that share them.

var (
	_ idp.Adder = (*lazyRedis)(nil)
	_ idp.Adder = (*lazyBolt)(nil)
	_ idp.Adder = (*storageStore)(nil)
)

func (l *lazyRedis) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if err := l.check(ctx); err != nil {
		return false, err
	}
	ok, err := l.Store.Add(ctx, key, value, ttl)
	return ok, l.result(err)
}

func (l *lazyBolt) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	s, err := l.store()
	if err != nil {
		return false, err
	}
	return s.Add(ctx, key, value, ttl)
}

// Add implements [idp.Adder] under the storage's lock of the entry, as
// Take does: every process that shares the storage takes the same lock.
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
	switch _, _, err := s.load(ctx, name); {
	case err == nil:
		return false, nil
	case !errors.Is(err, idp.ErrNotFound):
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

// Add implements [idp.Adder] for every wrapper of instrumentStore: with
// the store's own Add when it has one (each store of ours has), else as
// idp does for a store without, a read and then a write.
func (t *timedStore) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	start := time.Now()
	var added bool
	var err error
	if a, ok := t.s.(idp.Adder); ok {
		added, err = a.Add(ctx, key, value, ttl)
	} else if _, err = t.s.Get(ctx, key); errors.Is(err, idp.ErrNotFound) {
		added, err = true, t.s.Put(ctx, key, value, ttl)
	}
	t.o.done(storeAdd, start, err)
	return added, err
}
