package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
)

// openRevocations returns the revocation list of g's store configuration
// and its key in revocationPool: Redis with `store redis`, Caddy's
// storage otherwise (every node that shares the storage shares the list).
func (g *Gateway) openRevocations(storage certmagic.Storage) (*revocations, string, error) {
	if g.Store != nil && g.Store.Redis != nil {
		r, key, err := loadRedis(g.Store.Redis, g.logger)
		if err != nil {
			return nil, "", err
		}
		// A new list keeps the share of the client just taken until it is
		// destroyed; a list already there has its own.
		poolKey := "revocations " + key
		created := false
		l, err := loadRevocations(poolKey, "redis", g.logger, func() (revocationBackend, func()) {
			created = true
			return &redisRevocations{store: r, logger: g.logger}, func() { _, _ = redisPool.Delete(key) }
		})
		if !created {
			_, _ = redisPool.Delete(key)
		}
		if err != nil {
			return nil, "", err
		}
		return l, poolKey, nil
	}
	if storage == nil {
		// Unshared: this process's memory only.
		l, err := loadRevocations("revocations local", "memory", g.logger, func() (revocationBackend, func()) {
			return localRevocations{}, nil
		})
		return l, "revocations local", err
	}
	poolKey := "revocations storage " + storageIdentity(storage)
	l, err := loadRevocations(poolKey, "storage", g.logger, func() (revocationBackend, func()) {
		return &storageRevocations{storage: storage, prefix: revocationStoragePrefix, every: storagePollEvery, logger: g.logger}, nil
	})
	if err != nil {
		return nil, "", err
	}
	return l, poolKey, nil
}

// contextStorage is ctx's storage, or nil for a context without a
// configuration (that of a module provisioned on its own, in a test),
// whose Storage panics.
func contextStorage(ctx caddy.Context) (s certmagic.Storage) {
	defer func() {
		if recover() != nil {
			s = nil
		}
	}()
	return ctx.Storage()
}

// localRevocations keeps the revocation list in this process only.
type localRevocations struct{}

func (localRevocations) write(context.Context, revocation) error { return nil }
func (localRevocations) watch(ctx context.Context, _ func([]revocation)) {
	<-ctx.Done()
}
func (localRevocations) bound() time.Duration { return 0 }

// revocationFeed is the name of the revocation feed in Redis (under the
// store's key prefix).
const revocationFeed = "gateway/revocations"

// redisResyncEvery is how often a node reads the Redis feed from where it
// last read, for what pub/sub did not bring: events published while its
// subscription was down. A lost subscription also reads it at once when
// it is made again.
const redisResyncEvery = 30 * time.Second

// redisResyncPage is how many events one read of the feed takes.
const redisResyncPage = 256

// redisRevocations shares the revocation list through a Redis feed:
// published for every node at once, and read back from the stream by
// each node after a lost connection and every redisResyncEvery.
type redisRevocations struct {
	store  *lazyRedis
	logger *zap.Logger
	every  time.Duration // redisResyncEvery; tests shorten it
}

func (b *redisRevocations) bound() time.Duration { return b.resyncEvery() }

func (b *redisRevocations) resyncEvery() time.Duration {
	if b.every > 0 {
		return b.every
	}
	return redisResyncEvery
}

func (b *redisRevocations) write(ctx context.Context, e revocation) error {
	data, err := marshalRevocation(e)
	if err != nil {
		return err
	}
	if err := b.store.check(ctx); err != nil {
		return err
	}
	return b.store.result(b.store.Append(ctx, revocationFeed, data, time.Unix(e.Expires, 0)))
}

func (b *redisRevocations) watch(ctx context.Context, apply func([]revocation)) {
	notices := b.store.Subscribe(ctx, revocationFeed)
	tick := time.NewTicker(b.resyncEvery())
	defer tick.Stop()
	last := ""
	failing := false
	resync := func() {
		var err error
		last, err = b.readSince(ctx, last, apply)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			b.logger.Warn("reading gateway session revocations from redis; sessions revoked on other nodes meanwhile pass here until it answers", zap.Error(err))
		case err == nil && failing:
			failing = false
			b.logger.Info("reading gateway session revocations from redis again")
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case n, ok := <-notices:
			if !ok {
				return
			}
			if n.Data == nil {
				resync() // (re)subscribed: read what was missed
				continue
			}
			if e, ok := unmarshalRevocation(n.Data); ok {
				apply([]revocation{e})
			}
		case <-tick.C:
			resync()
		}
	}
}

// readSince applies the feed's events after last, a bounded number of
// pages, and returns the ID to go on from.
func (b *redisRevocations) readSince(ctx context.Context, last string, apply func([]revocation)) (string, error) {
	for range 64 {
		events, next, err := b.store.Since(ctx, revocationFeed, last, redisResyncPage)
		if err != nil {
			return last, err
		}
		entries := make([]revocation, 0, len(events))
		for _, ev := range events {
			if e, ok := unmarshalRevocation(ev.Data); ok {
				entries = append(entries, e)
			}
		}
		apply(entries)
		if next == last {
			return last, nil
		}
		last = next
	}
	return last, nil
}

// revocationStoragePrefix is the folder of the revocation list in Caddy's
// storage: one small file per entry, named <expires>-<digest>, so that a
// node lists the folder and loads only the files it has not seen, and
// deletes expired ones by their name alone.
const revocationStoragePrefix = "authgate/gateway/revocations"

// storagePollEvery is how often a node lists the revocation folder.
const storagePollEvery = 5 * time.Second

// storageRevocations shares the revocation list through Caddy's storage,
// which has no notifications: every node lists the folder every
// storagePollEvery.
type storageRevocations struct {
	storage certmagic.Storage
	prefix  string
	every   time.Duration
	logger  *zap.Logger
	seen    map[string]bool // names of entries loaded, or expired; the watcher's only
}

func (b *storageRevocations) bound() time.Duration { return b.every }

// entryName is the file name of an entry.
func (b *storageRevocations) entryName(e revocation) string {
	sum := sha256.Sum256([]byte(e.Kind + "\x00" + e.key() + "\x00" + strconv.FormatInt(e.Before, 10)))
	return strconv.FormatInt(e.Expires, 10) + "-" + hex.EncodeToString(sum[:12])
}

func (b *storageRevocations) write(ctx context.Context, e revocation) error {
	data, err := marshalRevocation(e)
	if err != nil {
		return err
	}
	return b.storage.Store(ctx, path.Join(b.prefix, b.entryName(e)), data)
}

func (b *storageRevocations) watch(ctx context.Context, apply func([]revocation)) {
	failing := false
	t := time.NewTicker(b.every)
	defer t.Stop()
	for {
		err := b.poll(ctx, apply)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			b.logger.Warn("reading gateway session revocations from Caddy's storage; sessions revoked on other nodes meanwhile pass here until it answers", zap.Error(err))
		case err == nil && failing:
			failing = false
			b.logger.Info("reading gateway session revocations from Caddy's storage again")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poll loads the entries not seen yet and deletes expired ones.
func (b *storageRevocations) poll(ctx context.Context, apply func([]revocation)) error {
	keys, err := b.storage.List(ctx, b.prefix, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // no entry yet
	}
	if err != nil {
		return err
	}
	if b.seen == nil {
		b.seen = map[string]bool{}
	}
	now := time.Now().Unix()
	listed := make(map[string]bool, len(keys))
	var entries []revocation
	var errs []error
	for _, key := range keys {
		name := path.Base(key)
		listed[name] = true
		if b.seen[name] {
			continue
		}
		x, _, ok := strings.Cut(name, "-")
		expires, err := strconv.ParseInt(x, 10, 64)
		if !ok || err != nil {
			continue // not an entry
		}
		if expires <= now {
			// Any node may delete it; one that fails leaves it to the next.
			_ = b.storage.Delete(ctx, key)
			continue
		}
		data, err := b.storage.Load(ctx, key)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if e, ok := unmarshalRevocation(data); ok {
			entries = append(entries, e)
		}
		b.seen[name] = true
	}
	for name := range b.seen {
		if !listed[name] {
			delete(b.seen, name) // gone from the folder: expired, forgotten here
		}
	}
	apply(entries)
	return errors.Join(errs...)
}
