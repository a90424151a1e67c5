package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/authgate/authgate/internal/redistest"
)

// TestGatewaySignOutRevokesCopies: a copy of the session cookie taken
// before sign-out is refused after it, with a fresh login for a browser
// and 401 for an API call; the sign-out clears the site's data, and the
// provider's way back ends on the gateway's signed-out page.
func TestGatewaySignOutRevokesCopies(t *testing.T) {
	op := newOP(t, nil)
	// With the hint, the provider signs out without asking.
	gw := newGateway(t, op, func(g *Gateway) { g.SignOutIDTokenHint = true })
	u := newUser(t, gw, op)
	u.signIn("/")
	copied := sessionCookieValue(t, u, "authgate")
	if s, err := gw.gw.openSession(copied); err != nil || s.SID == "" || s.ID == "" {
		t.Fatalf("the session: %+v, %v; want its id and the provider's sid", s, err)
	}
	if resp := sendCookie(t, u, "/headers", copied, false); resp.StatusCode != http.StatusOK {
		t.Fatalf("the copy before sign-out: %d, want 200", resp.StatusCode)
	}

	out := u.signOut()
	if got := out.Header.Get("Clear-Site-Data"); got != `"cache"` {
		t.Errorf("Clear-Site-Data: %q", got)
	}
	if resp := sendCookie(t, u, "/headers", copied, false); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the copy after sign-out, an API call: %d, want 401", resp.StatusCode)
	}
	if resp := sendCookie(t, u, "/headers", copied, true); resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), op.URL) {
		t.Errorf("the copy after sign-out, a navigation: %d to %q, want a login", resp.StatusCode, resp.Header.Get("Location"))
	}

	// The provider sends the browser back to post_logout_redirect ("/",
	// which the gateway protects) with the state the gateway gave it.
	resp, _ := u.get(out.Header.Get("Location"), nil)
	back := resp.Header.Get("Location")
	if !strings.HasPrefix(back, "http://gw.test/?") || !strings.Contains(back, "state=") {
		t.Fatalf("end_session redirected to %q, want / with the state", back)
	}
	resp, body := u.get(back, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "You have signed out") || !strings.Contains(body, `href="/oauth2/start?rd=%2f"`) && !strings.Contains(body, `href="/oauth2/start?rd=%2F"`) {
		t.Fatalf("back from the provider: %d, want the signed-out page with a link to sign in:\n%s", resp.StatusCode, body)
	}
	// The page is for the way back only: / itself still asks to log in.
	if resp, _ := u.get("http://gw.test/", nil); resp.StatusCode != http.StatusFound {
		t.Errorf("/ after the signed-out page: %d, want a login", resp.StatusCode)
	}
}

// sessionIdentityOf is the identity of a session of issuer: what
// revocations are looked up by.
func sessionIdentityOf(issuer, id, sid, sub string, created int64) *identity {
	i := &identity{sessionID: id, subKey: scopedKey(issuer, sub), created: created}
	if sid != "" {
		i.sidKey = scopedKey(issuer, sid)
	}
	return i
}

func TestRevocationList(t *testing.T) {
	const iss = "https://login.example.com"
	now := time.Unix(1_800_000_000, 0)
	later := now.Add(time.Hour).Unix()
	entries := []revocation{
		{Kind: revokeSession, Value: "s1", Expires: later},
		{Kind: revokeSID, Issuer: iss, Value: "op-session", Expires: later},
		{Kind: revokeSubject, Issuer: iss, Value: "bob", Before: now.Unix() - 60, Expires: later},
		{Kind: revokeSession, Value: "gone", Expires: now.Unix()}, // already expired: not added
	}
	l := newRevocationList()
	for _, e := range entries {
		l.add(e, now)
	}
	if got := l.n.Load(); got != 3 {
		t.Fatalf("%d entries, want 3", got)
	}
	tests := []struct {
		name    string
		id      *identity
		revoked bool
	}{
		{"revoked session id", sessionIdentityOf(iss, "s1", "", "alice", now.Unix()), true},
		{"another session", sessionIdentityOf(iss, "s2", "", "alice", now.Unix()), false},
		{"session of a revoked sid", sessionIdentityOf(iss, "s3", "op-session", "alice", now.Unix()), true},
		{"same sid at another issuer", sessionIdentityOf("https://other.example", "s3", "op-session", "alice", now.Unix()), false},
		{"sub's session before the cut", sessionIdentityOf(iss, "s4", "", "bob", now.Unix()-3600), true},
		{"sub's session in the cut's second", sessionIdentityOf(iss, "s4", "", "bob", now.Unix()-60), true},
		{"sub's session after the cut", sessionIdentityOf(iss, "s5", "", "bob", now.Unix()-59), false},
		{"bearer identity", &identity{bearer: true, subKey: scopedKey(iss, "bob")}, false},
		{"expired entry", sessionIdentityOf(iss, "gone", "", "alice", now.Unix()), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := l.revoked(tt.id, now.Unix()); got != tt.revoked {
				t.Errorf("revoked: %v, want %v", got, tt.revoked)
			}
		})
	}
	t.Run("entries end with their TTL", func(t *testing.T) {
		if l.revoked(sessionIdentityOf(iss, "s1", "", "alice", 0), later) {
			t.Errorf("an entry counts at its expiry")
		}
		l.expire(now.Add(2 * time.Hour))
		if n := l.n.Load(); n != 0 || len(l.sessions)+len(l.sids)+len(l.subs) != 0 {
			t.Errorf("after expiry: %d entries (maps %v %v %v)", n, l.sessions, l.sids, l.subs)
		}
	})
	t.Run("a later cut of a subject extends the first", func(t *testing.T) {
		l := newRevocationList()
		l.add(revocation{Kind: revokeSubject, Issuer: iss, Value: "bob", Before: 100, Expires: later}, now)
		if !l.add(revocation{Kind: revokeSubject, Issuer: iss, Value: "bob", Before: 200, Expires: later + 10}, now) {
			t.Fatal("the later cut changed nothing")
		}
		if l.add(revocation{Kind: revokeSubject, Issuer: iss, Value: "bob", Before: 150, Expires: later}, now) {
			t.Error("an earlier cut changed the list")
		}
		if !l.revoked(sessionIdentityOf(iss, "x", "", "bob", 150), later+5) || l.n.Load() != 1 {
			t.Errorf("cut: %+v", l.subs)
		}
	})
}

// TestRevocationListConcurrent reads the list from many goroutines while
// entries arrive and expire (run it with -race).
func TestRevocationListConcurrent(t *testing.T) {
	l := newRevocationList()
	now := time.Now()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			id := sessionIdentityOf("i", "s0", "sid", "sub", now.Unix())
			for {
				select {
				case <-stop:
					return
				default:
					l.revoked(id, now.Unix())
				}
			}
		})
	}
	for i := range 1000 {
		l.add(revocation{Kind: revokeSession, Value: strconv.Itoa(i), Expires: now.Unix() + int64(i%3)}, now)
		if i%100 == 0 {
			l.expire(now.Add(time.Second))
		}
	}
	close(stop)
	wg.Wait()
	if !l.revoked(sessionIdentityOf("i", "998", "", "", 0), now.Unix()) {
		t.Error("the last entry is not there")
	}
}

// flakyStorage is a Caddy storage whose every call fails while down.
type flakyStorage struct {
	certmagic.Storage
	down atomic.Bool
}

var errStorageDown = errors.New("storage down")

func (f *flakyStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if f.down.Load() {
		return nil, errStorageDown
	}
	return f.Storage.List(ctx, prefix, recursive)
}

func (f *flakyStorage) Store(ctx context.Context, key string, value []byte) error {
	if f.down.Load() {
		return errStorageDown
	}
	return f.Storage.Store(ctx, key, value)
}

// watchInto runs b's watcher into a new list until the test ends, and
// returns the list and a channel that gets each batch of entries applied.
func watchInto(t *testing.T, b revocationBackend) (*revocationList, <-chan []revocation) {
	t.Helper()
	l := newRevocationList()
	applied := make(chan []revocation, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.watch(ctx, func(entries []revocation) {
			now := time.Now()
			for _, e := range entries {
				l.add(e, now)
			}
			select {
			case applied <- entries:
			default:
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return l, applied
}

// waitRevoked waits until l has id revoked, or fails after 10s.
func waitRevoked(t *testing.T, l *revocationList, applied <-chan []revocation, id *identity) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !l.revoked(id, time.Now().Unix()) {
		select {
		case <-applied:
		case <-deadline:
			t.Fatalf("the revocation did not arrive")
		}
	}
}

// TestStorageRevocations: nodes on one Caddy storage share entries
// through it; an entry seen stays while the storage is down; expired
// files go.
func TestStorageRevocations(t *testing.T) {
	root := t.TempDir()
	storage := &flakyStorage{Storage: &certmagic.FileStorage{Path: root}}
	newBackend := func() *storageRevocations {
		return &storageRevocations{storage: storage, prefix: revocationStoragePrefix, every: 20 * time.Millisecond, logger: zap.NewNop()}
	}
	a, b := newBackend(), newBackend()
	listB, applied := watchInto(t, b)
	ctx := context.Background()
	now := time.Now()
	e := revocation{Kind: revokeSession, Value: "signed-out", Expires: now.Add(time.Hour).Unix()}
	if err := a.write(ctx, e); err != nil {
		t.Fatal(err)
	}
	id := sessionIdentityOf("i", "signed-out", "", "alice", now.Unix())
	waitRevoked(t, listB, applied, id)

	t.Run("outage keeps what was seen", func(t *testing.T) {
		storage.down.Store(true)
		defer storage.down.Store(false)
		if err := a.write(ctx, revocation{Kind: revokeSession, Value: "x", Expires: now.Add(time.Hour).Unix()}); err == nil {
			t.Fatal("write to a storage that is down succeeded")
		}
		// Polls fail meanwhile (B's own, and those of a third node).
		c := newBackend()
		for range 3 {
			if err := c.poll(ctx, func([]revocation) {}); err == nil {
				t.Fatal("poll of a storage that is down succeeded")
			}
		}
		if !listB.revoked(id, time.Now().Unix()) {
			t.Error("the revocation was lost in the outage")
		}
	})
	t.Run("expired files go", func(t *testing.T) {
		old := revocation{Kind: revokeSession, Value: "old", Expires: now.Add(-time.Minute).Unix()}
		key := path.Join(revocationStoragePrefix, a.entryName(old))
		data, _ := marshalRevocation(old)
		if err := storage.Storage.Store(ctx, key, data); err != nil {
			t.Fatal(err)
		}
		if err := newBackend().poll(ctx, func([]revocation) {}); err != nil {
			t.Fatal(err)
		}
		if storage.Exists(ctx, key) {
			t.Errorf("the expired entry %s is still there", key)
		}
	})
}

// TestRedisRevocations: two nodes on one redis-server learn each other's
// revocations through pub/sub at once, and on (re)subscribing those
// written while they were not listening.
func TestRedisRevocations(t *testing.T) {
	srv := redistest.Start(t)
	newBackend := func() *redisRevocations {
		r, key, err := loadRedis(&RedisStore{Addresses: []string{srv.Addr}}, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { redisPool.Delete(key) })
		// No periodic resync within the test: what arrives came by
		// pub/sub, or by the read at subscription.
		return &redisRevocations{store: r, logger: zap.NewNop(), every: time.Hour}
	}
	a, b := newBackend(), newBackend()
	ctx := context.Background()
	now := time.Now()

	// Written before B watches: B reads it from the feed when it subscribes.
	early := revocation{Kind: revokeSID, Issuer: "i", Value: "op-1", Expires: now.Add(time.Hour).Unix()}
	if err := a.write(ctx, early); err != nil {
		t.Fatal(err)
	}
	listA, appliedA := watchInto(t, a)
	listB, appliedB := watchInto(t, b)
	waitRevoked(t, listB, appliedB, sessionIdentityOf("i", "s", "op-1", "alice", now.Unix()))

	// Written while both watch: pub/sub brings it to both.
	late := revocation{Kind: revokeSession, Value: "signed-out", Expires: now.Add(time.Hour).Unix()}
	if err := b.write(ctx, late); err != nil {
		t.Fatal(err)
	}
	id := sessionIdentityOf("i", "signed-out", "", "alice", now.Unix())
	waitRevoked(t, listA, appliedA, id)
	waitRevoked(t, listB, appliedB, id)

	t.Run("outage keeps what was seen", func(t *testing.T) {
		srv.Pause()
		defer srv.Resume()
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := a.write(wctx, revocation{Kind: revokeSession, Value: "x", Expires: now.Add(time.Hour).Unix()}); err == nil {
			t.Fatal("write to a paused redis succeeded")
		}
		if _, err := b.readSince(wctx, "", func([]revocation) {}); err == nil {
			t.Fatal("read of a paused redis succeeded")
		}
		if !listB.revoked(id, time.Now().Unix()) {
			t.Error("the revocation was lost in the outage")
		}
	})
}

// TestGatewayRevokeSIDAndSubject: what the back-channel logout endpoint
// calls ends the sessions of a provider session, or of a user before a
// time, for the gateway's issuer only.
func TestGatewayRevokeSIDAndSubject(t *testing.T) {
	op := newOP(t, nil)
	g := newGateway(t, op, nil).gw
	ctx := context.Background()
	now := time.Now()
	if err := g.revokeSID(ctx, "op-session-1"); err != nil {
		t.Fatal(err)
	}
	cut := now.Add(-time.Minute)
	if err := g.revokeSubjectBefore(ctx, "carol", cut); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		id      *identity
		revoked bool
	}{
		{"session of the sid", sessionIdentityOf(g.Issuer, "a", "op-session-1", "alice", now.Unix()), true},
		{"session of another sid", sessionIdentityOf(g.Issuer, "b", "op-session-2", "alice", now.Unix()), false},
		{"the sid at another issuer", sessionIdentityOf("https://elsewhere.example", "c", "op-session-1", "alice", now.Unix()), false},
		{"the subject's older session", sessionIdentityOf(g.Issuer, "d", "", "carol", cut.Unix()-10), true},
		{"the subject's newer session", sessionIdentityOf(g.Issuer, "e", "", "carol", now.Unix()), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := g.revocations.list.revoked(tt.id, now.Unix()); got != tt.revoked {
				t.Errorf("revoked: %v, want %v", got, tt.revoked)
			}
		})
	}
}
