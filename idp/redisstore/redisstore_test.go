package redisstore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/idp/storetest"
	"github.com/authgate/authgate/idp/throttletest"
	"github.com/authgate/authgate/internal/redistest"
)

// TestMain quiets go-redis's own log of failed dials, which the tests of
// failures provoke by design; their errors are checked where they return.
func TestMain(m *testing.M) {
	redis.SetLogger(quiet{})
	os.Exit(m.Run())
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// prefixes makes each store of a test run its own key space on a shared
// server, so that no test sees another's keys.
var prefixes atomic.Int64

// newStore returns a store for addr under a fresh prefix, with opts's
// other fields, closed at the test's end.
func newStore(t testing.TB, addr string, opts Options) *Store {
	t.Helper()
	opts.Addrs = []string{addr}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = fmt.Sprintf("test%d:", prefixes.Add(1))
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// agingStore is a Store whose entries the test clock makes older: the
// server expires keys by its own clock, which a test cannot set, so each
// step of the clock takes as much off the time to live of every key put
// through it. The server still decides what has expired.
type agingStore struct {
	*Store
	t    *testing.T
	mu   sync.Mutex
	keys map[string]bool
}

func (a *agingStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	a.mu.Lock()
	a.keys[a.prefix+key] = true
	a.mu.Unlock()
	return a.Store.Put(ctx, key, value, ttl)
}

func (a *agingStore) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	a.mu.Lock()
	a.keys[a.prefix+key] = true
	a.mu.Unlock()
	return a.Store.Add(ctx, key, value, ttl)
}

func (a *agingStore) age(d time.Duration) {
	ctx := context.Background()
	a.mu.Lock()
	defer a.mu.Unlock()
	for k := range a.keys {
		ttl, err := a.client.PTTL(ctx, k).Result()
		switch {
		case err != nil:
			a.t.Errorf("PTTL: %v", err)
		case ttl < 0: // gone
			delete(a.keys, k)
		case ttl <= d:
			a.client.Del(ctx, k)
		default:
			a.client.PExpire(ctx, k, ttl-d)
		}
	}
}

// TestStore runs the store conformance suite against a real redis-server.
func TestStore(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Run(t, func(t *testing.T, c *storetest.Clock) idp.Store {
		a := &agingStore{Store: newStore(t, srv.Addr, Options{}), t: t, keys: map[string]bool{}}
		c.OnAdvance(a.age)
		return a
	})
}

// TestThrottle runs the throttle's behaviour table, the memory throttle's,
// against a real redis-server.
func TestThrottle(t *testing.T) {
	srv := redistest.Start(t)
	throttletest.Run(t, func(t *testing.T) idp.ThrottleStore { return newStore(t, srv.Addr, Options{}) })
}

// TestThrottleAcrossClients reserves in parallel through two clients of
// one server, as two processes would: the counts are exact.
func TestThrottleAcrossClients(t *testing.T) {
	srv := redistest.Start(t)
	a := newStore(t, srv.Addr, Options{KeyPrefix: "shared:", PoolSize: 4})
	b := newStore(t, srv.Addr, Options{KeyPrefix: "shared:", PoolSize: 4})
	throttletest.Atomic(t, a, b)
	throttletest.Claim(t, a, b)
}

// TestKeysHaveTTL: every key written has a time to live, under the prefix,
// and the throttle's lives as long as it can delay anyone or hold an
// unforgiven failure.
func TestKeysHaveTTL(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv.Addr, Options{KeyPrefix: "ttl:"})
	ctx := context.Background()
	if err := s.Put(ctx, "code/a", []byte("v"), 90*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "code/b", []byte("v"), 60500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	l := idp.ThrottleLimit{Free: 1, Base: time.Hour, Max: 2 * time.Hour}
	now := time.Now()
	keys := []idp.ThrottleKey{{Key: "user-ip:192.0.2.1 x", Limit: l}, {Key: "ip:192.0.2.1", Limit: idp.DefaultThrottleIP}}
	for range 3 {
		if _, err := s.Reserve(ctx, now, keys); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Release(ctx, now, keys); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key      string
		min, max time.Duration
	}{
		{"ttl:code/a", 89 * time.Second, 90 * time.Second},
		{"ttl:code/b", 30 * time.Second, 60500 * time.Millisecond}, // milliseconds kept (PX), whatever the load
		// 2 failures (the third attempt was held back), the second
		// waits an hour: 2 Max to forgive them. The release keeps it.
		{"ttl:{throttle}:user-ip:192.0.2.1 x", 4*time.Hour - time.Minute, 4 * time.Hour},
		// The same 2 failures, within Free: 2 Max.
		{"ttl:{throttle}:ip:192.0.2.1", 2*time.Minute - 10*time.Second, 2 * time.Minute},
	}
	for _, tt := range tests {
		ttl, err := s.client.PTTL(ctx, tt.key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl < tt.min || ttl > tt.max {
			t.Errorf("%s: time to live %s, want %s to %s", tt.key, ttl, tt.min, tt.max)
		}
	}
}

// TestKeyPrefix: stores with different prefixes share nothing.
func TestKeyPrefix(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newStore(t, srv.Addr, Options{KeyPrefix: "a:"})
	b := newStore(t, srv.Addr, Options{KeyPrefix: "b:"})
	if err := a.Put(ctx, "code/x", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "code/x"); !errors.Is(err, idp.ErrNotFound) {
		t.Errorf("other prefix: Get error = %v, want ErrNotFound", err)
	}
	if n, err := a.client.Exists(ctx, "a:code/x").Result(); err != nil || n != 1 {
		t.Errorf("EXISTS a:code/x = %d, %v; want 1", n, err)
	}
	def, err := New(Options{Addrs: []string{srv.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	if def.prefix != DefaultKeyPrefix {
		t.Errorf("default prefix %q, want %q", def.prefix, DefaultKeyPrefix)
	}
}

// TestErrorsHideKeys: a failure names the store and the operation, never
// the key (it holds a code or a token's digest) or a value.
func TestErrorsHideKeys(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	s := newStore(t, srv.Addr, Options{})
	const key = "code/SECRET-CODE"
	if err := s.client.HSet(ctx, s.prefix+key, "f", "SECRET-VALUE").Err(); err != nil {
		t.Fatal(err)
	}
	_, getErr := s.Get(ctx, key)
	_, takeErr := s.Take(ctx, key)
	for _, err := range []error{getErr, takeErr} {
		if err == nil || errors.Is(err, idp.ErrNotFound) {
			t.Fatalf("read of a hash: error %v, want a failure", err)
		}
		if !strings.HasPrefix(err.Error(), "redisstore: ") || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("error %q: want it to start with redisstore: and hold no key or value", err)
		}
	}
}

// TestAuth: a server with an ACL user and a password; wrong credentials
// fail every call, right ones work.
func TestAuth(t *testing.T) {
	srv := redistest.Start(t, "--user", "default", "off", "--user", "authgate", "on", ">s3cret", "~*", "+@all")
	ctx := context.Background()
	good := newStore(t, srv.Addr, Options{Username: "authgate", Password: "s3cret"})
	if err := good.Put(ctx, "code/a", []byte("v"), time.Minute); err != nil {
		t.Fatalf("Put with the right password: %v", err)
	}
	bad := newStore(t, srv.Addr, Options{Username: "authgate", Password: "wrong"})
	if _, err := bad.Get(ctx, "code/a"); err == nil || errors.Is(err, idp.ErrNotFound) {
		t.Fatalf("Get with a wrong password: error %v, want a failure", err)
	} else if strings.Contains(err.Error(), "wrong") {
		t.Errorf("error %q holds the password", err)
	}
}

// TestNewOptions: addresses and modes that make no sense are refused.
func TestNewOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"one address", Options{Addrs: []string{"127.0.0.1:6379"}}, true},
		{"sentinels", Options{Addrs: []string{"a:26379", "b:26379"}, MasterName: "mymaster"}, true},
		{"cluster", Options{Addrs: []string{"a:6379", "b:6379"}, Cluster: true}, true},
		{"no address", Options{}, false},
		{"several without a mode", Options{Addrs: []string{"a:6379", "b:6379"}}, false},
		{"sentinel and cluster", Options{Addrs: []string{"a:6379"}, MasterName: "m", Cluster: true}, false},
		{"cluster with a database", Options{Addrs: []string{"a:6379"}, Cluster: true, DB: 1}, false},
		{"negative database", Options{Addrs: []string{"a:6379"}, DB: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("New: error %v, want ok=%v", err, tt.ok)
			}
			if s != nil {
				s.Close()
			}
		})
	}
}

// every runs each call of the store once and returns their errors.
func every(s *Store, ctx context.Context) map[string]error {
	now := time.Now()
	keys := []idp.ThrottleKey{{Key: "ip:192.0.2.1", Limit: idp.DefaultThrottleIP}}
	errs := map[string]error{}
	errs["Ping"] = s.Ping(ctx)
	errs["Put"] = s.Put(ctx, "code/a", []byte("v"), time.Minute)
	_, errs["Get"] = s.Get(ctx, "code/a")
	_, errs["Take"] = s.Take(ctx, "code/a")
	errs["Delete"] = s.Delete(ctx, "code/a")
	_, errs["Reserve"] = s.Reserve(ctx, now, keys)
	errs["Release"] = s.Release(ctx, now, keys)
	errs["Forget"] = s.Forget(ctx, []string{"ip:192.0.2.1"})
	return errs
}

// failFast checks that every call fails by the store's own timeouts:
// under a caller's deadline far longer than them, no call may end by that
// deadline.
func failFast(t *testing.T, s *Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for op, err := range every(s, ctx) {
		switch {
		case err == nil || errors.Is(err, idp.ErrNotFound):
			t.Errorf("%s: error %v, want a failure", op, err)
		case errors.Is(err, context.DeadlineExceeded):
			t.Errorf("%s: ended by the caller's deadline, not the store's timeouts: %v", op, err)
		case !strings.HasPrefix(err.Error(), "redisstore: "):
			t.Errorf("%s: error %q, want it to start with redisstore: ", op, err)
		}
	}
}

// works checks that every call succeeds.
func works(t *testing.T, s *Store) {
	t.Helper()
	for op, err := range every(s, context.Background()) {
		if err != nil && !errors.Is(err, idp.ErrNotFound) {
			t.Errorf("%s: %v", op, err)
		}
	}
}

// TestNothingListens: a store pointed at a port nothing listens on fails
// every call at once, and works once a server is there.
func TestNothingListens(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv.Addr, Options{DialTimeout: 300 * time.Millisecond})
	srv.Kill()
	failFast(t, s)
	srv.Restart()
	works(t, s)
}

// TestServerHangs: a server that accepts connections and answers nothing
// (stopped with SIGSTOP) makes every call fail within the read timeout, or
// the caller's deadline if that is sooner, and never hang; once the server
// goes on, the store works again with no restart.
func TestServerHangs(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv.Addr, Options{ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	works(t, s)
	srv.Pause()
	t.Cleanup(srv.Resume) // a failed test must not leave it stopped for Kill
	t.Run("read timeout", func(t *testing.T) {
		failFast(t, s)
	})
	t.Run("caller's deadline", func(t *testing.T) {
		// With a read timeout of a minute, only the caller's deadline can
		// end the call before the watchdog does.
		slow := newStore(t, srv.Addr, Options{ReadTimeout: time.Minute, WriteTimeout: time.Minute})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := slow.Get(ctx, "code/a")
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Error("Get from a stopped server: no error")
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Get from a stopped server ignored the caller's deadline")
		}
	})
	srv.Resume()
	works(t, s)
}

// TestServerRestarts: after the server is killed and started again, the
// pool drops its dead connections and the next call works.
func TestServerRestarts(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv.Addr, Options{})
	works(t, s)
	srv.Restart()
	works(t, s)
}

// selfSigned returns a certificate for 127.0.0.1 and its key, in PEM, and
// a pool that trusts it.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redistest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), roots
}

// TestTLS: a server that speaks only TLS works with a TLS configuration
// that trusts its certificate, and refuses, fast, a client without TLS or
// one that does not trust it.
func TestTLS(t *testing.T) {
	certPEM, keyPEM, roots := selfSigned(t)
	srv := redistest.StartTLS(t, certPEM, keyPEM)
	works(t, newStore(t, srv.Addr, Options{TLS: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}))
	t.Run("untrusted certificate", func(t *testing.T) {
		failFast(t, newStore(t, srv.Addr, Options{TLS: &tls.Config{MinVersion: tls.VersionTLS12}}))
	})
	t.Run("no TLS", func(t *testing.T) {
		failFast(t, newStore(t, srv.Addr, Options{ReadTimeout: 200 * time.Millisecond}))
	})
}

// TestPing: Ping passes on a server and user that allow what the store
// does, and names what is missing otherwise: GETDEL (as on a server older
// than 6.2) or scripts.
func TestPing(t *testing.T) {
	srv := redistest.Start(t,
		"--user", "all", "on", ">pw", "~*", "+@all",
		"--user", "nogetdel", "on", ">pw", "~*", "+@all", "-getdel",
		"--user", "noscripts", "on", ">pw", "~*", "+@all", "-@scripting")
	tests := []struct {
		user, want string
	}{
		{"all", ""},
		{"nogetdel", "redisstore: GETDEL (Redis 6.2 or later): NOPERM"},
		{"noscripts", "redisstore: loading a script: NOPERM"},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			err := newStore(t, srv.Addr, Options{Username: tt.user, Password: "pw"}).Ping(context.Background())
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Ping: %v", err)
			case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
				t.Fatalf("Ping: error %v, want one starting with %q", err, tt.want)
			}
		})
	}
}

// TestSentinel: with a master name, Addrs are Sentinels, and the store
// works on the master they name.
func TestSentinel(t *testing.T) {
	master := redistest.Start(t)
	sentinel := redistest.StartSentinel(t, master, "authgate-master")
	s, err := New(Options{Addrs: []string{sentinel.Addr}, MasterName: "authgate-master", KeyPrefix: "sentinel:"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	works(t, s)
	ctx := context.Background()
	if err := s.Put(ctx, "code/a", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	direct := newStore(t, master.Addr, Options{KeyPrefix: "sentinel:"})
	if v, err := direct.Get(ctx, "code/a"); err != nil || string(v) != "v" {
		t.Errorf("on the master: Get = %q, %v; want v", v, err)
	}
}

// TestSentinelAuth: Sentinels that require a user and password of their
// own, in front of a master with another: the store works with both pairs
// of credentials, and fails, fast and without echoing it, with a wrong
// Sentinel password.
func TestSentinelAuth(t *testing.T) {
	master := redistest.Start(t, "--requirepass", "data-pw")
	sentinel := redistest.StartSentinel(t, master, "authgate-master",
		"sentinel auth-pass authgate-master data-pw",
		"user default off",
		"user watcher on >sentinel-pw allchannels +@all")
	tests := []struct {
		name     string
		user, pw string
		ok       bool
	}{
		{"right", "watcher", "sentinel-pw", true},
		{"wrong password", "watcher", "wrong-sentinel-pw", false},
		{"none", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Options{
				Addrs: []string{sentinel.Addr}, MasterName: "authgate-master", KeyPrefix: "sentinel-auth:",
				Password: "data-pw", SentinelUsername: tt.user, SentinelPassword: tt.pw,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if !tt.ok {
				failFast(t, s)
				for op, err := range every(s, context.Background()) {
					if tt.pw != "" && err != nil && strings.Contains(err.Error(), tt.pw) {
						t.Errorf("%s: error %q holds the Sentinel password", op, err)
					}
				}
				return
			}
			works(t, s)
			if err := s.Ping(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestLoadOrCreate: of many concurrent callers on two clients, exactly one
// value is stored and every caller gets it; later calls create nothing.
func TestLoadOrCreate(t *testing.T) {
	srv := redistest.Start(t)
	a := newStore(t, srv.Addr, Options{KeyPrefix: "lc:"})
	b := newStore(t, srv.Addr, Options{KeyPrefix: "lc:"})
	const n = 16
	var created atomic.Int64
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := s.LoadOrCreate(context.Background(), "gateway/session_key", func() ([]byte, error) {
				return fmt.Appendf(nil, "value-%d", created.Add(1)), nil
			})
			if err != nil {
				t.Error(err)
			}
			got[i] = string(v)
		}()
	}
	wg.Wait()
	for i, v := range got {
		if v == "" || v != got[0] {
			t.Fatalf("caller %d got %q, caller 0 %q", i, v, got[0])
		}
	}
	before := created.Load()
	if v, err := a.LoadOrCreate(context.Background(), "gateway/session_key", func() ([]byte, error) {
		created.Add(1)
		return []byte("other"), nil
	}); err != nil || string(v) != got[0] || created.Load() != before {
		t.Fatalf("second call: %q, %v, created %d more", v, err, created.Load()-before)
	}
}
