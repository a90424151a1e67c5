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
