package idp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

// nthStore is a store that, once armed, fails its nth call, and each call
// after it too while stay is set: a store that has a hiccup, or that goes
// down, in the middle of a grant. It records what it was asked (operation
// and the key's kind, never the key), so that a test can count the calls
// of a grant and then fail each in turn.
type nthStore struct {
	idp.Store
	mu    sync.Mutex
	armed bool
	n     int  // the call to fail, from 1
	stay  bool // fail every call from the nth on
	calls []string
}

// arm starts counting calls from zero, failing the nth (none if n is 0).
func (s *nthStore) arm(n int, stay bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed, s.n, s.stay, s.calls = true, n, stay, nil
}

// disarm stops failing and returns the calls made since arm.
func (s *nthStore) disarm() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed = false
	return s.calls
}

func (s *nthStore) call(op, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.armed {
		return nil
	}
	kind, _, _ := strings.Cut(key, "/")
	s.calls = append(s.calls, op+" "+kind)
	if i := len(s.calls); s.n > 0 && (i == s.n || s.stay && i > s.n) {
		return errDown
	}
	return nil
}

func (s *nthStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := s.call("Put", key); err != nil {
		return err
	}
	return s.Store.Put(ctx, key, value, ttl)
}

func (s *nthStore) Get(ctx context.Context, key string) ([]byte, error) {
	if err := s.call("Get", key); err != nil {
		return nil, err
	}
	return s.Store.Get(ctx, key)
}

func (s *nthStore) Take(ctx context.Context, key string) ([]byte, error) {
	if err := s.call("Take", key); err != nil {
		return nil, err
	}
	return s.Store.Take(ctx, key)
}

func (s *nthStore) Delete(ctx context.Context, key string) error {
	if err := s.call("Delete", key); err != nil {
		return err
	}
	return s.Store.Delete(ctx, key)
}

// newNthServer is newServer on an nthStore, demo-app allowed
// offline_access with grace for a rotated-out refresh token as given.
func newNthServer(t *testing.T, grace time.Duration) (*testServer, *nthStore) {
	t.Helper()
	ts := &testServer{clock: &clock{now: time.Now()}}
	var h http.Handler
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(ts.Close)
	cfg := testConfig(t)
	cfg.Issuer = ts.URL
	cfg.Now = ts.clock.Now
	cfg.Clients[0].AllowOfflineAccess = true
	cfg.Clients[0].AbsoluteRefreshTokenLifetime = time.Hour
	cfg.Clients[0].RefreshTokenReuseGrace = grace
	ts.Store = idp.NewMemoryStore(ts.clock.Now)
	t.Cleanup(func() { ts.Store.Close() })
	ns := &nthStore{Store: ts.Store}
	p, err := idp.New(cfg, ns)
	if err != nil {
		t.Fatalf("idp.New: %v", err)
	}
	ts.Provider = p
	h = p
	return ts, ns
}

// callsOf counts the store calls of do, run with nothing failing.
func callsOf(t *testing.T, ns *nthStore, do func()) []string {
	t.Helper()
	ns.arm(0, false)
	do()
	calls := ns.disarm()
	if len(calls) == 0 {
		t.Fatal("no store call")
	}
	return calls
}

// wantStatus checks a token endpoint answer's status and error code.
func wantStatus(t *testing.T, what string, status int, body string, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus || wantCode != "" && !strings.Contains(body, `"error":"`+wantCode+`"`) {
		t.Fatalf("%s: %d %.120s; want %d %s", what, status, body, wantStatus, wantCode)
	}
}

// TestRefreshRotationStoreFails: whichever call of a refresh rotation the
// store fails, the client gets 503 temporarily_unavailable, and the same
// refresh token works once the store is back: a token taken before the
// failure is put back, and no record of its use is left that would make
// its retry look like a replay.
func TestRefreshRotationStoreFails(t *testing.T) {
	for _, grace := range []time.Duration{0, time.Minute} {
		t.Run(fmt.Sprintf("grace %s", grace), func(t *testing.T) {
			ts, ns := newNthServer(t, grace)
			rt := offlineTokens(t, ts).RefreshToken
			calls := callsOf(t, ns, func() {
				st, _, body := refreshWith(t, ts, "demo-app", testSecret, rt, "")
				wantStatus(t, "refresh", st, body, http.StatusOK, "")
			})
			for n := 1; n <= len(calls); n++ {
				t.Run(calls[n-1], func(t *testing.T) {
					rt := offlineTokens(t, ts).RefreshToken
					ns.arm(n, false)
					st, _, body := refreshWith(t, ts, "demo-app", testSecret, rt, "")
					ns.disarm()
					checkUnavailableBody(t, st, body)
					st, next, body := refreshWith(t, ts, "demo-app", testSecret, rt, "")
					wantStatus(t, "the same token after the failure", st, body, http.StatusOK, "")
					st, _, body = refreshWith(t, ts, "demo-app", testSecret, next.RefreshToken, "")
					wantStatus(t, "its successor", st, body, http.StatusOK, "")
				})
			}
		})
	}
}

// TestRefreshReplayStoreFails: a rotated-out refresh token presented again
// while the store fails a call gets 503, never invalid_grant: the replay
// check did not happen, and a client within the grace period must not drop
// a good token. Once the store is back, the same request gets what it
// would have: the successor within the grace period, else invalid_grant
// with the family revoked.
func TestRefreshReplayStoreFails(t *testing.T) {
	for _, grace := range []time.Duration{0, time.Minute} {
		t.Run(fmt.Sprintf("grace %s", grace), func(t *testing.T) {
			ts, ns := newNthServer(t, grace)
			rotate := func() (old, next string) {
				t.Helper()
				old = offlineTokens(t, ts).RefreshToken
				st, tk, body := refreshWith(t, ts, "demo-app", testSecret, old, "")
				wantStatus(t, "rotation", st, body, http.StatusOK, "")
				return old, tk.RefreshToken
			}
			old, _ := rotate()
			calls := callsOf(t, ns, func() { refreshWith(t, ts, "demo-app", testSecret, old, "") })
			for n := 1; n <= len(calls); n++ {
				t.Run(calls[n-1], func(t *testing.T) {
					old, next := rotate()
					ns.arm(n, false)
					st, _, body := refreshWith(t, ts, "demo-app", testSecret, old, "")
					ns.disarm()
					checkUnavailableBody(t, st, body)
					st, tk, body := refreshWith(t, ts, "demo-app", testSecret, old, "")
					if grace > 0 {
						if st != http.StatusOK || tk.RefreshToken != next {
							t.Fatalf("within the grace period, after the failure: %d %s; want the successor", st, body)
						}
						return
					}
					wantStatus(t, "the replay after the failure", st, body, http.StatusBadRequest, "invalid_grant")
					st, _, body = refreshWith(t, ts, "demo-app", testSecret, next, "")
					wantStatus(t, "the successor after the replay", st, body, http.StatusBadRequest, "invalid_grant")
				})
			}
		})
	}
}

// TestCodeReplayStoreFails: a code presented again while the store fails
// the replay check, or the revocation of what the code issued, gets 503,
// not invalid_grant; the same request once the store is back gets
// invalid_grant and revokes the tokens.
func TestCodeReplayStoreFails(t *testing.T) {
	ts, ns := newNthServer(t, 0)
	redeem := func() (code, verifier string, tk tokens) {
		t.Helper()
		v, ch := pkce("v")
		q := authorizeParams(ch)
		q.Set("scope", "openid profile offline_access")
		u := login(t, ts, browser(t), q, "alice", testPassword)
		code = u.Query().Get("code")
		resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(code, v))
		wantStatus(t, "exchange", resp.StatusCode, body, http.StatusOK, "")
		json.Unmarshal([]byte(body), &tk)
		return code, v, tk
	}
	code, verifier, _ := redeem()
	calls := callsOf(t, ns, func() { postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier)) })
	for n := 1; n <= len(calls); n++ {
		t.Run(calls[n-1], func(t *testing.T) {
			code, verifier, tk := redeem()
			ns.arm(n, false)
			resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier))
			ns.disarm()
			checkUnavailable(t, resp, body)
			resp, body = postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier))
			wantStatus(t, "the replay after the failure", resp.StatusCode, body, http.StatusBadRequest, "invalid_grant")
			if st, _ := userinfo(t, ts, tk.AccessToken); st != http.StatusUnauthorized {
				t.Errorf("userinfo with the code's access token after the replay: %d, want 401", st)
			}
			st, _, body := refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, "")
			wantStatus(t, "the code's refresh token after the replay", st, body, http.StatusBadRequest, "invalid_grant")
		})
	}
}

// checkUnavailableBody is checkUnavailable for a status and body.
func checkUnavailableBody(t *testing.T, status int, body string) {
	t.Helper()
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `"error":"temporarily_unavailable"`) {
		t.Fatalf("status %d %.120s, want 503 temporarily_unavailable", status, body)
	}
}

// TestRevocationStoreFails: revoking a refresh token while the store fails
// the look-up or the revocation gets 503 (RFC 7009 §2.2.1), not the 200
// that says it is revoked; the same request once the store is back
// revokes the family.
func TestRevocationStoreFails(t *testing.T) {
	ts, ns := newNthServer(t, 0)
	revoke := func(rt string) (int, string) {
		t.Helper()
		resp, err := http.PostForm(ts.URL+"/connect/revocation", url.Values{
			"token": {rt}, "client_id": {"demo-app"}, "client_secret": {testSecret},
		})
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, readBody(t, resp)
	}
	rt := offlineTokens(t, ts).RefreshToken
	calls := callsOf(t, ns, func() { revoke(rt) })
	for n := 1; n <= len(calls); n++ {
		t.Run(calls[n-1], func(t *testing.T) {
			tk := offlineTokens(t, ts)
			ns.arm(n, false)
			st, body := revoke(tk.RefreshToken)
			ns.disarm()
			if calls[n-1] == "Delete rt" {
				// The family is revoked by then, which refuses the token.
				wantStatus(t, "revocation whose tidying failed", st, body, http.StatusOK, "")
			} else {
				checkUnavailableBody(t, st, body)
			}
			if st, body := revoke(tk.RefreshToken); st != http.StatusOK {
				t.Fatalf("revocation after the failure: %d %s", st, body)
			}
			st, _, body = refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, "")
			wantStatus(t, "the revoked token", st, body, http.StatusBadRequest, "invalid_grant")
		})
	}
}

// TestCodeExchangeStoreFails: whichever call of a code exchange the store
// fails, the client gets 503 temporarily_unavailable and the same code
// works once the store is back: a code taken before the failure is put
// back, so an outage does not cost the user a login. The tokens of the
// retry work; nothing of the failed attempt revokes them.
func TestCodeExchangeStoreFails(t *testing.T) {
	ts, ns := newNthServer(t, 0)
	newCode := func() (code, verifier string) {
		t.Helper()
		v, ch := pkce("v")
		q := authorizeParams(ch)
		q.Set("scope", "openid profile offline_access")
		u := login(t, ts, browser(t), q, "alice", testPassword)
		return u.Query().Get("code"), v
	}
	code, verifier := newCode()
	calls := callsOf(t, ns, func() { postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier)) })
	for n := 1; n <= len(calls); n++ {
		t.Run(calls[n-1], func(t *testing.T) {
			code, verifier := newCode()
			ns.arm(n, false)
			resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier))
			ns.disarm()
			if strings.HasSuffix(calls[n-1], " user") {
				// The user index (the admin API's) is written after the
				// tokens, best effort: its failure is logged, and costs
				// the operator the sight of this family, not the user a
				// login.
				wantStatus(t, "exchange whose user index failed", resp.StatusCode, body, http.StatusOK, "")
				return
			}
			checkUnavailable(t, resp, body)
			resp, body = postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier))
			wantStatus(t, "the same code after the failure", resp.StatusCode, body, http.StatusOK, "")
			var tk tokens
			json.Unmarshal([]byte(body), &tk)
			if st, _ := userinfo(t, ts, tk.AccessToken); st != http.StatusOK {
				t.Errorf("userinfo with the retry's access token: %d, want 200", st)
			}
			st, _, body := refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, "")
			wantStatus(t, "the retry's refresh token", st, body, http.StatusOK, "")
			resp, body = postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier))
			wantStatus(t, "the code a third time", resp.StatusCode, body, http.StatusBadRequest, "invalid_grant")
		})
	}
}
