package caddymodule

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// A request is checked once, when it comes; a WebSocket or an event
// stream then lives on for as long as its client keeps it. Such requests
// are tracked for as long as they run, by what revocations match (session
// id, provider sid, subject), so that a revocation reaching this node's
// mirror, or the session's end, closes them: a connection lasts as long
// as a new request with its credential would pass. Every other request
// pays one look at its headers.

// errSessionEnded is the cause of the context of a long-lived request
// whose session was revoked or ended.
var errSessionEnded = errors.New("the session of the connection ended")

// longLived reports whether r may become a connection that outlives its
// check: an upgrade (WebSocket, h2c; Upgrade header), a CONNECT
// (WebSockets over HTTP/2 and HTTP/3, RFC 8441 §4, RFC 9220 §3), or a
// request for server-sent events (Accept: text/event-stream). It does not
// allocate.
func longLived(r *http.Request) bool {
	if len(r.Header["Upgrade"]) > 0 || r.Method == http.MethodConnect {
		return true
	}
	for _, v := range r.Header["Accept"] {
		if containsFold(v, "text/event-stream") {
			return true
		}
	}
	return false
}

// containsFold is strings.Contains without ASCII case, for a lower-case
// sub, without allocating.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if asciiEqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// serveLongLived runs a long-lived request tracked: with a context that
// ends, and for an upgrade a connection that closes, when its session is
// revoked or ends.
func (g *Gateway) serveLongLived(w http.ResponseWriter, r *http.Request, id *identity, next caddyhttp.Handler) error {
	conns := g.revocations.conns
	c, ctx := conns.track(r.Context(), id)
	defer conns.done(c)
	// A revocation that reached the mirror after the identity was checked
	// and before track may have found nothing to close.
	if g.revocations.list.revoked(id, time.Now().Unix()) {
		c.close("session revoked")
	}
	if len(r.Header["Upgrade"]) > 0 {
		// reverse_proxy hijacks the client's connection and copies both
		// ways until one side closes it; cancelling the context closes
		// the upstream side, closing the client's own ends it for sure.
		w = &connWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, conn: c}
	}
	// An event stream ends with the context: reverse_proxy stops copying
	// when the upstream response's body fails, which the context's end
	// makes it do.
	return next.ServeHTTP(w, r.WithContext(ctx))
}

// connRegistry is the long-lived requests of the gateways that share a
// revocation list, by what its entries match.
type connRegistry struct {
	logger *zap.Logger

	mu       sync.Mutex
	sessions map[string]map[*trackedConn]struct{} // by session id
	sids     map[string]map[*trackedConn]struct{} // by scopedKey(issuer, sid)
	subs     map[string]map[*trackedConn]struct{} // by scopedKey(issuer, sub)
	n        int                                  // tracked, bearer tokens' too
}

func newConnRegistry(logger *zap.Logger) *connRegistry {
	return &connRegistry{
		logger:   logger,
		sessions: map[string]map[*trackedConn]struct{}{},
		sids:     map[string]map[*trackedConn]struct{}{},
		subs:     map[string]map[*trackedConn]struct{}{},
	}
}

// trackedConn is one long-lived request.
type trackedConn struct {
	sessionID, sidKey, subKey string // as in identity; none for a bearer token
	created                   int64
	subject                   string
	cancel                    context.CancelCauseFunc
	timer                     *time.Timer
	logger                    *zap.Logger

	mu     sync.Mutex
	conn   net.Conn // the client's connection, once hijacked
	why    string   // why it was closed; "" while open
	active bool     // tracked: between track and done
}

// track registers a long-lived request of id and returns it with the
// context to run the request with, which ends when its session does.
func (r *connRegistry) track(parent context.Context, id *identity) (*trackedConn, context.Context) {
	ctx, cancel := context.WithCancelCause(parent)
	c := &trackedConn{
		sessionID: id.sessionID, sidKey: id.sidKey, subKey: id.subKey,
		created: id.created, subject: id.subject, cancel: cancel, logger: r.logger, active: true,
	}
	r.mu.Lock()
	r.n++
	if c.sessionID != "" {
		// Only a session's identity is revoked by the list: a bearer
		// token passes until it expires, and so does its connection.
		addConn(r.sessions, c.sessionID, c)
		addConn(r.subs, c.subKey, c)
		if c.sidKey != "" {
			addConn(r.sids, c.sidKey, c)
		}
	}
	r.mu.Unlock()
	c.timer = time.AfterFunc(time.Until(id.ends), func() { c.close("session ended") })
	return c, ctx
}

// done forgets c, once its request has returned.
func (r *connRegistry) done(c *trackedConn) {
	c.timer.Stop()
	c.mu.Lock()
	active := c.active
	c.active = false
	c.mu.Unlock()
	if !active {
		return
	}
	r.mu.Lock()
	r.n--
	if c.sessionID != "" {
		removeConn(r.sessions, c.sessionID, c)
		removeConn(r.subs, c.subKey, c)
		if c.sidKey != "" {
			removeConn(r.sids, c.sidKey, c)
		}
	}
	r.mu.Unlock()
	c.cancel(nil) // frees the context, if the request did not end it
}

// revoked closes the tracked requests that e ends.
func (r *connRegistry) revoked(e revocation, now time.Time) {
	if e.Expires <= now.Unix() || e.Value == "" {
		return
	}
	var ended []*trackedConn
	r.mu.Lock()
	switch e.Kind {
	case revokeSession:
		for c := range r.sessions[e.key()] {
			ended = append(ended, c)
		}
	case revokeSID:
		for c := range r.sids[e.key()] {
			ended = append(ended, c)
		}
	case revokeSubject:
		for c := range r.subs[e.key()] {
			if c.created <= e.Before {
				ended = append(ended, c)
			}
		}
	}
	r.mu.Unlock()
	for _, c := range ended {
		c.close(revocationReasons[e.Kind])
	}
}

// revocationReasons say in the log why a connection was closed.
var revocationReasons = map[string]string{
	revokeSession: "session revoked",
	revokeSID:     "provider session ended",
	revokeSubject: "sessions of the user revoked",
}

// len is how many requests are tracked.
func (r *connRegistry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

func addConn(m map[string]map[*trackedConn]struct{}, key string, c *trackedConn) {
	set := m[key]
	if set == nil {
		set = map[*trackedConn]struct{}{}
		m[key] = set
	}
	set[c] = struct{}{}
}

func removeConn(m map[string]map[*trackedConn]struct{}, key string, c *trackedConn) {
	set := m[key]
	delete(set, c)
	if len(set) == 0 {
		delete(m, key)
	}
}

// close ends the request: its context, and its connection if it was
// hijacked. Only the first close counts.
func (c *trackedConn) close(reason string) {
	c.mu.Lock()
	if c.why != "" {
		c.mu.Unlock()
		return
	}
	c.why = reason
	conn := c.conn
	c.mu.Unlock()
	c.cancel(errSessionEnded)
	if conn != nil {
		_ = conn.Close()
	}
	// The subject only: never the cookie or token the session came in.
	if ce := c.logger.Check(zap.InfoLevel, "long-lived connection closed"); ce != nil {
		ce.Write(zap.String("sub", c.subject), zap.String("reason", reason))
	}
}

// hijacked records the client's connection of c, to close with it; one
// hijacked after c was closed is closed at once.
func (c *trackedConn) hijacked(conn net.Conn) {
	c.mu.Lock()
	closed := c.why != ""
	if !closed {
		c.conn = conn
	}
	c.mu.Unlock()
	if closed {
		_ = conn.Close()
	}
}

// reason is why c was closed, or "" while it is open.
func (c *trackedConn) reason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.why
}

// connWriter keeps the connection an upgrade hijacks, so that the end of
// its session can close it. reverse_proxy hijacks with
// http.NewResponseController, which calls the first Hijack along the
// Unwrap chain: this one.
type connWriter struct {
	*caddyhttp.ResponseWriterWrapper
	conn *trackedConn
}

// Hijack hijacks the connection underneath and keeps it.
func (w *connWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.conn.hijacked(conn)
	}
	return conn, brw, err
}

// FlushError flushes the writer underneath, for http.ResponseController.
func (w *connWriter) FlushError() error {
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush flushes the writer underneath, for handlers that assert
// http.Flusher.
func (w *connWriter) Flush() { _ = w.FlushError() }

// Interface guards
var (
	_ http.Hijacker = (*connWriter)(nil)
	_ http.Flusher  = (*connWriter)(nil)
)
