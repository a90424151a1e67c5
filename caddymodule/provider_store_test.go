package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/logging" // the file log writer of newLoggedContext
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/internal/caddytest"
	"github.com/authgate/authgate/internal/redistest"
)

// closedAddr returns a 127.0.0.1 address on which nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", caddytest.FreePort(t))
}

// passwordGrant posts a password grant for alice through p.
func passwordGrant(t *testing.T, p *Provider) *http.Response {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wrong"}, "scope": {"openid"}}
	req := httptest.NewRequest(http.MethodPost, p.Issuer+"/connect/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("app", "s3cret-value")
	w := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	if err := p.ServeHTTP(w, req, next); err != nil {
		t.Fatal(err)
	}
	return w.Result()
}

func redisProvider(addr string) *Provider {
	p := testProvider("https://login.example.com")
	p.Clients[0].PasswordGrant = true
	p.Store = &StateStore{Redis: &RedisStore{Addresses: []string{addr}, KeyPrefix: "test:"}}
	return p
}

// TestProvisionRedisStoreSharedAndUsed: providers with one Redis
// configuration share one client, released by the last Cleanup, and the
// provider keeps its throttle counts there.
func TestProvisionRedisStoreSharedAndUsed(t *testing.T) {
	srv := redistest.Start(t)
	ctx := newTestContext(t, t.TempDir())
	a, b := redisProvider(srv.Addr), redisProvider(srv.Addr)
	provision(t, ctx, a)
	provision(t, ctx, b)
	if a.state.poolKey == "" || a.state.poolKey != b.state.poolKey {
		t.Fatalf("redis keys %q and %q, want one shared", a.state.poolKey, b.state.poolKey)
	}
	if strings.Contains(a.state.poolKey, srv.Addr) {
		t.Fatalf("pool key %q is not a digest", a.state.poolKey)
	}
	if refs, _ := redisPool.References(a.state.poolKey); refs != 2 {
		t.Fatalf("redis client has %d references, want 2", refs)
	}

	if resp := passwordGrant(t, a); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("wrong password: status %d, want 400", resp.StatusCode)
	}
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	keys, err := rc.Keys(context.Background(), "test:{throttle}:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatal("no throttle count in Redis after a failed login")
	}

	key := a.state.poolKey
	a.Cleanup()
	b.Cleanup()
	if _, ok := redisPool.References(key); ok {
		t.Fatal("redis client still pooled after every cleanup")
	}
}

// TestProvisionRedisStoreDown: provisioning needs no Redis, and a request
// that needs it gets 503 temporarily_unavailable within the timeouts.
func TestProvisionRedisStoreDown(t *testing.T) {
	p := redisProvider(closedAddr(t))
	p.Store.Redis.DialTimeout = caddy.Duration(200 * time.Millisecond)
	provision(t, newTestContext(t, t.TempDir()), p)
	resp := passwordGrant(t, p)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
}

// TestLazyRedisCanceledIsNoOutage: a call whose context the caller
// cancelled (a client that hung up, a `caddy validate` that ended) fails,
// but says nothing about Redis: no "unavailable" in the log, and no
// "available again" after it.
func TestLazyRedisCanceledIsNoOutage(t *testing.T) {
	srv := redistest.Start(t)
	core, logs := observer.New(zap.InfoLevel)
	l, key, err := loadRedis(&RedisStore{Addresses: []string{srv.Addr}, KeyPrefix: "canceled:"}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { redisPool.Delete(key) })
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	if _, err := l.Get(canceled, "k"); err == nil {
		t.Fatal("Get with a cancelled context before the first check succeeded")
	}
	if _, err := l.Get(context.Background(), "k"); !errors.Is(err, idp.ErrNotFound) {
		t.Fatalf("Get = %v, want idp.ErrNotFound", err)
	}
	if _, err := l.Get(canceled, "k"); err == nil {
		t.Fatal("Get with a cancelled context succeeded")
	}
	if _, err := l.Get(context.Background(), "k"); !errors.Is(err, idp.ErrNotFound) {
		t.Fatalf("Get = %v, want idp.ErrNotFound", err)
	}
	for _, e := range logs.All() {
		if e.Message != "connected to redis" {
			t.Errorf("logged %s %q %v; want only the connection", e.Level, e.Message, e.ContextMap())
		}
	}
}

// TestProvisionRedisSentinelAuth: a provider reaches its master through
// Sentinels that require a user and password of their own, given by
// sentinel_username and sentinel_password (placeholders replaced); with a
// wrong Sentinel password, requests get 503, and nothing logged or
// returned holds it.
func TestProvisionRedisSentinelAuth(t *testing.T) {
	master := redistest.Start(t, "--requirepass", "data-pw")
	sentinel := redistest.StartSentinel(t, master, "authgate-master",
		"sentinel auth-pass authgate-master data-pw",
		"user default off",
		"user watcher on >sentinel-pw allchannels +@all")
	t.Setenv("AUTHGATE_TEST_SENTINEL_PW", "sentinel-pw")
	t.Setenv("AUTHGATE_TEST_WRONG_SENTINEL_PW", "wrong-sentinel-pw")
	tests := []struct {
		name, password string
		want           int
	}{
		{"right", "{env.AUTHGATE_TEST_SENTINEL_PW}", http.StatusBadRequest}, // alice's wrong password, counted in Redis
		{"wrong", "{env.AUTHGATE_TEST_WRONG_SENTINEL_PW}", http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := redisProvider(sentinel.Addr)
			p.Store.Redis.MasterName = "authgate-master"
			p.Store.Redis.Password = "data-pw"
			p.Store.Redis.SentinelUsername = "watcher"
			p.Store.Redis.SentinelPassword = tt.password
			p.Store.Redis.DialTimeout = caddy.Duration(500 * time.Millisecond)
			logFile := filepath.Join(t.TempDir(), "caddy.log")
			provision(t, newLoggedContext(t, t.TempDir(), logFile), p)
			if resp := passwordGrant(t, p); resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			logs, err := os.ReadFile(logFile)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == http.StatusServiceUnavailable && !strings.Contains(string(logs), "redis store unavailable") {
				t.Errorf("the log does not say that Redis is unavailable:\n%s", logs)
			}
			if strings.Contains(string(logs), "sentinel-pw") {
				t.Fatalf("the log holds the Sentinel password:\n%s", logs)
			}
		})
	}
}

// newLoggedContext is newTestContext with every log entry, of any level,
// written to logFile.
func newLoggedContext(t testing.TB, root, logFile string) caddy.Context {
	t.Helper()
	raw, err := json.Marshal(map[string]any{
		"storage": map[string]any{"module": "file_system", "root": root},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{
			"level":  "DEBUG",
			"writer": map[string]any{"output": "file", "filename": logFile},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	ctx, err := caddy.ProvisionContext(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ctx
}

func TestRedisStoreOptionsErrors(t *testing.T) {
	tests := []struct {
		name    string
		r       RedisStore
		wantErr string
	}{
		{"no address", RedisStore{Password: "hunter2"}, "store redis: address is required"},
		{"address from unset variable", RedisStore{Addresses: []string{"{env.AUTHGATE_TEST_UNSET}"}}, "store redis: address is required"},
		{"several without mode", RedisStore{Addresses: []string{"a:1", "b:1"}, Password: "hunter2"}, "master_name"},
		{"sentinel and cluster", RedisStore{Addresses: []string{"a:1"}, MasterName: "m", Cluster: true}, "exclusive"},
		{"cluster db", RedisStore{Addresses: []string{"a:1"}, Cluster: true, DB: 1}, "db must be 0"},
		{"sentinel password without master_name", RedisStore{Addresses: []string{"a:1"}, SentinelPassword: "hunter2"}, "sentinel_password need master_name"},
		{"negative timeout", RedisStore{Addresses: []string{"a:1"}, ReadTimeout: caddy.Duration(-time.Second)}, "read_timeout -1s is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testProvider("https://login.example.com")
			p.Store = &StateStore{Redis: &tt.r}
			err := p.Provision(newTestContext(t, t.TempDir()))
			if err == nil {
				p.Cleanup()
				t.Fatalf("Provision succeeded, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %q, want it to contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error %q reveals the password", err)
			}
			if err := p.Cleanup(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
