// Package redisstore keeps the provider's state in Redis, for several
// processes that share it: an [idp.Store] whose Take is atomic in the
// server, and an [idp.ThrottleStore] whose counts are checked and changed
// by one script per call, so that a cluster counts each failed login once.
//
// It needs Redis 6.2 or later (GETDEL), as a single server, behind Redis
// Sentinel, or as a Redis Cluster. Every key it writes has a time to live
// (but those of LoadOrCreate and of its [KeyStore], a few shared secrets
// and key sets), and it never lists keys (no KEYS or SCAN): a key's value
// and lifetime are all it reads.
//
// Key layout, under Options.KeyPrefix ("authgate:" by default):
//
//	authgate:<key>                  a Store entry (code/..., revoked/..., ...)
//	authgate:{throttle}:<key>       a throttle count: a hash of f (failures),
//	                                l (last failure) and u (no attempt
//	                                before), times in Unix microseconds
//	authgate:lock:<name>            a KeyStore lock: a random token, with a
//	                                time to live
//
// Store keys are letters, digits, '-', '_' and '/', so they never meet the
// throttle's.
//
// In a Redis Cluster, a command or script may only touch keys of one hash
// slot. Every Store call is one command on one key, so store entries carry
// no hash tag and spread over the cluster's slots. The throttle's Reserve
// checks and counts a login's keys in one script: its client IP, its
// username, and the pair; and since every IP meets every username in some
// login, no tag narrower than one for all counts can keep each login's
// keys together. The "{throttle}" tag puts every count in one slot, hence
// on one master: counts are small and change only at logins, far fewer
// than the token requests that the store entries serve.
package redisstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/authgate/authgate/idp"
)

// Defaults of [Options]. The timeouts are short because a request waits on
// every call: a store that does not answer in a second is down as far as a
// login or a token request is concerned, and it is better to say so than
// to hold the client.
const (
	DefaultKeyPrefix    = "authgate:"
	DefaultDialTimeout  = 2 * time.Second
	DefaultReadTimeout  = time.Second
	DefaultWriteTimeout = time.Second
)

// Options says where the Redis server is and how to talk to it.
type Options struct {
	// Addrs are host:port addresses. One address is a single server;
	// several, with MasterName, are Sentinels; with Cluster, they are seed
	// nodes of a Redis Cluster.
	Addrs []string
	// MasterName is the name of the master that the Sentinels at Addrs
	// watch.
	MasterName string
	// Cluster says that Addrs are nodes of a Redis Cluster.
	Cluster bool

	// Username and Password authenticate with AUTH (an ACL user, or the
	// password alone for requirepass). With Sentinel they are the data
	// nodes' credentials.
	Username string
	Password string
	// SentinelUsername and SentinelPassword authenticate with the
	// Sentinels, for those that require it (their own requirepass or ACL
	// user); unused without MasterName.
	SentinelUsername string
	SentinelPassword string
	// DB is the database number; a Cluster has only 0.
	DB int
	// TLS, when not nil, is the configuration of TLS connections.
	TLS *tls.Config

	// KeyPrefix is put before every key. Default: [DefaultKeyPrefix].
	// In a Cluster, a prefix with a hash tag ("{...}") would put every
	// key in one slot.
	KeyPrefix string

	// Timeouts of one connection attempt and of one command's write and
	// read. Defaults: [DefaultDialTimeout], [DefaultReadTimeout],
	// [DefaultWriteTimeout].
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// PoolSize is the most connections kept per node. Default: go-redis's,
	// ten per CPU.
	PoolSize int
}

// Store is an [idp.Store] and an [idp.ThrottleStore] in Redis. It is safe
// for concurrent use.
type Store struct {
	client redis.UniversalClient
	prefix string
}

var (
	_ idp.Store         = (*Store)(nil)
	_ idp.ThrottleStore = (*Store)(nil)
	_ idp.Adder         = (*Store)(nil)
)

// New returns a store for the server that opts names. It does not connect:
// the pool dials on first use, so that a provider can start while Redis is
// down and work as soon as it is back.
func New(opts Options) (*Store, error) {
	switch {
	case len(opts.Addrs) == 0:
		return nil, errors.New("redisstore: no address")
	case opts.Cluster && opts.MasterName != "":
		return nil, errors.New("redisstore: a master name (Sentinel) and cluster are exclusive")
	case opts.Cluster && opts.DB != 0:
		return nil, errors.New("redisstore: a Redis Cluster has only database 0")
	case len(opts.Addrs) > 1 && !opts.Cluster && opts.MasterName == "":
		return nil, errors.New("redisstore: several addresses need a master name (Sentinel) or cluster")
	case opts.DB < 0:
		return nil, errors.New("redisstore: negative database number")
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = DefaultKeyPrefix
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:         opts.Addrs,
		MasterName:    opts.MasterName,
		IsClusterMode: opts.Cluster,
		Username:      opts.Username,
		Password:      opts.Password,
		// A Sentinel's own credentials.
		SentinelUsername: opts.SentinelUsername,
		SentinelPassword: opts.SentinelPassword,
		DB:               opts.DB,
		TLSConfig:        opts.TLS,
		DialTimeout:      opts.DialTimeout,
		ReadTimeout:      opts.ReadTimeout,
		WriteTimeout:     opts.WriteTimeout,
		PoolSize:         opts.PoolSize,
		// A call must fail within its timeouts, not a multiple of them:
		// no retry of a command (one that timed out may have run, and
		// running Take or Reserve twice is wrong anyway), one dial per
		// attempt, and no longer wait for a free connection than for an
		// answer.
		MaxRetries:    -1,
		DialerRetries: 1,
		PoolTimeout:   opts.ReadTimeout,
		// The request's deadline bounds the call too.
		ContextTimeoutEnabled: true,
		// No CLIENT SETINFO and no CLIENT MAINT_NOTIFICATIONS: commands
		// that older servers refuse, and that this store has no use for.
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	return &Store{client: client, prefix: opts.KeyPrefix}, nil
}

// Close closes the connection pool.
func (s *Store) Close() error {
	if err := s.client.Close(); err != nil {
		return fmt.Errorf("redisstore: close: %w", err)
	}
	return nil
}

// Ping checks that the server answers and lets this store do what it
// needs: GETDEL, which Redis has since 6.2 (of an absent key, so nothing
// changes), and scripts, which it loads, so that the throttle's first
// calls need not send them. A provider calls it when it starts, to report
// a server that is too old or an ACL user without these commands at once
// rather than at the first login.
func (s *Store) Ping(ctx context.Context) error {
	// ':' is in no Store key, so this key is no entry's.
	if err := s.client.GetDel(ctx, s.prefix+":ping").Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redisstore: GETDEL (Redis 6.2 or later): %w", err)
	}
	for _, sc := range []*redis.Script{reserveScript, releaseScript} {
		if err := sc.Load(ctx, s.client).Err(); err != nil {
			return fmt.Errorf("redisstore: loading a script: %w", err)
		}
	}
	return nil
}

// Put implements [idp.Store]. The entry expires in the server after ttl,
// to the millisecond.
func (s *Store) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		// SET with PX 0 is an error in Redis; an entry that is already
		// expired is one that is not there.
		return s.Delete(ctx, key)
	}
	if err := s.client.Set(ctx, s.prefix+key, value, max(ttl, time.Millisecond)).Err(); err != nil {
		return fmt.Errorf("redisstore: put: %w", err)
	}
	return nil
}

// Add implements [idp.Adder] with SET NX: one command, so of several
// concurrent Adds of a key the server lets exactly one store it.
func (s *Store) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ok, err := s.client.SetNX(ctx, s.prefix+key, value, max(ttl, time.Millisecond)).Result()
	if err != nil {
		return false, fmt.Errorf("redisstore: add: %w", err)
	}
	return ok, nil
}

// Get implements [idp.Store].
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := s.client.Get(ctx, s.prefix+key).Bytes()
	return v, s.readErr("get", err)
}

// Take implements [idp.Store] with GETDEL: one command, so the server
// gives the value to exactly one of several concurrent Takes.
func (s *Store) Take(ctx context.Context, key string) ([]byte, error) {
	v, err := s.client.GetDel(ctx, s.prefix+key).Bytes()
	return v, s.readErr("take", err)
}

// Delete implements [idp.Store].
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.client.Del(ctx, s.prefix+key).Err(); err != nil {
		return fmt.Errorf("redisstore: delete: %w", err)
	}
	return nil
}

// readErr is the error of a read: ErrNotFound for a missing key, the
// failure otherwise. Neither key nor value is in it: a key holds a code or
// a token's digest.
func (s *Store) readErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redis.Nil):
		return idp.ErrNotFound
	}
	return fmt.Errorf("redisstore: %s: %w", op, err)
}

// LoadOrCreate returns the value under key, storing the one that create
// makes first when there is none: of several processes that call it at
// once, exactly one value wins (SET NX) and all of them return it. It is
// for a secret that every node must share and none may replace, such as
// the gateway's session key, and the one kind of key this store writes
// without a time to live: losing it ends every session sealed with it.
func (s *Store) LoadOrCreate(ctx context.Context, key string, create func() ([]byte, error)) ([]byte, error) {
	v, err := s.client.Get(ctx, s.prefix+key).Bytes()
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redisstore: load: %w", err)
	}
	nv, err := create()
	if err != nil {
		return nil, err
	}
	if err := s.client.SetNX(ctx, s.prefix+key, nv, 0).Err(); err != nil {
		return nil, fmt.Errorf("redisstore: create: %w", err)
	}
	// Whether this call or another won, the stored value is the one.
	v, err = s.client.Get(ctx, s.prefix+key).Bytes()
	if err != nil {
		return nil, fmt.Errorf("redisstore: load: %w", err)
	}
	return v, nil
}
