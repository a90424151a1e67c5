package idp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/idp/boltstore"
	"github.com/authgate/authgate/idp/redisstore"
	"github.com/authgate/authgate/internal/redistest"
)

type tokens struct {
	AccessToken  string `json:"access_token"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
}

func offlineServer(t *testing.T) *testServer {
	return newServer(t, func(c *idp.Config) {
		c.Clients[0].AllowOfflineAccess = true
		c.Clients[0].AbsoluteRefreshTokenLifetime = time.Hour
		c.Clients = append(c.Clients, idp.Client{ID: "other", Secret: "other-secret", RedirectURIs: []string{testRedirect}, AllowOfflineAccess: true})
	})
}

// offlineTokens logs alice in with offline_access and returns the tokens.
func offlineTokens(t *testing.T, ts *testServer) tokens {
	t.Helper()
	v, ch := pkce("v")
	q := authorizeParams(ch)
	q.Set("scope", "openid profile offline_access")
	u := login(t, ts, browser(t), q, "alice", testPassword)
	resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(u.Query().Get("code"), v))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("exchange: %d %s", resp.StatusCode, body)
	}
	var tk tokens
	json.Unmarshal([]byte(body), &tk)
	if tk.RefreshToken == "" {
		t.Fatalf("no refresh token with offline_access: %s", body)
	}
	return tk
}

func refreshWith(t *testing.T, ts *testServer, id, secret, rt, scope string) (int, tokens, string) {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
	if scope != "" {
		form.Set("scope", scope)
	}
	resp, body := postToken(t, ts, id, secret, form)
	var tk tokens
	json.Unmarshal([]byte(body), &tk)
	return resp.StatusCode, tk, body
}

func TestRefreshRotation(t *testing.T) {
	ts := offlineServer(t)
	first := offlineTokens(t, ts)
	st, second, body := refreshWith(t, ts, "demo-app", testSecret, first.RefreshToken, "")
	if st != http.StatusOK || second.RefreshToken == "" || second.RefreshToken == first.RefreshToken || second.IDToken == "" {
		t.Fatalf("refresh: %d %s; want new access, ID and refresh tokens", st, body)
	}
	if second.Scope != "openid profile offline_access" {
		t.Errorf("scope after refresh = %q", second.Scope)
	}
	// The rotated-out token presented again revokes the whole family.
	if st, _, body := refreshWith(t, ts, "demo-app", testSecret, first.RefreshToken, ""); st != http.StatusBadRequest || !strings.Contains(body, "invalid_grant") {
		t.Fatalf("reuse: %d %s; want invalid_grant", st, body)
	}
	if st, _, body := refreshWith(t, ts, "demo-app", testSecret, second.RefreshToken, ""); st != http.StatusBadRequest || !strings.Contains(body, "invalid_grant") {
		t.Fatalf("newest token after reuse: %d %s; want invalid_grant (family revoked)", st, body)
	}
}

func TestRefreshErrors(t *testing.T) {
	tests := []struct {
		name       string
		id, secret string
		scope      string
		rt         func(tokens) string
		before     func(ts *testServer)
		wantErr    string
		wantStatus int
	}{
		{name: "narrowing is allowed", id: "demo-app", secret: testSecret, scope: "openid", wantStatus: 200},
		{name: "widening", id: "demo-app", secret: testSecret, scope: "openid email", wantErr: "invalid_scope", wantStatus: 400},
		{name: "another client's token", id: "other", secret: "other-secret", wantErr: "invalid_grant", wantStatus: 400},
		{name: "unknown token", id: "demo-app", secret: testSecret, rt: func(tokens) string { return "nope" }, wantErr: "invalid_grant", wantStatus: 400},
		{name: "missing token", id: "demo-app", secret: testSecret, rt: func(tokens) string { return "" }, wantErr: "invalid_request", wantStatus: 400},
		{name: "expired family", id: "demo-app", secret: testSecret, before: func(ts *testServer) { ts.clock.Advance(time.Hour + time.Second) }, wantErr: "invalid_grant", wantStatus: 400},
		{name: "wrong secret", id: "demo-app", secret: "x", wantErr: "invalid_client", wantStatus: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := offlineServer(t)
			tk := offlineTokens(t, ts)
			rt := tk.RefreshToken
			if tt.rt != nil {
				rt = tt.rt(tk)
			}
			if tt.before != nil {
				tt.before(ts)
			}
			st, _, body := refreshWith(t, ts, tt.id, tt.secret, rt, tt.scope)
			if st != tt.wantStatus || !strings.Contains(body, tt.wantErr) {
				t.Fatalf("%d %s; want %d %s", st, body, tt.wantStatus, tt.wantErr)
			}
		})
	}
}

func TestNoRefreshTokenWithoutOfflineAccess(t *testing.T) {
	ts := newServer(t, nil)
	_, ch := pkce("v")
	q := authorizeParams(ch)
	q.Set("scope", "openid offline_access")
	resp := authorize(t, ts, browser(t), q)
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "error=invalid_scope") {
		t.Fatalf("offline_access for a client without it: redirected to %s, want invalid_scope", loc)
	}
}

func TestEndSession(t *testing.T) {
	ts := newServer(t, nil)
	c := browser(t)
	_, ch := pkce("v")
	v, _ := pkce("v")
	u := login(t, ts, c, authorizeParams(ch), "alice", testPassword)
	resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(u.Query().Get("code"), v))
	var tk tokens
	json.Unmarshal([]byte(body), &tk)
	if resp.StatusCode != 200 || tk.IDToken == "" {
		t.Fatalf("exchange: %d %s", resp.StatusCode, body)
	}

	// Unregistered post-logout URI: signed-out page, no redirect.
	q := url.Values{"id_token_hint": {tk.IDToken}, "post_logout_redirect_uri": {"https://evil.example/"}}
	resp, err := browser(t).Get(ts.URL + "/connect/endsession?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if b := readBody(t, resp); resp.StatusCode != 200 || resp.Header.Get("Location") != "" || !strings.Contains(b, "signed out") {
		t.Fatalf("unregistered URI: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// A forged hint is refused.
	q = url.Values{"id_token_hint": {tk.AccessToken}, "post_logout_redirect_uri": {"https://app.example/"}}
	resp, _ = browser(t).Get(ts.URL + "/connect/endsession?" + q.Encode())
	if readBody(t, resp); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("access token as hint: status %d, want 400", resp.StatusCode)
	}

	// The real thing: session ended, redirect with state.
	q = url.Values{"id_token_hint": {tk.IDToken}, "post_logout_redirect_uri": {"https://app.example/"}, "state": {"s1"}}
	resp, _ = c.Get(ts.URL + "/connect/endsession?" + q.Encode())
	readBody(t, resp)
	if loc := resp.Header.Get("Location"); loc != "https://app.example/?state=s1" {
		t.Fatalf("end session: redirected to %q", loc)
	}
	q = authorizeParams(ch)
	q.Set("prompt", "none")
	resp = authorize(t, ts, c, q)
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "error=login_required") {
		t.Fatalf("after end session: %s, want login_required", loc)
	}
}

// writeCounter counts the writes a store is asked for, a PutAll counting
// as one: what a store that syncs each write to disk, or sends it to a
// server, pays for.
type writeCounter struct {
	idp.Store
	mu     sync.Mutex
	writes []string
}

func (w *writeCounter) note(op string) {
	w.mu.Lock()
	w.writes = append(w.writes, op)
	w.mu.Unlock()
}

func (w *writeCounter) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	ops := w.writes
	w.writes = nil
	return ops
}

func (w *writeCounter) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	w.note("Put " + strings.SplitN(key, "/", 2)[0])
	return w.Store.Put(ctx, key, value, ttl)
}

func (w *writeCounter) Take(ctx context.Context, key string) ([]byte, error) {
	w.note("Take " + strings.SplitN(key, "/", 2)[0])
	return w.Store.Take(ctx, key)
}

func (w *writeCounter) Delete(ctx context.Context, key string) error {
	w.note("Delete " + strings.SplitN(key, "/", 2)[0])
	return w.Store.Delete(ctx, key)
}

func (w *writeCounter) PutAll(ctx context.Context, entries []idp.Entry) error {
	var kinds []string
	for _, e := range entries {
		kinds = append(kinds, strings.SplitN(e.Key, "/", 2)[0])
	}
	w.note("PutAll " + strings.Join(kinds, "+"))
	return w.Store.(idp.MultiPutter).PutAll(ctx, entries)
}

func (w *writeCounter) Swap(ctx context.Context, key string, old []byte, entries []idp.Entry) (bool, error) {
	kinds := []string{strings.SplitN(key, "/", 2)[0]}
	for _, e := range entries {
		kinds = append(kinds, strings.SplitN(e.Key, "/", 2)[0])
	}
	w.note("Swap " + strings.Join(kinds, "+"))
	return w.Store.(idp.Swapper).Swap(ctx, key, old, entries)
}

// TestTokenWrites: redeeming a code with offline_access takes the code
// and stores what it makes in one write, then adds the family to the
// user index in another; rotating a refresh token reads it, then replaces
// it by its successor and the record of its use in one write (the user
// index is written only once per idp.LastUsedGranularity). So a store
// that syncs every write syncs three times per code and once per refresh.
func TestTokenWrites(t *testing.T) {
	counter := new(writeCounter)
	ts := newServerWithStore(t, func(c *idp.Config) {
		c.Clients[0].AllowOfflineAccess = true
		c.Clients[0].AbsoluteRefreshTokenLifetime = time.Hour
	}, func(s idp.Store) idp.Store {
		counter.Store = s
		return counter
	})
	code, verifier := func() (string, string) {
		v, ch := pkce("v")
		q := authorizeParams(ch)
		q.Set("scope", "openid profile offline_access")
		u := login(t, ts, browser(t), q, "alice", testPassword)
		return u.Query().Get("code"), v
	}()
	counter.take()
	resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("exchange: %d %s", resp.StatusCode, body)
	}
	if got, want := strings.Join(counter.take(), ", "), "Take code, PutAll rt+usedcode, Swap user+user"; got != want {
		t.Errorf("code exchange writes: %s; want %s", got, want)
	}
	var tk tokens
	json.Unmarshal([]byte(body), &tk)

	st, next, body := refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, "")
	if st != http.StatusOK {
		t.Fatalf("refresh: %d %s", st, body)
	}
	if got, want := strings.Join(counter.take(), ", "), "Swap rt+rt+rtused"; got != want {
		t.Errorf("refresh writes: %s; want %s", got, want)
	}
	// Both entries are there: the next token works, the old one is known
	// as rotated out.
	if st, _, body := refreshWith(t, ts, "demo-app", testSecret, next.RefreshToken, ""); st != http.StatusOK {
		t.Fatalf("refresh with the next token: %d %s", st, body)
	}
}

// TestRefreshConcurrentUse: on every kind of store, of many simultaneous
// refreshes with one token, exactly one succeeds, and the others are a
// reuse: the family is revoked, so the winner's new token fails too.
func TestRefreshConcurrentUse(t *testing.T) {
	stores := []struct {
		name string
		wrap func(t *testing.T, s idp.Store) idp.Store
	}{
		{"memory (swap)", func(_ *testing.T, s idp.Store) idp.Store { return s }},
		{"take then put", func(_ *testing.T, s idp.Store) idp.Store { return plainStore{s} }},
		{"bolt (swap)", func(t *testing.T, _ idp.Store) idp.Store {
			bs, err := boltstore.Open(filepath.Join(t.TempDir(), "store.db"), boltstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { bs.Close() })
			return bs
		}},
		{"redis (take then put)", func(t *testing.T, _ idp.Store) idp.Store {
			rs, err := redisstore.New(redisstore.Options{Addrs: []string{redistest.Start(t).Addr}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rs.Close() })
			return rs
		}},
	}
	for _, tc := range stores {
		t.Run(tc.name, func(t *testing.T) {
			ts := newServerWithStore(t, func(c *idp.Config) {
				c.Clients[0].AllowOfflineAccess = true
				c.Clients[0].AbsoluteRefreshTokenLifetime = time.Hour
			}, func(s idp.Store) idp.Store { return tc.wrap(t, s) })
			for range 3 {
				concurrentUse(t, ts, 16)
			}
		})
	}
}

// concurrentUse refreshes one new token n times at once and checks that
// exactly one succeeds and that the winner's new token is refused.
func concurrentUse(t *testing.T, ts *testServer, n int) {
	t.Helper()
	first := offlineTokens(t, ts)
	var wg sync.WaitGroup
	statuses := make([]int, n)
	next := make([]string, n)
	bodies := make([]string, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {first.RefreshToken}}
			req, _ := http.NewRequest(http.MethodPost, ts.URL+idp.PathToken, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth("demo-app", testSecret)
			<-start
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			var tk tokens
			json.Unmarshal(body, &tk)
			statuses[i], next[i], bodies[i] = resp.StatusCode, tk.RefreshToken, string(body)
		})
	}
	close(start)
	wg.Wait()
	won := ""
	for i, st := range statuses {
		switch st {
		case http.StatusOK:
			if won != "" {
				t.Fatalf("two refreshes with one token succeeded: %v", statuses)
			}
			won = next[i]
		case http.StatusBadRequest:
		default:
			t.Fatalf("statuses %v, want one 200 and 400s: %s", statuses, bodies[i])
		}
	}
	if won == "" {
		t.Fatalf("no refresh succeeded: %v", statuses)
	}
	if st, _, body := refreshWith(t, ts, "demo-app", testSecret, won, ""); st != http.StatusBadRequest {
		t.Fatalf("the winner's token after concurrent reuse: %d %s; want invalid_grant (family revoked)", st, body)
	}
}

// plainStore hides every optional interface of its store.
type plainStore struct{ s idp.Store }

func (p plainStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return p.s.Put(ctx, key, value, ttl)
}
func (p plainStore) Get(ctx context.Context, key string) ([]byte, error)  { return p.s.Get(ctx, key) }
func (p plainStore) Take(ctx context.Context, key string) ([]byte, error) { return p.s.Take(ctx, key) }
func (p plainStore) Delete(ctx context.Context, key string) error         { return p.s.Delete(ctx, key) }

// TestRefreshRotationPlainStore: on a store with only the four methods of
// idp.Store (Caddy's storage), rotation and reuse detection work as well.
func TestRefreshRotationPlainStore(t *testing.T) {
	ts := newServerWithStore(t, func(c *idp.Config) {
		c.Clients[0].AllowOfflineAccess = true
		c.Clients[0].AbsoluteRefreshTokenLifetime = time.Hour
	}, func(s idp.Store) idp.Store { return plainStore{s} })
	first := offlineTokens(t, ts)
	st, second, body := refreshWith(t, ts, "demo-app", testSecret, first.RefreshToken, "")
	if st != http.StatusOK || second.RefreshToken == "" {
		t.Fatalf("refresh: %d %s", st, body)
	}
	third := second
	if st, third, body = refreshWith(t, ts, "demo-app", testSecret, second.RefreshToken, ""); st != http.StatusOK {
		t.Fatalf("second refresh: %d %s", st, body)
	}
	if st, _, body := refreshWith(t, ts, "demo-app", testSecret, first.RefreshToken, ""); st != http.StatusBadRequest {
		t.Fatalf("reuse: %d %s; want invalid_grant", st, body)
	}
	if st, _, body := refreshWith(t, ts, "demo-app", testSecret, third.RefreshToken, ""); st != http.StatusBadRequest {
		t.Fatalf("newest token after reuse: %d %s; want invalid_grant", st, body)
	}
}

// pauseStore is a plainStore that, once armed, records its calls
// (operation and key kind), fails the one numbered fail (from 1; 0 fails
// none), and holds the caller of the first that hold picks after it is
// done, until released: a refresh stopped between two of its store calls,
// while another runs.
type pauseStore struct {
	plainStore
	mu      sync.Mutex
	calls   []string
	fail    int
	hold    func(n int, call string) bool
	held    bool
	paused  chan struct{} // closed when the call is held
	release chan struct{} // closed to let it go on
}

// arm starts counting calls, holding the nth (none if n is 0); it returns
// the channels that say it is held and let it go.
func (s *pauseStore) arm(n int) (paused, release chan struct{}) {
	return s.armWith(0, func(i int, _ string) bool { return i == n })
}

// armWith starts counting calls, failing the one numbered fail and
// holding the first that hold picks.
func (s *pauseStore) armWith(fail int, hold func(n int, call string) bool) (paused, release chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls, s.fail, s.hold, s.held = nil, fail, hold, false
	s.paused, s.release = make(chan struct{}), make(chan struct{})
	return s.paused, s.release
}

// call records a call, then fails it, or makes it with do and holds it if
// it is the one to hold.
func (s *pauseStore) call(op, key string, do func() error) error {
	kind, _, _ := strings.Cut(key, "/")
	call := op + " " + kind
	s.mu.Lock()
	s.calls = append(s.calls, call)
	n := len(s.calls)
	fail := n == s.fail
	hold := !s.held && s.hold != nil && s.hold(n, call)
	s.held = s.held || hold
	paused, release := s.paused, s.release
	s.mu.Unlock()
	if fail {
		return errDown
	}
	err := do()
	if hold {
		close(paused)
		<-release
	}
	return err
}

func (s *pauseStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return s.call("Put", key, func() error { return s.plainStore.Put(ctx, key, value, ttl) })
}

func (s *pauseStore) Get(ctx context.Context, key string) (v []byte, err error) {
	err = s.call("Get", key, func() error { v, err = s.plainStore.Get(ctx, key); return err })
	return v, err
}

func (s *pauseStore) Take(ctx context.Context, key string) (v []byte, err error) {
	err = s.call("Take", key, func() error { v, err = s.plainStore.Take(ctx, key); return err })
	return v, err
}

func (s *pauseStore) Delete(ctx context.Context, key string) error {
	return s.call("Delete", key, func() error { return s.plainStore.Delete(ctx, key) })
}

// newPauseServer is newServer on a pauseStore, demo-app allowed
// offline_access with grace for a rotated-out refresh token as given.
func newPauseServer(t *testing.T, grace time.Duration) (*testServer, *pauseStore) {
	t.Helper()
	ps := new(pauseStore)
	ts := newServerWithStore(t, func(c *idp.Config) {
		c.Clients[0].AllowOfflineAccess = true
		c.Clients[0].AbsoluteRefreshTokenLifetime = time.Hour
		c.Clients[0].RefreshTokenReuseGrace = grace
	}, func(s idp.Store) idp.Store {
		ps.plainStore = plainStore{s}
		return ps
	})
	return ts, ps
}

// letGo closes release unless it is closed already: deferred, so that a
// test that fails while a call is held does not leave its server waiting.
func letGo(release chan struct{}) {
	select {
	case <-release:
	default:
		close(release)
	}
}

// waitHeld waits until the store holds a call.
func waitHeld(t *testing.T, paused chan struct{}) {
	t.Helper()
	select {
	case <-paused:
	case <-time.After(10 * time.Second):
		t.Fatal("the first refresh never made the call to hold")
	}
}

// TestRefreshRacePlainStore: on a store with only the four methods of
// idp.Store (Redis, Caddy's storage), one refresh is stopped after each of
// its store calls in turn while a second refresh with the same token runs
// to its end. Whatever the point, at most one of them gets a new token.
// Without a grace period the two are a reuse, as on a store that swaps:
// the family is revoked, so the winner's new token fails. With one, the
// second gets the same successor or invalid_grant, and the family lives.
func TestRefreshRacePlainStore(t *testing.T) {
	for _, grace := range []time.Duration{0, time.Minute} {
		t.Run(fmt.Sprintf("grace %s", grace), func(t *testing.T) {
			ts, ps := newPauseServer(t, grace)
			rt := offlineTokens(t, ts).RefreshToken
			ps.arm(0)
			refreshWith(t, ts, "demo-app", testSecret, rt, "")
			ps.mu.Lock()
			calls := ps.calls
			ps.mu.Unlock()
			for n := 1; n <= len(calls); n++ {
				t.Run("after "+calls[n-1], func(t *testing.T) {
					rt := offlineTokens(t, ts).RefreshToken
					paused, release := ps.arm(n)
					defer letGo(release)
					type result struct {
						status int
						tk     tokens
						body   string
					}
					first := make(chan result, 1)
					go func() {
						st, tk, body := refreshWith(t, ts, "demo-app", testSecret, rt, "")
						first <- result{st, tk, body}
					}()
					waitHeld(t, paused)
					st, tk, body := refreshWith(t, ts, "demo-app", testSecret, rt, "")
					second := result{st, tk, body}
					letGo(release)
					a := <-first
					ps.arm(0)

					var won []result
					for _, r := range []result{a, second} {
						switch r.status {
						case http.StatusOK:
							won = append(won, r)
						case http.StatusBadRequest:
						default:
							t.Fatalf("refresh: %d %s; want 200 or 400", r.status, r.body)
						}
					}
					if grace == 0 {
						if len(won) != 1 {
							t.Fatalf("%d of two refreshes with one token succeeded: %s | %s", len(won), a.body, second.body)
						}
						st, _, body := refreshWith(t, ts, "demo-app", testSecret, won[0].tk.RefreshToken, "")
						wantStatus(t, "the winner's token after the reuse", st, body, http.StatusBadRequest, "invalid_grant")
						return
					}
					if len(won) == 0 {
						t.Fatalf("no refresh succeeded: %s | %s", a.body, second.body)
					}
					if len(won) == 2 && won[0].tk.RefreshToken != won[1].tk.RefreshToken {
						t.Fatal("two refreshes with one token got different successors")
					}
					st, _, body = refreshWith(t, ts, "demo-app", testSecret, won[0].tk.RefreshToken, "")
					wantStatus(t, "the successor after a race within the grace period", st, body, http.StatusOK, "")
				})
			}
		})
	}
}

// TestRefreshUndoRace: a rotation that the store fails after taking the
// token puts it back; a second use of the token that rotates it as soon
// as it is back keeps what it wrote. So, after the two, the token is a
// rotated-out one like any other: within the grace period it gets the
// second use's successor, and without one it revokes the family.
func TestRefreshUndoRace(t *testing.T) {
	for _, grace := range []time.Duration{0, time.Minute} {
		t.Run(fmt.Sprintf("grace %s", grace), func(t *testing.T) {
			ts, ps := newPauseServer(t, grace)
			rt := offlineTokens(t, ts).RefreshToken
			ps.arm(0)
			refreshWith(t, ts, "demo-app", testSecret, rt, "")
			ps.mu.Lock()
			calls := ps.calls
			ps.mu.Unlock()
			// The successor's put is the first Put rt after the take.
			fail := slices.Index(calls, "Take rt") + 1
			for ; fail < len(calls) && calls[fail] != "Put rt"; fail++ {
			}
			fail++ // numbered from 1
			if fail > len(calls) {
				t.Fatalf("no Put rt after Take rt in %v", calls)
			}

			rt = offlineTokens(t, ts).RefreshToken
			// Held once the token is back: its put is the first Put rt
			// after the failed one.
			paused, release := ps.armWith(fail, func(n int, call string) bool { return n > fail && call == "Put rt" })
			defer letGo(release)
			first := make(chan int, 1)
			go func() {
				st, _, _ := refreshWith(t, ts, "demo-app", testSecret, rt, "")
				first <- st
			}()
			waitHeld(t, paused)
			st, second, body := refreshWith(t, ts, "demo-app", testSecret, rt, "")
			letGo(release)
			if st1 := <-first; st1 != http.StatusServiceUnavailable {
				t.Fatalf("the refresh the store failed: %d; want 503", st1)
			}
			ps.arm(0)
			wantStatus(t, "the token once put back", st, body, http.StatusOK, "")

			st, again, body := refreshWith(t, ts, "demo-app", testSecret, rt, "")
			if grace > 0 {
				if st != http.StatusOK || again.RefreshToken != second.RefreshToken {
					t.Fatalf("the token again within the grace period: %d %.120s; want the successor", st, body)
				}
				return
			}
			wantStatus(t, "the token again", st, body, http.StatusBadRequest, "invalid_grant")
			st, _, body = refreshWith(t, ts, "demo-app", testSecret, second.RefreshToken, "")
			wantStatus(t, "the successor after the reuse", st, body, http.StatusBadRequest, "invalid_grant")
		})
	}
}
