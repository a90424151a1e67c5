package caddymodule

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/idp/redisstore"
)

// StateStore says where the provider keeps what it must share between
// requests and nodes: codes, refresh token families, revocations,
// consents, ended sessions and the login throttle's counts. Unset, that is
// Caddy's configured storage (and the throttle counts in memory).
type StateStore struct {
	// Redis keeps everything in Redis, for several Caddy instances that
	// serve one issuer.
	Redis *RedisStore `json:"redis,omitempty"`
}

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
}

var (
	_ idp.Store         = (*lazyRedis)(nil)
	_ idp.ThrottleStore = (*lazyRedis)(nil)
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

// failed logs the first failure of an outage and returns err.
func (l *lazyRedis) failed(err error) error {
	if err != nil && !errors.Is(err, idp.ErrNotFound) && !l.down.Swap(true) {
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
	var kind string
	if !d.Args(&kind) || d.NextArg() {
		return nil, d.ArgErr()
	}
	if kind != "redis" {
		return nil, d.Errf("store %q: the only store is redis", kind)
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
