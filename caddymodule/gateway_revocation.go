package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
)

// A gateway session is a cookie: nothing on the server knows it, so a
// copy would work until it expires. Revocations end sessions before
// that: a revoked session id (sign-out), every session of a provider
// session (sid, back-channel logout) or of a user created before a time
// (sub). They are kept in the shared store (Redis, or Caddy's storage)
// and mirrored in each node's memory, which is all a request reads.
//
// A store outage never undoes what a node has seen: entries leave the
// mirror only when they expire. Entries a node has not seen (written by
// another node while this one could not read the store) do not count
// until it can: the gateway fails open, because failing closed would end
// every session of every user for as long as the store is down.

// revocation is one entry of the revocation list. Sessions are keyed by
// their random id; sid and sub are the provider's, so they are scoped by
// issuer.
type revocation struct {
	Kind    string `json:"k"`           // revokeSession, revokeSID or revokeSubject
	Issuer  string `json:"i,omitempty"` // sid and sub: the provider's issuer
	Value   string `json:"v"`           // the session id, sid or sub
	Before  int64  `json:"b,omitempty"` // sub: sessions created before or in this second, Unix seconds
	Expires int64  `json:"x"`           // when the entry can go, Unix seconds
}

// Kinds of revocation.
const (
	revokeSession = "session"
	revokeSID     = "sid"
	revokeSubject = "sub"
)

// key is the entry's key in its map of revocationList.
func (e revocation) key() string {
	if e.Kind == revokeSession {
		return e.Value
	}
	return scopedKey(e.Issuer, e.Value)
}

// scopedKey is the key of a sid or sub of an issuer. An issuer is a URL,
// which holds no NUL.
func scopedKey(issuer, value string) string {
	return issuer + "\x00" + value
}

// revocationList is a node's mirror of the revocation list. Reads take a
// read lock and look up maps: no I/O, no allocation.
type revocationList struct {
	n        atomic.Int64 // entries; none lets a request skip the lock
	mu       sync.RWMutex
	sessions map[string]int64      // session id: expires
	sids     map[string]int64      // scopedKey(issuer, sid): expires
	subs     map[string]subjectCut // scopedKey(issuer, sub)
}

// subjectCut ends the sessions of a subject created before a time.
type subjectCut struct {
	before, expires int64
}

func newRevocationList() *revocationList {
	return &revocationList{sessions: map[string]int64{}, sids: map[string]int64{}, subs: map[string]subjectCut{}}
}

// add records e and reports whether it changed the list.
func (l *revocationList) add(e revocation, now time.Time) bool {
	if e.Expires <= now.Unix() || e.Value == "" {
		return false
	}
	k := e.key()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch e.Kind {
	case revokeSession, revokeSID:
		m := l.sessions
		if e.Kind == revokeSID {
			m = l.sids
		}
		old, ok := m[k]
		if ok && old >= e.Expires {
			return false
		}
		if !ok {
			l.n.Add(1)
		}
		m[k] = e.Expires
	case revokeSubject:
		old, ok := l.subs[k]
		// Two cuts of a subject make one that ends both's sessions for
		// as long as either lasts.
		cut := subjectCut{before: max(old.before, e.Before), expires: max(old.expires, e.Expires)}
		if ok && cut == old {
			return false
		}
		if !ok {
			l.n.Add(1)
		}
		l.subs[k] = cut
	default:
		return false
	}
	return true
}

// revoked reports whether the session of id is revoked at now (Unix
// seconds). A bearer token's identity has no session id: not revoked here.
func (l *revocationList) revoked(id *identity, now int64) bool {
	if l.n.Load() == 0 || id.sessionID == "" {
		return false
	}
	return l.revokedSession(id.sessionID, id.sidKey, id.subKey, id.created, now)
}

func (l *revocationList) revokedSession(sessionID, sidKey, subKey string, created, now int64) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if x, ok := l.sessions[sessionID]; ok && x > now {
		return true
	}
	if sidKey != "" {
		if x, ok := l.sids[sidKey]; ok && x > now {
			return true
		}
	}
	if c, ok := l.subs[subKey]; ok && c.expires > now && created <= c.before {
		return true
	}
	return false
}

// expire drops the entries that expired by now.
func (l *revocationList) expire(now time.Time) {
	t := now.Unix()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range []map[string]int64{l.sessions, l.sids} {
		for k, x := range m {
			if x <= t {
				delete(m, k)
				l.n.Add(-1)
			}
		}
	}
	for k, c := range l.subs {
		if c.expires <= t {
			delete(l.subs, k)
			l.n.Add(-1)
		}
	}
}

// revocationBackend is where a revocation list is shared between nodes.
type revocationBackend interface {
	// write stores an entry for every node.
	write(ctx context.Context, e revocation) error
	// watch delivers the entries other nodes write to apply, until ctx
	// is done, and retries what fails: it returns only when ctx is done.
	watch(ctx context.Context, apply func([]revocation))
	// bound is how long at most an entry written takes to reach every
	// node that can read the store, for the log.
	bound() time.Duration
}

// revocations is the revocation list of one store configuration: its
// mirror, and the watcher that fills it, started at the first request of
// any gateway that uses it and shared by all of them, across reloads.
type revocations struct {
	list    *revocationList
	conns   *connRegistry // long-lived requests, closed when an entry ends them
	backend revocationBackend
	logger  *zap.Logger
	where   string
	release func() // gives back what backend holds; may be nil

	// logoutJTIs are the jti of the logout tokens this process accepted
	// (see serveBackchannelLogout), shared by its gateways across reloads.
	logoutJTIs jtiCache

	start  sync.Once
	cancel context.CancelFunc
	done   chan struct{}
}

// revocationPool holds one revocation list per store configuration.
var revocationPool = caddy.NewUsagePool()

// loadRevocations returns the pooled list of key, made with backend if
// there is none yet, and key for releasing it in Cleanup.
func loadRevocations(key, where string, logger *zap.Logger, backend func() (revocationBackend, func())) (*revocations, error) {
	v, _, err := revocationPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		b, release := backend()
		return &revocations{list: newRevocationList(), conns: newConnRegistry(logger), backend: b, release: release, logger: logger, where: where}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*revocations), nil
}

// run starts the watcher, once.
func (r *revocations) run() {
	r.start.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		r.cancel, r.done = cancel, make(chan struct{})
		r.logger.Debug("watching gateway session revocations", zap.String("store", r.where), zap.Duration("bound", r.backend.bound()))
		go func() {
			defer close(r.done)
			var wg sync.WaitGroup
			wg.Go(func() { r.backend.watch(ctx, r.apply) })
			wg.Go(func() { r.sweep(ctx) })
			wg.Wait()
		}()
	})
}

// Destruct stops the watcher once no gateway uses the list.
func (r *revocations) Destruct() error {
	r.start.Do(func() {}) // never started: now it never will
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
	if r.release != nil {
		r.release()
	}
	return nil
}

// apply adds entries from the store to the mirror, and closes the
// long-lived requests they end.
func (r *revocations) apply(entries []revocation) {
	now := time.Now()
	for _, e := range entries {
		r.list.add(e, now)
		// Even an entry the mirror had: a request may have started
		// between its arrival and its closing of the others.
		r.conns.revoked(e, now)
	}
}

// sweepEvery is how often expired entries leave the mirror.
const sweepEvery = time.Minute

func (r *revocations) sweep(ctx context.Context) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.list.expire(now)
		}
	}
}

// writeTimeout bounds how long a revocation waits on the store.
const writeTimeout = 2 * time.Second

// revoke records e in this node's mirror at once, then in the store for
// the other nodes. A store that fails leaves the entry in this node's
// mirror only: the error says so, and the caller logs it.
func (r *revocations) revoke(ctx context.Context, e revocation) error {
	now := time.Now()
	r.list.add(e, now)
	r.conns.revoked(e, now)
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if err := r.backend.write(ctx, e); err != nil {
		return fmt.Errorf("writing a revocation to the %s store (only this node knows it): %w", r.where, err)
	}
	return nil
}

// RevokeSession, revokeSID and revokeSubjectBefore are what ends
// gateway sessions: sign-out calls the first, the back-channel logout
// endpoint the others. Each records the revocation on this node at once
// and returns once the store has it too, or with the store's error (this
// node still refuses the sessions).

// revokeSessionID ends the session of s, until it would have expired.
func (g *Gateway) revokeSessionID(ctx context.Context, s *session) error {
	return g.revocations.revoke(ctx, revocation{
		Kind: revokeSession, Value: s.ID,
		Expires: time.Unix(s.Created, 0).Add(g.lifetime).Unix() + 1,
	})
}

// revokeSID ends every session of the provider's session sid (the ID
// token's sid claim), on every node, for as long as such a session could
// live.
func (g *Gateway) revokeSID(ctx context.Context, sid string) error {
	return g.revocations.revoke(ctx, revocation{
		Kind: revokeSID, Issuer: g.Issuer, Value: sid,
		Expires: time.Now().Add(g.lifetime).Unix() + 1,
	})
}

// revokeSubjectBefore ends every session of the provider's subject sub
// created before t, on every node: sessions made later (a new login)
// pass. Session times are in seconds: one made in t's second is ended
// too, rather than one made just before t let through.
func (g *Gateway) revokeSubjectBefore(ctx context.Context, sub string, t time.Time) error {
	return g.revocations.revoke(ctx, revocation{
		Kind: revokeSubject, Issuer: g.Issuer, Value: sub,
		Before:  t.Unix(),
		Expires: time.Now().Add(g.lifetime).Unix() + 1,
	})
}

// marshalRevocation and unmarshalRevocation are the stored form of an
// entry.
func marshalRevocation(e revocation) ([]byte, error) { return json.Marshal(e) }

func unmarshalRevocation(b []byte) (revocation, bool) {
	var e revocation
	if json.Unmarshal(b, &e) != nil || e.Value == "" || e.Expires == 0 {
		return revocation{}, false
	}
	return e, true
}
