package redisstore

import (
	"context"
	"time"
)

// Add records the key for the test clock to age, as Put does.
func (a *agingStore) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	a.mu.Lock()
	a.keys[a.prefix+key] = true
	a.mu.Unlock()
	return a.Store.Add(ctx, key, value, ttl)
}
