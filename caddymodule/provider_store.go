package caddymodule

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/idp/boltstore"
	"github.com/authgate/authgate/idp/redisstore"
)

// StateStore says where the provider keeps what it must keep between
// requests, reloads and restarts: codes, refresh token families,
// revocations, consents, ended sessions, and with Redis its signing and
// cookie keys (which Caddy's storage keeps otherwise). At most one field
// is set. Unset, that is a
// bbolt file in Caddy's data directory (see [BoltStore]).
type StateStore struct {
	// Bolt keeps everything in one bbolt file: the default, for a
	// provider served by one Caddy process.
	Bolt *BoltStore `json:"bolt,omitempty"`

	// Storage keeps codes, tokens and the rest in Caddy's configured
	// storage, and the keys there too, as versions before the bolt store
	// did: slower, but shared by every Caddy instance that shares the
	// storage (through a storage plugin).
	Storage *StorageStateStore `json:"storage,omitempty"`

	// Redis keeps everything in Redis, for several Caddy instances that
	// serve one issuer.
	Redis *RedisStore `json:"redis,omitempty"`
}

// BoltStore is the provider's bbolt file. The login throttle counts in
// memory with it: one process serves the provider.
type BoltStore struct {
	// Path is the file. Default: `authgate/provider-<digest of the
	// issuer>.db` in the folder of Caddy's file_system storage (Caddy's
	// data directory unless the storage is configured), or in Caddy's
	// data directory with any other storage.
	Path string `json:"path,omitempty"`
}

// StorageStateStore selects Caddy's configured storage; it has no
// options.
type StorageStateStore struct{}

// RedisStore is the address and credentials of a Redis server, Sentinel
// set or Cluster. Placeholders (e.g. {env.REDIS_PASSWORD}) are replaced
// when the module is provisioned. Nothing connects until the first
// request: `caddy validate` needs no Redis.
type RedisStore struct {
	// Addresses are host:port. One is a single server; several are
	// Sentinels (with MasterName) or Cluster seed nodes (with Cluster).
	Addresses []string `json:"addresses,omitempty"`
	// Username and Password authenticate (ACL user, or requirepass).
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// DB is the database number (0 in a Cluster).
	DB int `json:"db,omitempty"`
	// KeyPrefix goes before every key. Default: "authgate:".
	KeyPrefix string `json:"key_prefix,omitempty"`
	// TLS connects with TLS, checking the server's certificate against
	// the system's roots.
	TLS bool `json:"tls,omitempty"`
	// MasterName is the master that the Sentinels at Addresses watch.
	MasterName string `json:"master_name,omitempty"`
	// SentinelUsername and SentinelPassword authenticate with the
	// Sentinels themselves, when they require it (their own requirepass
	// or ACL user); Username and Password are the master's.
	SentinelUsername string `json:"sentinel_username,omitempty"`
	SentinelPassword string `json:"sentinel_password,omitempty"`
	// Cluster says that Addresses are nodes of a Redis Cluster.
	Cluster bool `json:"cluster,omitempty"`
	// Timeouts of a connection attempt and of a command. Defaults: 2s,
	// 1s, 1s: a request waits on every call, and a store that does not
	// answer within a second is down as far as a login is concerned.
	DialTimeout  caddy.Duration `json:"dial_timeout,omitempty"`
	ReadTimeout  caddy.Duration `json:"read_timeout,omitempty"`
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`
}

// options returns the redisstore form of r, its placeholders replaced.
// Errors name the option, never the password.
func (r *RedisStore) options(repl *caddy.Replacer) (redisstore.Options, error) {
	o := redisstore.Options{
		Username:   repl.ReplaceAll(r.Username, ""),
		Password:   repl.ReplaceAll(r.Password, ""),
		DB:         r.DB,
		KeyPrefix:  repl.ReplaceAll(r.KeyPrefix, ""),
		MasterName: repl.ReplaceAll(r.MasterName, ""),
		// Resolved here and kept out of every error and log line, as the
		// data password is.
		SentinelUsername: repl.ReplaceAll(r.SentinelUsername, ""),
		SentinelPassword: repl.ReplaceAll(r.SentinelPassword, ""),
		Cluster:          r.Cluster,
		DialTimeout:      time.Duration(r.DialTimeout),
		ReadTimeout:      time.Duration(r.ReadTimeout),
		WriteTimeout:     time.Duration(r.WriteTimeout),
	}
	for _, a := range r.Addresses {
		if a = repl.ReplaceAll(a, ""); a != "" {
			o.Addrs = append(o.Addrs, a)
		}
	}
	if r.TLS {
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	for _, d := range []struct {
		option string
		value  caddy.Duration
	}{{"dial_timeout", r.DialTimeout}, {"read_timeout", r.ReadTimeout}, {"write_timeout", r.WriteTimeout}} {
		if d.value < 0 {
			return o, fmt.Errorf("store redis: %s %s is negative", d.option, time.Duration(d.value))
		}
	}
	switch {
	case len(o.Addrs) == 0:
		return o, errors.New("store redis: address is required")
	case o.Cluster && o.MasterName != "":
		return o, errors.New("store redis: master_name (Sentinel) and cluster are exclusive")
	case o.MasterName == "" && (o.SentinelUsername != "" || o.SentinelPassword != ""):
		return o, errors.New("store redis: sentinel_username and sentinel_password need master_name (Sentinel)")
	case o.Cluster && o.DB != 0:
		return o, errors.New("store redis: db must be 0 with cluster")
	case len(o.Addrs) > 1 && !o.Cluster && o.MasterName == "":
		return o, errors.New("store redis: several addresses need master_name (Sentinel) or cluster")
	case o.DB < 0:
		return o, errors.New("store redis: db is negative")
	}
	return o, nil
}

// redisPool holds one Redis client per distinct configuration, shared by
// every module that names it and kept across reloads that keep it.
var redisPool = caddy.NewUsagePool()

// loadRedis returns the pooled client of r and its key in redisPool, which
// the caller releases with redisPool.Delete in Cleanup.
func loadRedis(r *RedisStore, logger *zap.Logger) (*lazyRedis, string, error) {
	opts, err := r.options(caddy.NewReplacer())
	if err != nil {
		return nil, "", err
	}
	// The key is a digest of the resolved configuration (RedisStore with
	// its placeholders replaced): the pool's keys should not hold a
	// password.
	resolved := RedisStore{
		Addresses: opts.Addrs, Username: opts.Username, Password: opts.Password,
		DB: opts.DB, KeyPrefix: opts.KeyPrefix, TLS: r.TLS, MasterName: opts.MasterName,
		SentinelUsername: opts.SentinelUsername, SentinelPassword: opts.SentinelPassword,
		Cluster: opts.Cluster, DialTimeout: r.DialTimeout, ReadTimeout: r.ReadTimeout, WriteTimeout: r.WriteTimeout,
	}
	b, err := json.Marshal(resolved)
	if err != nil {
		return nil, "", fmt.Errorf("store redis: %w", err)
	}
	sum := sha256.Sum256(b)
	key := "redis " + hex.EncodeToString(sum[:])
	v, _, err := redisPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		s, err := redisstore.New(opts)
		if err != nil {
			return nil, fmt.Errorf("store redis: %w", err)
		}
		return &lazyRedis{Store: s, logger: logger.With(zap.Strings("redis", opts.Addrs))}, nil
	})
	if err != nil {
		return nil, "", err
	}
	return v.(*lazyRedis), key, nil
}

// lazyRedis is a Redis store that checks the server (redisstore.Store.Ping)
// at its first use rather than at provisioning, and again after each failed
// check, so that Caddy starts while Redis is down and the log says at once
// what is wrong when it is reached.
type lazyRedis struct {
	*redisstore.Store
	logger *zap.Logger
	ready  atomic.Bool
	down   atomic.Bool // the last check or call failed; logged once per outage

	// loaded holds the keys that providers of this process last loaded
	// from the server, by storage prefix (see remoteKeyStore): the pool
	// keeps it across a reload, which provisions before it cleans up.
	loaded sync.Map
}

var (
	_ idp.Store         = (*lazyRedis)(nil)
	_ idp.ThrottleStore = (*lazyRedis)(nil)
	_ idp.Adder         = (*lazyRedis)(nil)
)

// Destruct closes the connection pool once no module uses it.
func (l *lazyRedis) Destruct() error { return l.Store.Close() }

// check pings the server until a ping succeeds.
func (l *lazyRedis) check(ctx context.Context) error {
	if l.ready.Load() {
		return nil
	}
	if err := l.Store.Ping(ctx); err != nil {
		return l.failed(err)
	}
	l.ready.Store(true)
	l.down.Store(false)
	l.logger.Info("connected to redis")
	return nil
}

// failed logs the first failure of an outage and returns err. A call
// whose caller gave up (a client that hung up, a `caddy validate` that
// ended) says nothing about Redis.
func (l *lazyRedis) failed(err error) error {
	if err != nil && !errors.Is(err, idp.ErrNotFound) && !errors.Is(err, context.Canceled) && !l.down.Swap(true) {
		l.logger.Error("redis store unavailable; requests that need it get 503 until it answers", zap.Error(err))
	}
	return err
}

// ok notes a call that succeeded, logging the end of an outage.
func (l *lazyRedis) ok() {
	if l.down.Load() && l.down.Swap(false) {
		l.logger.Info("redis store available again")
	}
}

func (l *lazyRedis) result(err error) error {
	if err == nil || errors.Is(err, idp.ErrNotFound) {
		l.ok()
		return err
	}
	return l.failed(err)
}

func (l *lazyRedis) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := l.check(ctx); err != nil {
		return err
	}
	return l.result(l.Store.Put(ctx, key, value, ttl))
}

func (l *lazyRedis) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if err := l.check(ctx); err != nil {
		return false, err
	}
	ok, err := l.Store.Add(ctx, key, value, ttl)
	return ok, l.result(err)
}

func (l *lazyRedis) Get(ctx context.Context, key string) ([]byte, error) {
	if err := l.check(ctx); err != nil {
		return nil, err
	}
	v, err := l.Store.Get(ctx, key)
	return v, l.result(err)
}

func (l *lazyRedis) Take(ctx context.Context, key string) ([]byte, error) {
	if err := l.check(ctx); err != nil {
		return nil, err
	}
	v, err := l.Store.Take(ctx, key)
	return v, l.result(err)
}

func (l *lazyRedis) Delete(ctx context.Context, key string) error {
	if err := l.check(ctx); err != nil {
		return err
	}
	return l.result(l.Store.Delete(ctx, key))
}

func (l *lazyRedis) Reserve(ctx context.Context, now time.Time, keys []idp.ThrottleKey) (time.Duration, error) {
	if err := l.check(ctx); err != nil {
		return 0, err
	}
	d, err := l.Store.Reserve(ctx, now, keys)
	return d, l.result(err)
}

func (l *lazyRedis) Release(ctx context.Context, at time.Time, keys []idp.ThrottleKey) error {
	if err := l.check(ctx); err != nil {
		return err
	}
	return l.result(l.Store.Release(ctx, at, keys))
}

func (l *lazyRedis) Forget(ctx context.Context, keys []string) error {
	if err := l.check(ctx); err != nil {
		return err
	}
	return l.result(l.Store.Forget(ctx, keys))
}

// parseStore parses
//
//	store bolt [<path>]
//	store storage
//	store redis {
//		address <host:port>...
//		username <name>
//		password <password>
//		db <n>
//		key_prefix <prefix>
//		tls
//		master_name <name>
//		sentinel_username <name>
//		sentinel_password <password>
//		cluster
//		dial_timeout <duration>
//		read_timeout <duration>
//		write_timeout <duration>
//	}
//
// the dispenser on "store".
func parseStore(d *caddyfile.Dispenser) (*StateStore, error) {
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	switch kind := d.Val(); kind {
	case "bolt", "storage":
		return parseLocalStore(d, kind)
	case "redis":
	default:
		return nil, d.Errf("store %q: want bolt, storage or redis", kind)
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	r := new(RedisStore)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch option := d.Val(); option {
		case "address":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			r.Addresses = append(r.Addresses, args...)
		case "username":
			if err := parseOnce(d, &r.Username); err != nil {
				return nil, err
			}
		case "password":
			if err := parseOnce(d, &r.Password); err != nil {
				return nil, err
			}
		case "key_prefix":
			if err := parseOnce(d, &r.KeyPrefix); err != nil {
				return nil, err
			}
		case "master_name":
			if err := parseOnce(d, &r.MasterName); err != nil {
				return nil, err
			}
		case "sentinel_username":
			if err := parseOnce(d, &r.SentinelUsername); err != nil {
				return nil, err
			}
		case "sentinel_password":
			if err := parseOnce(d, &r.SentinelPassword); err != nil {
				return nil, err
			}
		case "db":
			var s string
			if err := parseOnce(d, &s); err != nil {
				return nil, err
			}
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return nil, d.Errf("store redis db %q: want a database number", s)
			}
			r.DB = n
		case "tls", "cluster":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			if option == "tls" {
				r.TLS = true
			} else {
				r.Cluster = true
			}
		case "dial_timeout":
			if err := parseDuration(d, &r.DialTimeout); err != nil {
				return nil, err
			}
		case "read_timeout":
			if err := parseDuration(d, &r.ReadTimeout); err != nil {
				return nil, err
			}
		case "write_timeout":
			if err := parseDuration(d, &r.WriteTimeout); err != nil {
				return nil, err
			}
		default:
			return nil, d.Errf("unrecognized store redis option %q", option)
		}
	}
	if len(r.Addresses) == 0 {
		return nil, d.Err("store redis: address is required")
	}
	return &StateStore{Redis: r}, nil
}

// parseLocalStore parses `store bolt [<path>]` and `store storage`, the
// dispenser on the kind; neither takes a block.
func parseLocalStore(d *caddyfile.Dispenser, kind string) (*StateStore, error) {
	args := d.RemainingArgs()
	if d.NextBlock(d.Nesting()) {
		return nil, d.Errf("store %s takes no block", kind)
	}
	switch {
	case kind == "storage" && len(args) == 0:
		return &StateStore{Storage: &StorageStateStore{}}, nil
	case kind == "bolt" && len(args) <= 1:
		b := new(BoltStore)
		if len(args) == 1 {
			b.Path = args[0]
		}
		return &StateStore{Bolt: b}, nil
	}
	return nil, d.ArgErr()
}

// providerState is where a provisioned provider keeps its state and its
// keys, as its store configuration says.
type providerState struct {
	store    idp.Store
	throttle idp.ThrottleStore // nil: in this process's memory
	keys     keyStore          // signing and cookie keys
	where    string            // for the log: the store and where it is
	poolKey  string            // its key in its usage pool, for tests
	release  func() error      // gives the store back to its pool
}

// openState opens (or finds in its usage pool) the store that p's
// configuration names, the bbolt file when it names none.
func (p *Provider) openState(ctx caddy.Context) (providerState, error) {
	st := p.Store
	if st == nil {
		st = &StateStore{Bolt: &BoltStore{}}
	}
	n := 0
	for _, set := range []bool{st.Bolt != nil, st.Storage != nil, st.Redis != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return providerState{}, errors.New("store: want exactly one of bolt, storage and redis")
	}
	storage := ctx.Storage()
	prefix := providerStoragePrefix(p.Issuer)

	switch {
	case st.Redis != nil:
		r, key, err := loadRedis(st.Redis, p.logger)
		if err != nil {
			return providerState{}, err
		}
		return providerState{
			// One engine for both: a cluster counts each failed login once.
			store: r, throttle: r,
			// Keys too: every node signs with the same keys and opens
			// every node's cookies, with no storage shared.
			keys:    newRedisKeyStore(r),
			where:   "redis",
			poolKey: key,
			release: func() error { _, err := redisPool.Delete(key); return err },
		}, nil

	case st.Storage != nil:
		key := storageIdentity(storage) + " " + prefix + "/store"
		v, _, err := storePool.LoadOrNew(key, func() (caddy.Destructor, error) {
			return newStorageStore(storage, prefix+"/store", nil, p.logger), nil
		})
		if err != nil {
			return providerState{}, err
		}
		return providerState{
			store:   v.(*storageStore),
			keys:    storage,
			where:   "storage",
			poolKey: key,
			release: func() error { _, err := storePool.Delete(key); return err },
		}, nil
	}

	path := caddy.NewReplacer().ReplaceAll(st.Bolt.Path, "")
	if path == "" {
		path = defaultBoltPath(storage, p.Issuer)
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return providerState{}, fmt.Errorf("store bolt: %w", err)
	}
	v, _, err := boltPool.LoadOrNew(path, func() (caddy.Destructor, error) {
		return &lazyBolt{path: path, logger: ctx.Slogger()}, nil
	})
	if err != nil {
		return providerState{}, err
	}
	// The keys stay in Caddy's storage: they are needed here, and the
	// file is not opened before the first request that needs it.
	return providerState{
		store:   v.(*lazyBolt),
		keys:    storage,
		where:   "bolt " + path,
		poolKey: path,
		release: func() error { _, err := boltPool.Delete(path); return err },
	}, nil
}

// defaultBoltPath is the default bbolt file of the provider of issuer:
// in the folder of Caddy's file_system storage, so that Caddy processes
// on different storage folders (tests' among them) have their own, or
// else in Caddy's data directory.
func defaultBoltPath(storage certmagic.Storage, issuer string) string {
	sum := sha256.Sum256([]byte(issuer))
	name := "provider-" + hex.EncodeToString(sum[:])[:16] + ".db"
	if files, ok := storage.(*certmagic.FileStorage); ok {
		return filepath.Join(files.Path, "authgate", name)
	}
	return filepath.Join(caddy.AppDataDir(), "authgate", name)
}

// boltPool holds the bbolt files by path: bbolt opens a file once, and a
// reload provisions the new configuration before it cleans up the old
// one, so both must share it.
var boltPool = caddy.NewUsagePool()

// boltRetry is how long a file that failed to open answers with that
// failure before the next request tries again: requests during an outage
// fail at once rather than each waiting on the file's lock.
const boltRetry = time.Second

// lazyBolt is the provider's bbolt file, opened at the first request that
// needs it rather than at provisioning: `caddy validate` provisions the
// configuration in a process of its own, often while Caddy runs with the
// file open, and must neither need the file nor wait for it. A second
// Caddy process on the same file gets 503s and an error in its log that
// says why.
type lazyBolt struct {
	path   string
	logger *slog.Logger

	open   atomic.Pointer[boltstore.Store]
	mu     sync.Mutex // held while opening or closing
	closed bool
	err    error // the last failure to open, until boltRetry after failed
	failed time.Time
}

var (
	_ idp.Store       = (*lazyBolt)(nil)
	_ idp.MultiPutter = (*lazyBolt)(nil)
	_ idp.Swapper     = (*lazyBolt)(nil)
	_ idp.Adder       = (*lazyBolt)(nil)
)

// store returns the open file, opening it on first use.
func (l *lazyBolt) store() (*boltstore.Store, error) {
	if s := l.open.Load(); s != nil {
		return s, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.open.Load(); s != nil {
		return s, nil
	}
	if l.closed {
		return nil, errors.New("store bolt: closed")
	}
	if l.err != nil && time.Since(l.failed) < boltRetry {
		return nil, l.err
	}
	s, err := boltstore.Open(l.path, boltstore.Options{Logger: l.logger, LockTimeout: 500 * time.Millisecond})
	if errors.Is(err, boltstore.ErrLocked) {
		err = fmt.Errorf("store: %s is open in another process: one file serves one Caddy process. "+
			"If that is a Caddy running this configuration, `caddy reload` applies a new one to it; "+
			"several processes serving one issuer need `store redis` (or `store storage` on storage they share)", l.path)
	} else if err != nil {
		err = fmt.Errorf("store bolt: %w", err)
	}
	if err != nil {
		if l.err == nil {
			l.logger.Error("the provider's store cannot be opened; requests that need it get 503 until it can", "error", err)
		}
		l.err, l.failed = err, time.Now()
		return nil, err
	}
	if l.err != nil {
		l.logger.Info("the provider's store is open", "path", l.path)
	}
	l.err = nil
	l.open.Store(s)
	return s, nil
}

// Destruct closes the file once no provider uses it.
func (l *lazyBolt) Destruct() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if s := l.open.Swap(nil); s != nil {
		return s.Close()
	}
	return nil
}

func (l *lazyBolt) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	s, err := l.store()
	if err != nil {
		return err
	}
	return s.Put(ctx, key, value, ttl)
}

func (l *lazyBolt) PutAll(ctx context.Context, entries []idp.Entry) error {
	s, err := l.store()
	if err != nil {
		return err
	}
	return s.PutAll(ctx, entries)
}

func (l *lazyBolt) Swap(ctx context.Context, key string, old []byte, entries []idp.Entry) (bool, error) {
	s, err := l.store()
	if err != nil {
		return false, err
	}
	return s.Swap(ctx, key, old, entries)
}

func (l *lazyBolt) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	s, err := l.store()
	if err != nil {
		return false, err
	}
	return s.Add(ctx, key, value, ttl)
}

func (l *lazyBolt) Get(ctx context.Context, key string) ([]byte, error) {
	s, err := l.store()
	if err != nil {
		return nil, err
	}
	return s.Get(ctx, key)
}

func (l *lazyBolt) Take(ctx context.Context, key string) ([]byte, error) {
	s, err := l.store()
	if err != nil {
		return nil, err
	}
	return s.Take(ctx, key)
}

func (l *lazyBolt) Delete(ctx context.Context, key string) error {
	s, err := l.store()
	if err != nil {
		return err
	}
	return s.Delete(ctx, key)
}
