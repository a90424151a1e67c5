package idp

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by a [Store] for a key that is absent or expired.
var ErrNotFound = errors.New("idp: not found")

// Store holds the provider's shared state: authorization codes, the record
// of redeemed codes, and revocations. Every entry has a time to live; keys
// are short ASCII strings of letters, digits, '-', '_' and '/'. Implementations
// must be safe for concurrent use, and Take must be atomic across every
// process that shares the store.
type Store interface {
	// Put stores value under key for ttl, replacing any earlier value.
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Get returns the value under key, or ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Take returns the value under key and deletes it, atomically: of
	// several concurrent Takes of one key, exactly one gets the value and the
	// others get ErrNotFound.
	Take(ctx context.Context, key string) ([]byte, error)
	// Delete removes key; deleting an absent key is not an error.
	Delete(ctx context.Context, key string) error
}

// Entry is a key, its value and its time to live, for
// [MultiPutter.PutAll].
type Entry struct {
	Key   string
	Value []byte
	TTL   time.Duration
}

// MultiPutter is a [Store] that can store several entries in one write:
// all of them or, on error, possibly none. For a store that syncs each
// write to disk, or sends it to a server, that is one sync or one round
// trip instead of one per entry; a redeemed code or a rotated refresh
// token stores two entries.
type MultiPutter interface {
	PutAll(ctx context.Context, entries []Entry) error
}

// putAll stores entries with one PutAll if s can, else with one Put each,
// in order.
func putAll(ctx context.Context, s Store, entries ...Entry) error {
	if mp, ok := s.(MultiPutter); ok {
		return mp.PutAll(ctx, entries)
	}
	for _, e := range entries {
		if err := s.Put(ctx, e.Key, e.Value, e.TTL); err != nil {
			return err
		}
	}
	return nil
}

// Swapper is a [Store] that can replace an entry by others in one atomic
// write: Swap deletes key and stores entries if key holds old (and has
// not expired), and otherwise changes nothing and reports false. Of
// several Swaps of one key, at most one succeeds. A refresh reads its
// token, checks it, and swaps it for its successor and the record of its
// use: one write, with the record there as soon as the token is gone.
type Swapper interface {
	Swap(ctx context.Context, key string, old []byte, entries []Entry) (bool, error)
}

// Adder is a [Store] that can store an entry only where its key is free:
// Add stores value under key for ttl if key is absent or expired, and
// otherwise changes nothing and reports false. Of several Adds of one key,
// at most one succeeds, across every process that shares the store. It
// keeps the jti of a client assertion one-time (RFC 7523 §3 item 7); a
// provider with a private_key_jwt client needs a store that has it. It
// also records accepted TOTP codes (totp.go), which without it only the
// login throttle's store records.
type Adder interface {
	Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
}
