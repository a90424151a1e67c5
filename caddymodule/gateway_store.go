package caddymodule

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// errSessionKeyUnavailable is the error of a session cookie that could not
// be sealed or opened because the shared session key could not be loaded
// from the store: a passing condition, answered with 503.
var errSessionKeyUnavailable = errors.New("the shared session key could not be loaded")

// sessionKeyStoreKey is the store key of the generated session key that
// the gateways of every node share (under the store's key prefix).
const sessionKeyStoreKey = "gateway/session_key"

// sharedKeyRetry is how long a failed load of the shared key is not
// retried: requests meanwhile fail at once rather than each waiting on a
// store that is down.
const sharedKeyRetry = time.Second

// sharedSessionKey loads the gateway's session key from the store, or
// creates it there (SET NX: one node's key wins, every node uses it), at
// the first request that needs it, so that Provision (and caddy validate)
// needs no connection.
type sharedSessionKey struct {
	store            *lazyRedis
	issuer, clientID string
	maxAge           time.Duration
	mu               sync.Mutex
	failed           time.Time // of the last failed load
}

func (s *sharedSessionKey) load(c *sessionCodec) (*sessionKeys, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := c.keys.Load(); k != nil {
		return k, nil
	}
	if time.Since(s.failed) < sharedKeyRetry {
		return nil, errSessionKeyUnavailable
	}
	// The store's own timeouts bound this; the deadline is a backstop.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	secret, err := s.fetch(ctx)
	if err != nil {
		s.failed = time.Now()
		return nil, fmt.Errorf("%w: %w", errSessionKeyUnavailable, err)
	}
	k, err := newSessionKeys([]string{secret}, s.issuer, s.clientID, s.maxAge)
	if err != nil {
		s.failed = time.Now()
		return nil, fmt.Errorf("%w: %w", errSessionKeyUnavailable, err)
	}
	c.keys.Store(k)
	return k, nil
}

func (s *sharedSessionKey) fetch(ctx context.Context) (string, error) {
	if err := s.store.check(ctx); err != nil {
		return "", err
	}
	data, err := s.store.LoadOrCreate(ctx, sessionKeyStoreKey, newSessionKeySecret)
	if err != nil {
		return "", s.store.failed(err)
	}
	s.store.ok()
	return string(data), nil
}

// newSessionKeySecret makes a session key: 32 random bytes, base64url.
func newSessionKeySecret() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := io.ReadFull(randReader, b); err != nil {
		return nil, err
	}
	return []byte(base64.RawURLEncoding.EncodeToString(b)), nil
}
