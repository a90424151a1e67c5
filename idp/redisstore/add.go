package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/authgate/authgate/idp"
)

var _ idp.Adder = (*Store)(nil)

// Add implements [idp.Adder] with SET NX: one command, so the server lets
// exactly one of several concurrent Adds of a key store it.
func (s *Store) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ok, err := s.client.SetNX(ctx, s.prefix+key, value, max(ttl, time.Millisecond)).Result()
	if err != nil {
		return false, fmt.Errorf("redisstore: add: %w", err)
	}
	return ok, nil
}
