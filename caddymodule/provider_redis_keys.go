package caddymodule

import (
	"context"
	"errors"
	"io/fs"

	"github.com/authgate/authgate/idp/redisstore"
)

// redisKeyStore keeps the provider's signing and cookie keys in its Redis
// store, so that nodes share them with no shared Caddy storage. Like every
// use of lazyRedis, it checks the server at first use and logs outages
// once.
type redisKeyStore struct {
	r    *lazyRedis
	keys *redisstore.KeyStore
}

var _ remoteKeyStore = redisKeyStore{}

func newRedisKeyStore(r *lazyRedis) redisKeyStore {
	return redisKeyStore{r: r, keys: r.Store.Keys()}
}

func (s redisKeyStore) lastLoaded(prefix string) (*loadedKeys, bool) {
	v, ok := s.r.loaded.Load(prefix)
	if !ok {
		return nil, false
	}
	return v.(*loadedKeys), true
}

func (s redisKeyStore) keepLoaded(prefix string, k *loadedKeys, replace bool) {
	if replace {
		s.r.loaded.Store(prefix, k)
	} else {
		s.r.loaded.LoadOrStore(prefix, k)
	}
}

func (s redisKeyStore) forgetLoaded(prefix string, k *loadedKeys) {
	s.r.loaded.CompareAndDelete(prefix, k)
}

// result notes the outcome of a call: an absent key is an answer.
func (s redisKeyStore) result(err error) error {
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		s.r.ok()
		return err
	}
	return s.r.failed(err)
}

func (s redisKeyStore) Load(ctx context.Context, key string) ([]byte, error) {
	if err := s.r.check(ctx); err != nil {
		return nil, err
	}
	v, err := s.keys.Load(ctx, key)
	return v, s.result(err)
}

func (s redisKeyStore) Store(ctx context.Context, key string, value []byte) error {
	if err := s.r.check(ctx); err != nil {
		return err
	}
	return s.result(s.keys.Store(ctx, key, value))
}

func (s redisKeyStore) Lock(ctx context.Context, name string) error {
	if err := s.r.check(ctx); err != nil {
		return err
	}
	err := s.keys.Lock(ctx, name)
	if err != nil && ctx.Err() != nil {
		return err // held by another until the caller gave up: not an outage
	}
	return s.result(err)
}

func (s redisKeyStore) Unlock(ctx context.Context, name string) error {
	return s.result(s.keys.Unlock(ctx, name))
}
