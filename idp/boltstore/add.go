package boltstore

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/authgate/authgate/idp"
)

var _ idp.Adder = (*Store)(nil)

// Add implements [idp.Adder]: the check and the put are one transaction,
// and bbolt has one writer at a time.
func (s *Store) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	k := []byte(key)
	put := s.putFunc([]idp.Entry{{Key: key, Value: value, TTL: ttl}})
	var added bool
	err := s.update(ctx, func(tx *bolt.Tx) error {
		added = false // this may be a second run
		if _, ok := s.live(tx.Bucket(bucketEntries).Get(k)); ok {
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
