package idp_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

// errDown is what a store that does not answer returns.
var errDown = errors.New("store down")

// flakyStore is a store, and a throttle store, that fail while down is
// set, as a Redis server that is stopped or too slow.
type flakyStore struct {
	idp.Store
	throttle idp.ThrottleStore
	down     atomic.Bool
}

func (s *flakyStore) err() error {
	if s.down.Load() {
		return errDown
	}
	return nil
}

func (s *flakyStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := s.err(); err != nil {
		return err
	}
	return s.Store.Put(ctx, key, value, ttl)
}

func (s *flakyStore) Get(ctx context.Context, key string) ([]byte, error) {
	if err := s.err(); err != nil {
		return nil, err
	}
	return s.Store.Get(ctx, key)
}

func (s *flakyStore) Take(ctx context.Context, key string) ([]byte, error) {
	if err := s.err(); err != nil {
		return nil, err
	}
	return s.Store.Take(ctx, key)
}

func (s *flakyStore) Delete(ctx context.Context, key string) error {
	if err := s.err(); err != nil {
		return err
	}
	return s.Store.Delete(ctx, key)
}

func (s *flakyStore) Reserve(ctx context.Context, now time.Time, keys []idp.ThrottleKey) (time.Duration, error) {
	if err := s.err(); err != nil {
		return 0, err
	}
	return s.throttle.Reserve(ctx, now, keys)
}

func (s *flakyStore) Release(ctx context.Context, at time.Time, keys []idp.ThrottleKey) error {
	if err := s.err(); err != nil {
		return err
	}
	return s.throttle.Release(ctx, at, keys)
}

func (s *flakyStore) Forget(ctx context.Context, keys []string) error {
	if err := s.err(); err != nil {
		return err
	}
	return s.throttle.Forget(ctx, keys)
}

// newFlakyServer is newServer on a flakyStore, also the throttle's store.
func newFlakyServer(t *testing.T, edit func(*idp.Config)) (*testServer, *flakyStore) {
	t.Helper()
	ts := &testServer{clock: &clock{now: time.Now()}}
	var h http.Handler
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(ts.Close)
	cfg := testConfig(t)
	cfg.Issuer = ts.URL
	cfg.Now = ts.clock.Now
	if edit != nil {
		edit(&cfg)
	}
	ts.Store = idp.NewMemoryStore(ts.clock.Now)
	t.Cleanup(func() { ts.Store.Close() })
	fs := &flakyStore{Store: ts.Store, throttle: idp.NewMemoryThrottle()}
	cfg.ThrottleStore = fs
	p, err := idp.New(cfg, fs)
	if err != nil {
		t.Fatalf("idp.New: %v", err)
	}
	ts.Provider = p
	h = p
	return ts, fs
}

// checkUnavailable checks a token endpoint answer to a request that the
// store failed: 503, temporarily_unavailable, Retry-After.
func checkUnavailable(t *testing.T, resp *http.Response, body string) {
	t.Helper()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"error":"temporarily_unavailable"`) {
		t.Fatalf("status %d %s, want 503 temporarily_unavailable", resp.StatusCode, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
}

// TestStoreDownTokenEndpoint: every grant that needs the store answers 503
// temporarily_unavailable while it is down, and works once it is back.
func TestStoreDownTokenEndpoint(t *testing.T) {
	ts, fs := newFlakyServer(t, func(c *idp.Config) {
		c.Clients[0].AllowOfflineAccess = true
		c.Clients[0].AbsoluteRefreshTokenLifetime = time.Hour
		c.Clients[0].AllowPasswordGrant = true
	})

	t.Run("authorization_code", func(t *testing.T) {
		code, verifier := codeFor(t, ts)
		fs.down.Store(true)
		resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier))
		fs.down.Store(false)
		checkUnavailable(t, resp, body)
		code, verifier = codeFor(t, ts)
		if resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier)); resp.StatusCode != http.StatusOK {
			t.Fatalf("after recovery: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("refresh_token", func(t *testing.T) {
		tk := offlineTokens(t, ts)
		fs.down.Store(true)
		resp, body := postToken(t, ts, "demo-app", testSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.RefreshToken}})
		fs.down.Store(false)
		checkUnavailable(t, resp, body)
		// The token was not taken: it still works.
		if status, _, body := refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, ""); status != http.StatusOK {
			t.Fatalf("after recovery: %d %s", status, body)
		}
	})

	t.Run("password", func(t *testing.T) {
		form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {testPassword}, "scope": {"openid"}}
		fs.down.Store(true)
		resp, body := postToken(t, ts, "demo-app", testSecret, form)
		fs.down.Store(false)
		checkUnavailable(t, resp, body)
		if resp, body := postToken(t, ts, "demo-app", testSecret, form); resp.StatusCode != http.StatusOK {
			t.Fatalf("after recovery: %d %s", resp.StatusCode, body)
		}
	})
}

// TestStoreDownLoginPage: the login page says to try again shortly, with
// 503, while the store is down.
func TestStoreDownLoginPage(t *testing.T) {
	ts, fs := newFlakyServer(t, nil)
	c := browser(t)
	_, challenge := pkce("v")
	resp, err := c.Get(ts.URL + "/connect/authorize?" + authorizeParams(challenge).Encode())
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	loc := resp.Header.Get("Location")
	form := loginForm(t, c, ts.URL, loc)
	form.Set("username", "alice")
	form.Set("password", testPassword)
	fs.down.Store(true)
	resp, err = c.PostForm(ts.URL+"/account/login", form)
	fs.down.Store(false)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "Try again shortly") {
		t.Fatalf("login with the store down: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
}
