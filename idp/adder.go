package idp

// This file, idp/boltstore/add.go, idp/redisstore/add.go (and its test),
// idp/storetest/add.go and caddymodule/provider_dpop_store.go give every
// store the Adder that DPoP needs. main has meanwhile gained the same
// interface, with the same signature and meaning, from private_key_jwt:
// when both meet, these files go and main's stay.

import (
	"context"
	"time"
)

// Adder is a [Store] that can store a key only if it is absent, in one
// atomic step: Add stores value under key for ttl and reports true if no
// live entry was there, and otherwise changes nothing and reports false.
// Of several concurrent Adds of one key exactly one reports true. The
// provider remembers the jti of each DPoP proof with it; a store without
// it is read and then written, which concurrent replays of one proof can
// slip between.
type Adder interface {
	Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
}

// Add implements [Adder].
func (s *MemoryStore) Add(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[key]; ok && now.Before(e.expires) {
		return false, nil
	}
	s.entries[key] = memEntry{value: append([]byte(nil), value...), expires: now.Add(ttl)}
	return true, nil
}
