package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lock timing of a [KeyStore]. A lock expires in the server after
// LockTTL, so that a process that dies holding it blocks the others for
// no longer; what is done under it (making a key, writing a small value)
// takes a fraction of that. Lock polls for a held lock, at most as long
// as a lock can live.
const (
	LockTTL     = 30 * time.Second
	lockPollMin = 20 * time.Millisecond
	lockPollMax = 500 * time.Millisecond
	lockMaxWait = LockTTL + 5*time.Second
)

// KeyStore keeps keys (signing and cookie keys, which every node must
// share and none may lose) in the Redis of a [Store], with no time to
// live, and offers a lock that one process of all that share the server
// holds at a time, for the one that makes or rotates them. Its methods
// are those of certmagic.Storage that keys need; Load answers
// fs.ErrNotExist for an absent key. Keys are under the store's prefix, as
// `<prefix><key>` (a path such as "authgate/provider/.../signing_keys.json")
// and `<prefix>lock:<name>`.
type KeyStore struct {
	s *Store

	mu     sync.Mutex
	tokens map[string]string // lock name -> the token of our hold
}

// Keys returns the key store of s.
func (s *Store) Keys() *KeyStore {
	return &KeyStore{s: s, tokens: make(map[string]string)}
}

// Load returns the value of key, or an error wrapping fs.ErrNotExist.
func (k *KeyStore) Load(ctx context.Context, key string) ([]byte, error) {
	v, err := k.s.client.Get(ctx, k.s.prefix+key).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, fmt.Errorf("redisstore: %s: %w", key, fs.ErrNotExist)
	case err != nil:
		return nil, fmt.Errorf("redisstore: load: %w", err)
	}
	return v, nil
}

// Store sets key to value, with no time to live.
func (k *KeyStore) Store(ctx context.Context, key string, value []byte) error {
	if err := k.s.client.Set(ctx, k.s.prefix+key, value, 0).Err(); err != nil {
		return fmt.Errorf("redisstore: store: %w", err)
	}
	return nil
}

// Lock takes the lock name, waiting while another holds it, until ctx
// ends or for at most as long as a lock lives (after which the holder's
// has expired). The lock is a key set only if absent (SET NX), with a
// random token and a time to live of [LockTTL].
func (k *KeyStore) Lock(ctx context.Context, name string) error {
	b := make([]byte, 16)
	rand.Read(b)
	token := base64.RawURLEncoding.EncodeToString(b)
	deadline := time.Now().Add(lockMaxWait)
	wait := lockPollMin
	for {
		ok, err := k.s.client.SetNX(ctx, k.lockKey(name), token, LockTTL).Result()
		if err != nil {
			return fmt.Errorf("redisstore: lock %s: %w", name, err)
		}
		if ok {
			k.mu.Lock()
			k.tokens[name] = token
			k.mu.Unlock()
			return nil
		}
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("redisstore: lock %s: still held by another after %s", name, lockMaxWait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("redisstore: lock %s: %w", name, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, lockPollMax)
	}
}

// unlockScript deletes the lock only if it still holds our token: a hold
// that outlived its time to live must not delete the next holder's lock.
var unlockScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0
`)

// Unlock releases the lock name taken by Lock. It fails if the lock
// expired while held (and so may have been taken by another since).
func (k *KeyStore) Unlock(ctx context.Context, name string) error {
	k.mu.Lock()
	token, ok := k.tokens[name]
	delete(k.tokens, name)
	k.mu.Unlock()
	if !ok {
		return fmt.Errorf("redisstore: unlock %s: not locked", name)
	}
	n, err := unlockScript.Run(ctx, k.s.client, []string{k.lockKey(name)}, token).Int()
	if err != nil {
		return fmt.Errorf("redisstore: unlock %s: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("redisstore: unlock %s: the lock expired while held", name)
	}
	return nil
}

// lockKey is the key of lock name. ':' is in no Store key, so "lock:"
// keys meet none of them.
func (k *KeyStore) lockKey(name string) string { return k.s.prefix + "lock:" + name }
