package idp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Back-channel logout (OpenID Connect Back-Channel Logout 1.0): when a
// provider session ends, every client that got a code in it and
// registered a back-channel logout URI is sent a logout token, from a
// queue in the store that a worker per provider ([Provider.Start],
// [Provider.Close]) works through, retrying for a bounded time.
//
// Store keys (hashes are [hashKey]'s, base64url of SHA-256):
//
//   - bcl/rp/<hash sid>/<hash client_id>: the client had a session in the
//     provider session sid; a [sessionClient], kept for the rest of the
//     session's life. One key per client, so that recording one client
//     never races with recording another: the set of clients of a
//     session is read back with one Get per configured client that can
//     be told (a few), never by listing keys.
//   - bcl/job/<id>: a logout token to deliver, a [delivery].
//   - bcl/queue/<hash issuer>: the ids of the deliveries not yet done,
//     with their deadlines: what a worker reads to find deliveries queued
//     by an earlier run or by another node.

// Defaults of [BackchannelConfig].
const (
	DefaultBackchannelRetryFor   = time.Hour
	DefaultBackchannelBackoff    = 2 * time.Second
	DefaultBackchannelMaxBackoff = 5 * time.Minute
	DefaultBackchannelPoll       = 10 * time.Second
	DefaultBackchannelTimeout    = 10 * time.Second
)

// BackchannelConfig tunes the delivery of logout tokens. Zero fields take
// their defaults.
type BackchannelConfig struct {
	// Client posts the logout tokens. It never follows a redirect,
	// whatever its CheckRedirect: a logout token goes to the registered
	// URI only. Default: a client with a timeout of
	// [DefaultBackchannelTimeout].
	Client *http.Client

	// RetryFor is how long a logout token that could not be delivered is
	// tried again. Default: [DefaultBackchannelRetryFor].
	RetryFor time.Duration

	// Backoff is the wait before the first retry, doubled for each
	// further one up to MaxBackoff. Defaults: [DefaultBackchannelBackoff],
	// [DefaultBackchannelMaxBackoff].
	Backoff    time.Duration
	MaxBackoff time.Duration

	// Poll is how often the worker reads the queue in the store, for
	// deliveries that another node, or an earlier run, queued. Its own
	// are retried on time without it. Default: [DefaultBackchannelPoll].
	Poll time.Duration
}

const (
	// backchannelEvent is the event of a logout token (§2.4).
	backchannelEvent = "http://schemas.openid.net/event/backchannel-logout"
	// logoutTokenType is the typ of a logout token (§2.4, explicit typing
	// as RFC 8725 §3.11 recommends).
	logoutTokenType = "logout+jwt"
	// logoutTokenLifetime: §2.4 recommends a short one, "at most two
	// minutes" being typical.
	logoutTokenLifetime = 2 * time.Minute
	// maxQueue bounds the queue index; past it the oldest are dropped.
	maxQueue = 10000
	// maxInFlight bounds the deliveries a worker runs at once.
	maxInFlight = 16
	// storeTimeout bounds the worker's store calls.
	storeTimeout = 5 * time.Second
)

func sessionClientKey(sid, clientID string) string {
	return "bcl/rp/" + hashKey(sid) + "/" + hashKey(clientID)
}

func deliveryKey(id string) string { return "bcl/job/" + id }

func (p *Provider) queueKey() string { return "bcl/queue/" + hashKey(p.issuer) }

// sessionClient records that a client got a code in a provider session.
type sessionClient struct {
	Subject string `json:"sub"`
	// Families are the refresh token families the client got in the
	// session, for a client with LogoutRevokesRefreshTokens.
	Families []heldFamily `json:"families,omitempty"`
}

type heldFamily struct {
	Family string `json:"family"`
	End    int64  `json:"end"`
}

// delivery is a logout token to send: the token itself is signed at each
// attempt, so that it is fresh (§2.4's short exp) and never stored.
type delivery struct {
	ID       string `json:"id"`
	ClientID string `json:"client_id"`
	SID      string `json:"sid"`
	Subject  string `json:"sub"`
	Attempts int    `json:"attempts"`
	Next     int64  `json:"next"`     // unix ms of the next attempt
	Deadline int64  `json:"deadline"` // unix ms after which it is given up
}

type queueEntry struct {
	ID       string `json:"id"`
	Deadline int64  `json:"deadline"`
}

// backchannel is the delivery worker's state.
type backchannel struct {
	client                              *http.Client
	retryFor, backoff, maxBackoff, poll time.Duration

	wake chan struct{}

	mu    sync.Mutex
	local map[string]int64 // deliveries this process queued: id -> deadline
	busy  map[string]bool  // deliveries being attempted here
	// ending are the subjects whose sessions SetUsers asked to end.
	ending map[string]bool
	stop   context.CancelFunc
	done   chan struct{}
	wg     sync.WaitGroup
}

func newBackchannel(cfg BackchannelConfig) (*backchannel, error) {
	if cfg.RetryFor < 0 || cfg.Backoff < 0 || cfg.MaxBackoff < 0 || cfg.Poll < 0 {
		return nil, errors.New("idp: negative back-channel logout duration")
	}
	b := &backchannel{
		retryFor:   cmp(cfg.RetryFor, DefaultBackchannelRetryFor),
		backoff:    cmp(cfg.Backoff, DefaultBackchannelBackoff),
		maxBackoff: cmp(cfg.MaxBackoff, DefaultBackchannelMaxBackoff),
		poll:       cmp(cfg.Poll, DefaultBackchannelPoll),
		wake:       make(chan struct{}, 1),
		local:      make(map[string]int64),
		busy:       make(map[string]bool),
		ending:     make(map[string]bool),
	}
	c := http.Client{Timeout: DefaultBackchannelTimeout}
	if cfg.Client != nil {
		c = *cfg.Client
	}
	// A redirect is answered, not followed: the token goes only where the
	// client registered.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	b.client = &c
	return b, nil
}

// checkBackchannelURI applies §2.2: an absolute http(s) URI, which may
// have a query but no fragment.
func checkBackchannelURI(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("is not a URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("is not an absolute http(s) URI")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return errors.New("has a fragment")
	}
	return nil
}

// tracked says whether the provider must know of c's sessions: to send
// it logout tokens, to revoke its refresh tokens at logout, or to load
// its front-channel logout URI (frontchannel.go).
func (c *client) tracked() bool {
	return c.BackchannelLogoutURI != "" || c.LogoutRevokesRefreshTokens || c.FrontchannelLogoutURI != ""
}

// sessionLeft is how long a session that began at authTime may still
// last.
func (p *Provider) sessionLeft(authTime int64) time.Duration {
	return time.Unix(authTime, 0).Add(p.sessionTTL).Sub(p.now())
}

// recordSessionClient notes that c got a code in sess, so that the end
// of sess reaches c. A failure is logged, not fatal to the login: the
// user is signed in all the same, only not signed out of c by the
// back channel.
func (p *Provider) recordSessionClient(ctx context.Context, c *client, sess *session) {
	if !c.tracked() {
		return
	}
	key := sessionClientKey(sess.SID, c.ID)
	_, err := p.store.Get(ctx, key)
	switch {
	case err == nil:
		return // already known: keep its families
	case !errors.Is(err, ErrNotFound):
		p.log.ErrorContext(ctx, "recording a client of a session for back-channel logout", "client_id", c.ID, "error", err)
		return
	}
	ttl := p.sessionLeft(sess.AuthTime)
	if ttl <= 0 {
		return
	}
	data, _ := json.Marshal(sessionClient{Subject: sess.Subject})
	if err := p.store.Put(ctx, key, data, ttl); err != nil {
		p.log.ErrorContext(ctx, "recording a client of a session for back-channel logout", "client_id", c.ID, "error", err)
	}
}

// recordFamily adds a refresh token family to its session's record, for a
// client whose refresh tokens end with the session. With a [Swapper] the
// update is a compare-and-swap, retried a few times; without one it is a
// read and a write, and of two logins of the same session to the same
// client at the same instant one family may be lost: that family then
// outlives the session, as an offline_access token does by default.
func (p *Provider) recordFamily(ctx context.Context, c *client, sid, subject string, authTime int64, f heldFamily) {
	if !c.LogoutRevokesRefreshTokens || sid == "" {
		return
	}
	key := sessionClientKey(sid, c.ID)
	ttl := p.sessionLeft(authTime)
	if ttl <= 0 {
		return
	}
	sw, canSwap := p.store.(Swapper)
	for range 8 {
		old, err := p.store.Get(ctx, key)
		sc := sessionClient{Subject: subject}
		switch {
		case errors.Is(err, ErrNotFound):
			old = nil
		case err != nil:
			p.log.ErrorContext(ctx, "recording a refresh token family for logout", "client_id", c.ID, "error", err)
			return
		default:
			if json.Unmarshal(old, &sc) != nil {
				sc = sessionClient{Subject: subject}
			}
		}
		sc.Families = append(sc.Families, f)
		data, _ := json.Marshal(sc)
		e := Entry{Key: key, Value: data, TTL: ttl}
		if !canSwap || old == nil {
			if err := p.store.Put(ctx, key, data, ttl); err != nil {
				p.log.ErrorContext(ctx, "recording a refresh token family for logout", "client_id", c.ID, "error", err)
			}
			return
		}
		ok, err := sw.Swap(ctx, key, old, []Entry{e})
		if err != nil {
			p.log.ErrorContext(ctx, "recording a refresh token family for logout", "client_id", c.ID, "error", err)
			return
		}
		if ok {
			return
		}
	}
	p.log.WarnContext(ctx, "recording a refresh token family for logout: too much contention; it outlives its session", "client_id", c.ID)
}

// EndSession ends the provider session sid on every copy of its cookie
// and on every node, as a sign-out does: the clients that got a code in
// it and registered a backchannel_logout_uri are sent a logout token
// (queued: the call does not wait for them), and the refresh tokens of
// clients with LogoutRevokesRefreshTokens that it issued are revoked. An
// error is the store's: what it could not do is not done. Ending a
// session twice, or one that has expired, does no harm.
func (p *Provider) EndSession(ctx context.Context, sid string) error {
	if err := p.store.Put(ctx, endedKey(sid), []byte{1}, p.sessionTTL); err != nil {
		return fmt.Errorf("idp: ending session: %w", err)
	}
	return p.sessionEnded(ctx, sid)
}

// sessionEnded tells the clients of the ended session sid. Their records
// are taken, so that of two nodes ending one session only one tells
// each client.
func (p *Provider) sessionEnded(ctx context.Context, sid string) error {
	var jobs []delivery
	var errs []error
	for _, c := range p.trackedClients {
		data, err := p.store.Take(ctx, sessionClientKey(sid, c.ID))
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var sc sessionClient
		if err := json.Unmarshal(data, &sc); err != nil {
			continue
		}
		if c.LogoutRevokesRefreshTokens {
			for _, f := range sc.Families {
				if err := p.revokeFamily(ctx, refreshGrant{Family: f.Family, End: f.End}); err != nil {
					errs = append(errs, err)
				}
			}
			if len(sc.Families) > 0 {
				p.log.InfoContext(ctx, "logout revoked refresh tokens", "client_id", c.ID, "sid", sid, "families", len(sc.Families))
			}
		}
		if c.BackchannelLogoutURI != "" {
			jobs = append(jobs, delivery{ClientID: c.ID, SID: sid, Subject: sc.Subject})
		}
	}
	if err := p.enqueue(ctx, jobs); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("idp: back-channel logout of a session: %w", err)
	}
	return nil
}

// enqueue stores jobs and wakes the worker. The jobs are stored before
// this returns, so a restart does not lose them; the queue index is
// updated after, and a failure to update it only costs other nodes and
// later runs the sight of them.
func (p *Provider) enqueue(ctx context.Context, jobs []delivery) error {
	if len(jobs) == 0 {
		return nil
	}
	b := p.bcl
	now := p.now()
	entries := make([]Entry, len(jobs))
	added := make([]queueEntry, len(jobs))
	for i := range jobs {
		j := &jobs[i]
		j.ID = p.randomString(16)
		j.Next = now.UnixMilli()
		j.Deadline = now.Add(b.retryFor).UnixMilli()
		data, _ := json.Marshal(j)
		entries[i] = Entry{Key: deliveryKey(j.ID), Value: data, TTL: b.retryFor + time.Minute}
		added[i] = queueEntry{ID: j.ID, Deadline: j.Deadline}
	}
	if err := putAll(ctx, p.store, entries...); err != nil {
		return fmt.Errorf("queueing logout tokens: %w", err)
	}
	b.mu.Lock()
	for _, q := range added {
		b.local[q.ID] = q.Deadline
	}
	b.mu.Unlock()
	if err := p.updateQueue(ctx, added, nil); err != nil {
		p.log.WarnContext(ctx, "adding logout tokens to the queue index; this process delivers them", "error", err)
	}
	for _, j := range jobs {
		p.log.InfoContext(ctx, "back-channel logout queued", "client_id", j.ClientID, "sid", j.SID)
	}
	b.poke()
	return nil
}

func (b *backchannel) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// updateQueue adds and removes entries of the queue index, and drops
// those past their deadline. With a [Swapper] it is a compare-and-swap,
// retried; without one, a read and a write, and two nodes updating it at
// the same instant may lose each other's change: a lost addition is then
// delivered by the process that queued it, unless it restarts before; a
// lost removal is a stale id the worker finds gone and drops at its
// deadline.
func (p *Provider) updateQueue(ctx context.Context, add []queueEntry, remove []string) error {
	key := p.queueKey()
	sw, canSwap := p.store.(Swapper)
	for range 8 {
		old, err := p.store.Get(ctx, key)
		var q []queueEntry
		switch {
		case errors.Is(err, ErrNotFound):
			old = nil
		case err != nil:
			return err
		default:
			_ = json.Unmarshal(old, &q)
		}
		now := p.now().UnixMilli()
		next := slices.DeleteFunc(slices.Clone(q), func(e queueEntry) bool {
			return slices.Contains(remove, e.ID) || e.Deadline < now
		})
		next = append(next, add...)
		if len(next) > maxQueue {
			p.log.ErrorContext(ctx, "back-channel logout queue full: dropping the oldest deliveries", "dropped", len(next)-maxQueue)
			next = next[len(next)-maxQueue:]
		}
		if old != nil && len(add) == 0 && len(next) == len(q) {
			// Nothing to add, nothing removed: no write.
			return nil
		}
		data, _ := json.Marshal(next)
		ttl := p.bcl.retryFor + time.Minute
		if !canSwap || old == nil {
			return p.store.Put(ctx, key, data, ttl)
		}
		ok, err := sw.Swap(ctx, key, old, []Entry{{Key: key, Value: data, TTL: ttl}})
		if err != nil || ok {
			return err
		}
	}
	return errors.New("too much contention")
}

// Start starts the worker that delivers logout tokens, those queued
// before too; [Provider.Close] stops it. Without it, logout tokens are
// queued in the store and wait for a provider that runs one. Calling it
// twice does nothing.
func (p *Provider) Start() {
	b := p.bcl
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.stop, b.done = cancel, make(chan struct{})
	go p.deliverLoop(ctx, b.done)
}

// Close stops the worker that [Provider.Start] started and waits for it:
// deliveries being attempted are cut short and stay queued.
func (p *Provider) Close() error {
	b := p.bcl
	b.mu.Lock()
	stop, done := b.stop, b.done
	b.stop, b.done = nil, nil
	b.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	return nil
}

// firstPollDelay is the longest the worker waits before its first look
// at the store's queue.
const firstPollDelay = 2 * time.Second

func (p *Provider) deliverLoop(ctx context.Context, done chan struct{}) {
	b := p.bcl
	defer close(done)
	defer b.wg.Wait()
	// The first look at the store waits a little: a configuration that
	// is only checked (`caddy validate` provisions it and cleans it up at
	// once, often while the running Caddy holds the store) must not touch
	// it. What this process queues wakes the worker at once all the same.
	t := time.NewTimer(min(b.poll, firstPollDelay))
	defer t.Stop()
	first := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		case <-t.C:
		}
		if first {
			first = false
			p.endDisabledSessions(ctx)
		}
		p.endQueued(ctx)
		t.Reset(p.deliverDue(ctx))
	}
}

// deliverDue starts the deliveries that are due and returns how long to
// wait before looking again.
func (p *Provider) deliverDue(ctx context.Context) time.Duration {
	b := p.bcl
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	ids := make(map[string]int64)
	if data, err := p.store.Get(sctx, p.queueKey()); err == nil {
		var q []queueEntry
		_ = json.Unmarshal(data, &q)
		for _, e := range q {
			ids[e.ID] = e.Deadline
		}
	} else if !errors.Is(err, ErrNotFound) && ctx.Err() == nil {
		p.log.WarnContext(ctx, "reading the back-channel logout queue", "error", err)
	}
	b.mu.Lock()
	for id, d := range b.local {
		ids[id] = d
	}
	b.mu.Unlock()

	wait := b.poll
	now := p.now()
	var stale []string
	for id, deadline := range ids {
		b.mu.Lock()
		busy, full := b.busy[id], len(b.busy) >= maxInFlight
		b.mu.Unlock()
		if busy {
			continue
		}
		if full {
			return min(wait, b.backoff)
		}
		data, err := p.store.Get(sctx, deliveryKey(id))
		if errors.Is(err, ErrNotFound) {
			// Done, or being attempted by another node, which puts it back
			// if it fails: forgotten only past its deadline.
			if now.UnixMilli() > deadline {
				stale = append(stale, id)
			}
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				p.log.WarnContext(ctx, "reading a back-channel logout delivery", "error", err)
			}
			return min(wait, b.backoff)
		}
		var j delivery
		if json.Unmarshal(data, &j) != nil {
			continue
		}
		if d := time.UnixMilli(j.Next).Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		// Taken, so that of several workers one attempts it.
		data, err = p.store.Take(sctx, deliveryKey(id))
		if err != nil || json.Unmarshal(data, &j) != nil {
			continue
		}
		b.mu.Lock()
		b.busy[id] = true
		b.mu.Unlock()
		b.wg.Add(1)
		go p.attempt(ctx, j)
	}
	if len(stale) > 0 {
		b.mu.Lock()
		for _, id := range stale {
			delete(b.local, id)
		}
		b.mu.Unlock()
		if err := p.updateQueue(sctx, nil, stale); err != nil && ctx.Err() == nil {
			p.log.WarnContext(ctx, "cleaning the back-channel logout queue", "error", err)
		}
	}
	return max(wait, time.Millisecond)
}

// outcome of a delivery attempt.
type outcome int

const (
	delivered outcome = iota
	refused           // the client answered that it will not take it: not retried
	failed            // retried
)

// attempt delivers j once, and then forgets it or puts it back for a
// retry.
func (p *Provider) attempt(ctx context.Context, j delivery) {
	b := p.bcl
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		delete(b.busy, j.ID)
		b.mu.Unlock()
	}()
	j.Attempts++
	res, status, err := p.post(ctx, j)
	log := []any{"client_id", j.ClientID, "sid", j.SID, "status", status, "attempt", j.Attempts}
	if err != nil {
		log = append(log, "error", err)
	}
	// The store calls below finish even when the worker is stopping: the
	// delivery must go back to the queue.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	ev := Event{Type: EventBackchannel, Subject: j.Subject, ClientID: j.ClientID, SID: j.SID, Attempt: j.Attempts}
	if err != nil {
		ev.Reason = truncate(err.Error(), 256)
	} else {
		ev.Reason = fmt.Sprintf("status %d", status)
	}
	switch {
	case res == delivered:
		p.log.InfoContext(ctx, "back-channel logout delivered", log...)
		ev.Outcome = OutcomeDelivered
		p.emit(ctx, ev)
		p.forget(sctx, j.ID)
		return
	case res == refused:
		p.log.WarnContext(ctx, "back-channel logout refused by the client; not retried", log...)
		ev.Outcome = OutcomeRefused
		p.emit(ctx, ev)
		p.forget(sctx, j.ID)
		return
	case ctx.Err() != nil:
		j.Attempts-- // cut short by Close: not the client's failure
	default:
		wait := b.maxBackoff
		if j.Attempts < 30 {
			wait = min(b.backoff<<(j.Attempts-1), b.maxBackoff)
		}
		next := p.now().Add(wait)
		if next.UnixMilli() > j.Deadline {
			p.log.ErrorContext(ctx, "back-channel logout failed; giving up", log...)
			ev.Outcome = OutcomeGivenUp
			p.emit(ctx, ev)
			p.forget(sctx, j.ID)
			return
		}
		j.Next = next.UnixMilli()
		p.log.WarnContext(ctx, "back-channel logout failed; will retry", append(log, "retry_in", wait)...)
		ev.Outcome = OutcomeRetrying
		p.emit(ctx, ev)
	}
	data, _ := json.Marshal(j)
	ttl := time.UnixMilli(j.Deadline).Sub(p.now()) + time.Minute
	if err := p.store.Put(sctx, deliveryKey(j.ID), data, ttl); err != nil {
		p.log.ErrorContext(ctx, "putting back a back-channel logout to retry: it is lost", "client_id", j.ClientID, "sid", j.SID, "error", err)
		p.forget(sctx, j.ID)
		return
	}
	b.poke()
}

// forget removes a finished delivery from the queue.
func (p *Provider) forget(ctx context.Context, id string) {
	b := p.bcl
	b.mu.Lock()
	delete(b.local, id)
	b.mu.Unlock()
	if err := p.updateQueue(ctx, nil, []string{id}); err != nil {
		p.log.WarnContext(ctx, "removing a delivery from the back-channel logout queue", "error", err)
	}
}

// post sends j's logout token (§2.5) and tells what came of it (§2.8):
// 2xx is delivered; 400 is the client's refusal, as are other 4xx and
// redirects, which a retry would not change; 408, 425, 429, 5xx and
// network errors are retried.
func (p *Provider) post(ctx context.Context, j delivery) (outcome, int, error) {
	c := p.clients[j.ClientID]
	if c == nil || c.BackchannelLogoutURI == "" {
		return refused, 0, errors.New("the client no longer has a backchannel_logout_uri")
	}
	token, err := p.logoutToken(c, j.Subject, j.SID)
	if err != nil {
		return failed, 0, err
	}
	body := url.Values{"logout_token": {token}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BackchannelLogoutURI, strings.NewReader(body))
	if err != nil {
		return refused, 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.bcl.client.Do(req)
	if err != nil {
		return failed, 0, redactURLError(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		return delivered, s, nil
	case s == http.StatusRequestTimeout, s == http.StatusTooEarly, s == http.StatusTooManyRequests, s >= 500:
		return failed, s, nil
	default:
		return refused, s, nil
	}
}

// redactURLError drops the request from a client error: it is the URI,
// harmless, but the error of a *url.Error is enough.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// logoutClaims are the claims of a logout token (§2.4).
type logoutClaims struct {
	Issuer   string              `json:"iss"`
	Audience string              `json:"aud"`
	IssuedAt int64               `json:"iat"`
	Expiry   int64               `json:"exp"`
	ID       string              `json:"jti"`
	Events   map[string]struct{} `json:"events"`
	Subject  string              `json:"sub,omitempty"`
	SID      string              `json:"sid,omitempty"`
	// No nonce: §2.4 forbids it, so that a logout token cannot pass for
	// an ID token.
}

// logoutToken signs a logout token for c with the key and algorithm of
// its ID tokens.
func (p *Provider) logoutToken(c *client, sub, sid string) (string, error) {
	now := p.now()
	return sign(p.keys.Load().logout[c.IDTokenAlg], logoutClaims{
		Issuer:   p.issuer,
		Audience: c.ID,
		IssuedAt: now.Unix(),
		Expiry:   now.Add(logoutTokenLifetime).Unix(),
		ID:       p.randomString(16),
		Events:   map[string]struct{}{backchannelEvent: {}},
		Subject:  sub,
		SID:      sid,
	})
}
