package caddymodule

import (
	"errors"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddyserver/caddy/v2"
)

// refreshGrace is how long a finished refresh's result is handed to
// requests that still carry the session's old cookie (sent before the
// browser stored the new one), so a provider that rotates refresh tokens
// never sees the old one twice.
const refreshGrace = 30 * time.Second

// refreshResult is the outcome of one refresh: the new session, which
// callers only read (each gateway encodes it once for its own cookies), or
// an error; refused means the provider said no (the session is over), as
// opposed to the provider being unreachable.
type refreshResult struct {
	session *session
	encoded *sync.Map // *Gateway to its encodedSession of session
	err     error
	refused bool
}

// encodedSession is a session and the cookie value one gateway encoded it
// into.
type encodedSession struct {
	value   string
	session *session
}

// encodedFor returns the result's session encoded for g's cookies, the
// same value for every request g shares the refresh with: their answers
// all set one cookie, which the session cache then knows.
func (res refreshResult) encodedFor(g *Gateway) (string, *session, error) {
	if e, ok := res.encoded.Load(g); ok {
		return e.(encodedSession).value, e.(encodedSession).session, nil
	}
	value, s, err := g.encodeSession(res.session)
	if err != nil {
		return "", nil, err
	}
	e, _ := res.encoded.LoadOrStore(g, encodedSession{value, s})
	return e.(encodedSession).value, e.(encodedSession).session, nil
}

// refresher runs one refresh per session at a time: callers with the same
// key wait for the one in flight and share its result.
//
// Gateways of one issuer and client_id share a refresher (see
// refreshers): they share sessions, so a browser sends the same cookie to
// all of them, and a refresh token rotated by one must not reach the
// provider again from another, which would take it for a stolen token.
type refresher struct {
	mu    sync.Mutex
	calls map[string]*refreshCall
}

// refreshers holds a refresher per sessionBinding, for every gateway of
// that issuer and client_id, across config reloads too.
var refreshers = caddy.NewUsagePool()

type refreshCall struct {
	done     chan struct{}
	res      refreshResult
	finished time.Time
}

func newRefresher() *refresher {
	return &refresher{calls: make(map[string]*refreshCall)}
}

// Destruct implements [caddy.Destructor] for refreshers; a refresher holds
// nothing to release.
func (rf *refresher) Destruct() error { return nil }

// do runs fn for key unless a call for key is running or finished within
// refreshGrace, in which case it returns that call's result.
func (rf *refresher) do(key string, fn func() refreshResult) refreshResult {
	rf.mu.Lock()
	now := time.Now()
	if c, ok := rf.calls[key]; ok && (c.finished.IsZero() || now.Sub(c.finished) < refreshGrace) {
		rf.mu.Unlock()
		<-c.done
		return c.res
	}
	for k, c := range rf.calls {
		if !c.finished.IsZero() && now.Sub(c.finished) >= refreshGrace {
			delete(rf.calls, k)
		}
	}
	c := &refreshCall{done: make(chan struct{})}
	rf.calls[key] = c
	rf.mu.Unlock()

	c.res = fn()
	rf.mu.Lock()
	c.finished = time.Now()
	if c.res.session == nil && !c.res.refused {
		delete(rf.calls, key) // a transient failure is not remembered
	}
	rf.mu.Unlock()
	close(c.done)
	return c.res
}

// refreshTokens runs the refresh_token grant (RFC 6749 §6).
func (g *Gateway) refreshTokens(d *discovered, refreshToken string) (*oauth2.Token, error) {
	// An expired token with a refresh token makes the source refresh now.
	src := d.oauth.TokenSource(withProviderOp(g.oidc.ctx, opRefresh), &oauth2.Token{RefreshToken: refreshToken, Expiry: time.Unix(1, 0)})
	return src.Token()
}

// isOAuthRefusal tells a provider's "no" (an OAuth error such as
// invalid_grant) from a failure to reach it.
func isOAuthRefusal(err error) bool {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500
	}
	return false
}
