package caddymodule

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// connIdentity is the identity of a session for the registry's tests.
func connIdentity(sessionID, sid, sub string, created int64, ends time.Time) *identity {
	id := &identity{subject: sub, sessionID: sessionID, subKey: scopedKey("https://op.test", sub), created: created, ends: ends}
	if sid != "" {
		id.sidKey = scopedKey("https://op.test", sid)
	}
	return id
}

// waitClosed reports whether ctx ends within a second.
func waitClosed(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	case <-time.After(time.Second):
		return false
	}
}

func TestConnRegistryRevocations(t *testing.T) {
	const issuer = "https://op.test"
	hour := time.Now().Add(time.Hour)
	cut := time.Now().Unix()
	tests := []struct {
		name   string
		id     *identity
		entry  revocation
		closed bool
	}{
		{"session id", connIdentity("s1", "p1", "alice", cut-10, hour), revocation{Kind: revokeSession, Value: "s1", Expires: hour.Unix()}, true},
		{"another session id", connIdentity("s2", "p1", "alice", cut-10, hour), revocation{Kind: revokeSession, Value: "s1", Expires: hour.Unix()}, false},
		{"sid", connIdentity("s1", "p1", "alice", cut-10, hour), revocation{Kind: revokeSID, Issuer: issuer, Value: "p1", Expires: hour.Unix()}, true},
		{"sid of another issuer", connIdentity("s1", "p1", "alice", cut-10, hour), revocation{Kind: revokeSID, Issuer: "https://other.test", Value: "p1", Expires: hour.Unix()}, false},
		{"another sid", connIdentity("s1", "p1", "alice", cut-10, hour), revocation{Kind: revokeSID, Issuer: issuer, Value: "p2", Expires: hour.Unix()}, false},
		{"no sid", connIdentity("s1", "", "alice", cut-10, hour), revocation{Kind: revokeSID, Issuer: issuer, Value: "", Expires: hour.Unix()}, false},
		{"sub, created before", connIdentity("s1", "p1", "alice", cut-10, hour), revocation{Kind: revokeSubject, Issuer: issuer, Value: "alice", Before: cut, Expires: hour.Unix()}, true},
		{"sub, created in the second", connIdentity("s1", "p1", "alice", cut, hour), revocation{Kind: revokeSubject, Issuer: issuer, Value: "alice", Before: cut, Expires: hour.Unix()}, true},
		{"sub, created after", connIdentity("s1", "p1", "alice", cut+1, hour), revocation{Kind: revokeSubject, Issuer: issuer, Value: "alice", Before: cut, Expires: hour.Unix()}, false},
		{"another sub", connIdentity("s1", "p1", "alice", cut-10, hour), revocation{Kind: revokeSubject, Issuer: issuer, Value: "bob", Before: cut, Expires: hour.Unix()}, false},
		{"expired entry", connIdentity("s1", "p1", "alice", cut-10, hour), revocation{Kind: revokeSession, Value: "s1", Expires: cut - 1}, false},
		{"bearer token", &identity{subject: "alice", bearer: true, ends: hour}, revocation{Kind: revokeSubject, Issuer: issuer, Value: "alice", Before: cut, Expires: hour.Unix()}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newConnRegistry(zap.NewNop())
			c, ctx := r.track(t.Context(), tc.id)
			defer r.done(c)
			r.revoked(tc.entry, time.Now())
			if tc.closed {
				if !waitClosed(ctx) {
					t.Fatal("not closed")
				}
				if got := context.Cause(ctx); !errors.Is(got, errSessionEnded) {
					t.Errorf("cause %v, want errSessionEnded", got)
				}
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("closed: %v", context.Cause(ctx))
			}
		})
	}
}

func TestConnRegistryDone(t *testing.T) {
	r := newConnRegistry(zap.NewNop())
	ends := time.Now().Add(time.Hour)
	a, actx := r.track(t.Context(), connIdentity("s1", "p1", "alice", 1, ends))
	b, bctx := r.track(t.Context(), connIdentity("s1", "p1", "alice", 1, ends))
	if n := r.len(); n != 2 {
		t.Fatalf("%d tracked, want 2", n)
	}
	r.done(a)
	r.done(a) // twice is harmless
	if n := r.len(); n != 1 {
		t.Fatalf("%d tracked after one is done, want 1", n)
	}
	if errors.Is(context.Cause(actx), errSessionEnded) || a.reason() != "" {
		t.Error("done closed the connection as ended: its request ended it")
	}
	r.revoked(revocation{Kind: revokeSession, Value: "s1", Expires: ends.Unix()}, time.Now())
	if !waitClosed(bctx) {
		t.Fatal("the other request of the session is not closed")
	}
	r.done(b)
	if n := r.len(); n != 0 {
		t.Fatalf("%d tracked after all are done, want 0", n)
	}
	if len(r.sessions)+len(r.sids)+len(r.subs) != 0 {
		t.Errorf("keys left behind: %v %v %v", r.sessions, r.sids, r.subs)
	}
}

func TestConnRegistrySessionEnd(t *testing.T) {
	for _, bearer := range []bool{false, true} {
		t.Run(fmt.Sprintf("bearer=%v", bearer), func(t *testing.T) {
			r := newConnRegistry(zap.NewNop())
			id := connIdentity("s1", "", "alice", time.Now().Unix(), time.Now().Add(50*time.Millisecond))
			if bearer {
				id = &identity{subject: "alice", bearer: true, ends: time.Now().Add(50 * time.Millisecond)}
			}
			c, ctx := r.track(t.Context(), id)
			defer r.done(c)
			if !waitClosed(ctx) {
				t.Fatal("not closed at the session's end")
			}
			if c.reason() != "session ended" {
				t.Errorf("reason %q", c.reason())
			}
		})
	}
	t.Run("already ended", func(t *testing.T) {
		r := newConnRegistry(zap.NewNop())
		c, ctx := r.track(t.Context(), connIdentity("s1", "", "alice", 1, time.Now().Add(-time.Second)))
		defer r.done(c)
		if !waitClosed(ctx) {
			t.Fatal("not closed")
		}
	})
	t.Run("done stops the timer", func(t *testing.T) {
		r := newConnRegistry(zap.NewNop())
		c, ctx := r.track(t.Context(), connIdentity("s1", "", "alice", 1, time.Now().Add(time.Hour)))
		r.done(c)
		// Stop reports whether it stopped the timer: false once done has.
		if c.timer.Stop() {
			t.Error("done left the session-end timer running")
		}
		if errors.Is(context.Cause(ctx), errSessionEnded) || c.reason() != "" {
			t.Errorf("closed after done: %v %q", context.Cause(ctx), c.reason())
		}
	})
}

// fakeConn is a hijacked connection that records its closing.
type fakeConn struct {
	net.Conn
	closed chan struct{}
	once   sync.Once
}

func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// hijackRecorder is a ResponseWriter that can be hijacked.
type hijackRecorder struct {
	*httptest.ResponseRecorder
	conn *fakeConn
}

func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, nil, nil
}

func TestConnWriterHijack(t *testing.T) {
	for _, closeFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("closed before hijack=%v", closeFirst), func(t *testing.T) {
			r := newConnRegistry(zap.NewNop())
			c, _ := r.track(t.Context(), connIdentity("s1", "", "alice", 1, time.Now().Add(time.Hour)))
			defer r.done(c)
			conn := &fakeConn{closed: make(chan struct{})}
			rec := &hijackRecorder{ResponseRecorder: httptest.NewRecorder(), conn: conn}
			// Another wrapper in between, as Caddy's handlers add them.
			var w http.ResponseWriter = &connWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: rec}, conn: c}
			w = &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}
			if closeFirst {
				c.close("test")
			}
			got, _, err := http.NewResponseController(w).Hijack()
			if err != nil || got != conn {
				t.Fatalf("hijack: %v %v", got, err)
			}
			if !closeFirst {
				select {
				case <-conn.closed:
					t.Fatal("closed before the session ended")
				default:
				}
				c.close("test")
			}
			select {
			case <-conn.closed:
			case <-time.After(time.Second):
				t.Fatal("hijacked connection not closed")
			}
			if err := http.NewResponseController(w).Flush(); err != nil {
				t.Errorf("flush through the wrapper: %v", err)
			}
		})
	}
}

// TestConnRegistryConcurrent tracks, revokes and ends requests from many
// goroutines at once; run it with -race.
func TestConnRegistryConcurrent(t *testing.T) {
	r := newConnRegistry(zap.NewNop())
	ends := time.Now().Add(time.Hour)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				id := connIdentity(fmt.Sprint("s", i, "-", j%4), fmt.Sprint("p", j%3), fmt.Sprint("u", i%2), 1, ends)
				c, _ := r.track(context.Background(), id)
				if j%5 == 0 {
					c.hijacked(&fakeConn{closed: make(chan struct{})})
				}
				r.revoked(revocation{Kind: revokeSID, Issuer: "https://op.test", Value: fmt.Sprint("p", j%3), Expires: ends.Unix()}, time.Now())
				r.revoked(revocation{Kind: revokeSubject, Issuer: "https://op.test", Value: "u1", Before: 2, Expires: ends.Unix()}, time.Now())
				r.done(c)
			}
		})
	}
	wg.Wait()
	if n := r.len(); n != 0 {
		t.Fatalf("%d tracked after all are done", n)
	}
}

func TestLongLived(t *testing.T) {
	tests := []struct {
		name   string
		method string
		header http.Header
		want   bool
	}{
		{"page", http.MethodGet, http.Header{"Accept": {"text/html"}}, false},
		{"no headers", http.MethodGet, nil, false},
		{"websocket", http.MethodGet, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, true},
		{"upgrade without connection", http.MethodGet, http.Header{"Upgrade": {"websocket"}}, true},
		{"event stream", http.MethodGet, http.Header{"Accept": {"text/event-stream"}}, true},
		{"event stream among others", http.MethodGet, http.Header{"Accept": {"application/json", "text/event-stream;q=0.9"}}, true},
		{"event stream in capitals", http.MethodGet, http.Header{"Accept": {"Text/Event-Stream"}}, true},
		{"extended connect", http.MethodConnect, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/", nil)
			for k, v := range tc.header {
				r.Header[k] = v
			}
			if got := longLived(r); got != tc.want {
				t.Errorf("longLived = %v, want %v", got, tc.want)
			}
		})
	}
}

// connGateway is a provisioned gateway and a session cookie for it. The
// revocation list is shared by the gateways of a process: the session's
// sid and sub are its own, so that no other test's entries end it.
func connGateway(t *testing.T) (*Gateway, *session, string) {
	t.Helper()
	g := &Gateway{Issuer: "https://op.test", ClientID: "demo-app", SessionKeys: []string{"conns-session-key-0123456789"}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := g.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Cleanup() })
	g.logger = zap.NewNop()
	s := &session{ID: randomToken(), Subject: "alice-" + randomToken(), SID: randomToken(), Created: time.Now().Unix(), Binding: g.binding}
	value, err := g.codec.encode(g.cookieName, s)
	if err != nil {
		t.Fatal(err)
	}
	return g, s, value
}

// TestGatewayClosesLongLived: a stream or an upgrade through the gateway
// ends when a revocation of its session reaches the node, from this node
// or from the store; any other request runs with its own context.
func TestGatewayClosesLongLived(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
		revoke func(*Gateway, *session)
	}{
		{"event stream, signed out here", http.Header{"Accept": {"text/event-stream"}}, func(g *Gateway, s *session) {
			_ = g.revokeSessionID(context.Background(), s)
		}},
		{"websocket, sid from the store", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, func(g *Gateway, s *session) {
			g.revocations.apply([]revocation{{Kind: revokeSID, Issuer: g.Issuer, Value: s.SID, Expires: time.Now().Add(time.Hour).Unix()}})
		}},
		{"event stream, sub here", http.Header{"Accept": {"text/event-stream"}}, func(g *Gateway, s *session) {
			_ = g.revokeSubjectBefore(context.Background(), s.Subject, time.Now())
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, s, value := connGateway(t)
			started := make(chan struct{})
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				close(started)
				select {
				case <-r.Context().Done():
					return nil
				case <-time.After(5 * time.Second):
					return errors.New("still open 5s after the revocation")
				}
			})
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
			maps.Copy(r.Header, tc.header)
			r.Header.Set("Cookie", "authgate="+value)
			errc := make(chan error, 1)
			w := httptest.NewRecorder()
			go func() { errc <- g.ServeHTTP(w, r, next) }()
			select {
			case <-started:
			case err := <-errc:
				t.Fatalf("the request did not pass: %v, %d", err, w.Code)
			}
			tc.revoke(g, s)
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if n := g.revocations.conns.len(); n != 0 {
				t.Errorf("%d still tracked after the request", n)
			}
		})
	}
	t.Run("other requests untouched", func(t *testing.T) {
		g, _, value := connGateway(t)
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		r.Header.Set("Cookie", "authgate="+value)
		w := httptest.NewRecorder()
		next := caddyhttp.HandlerFunc(func(nw http.ResponseWriter, nr *http.Request) error {
			if nr != r || nw != http.ResponseWriter(w) {
				t.Error("a plain request got a new request or writer")
			}
			if g.revocations.conns.len() != 0 {
				t.Error("a plain request is tracked")
			}
			return nil
		})
		if err := g.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
	})
}
