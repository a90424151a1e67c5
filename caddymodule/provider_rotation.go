package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/authgate/authgate/idp"
)

// KeyRotation schedules the rotation of a [Provider]'s generated signing
// keys. Each algorithm (RS256, ES256) rotates on its own: a new key is made
// and published in the JWKS PublishAhead before it starts signing, it
// signs for Period, and the key it replaces stays published until every
// token that key signed has expired (the longest access or ID token
// lifetime of the clients, plus an hour). An algorithm whose key comes
// from a `signing_key` file does not rotate.
type KeyRotation struct {
	// Off stops making new keys: the keys in the ring keep signing as
	// scheduled, and a missing algorithm still gets a key. Default: false.
	Off bool `json:"off,omitempty"`

	// Period is how long a key signs. Default: 720h (30 days).
	Period caddy.Duration `json:"period,omitempty"`

	// PublishAhead is how long a new key is published before it signs;
	// shorter than Period, at least 1s. Default: 24h.
	PublishAhead caddy.Duration `json:"publish_ahead,omitempty"`
}

// Defaults of [KeyRotation], and what the schedule adds to them.
const (
	// A key signs for a month: short enough that a key that leaked
	// unnoticed stops being trusted within weeks (and that rotating is
	// routine, so it works when it must), long enough that verifiers
	// that cache keys barely notice.
	defaultRotationPeriod = 30 * 24 * time.Hour
	// A day of pre-publication outlasts any sensible JWKS cache (ours
	// says 5 minutes) and a node that is down for a few hours.
	defaultPublishAhead = 24 * time.Hour
	// retentionMargin is kept beyond the longest token lifetime: for
	// clocks that disagree, verifiers' leeway on exp, and a lifetime
	// made longer shortly before a rotation. A published key costs
	// nothing but a few hundred bytes of JWKS.
	retentionMargin = time.Hour
	// minPublishAhead: below a second, nodes cannot be relied on to
	// read the ring before the key signs.
	minPublishAhead = time.Second
	// maxCheckInterval is how often a node reads the ring at most
	// apart; with a short PublishAhead, more often (an eighth of it).
	maxCheckInterval = 5 * time.Second
	// firstLoadTimeout bounds the first attempt to load keys from a
	// store that is reached over the network; requests wait for it.
	firstLoadTimeout = 10 * time.Second
)

// rotationSchedule is a KeyRotation with its defaults applied, and the
// retention that follows from the token lifetimes.
type rotationSchedule struct {
	rotate       bool // make new keys (KeyRotation.Off not set)
	period       time.Duration
	publishAhead time.Duration
	retention    time.Duration // how long a key stays published after it stops signing
}

// schedule checks r and applies its defaults; nil is the default
// schedule. clients are the provider's, whose token lifetimes give the
// retention.
func (r *KeyRotation) schedule(clients []idp.Client) (rotationSchedule, error) {
	s := rotationSchedule{rotate: true, period: defaultRotationPeriod, publishAhead: defaultPublishAhead}
	if r != nil {
		if r.Period < 0 || r.PublishAhead < 0 {
			return s, fmt.Errorf("key_rotation: period %s and publish_ahead %s must be positive", time.Duration(r.Period), time.Duration(r.PublishAhead))
		}
		if r.Off && (r.Period != 0 || r.PublishAhead != 0) {
			return s, errors.New("key_rotation: off takes no period or publish_ahead")
		}
		s.rotate = !r.Off
		s.period = cmpDuration(time.Duration(r.Period), s.period)
		s.publishAhead = cmpDuration(time.Duration(r.PublishAhead), s.publishAhead)
	}
	if s.publishAhead >= s.period {
		return s, fmt.Errorf("key_rotation: publish_ahead %s must be shorter than period %s", s.publishAhead, s.period)
	}
	if s.publishAhead < minPublishAhead {
		return s, fmt.Errorf("key_rotation: publish_ahead %s is shorter than %s", s.publishAhead, minPublishAhead)
	}
	longest := time.Duration(0)
	for _, c := range clients {
		longest = max(longest,
			cmpDuration(c.AccessTokenLifetime, idp.DefaultAccessTokenLifetime),
			cmpDuration(c.IDTokenLifetime, idp.DefaultIDTokenLifetime))
	}
	s.retention = longest + retentionMargin
	return s, nil
}

// checkInterval is how often a node reads the ring: well within the
// pre-publication, so that every node publishes a new key long before
// any signs with it.
func (s rotationSchedule) checkInterval() time.Duration {
	return min(maxCheckInterval, s.publishAhead/8)
}

// jwksMaxAge is how long verifiers may cache the JWKS: with the check
// interval, a quarter of the pre-publication at most, so that a verifier
// that caches by HTTP's rules has the new key before it signs.
func (s rotationSchedule) jwksMaxAge() time.Duration {
	return min(idp.DefaultJWKSMaxAge, s.publishAhead/8)
}

func cmpDuration(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// The schedule of a ring is a pure function of the ring and the clock, so
// that every node that reads the same ring signs with the same key at the
// same moment, without talking to the others:
//
//   - a key is published from when it is stored until its retire_at;
//   - of the published keys of an algorithm, the one with the latest
//     signs_from that has come signs (the first in the ring of equals);
//     if none has come yet, the one that comes first.

// published reports whether r[i] is in the JWKS at now.
func (r keyRing) published(i int, now time.Time) bool {
	return r[i].RetireAt.IsZero() || now.Before(r[i].RetireAt)
}

// signer returns the index of the key that signs for alg at now, or -1.
func (r keyRing) signer(alg string, now time.Time) int {
	best, earliest := -1, -1
	for i, k := range r {
		if k.Alg != alg || !r.published(i, now) {
			continue
		}
		if !k.SignsFrom.After(now) && (best < 0 || k.SignsFrom.After(r[best].SignsFrom)) {
			best = i
		}
		if earliest < 0 || k.SignsFrom.Before(r[earliest].SignsFrom) {
			earliest = i
		}
	}
	if best < 0 {
		return earliest
	}
	return best
}

// keys returns the keys of algs that are published at now, in the order
// idp.Provider.SetKeys takes them: the signing key of each algorithm
// first, then the others in ring order.
func (r keyRing) keys(algs []string, now time.Time) []idp.SigningKey {
	var signers, others []idp.SigningKey
	signing := make(map[int]bool)
	for _, alg := range algs {
		if i := r.signer(alg, now); i >= 0 {
			signers = append(signers, r[i].SigningKey)
			signing[i] = true
		}
	}
	for i, k := range r {
		if slices.Contains(algs, k.Alg) && !signing[i] && r.published(i, now) {
			others = append(others, k.SigningKey)
		}
	}
	return append(signers, others...)
}

// nextChange returns the first time after now at which a key of algs
// starts signing or retires, or the zero time.
func (r keyRing) nextChange(algs []string, now time.Time) time.Time {
	var next time.Time
	for _, k := range r {
		if !slices.Contains(algs, k.Alg) {
			continue
		}
		for _, t := range []time.Time{k.SignsFrom, k.RetireAt} {
			if t.After(now) && (next.IsZero() || t.Before(next)) {
				next = t
			}
		}
	}
	return next
}

// rotationPlan is what the schedule asks of one algorithm at some time.
type rotationPlan struct {
	alg       string
	prune     []int     // retired keys to remove from the ring
	make      bool      // make a key ...
	signsFrom time.Time // ... that signs from then
}

// plan says what alg needs at now: a key if it has none (signing at once:
// nothing was signed for it); and, when s rotates, a successor once the
// signing key has signed for its period less the pre-publication and no
// successor is scheduled, and the removal of retired keys.
func (r keyRing) plan(alg string, now time.Time, s rotationSchedule) rotationPlan {
	p := rotationPlan{alg: alg}
	if s.rotate {
		for i, k := range r {
			if k.Alg == alg && !r.published(i, now) {
				p.prune = append(p.prune, i)
			}
		}
	}
	cur := r.signer(alg, now)
	if cur < 0 {
		p.make, p.signsFrom = true, now
		return p
	}
	if !s.rotate {
		return p
	}
	for i, k := range r {
		if k.Alg == alg && r.published(i, now) && k.SignsFrom.After(now) {
			return p // a successor is scheduled
		}
	}
	if due := r[cur].SignsFrom.Add(s.period - s.publishAhead); !now.Before(due) {
		// On time, the successor signs a period after its predecessor
		// began; late (every node was down), a pre-publication from now.
		p.make = true
		p.signsFrom = r[cur].SignsFrom.Add(s.period)
		if earliest := now.Add(s.publishAhead); p.signsFrom.Before(earliest) {
			p.signsFrom = earliest
		}
	}
	return p
}

// due reports whether the ring needs changing for algs at now.
func (r keyRing) due(algs []string, now time.Time, s rotationSchedule) bool {
	for _, alg := range algs {
		if p := r.plan(alg, now, s); p.make || len(p.prune) > 0 {
			return true
		}
	}
	return false
}

// rotate returns the ring as the schedule wants it at now, leaving r
// unchanged: retired keys removed, and new keys made with generate. A
// key's predecessors, once it is made, retire when it has signed for the
// retention.
func (r keyRing) rotate(algs []string, now time.Time, s rotationSchedule, generate func(alg string) (idp.SigningKey, error)) (next keyRing, made, removed []ringKey, err error) {
	var plans []rotationPlan
	drop := make(map[int]bool)
	for _, alg := range algs {
		p := r.plan(alg, now, s)
		plans = append(plans, p)
		for _, i := range p.prune {
			drop[i] = true
		}
	}
	for i, k := range r {
		if drop[i] {
			removed = append(removed, k)
		} else {
			next = append(next, k)
		}
	}
	for _, p := range plans {
		if !p.make {
			continue
		}
		k, err := generate(p.alg)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("making a %s key: %w", p.alg, err)
		}
		if s.rotate {
			for i := range next {
				if next[i].Alg == p.alg && next[i].RetireAt.IsZero() {
					next[i].RetireAt = p.signsFrom.Add(s.retention)
				}
			}
		}
		rk := ringKey{SigningKey: k, ringTimes: ringTimes{Created: now, SignsFrom: p.signsFrom}}
		next = append(next, rk)
		made = append(made, rk)
	}
	return next, made, removed, nil
}

// keySetter is what the rotation changes: an idp.Provider.
type keySetter interface {
	SetKeys(keys []idp.SigningKey) error
}

// keyRotation keeps a provider's signing keys in step with the ring in its
// key store: it reads the ring every check interval, and at each moment a
// key starts signing or retires, and swaps the provider's keys when the
// keys of now differ; when the schedule asks for a new key or a removal,
// it takes the store's lock, reads the ring again (another node may have
// done it), changes it and stores it. So of all nodes that share the
// store, one rotates, and all switch together.
type keyRotation struct {
	store    keyStore
	key      string   // the ring's key in store
	algs     []string // the algorithms the ring serves: those without a signing_key file
	fileKeys []idp.SigningKey
	sched    rotationSchedule
	interval time.Duration
	now      func() time.Time
	generate func(alg string) (idp.SigningKey, error)
	logger   *zap.Logger
	ticked   func(context.Context) // called after each tick, without m.mu; nil: nothing

	mu      sync.Mutex // the fields below; one tick at a time
	ring    keyRing    // as last read or stored
	decoded struct {   // the last ring read decoded, and its stored form
		raw  []byte
		ring keyRing
	}
	target  keySetter
	applied []string // the kids last given to target, in order
	failing bool     // the last read failed; logged once until one succeeds
}

// newKeyRotation returns the rotation of the ring at key in store for the
// algorithms that fileKeys leave out.
func newKeyRotation(store keyStore, key string, fileKeys []idp.SigningKey, sched rotationSchedule, logger *zap.Logger) *keyRotation {
	m := &keyRotation{
		store: store, key: key, fileKeys: fileKeys, sched: sched, logger: logger,
		interval: sched.checkInterval(), now: time.Now, generate: idp.GenerateKey,
	}
	for _, alg := range []string{idp.RS256, idp.ES256} {
		if !slices.ContainsFunc(fileKeys, func(k idp.SigningKey) bool { return k.Alg == alg }) {
			m.algs = append(m.algs, alg)
		}
	}
	return m
}

// currentKeys returns the keys of now: those of the files first, then the
// ring's.
func (m *keyRotation) currentKeys(now time.Time) []idp.SigningKey {
	return slices.Concat(m.fileKeys, m.ring.keys(m.algs, now))
}

// init reads the ring, making it, or the keys of algorithms it lacks,
// under the lock, and returns the keys of now. It rotates nothing: the
// first tick does that.
func (m *keyRotation) init(ctx context.Context) ([]idp.SigningKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ring, found, err := m.read(ctx)
	if err != nil {
		return nil, err
	}
	m.ring = ring
	noRotation := m.sched
	noRotation.rotate = false
	if !found || ring.due(m.algs, m.now(), noRotation) {
		if err := m.update(ctx, noRotation); err != nil {
			return nil, err
		}
	}
	keys := m.currentKeys(m.now())
	m.applied = keyIDs(keys)
	return keys, nil
}

// read returns the stored ring, and whether there is one. m.mu is held.
func (m *keyRotation) read(ctx context.Context) (keyRing, bool, error) {
	data, err := m.store.Load(ctx, m.key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("loading %s: %w", m.key, err)
	}
	if m.decoded.ring != nil && bytes.Equal(data, m.decoded.raw) {
		return m.decoded.ring, true, nil // unchanged: no need to parse its keys again
	}
	ring, err := decodeRing(data)
	if err != nil {
		return nil, false, fmt.Errorf("decoding %s: %w", m.key, err)
	}
	m.decoded.raw, m.decoded.ring = data, ring
	return ring, true, nil
}

// update changes the stored ring as s asks, under the store's lock. A ring
// that has gone from the store (a Redis without persistence that
// restarted) is stored again from the one last read, whose keys signed
// the tokens still out there.
func (m *keyRotation) update(ctx context.Context, s rotationSchedule) (err error) {
	lock := strings.ReplaceAll(m.key, "/", "_")
	if err := m.store.Lock(ctx, lock); err != nil {
		return fmt.Errorf("locking %s: %w", m.key, err)
	}
	defer func() {
		if uerr := m.store.Unlock(context.WithoutCancel(ctx), lock); uerr != nil && err == nil {
			err = fmt.Errorf("unlocking %s: %w", m.key, uerr)
		}
	}()
	ring, found, err := m.read(ctx)
	if err != nil {
		return err
	}
	if !found {
		ring = m.ring
	}
	now := m.now()
	next, made, removed, err := ring.rotate(m.algs, now, s, m.generate)
	if err != nil {
		return err
	}
	if found && len(made) == 0 && len(removed) == 0 {
		m.ring = ring // another node did it
		return nil
	}
	data, err := next.encode()
	if err != nil {
		return err
	}
	if err := m.store.Store(ctx, m.key, data); err != nil {
		return fmt.Errorf("storing %s: %w", m.key, err)
	}
	m.ring = next
	if !found && len(ring) > 0 {
		m.logger.Warn("signing key ring was missing from the store; stored again the keys last read", zap.String("storage_key", m.key))
	}
	for _, k := range made {
		m.logger.Info("made signing key", zap.String("kid", k.ID), zap.String("alg", k.Alg), zap.Time("signs_from", k.SignsFrom))
	}
	for _, k := range removed {
		m.logger.Info("removed retired signing key", zap.String("kid", k.ID), zap.String("alg", k.Alg), zap.Time("retired_at", k.RetireAt))
	}
	return nil
}

// tick reads the ring, rotates what is due, and gives the provider the
// keys of now if they changed. It returns how long until the next tick:
// the check interval, or less if a key starts signing or retires sooner.
func (m *keyRotation) tick(ctx context.Context) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	ring, found, err := m.read(ctx)
	switch {
	case err != nil:
		if !m.failing && ctx.Err() == nil {
			m.logger.Error("reading signing keys; keeping those in use", zap.Error(err))
		}
		m.failing = true
	default:
		if m.failing {
			m.logger.Info("reading signing keys again")
		}
		m.failing = false
		if found {
			m.ring = ring
		}
		if !found || m.ring.due(m.algs, m.now(), m.sched) {
			if err := m.update(ctx, m.sched); err != nil && ctx.Err() == nil {
				m.logger.Error("rotating signing keys", zap.Error(err))
			}
		}
	}

	now := m.now()
	keys := m.currentKeys(now)
	if ids := keyIDs(keys); m.target != nil && !slices.Equal(ids, m.applied) {
		if err := m.target.SetKeys(keys); err != nil {
			m.logger.Error("swapping signing keys", zap.Error(err))
		} else {
			m.logChanges(keys)
			m.applied = ids
		}
	}

	return m.wait(now)
}

// wait returns how long from now until the next tick: the check
// interval, or less if a key starts signing or retires sooner. m.mu is
// held.
func (m *keyRotation) wait(now time.Time) time.Duration {
	wait := m.interval
	if next := m.ring.nextChange(m.algs, now); !next.IsZero() {
		// A moment past it, so that the next tick is not before it.
		wait = min(wait, next.Sub(now)+time.Millisecond)
	}
	return wait
}

// logChanges logs the keys that keys publish or sign with and the last
// applied did not.
func (m *keyRotation) logChanges(keys []idp.SigningKey) {
	signed := make(map[string]bool) // algorithms whose signer is logged
	for _, k := range keys {
		i := slices.Index(m.applied, k.ID)
		if i < 0 {
			m.logger.Info("published signing key", zap.String("kid", k.ID), zap.String("alg", k.Alg))
		}
		if signed[k.Alg] {
			continue
		}
		signed[k.Alg] = true
		if i < 0 || m.algIndex(k.Alg) != i {
			m.logger.Info("signing with key", zap.String("kid", k.ID), zap.String("alg", k.Alg))
		}
	}
}

// algIndex returns the index in m.applied of alg's first key, the one
// that signed, or -1.
func (m *keyRotation) algIndex(alg string) int {
	for i, id := range m.applied {
		if slices.ContainsFunc(m.fileKeys, func(k idp.SigningKey) bool { return k.ID == id && k.Alg == alg }) ||
			slices.ContainsFunc(m.ring, func(k ringKey) bool { return k.ID == id && k.Alg == alg }) {
			return i
		}
	}
	return -1
}

// run ticks until ctx ends. The first tick is a wait after init, not at
// once: `caddy validate` provisions a configuration and cleans it up
// within that, and must not rotate the keys of the Caddy that runs, on
// the schedule of a configuration that is only being checked.
func (m *keyRotation) run(ctx context.Context) {
	m.mu.Lock()
	wait := m.wait(m.now())
	m.mu.Unlock()
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = m.tick(ctx)
		if m.ticked != nil {
			m.ticked(ctx)
		}
	}
}

func keyIDs(keys []idp.SigningKey) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return ids
}

// liveProvider is the idp.Provider of a module: nil until its keys are
// loaded, which from a remote key store is after Provision.
type liveProvider struct {
	atomic.Pointer[idp.Provider]
	ready chan struct{} // closed after the first attempt to load the keys
}

// remoteKeyStore is a keyStore reached over the network (Redis): it may be
// down when Caddy starts, which must not stop Caddy from starting, nor
// `caddy validate` from passing. A provider on one loads its keys in the
// background, and answers 503 until it has them; on a reload, it starts
// with the keys that the running configuration loaded.
type remoteKeyStore interface {
	keyStore
	// lastLoaded returns the keys that a running provider of this
	// process loaded from the store for the storage prefix: a reload
	// while the store is down serves with them. keepLoaded records k,
	// replacing what is recorded or only if nothing is; forgetLoaded
	// removes k if it is what is recorded.
	lastLoaded(prefix string) (*loadedKeys, bool)
	keepLoaded(prefix string, k *loadedKeys, replace bool)
	forgetLoaded(prefix string, k *loadedKeys)
}

// loadedKeys are a provider's keys as loaded from a remote key store: its
// cookie keys, and its rotation, whose ring is the last read (nil when
// every algorithm has a signing_key file).
type loadedKeys struct {
	cookie [][2][]byte
	rot    *keyRotation
}

// adopt takes the ring of prev, the rotation of the configuration that
// runs, and returns the keys of now, if that ring has a key that signs
// for each of m's algorithms. It reads no store.
func (m *keyRotation) adopt(prev *keyRotation) ([]idp.SigningKey, bool) {
	if prev == nil {
		return nil, false
	}
	prev.mu.Lock()
	ring := prev.ring
	prev.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for _, alg := range m.algs {
		if ring.signer(alg, now) < 0 {
			return nil, false // the ring must be read, and a key made
		}
	}
	m.ring = ring
	keys := m.currentKeys(now)
	m.applied = keyIDs(keys)
	return keys, true
}

// startKeys loads the provider's cookie keys and signing keys from ks
// (making them the first time), builds the provider on store with cfg, and
// starts the rotation of its signing keys, stopped by Cleanup. From a
// remoteKeyStore, the keys are loaded in the background, or taken from
// the configuration that runs.
func (p *Provider) startKeys(ctx caddy.Context, ks keyStore, store idp.Store, cfg idp.Config) error {
	sched, err := p.KeyRotation.schedule(cfg.Clients)
	if err != nil {
		return err
	}
	cfg.JWKSMaxAge = sched.jwksMaxAge()
	prefix := providerStoragePrefix(p.Issuer)
	rot := newKeyRotation(ks, prefix+"/signing_keys.json", cfg.Keys, sched, p.logger.With(zap.String("issuer", p.Issuer)))
	if len(rot.algs) == 0 {
		rot = nil
		if p.KeyRotation != nil {
			p.logger.Warn("key_rotation has no effect: every algorithm has a signing_key file")
		}
	}

	remote, _ := ks.(remoteKeyStore)
	// mine is what this provider records as loaded from a remote store,
	// once it serves. A provider that is cleaned up forgets it, and a
	// running rotation records it again if nothing is: so what a reload
	// finds is the ring of a rotation that runs, not of a configuration
	// that failed to load after its provider was provisioned. The
	// rotation also stores the cookie keys again if the store lost them,
	// as it does the ring, so that a node that starts later takes them
	// rather than making keys that open no other node's cookies.
	var mine *loadedKeys
	if remote != nil && rot != nil {
		rot.ticked = func(ctx context.Context) {
			if mine == nil {
				return
			}
			remote.keepLoaded(prefix, mine, false)
			// A failure is the store's, which the tick has logged.
			if restored, _ := restoreCookieKeys(ctx, ks, prefix+"/cookie_keys.json", mine.cookie); restored {
				rot.logger.Warn("cookie keys were missing from the store; stored again the keys in use", zap.String("storage_key", prefix+"/cookie_keys.json"))
			}
		}
	}
	// serve builds the provider with its keys, which the rotation swaps
	// from then on.
	serve := func(cookieKeys [][2][]byte, keys []idp.SigningKey) error {
		c := cfg
		c.CookieKeys, c.Keys = cookieKeys, keys
		pr, err := idp.New(c, store)
		if err != nil {
			return err
		}
		if rot != nil {
			rot.mu.Lock()
			rot.target = pr
			rot.mu.Unlock()
		}
		p.provider.Store(pr)
		if remote != nil {
			mine = &loadedKeys{cookie: cookieKeys, rot: rot}
			remote.keepLoaded(prefix, mine, true)
		}
		pr.Start() // its back-channel logout worker, closed by Cleanup
		return nil
	}
	build := func(ctx context.Context) error {
		cookieKeys, _, err := loadOrCreateCookieKeys(ctx, ks, prefix+"/cookie_keys.json")
		if err != nil {
			return fmt.Errorf("cookie keys: %w", err)
		}
		keys := cfg.Keys
		if rot != nil {
			if keys, err = rot.init(ctx); err != nil {
				return fmt.Errorf("signing keys: %w", err)
			}
		}
		return serve(cookieKeys, keys)
	}

	p.provider = &liveProvider{ready: make(chan struct{})}
	loaded := false // built from the keys of the configuration that runs
	if remote != nil {
		// Check the configuration now, with keys of no account, as
		// `caddy validate` must: idp.New is what checks it.
		check := cfg
		check.PasswordComparer = compareOnly{cfg.PasswordComparer}
		extra, err := throwawayKeys(rot)
		if err != nil {
			return err
		}
		check.Keys = slices.Concat(cfg.Keys, extra)
		check.CookieKeys = [][2][]byte{{make([]byte, cookieKeySize), make([]byte, cookieKeySize)}}
		if _, err := idp.New(check, store); err != nil {
			return err
		}
		// A reload: serve at once with the keys that the running
		// configuration loaded, even if the store is down now (discovery
		// and JWKS need no store); the rotation reads the ring at its
		// first tick.
		if last, ok := remote.lastLoaded(prefix); ok {
			keys, ok := cfg.Keys, true
			if rot != nil {
				keys, ok = rot.adopt(last.rot)
			}
			if ok && serve(last.cookie, keys) == nil {
				loaded = true
				close(p.provider.ready)
			}
		}
	} else {
		if err := build(ctx); err != nil {
			return err
		}
		close(p.provider.ready)
		if rot == nil {
			return nil
		}
	}

	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.stopKeys = func() {
		cancel()
		<-done
		if mine != nil {
			remote.forgetLoaded(prefix, mine)
		}
	}
	go func() {
		defer close(done)
		if remote != nil && !loaded && !p.buildInBackground(runCtx, build) {
			return
		}
		if rot != nil {
			rot.run(runCtx)
		}
	}()
	return nil
}

// buildInBackground calls build until it succeeds or ctx ends, closing
// p.ready after the first attempt, and reports whether it succeeded.
func (p *Provider) buildInBackground(ctx context.Context, build func(context.Context) error) bool {
	wait := 250 * time.Millisecond
	for attempt := 0; ; attempt++ {
		attemptCtx, cancel := context.WithTimeout(ctx, firstLoadTimeout)
		err := build(attemptCtx)
		cancel()
		if attempt == 0 {
			close(p.provider.ready)
		}
		if err == nil {
			if attempt > 0 {
				p.logger.Info("loaded the provider's keys; serving", zap.String("issuer", p.Issuer))
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if attempt == 0 {
			p.logger.Error("loading the provider's keys; its endpoints answer 503 until they load", zap.String("issuer", p.Issuer), zap.Error(err))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		wait = min(2*wait, maxCheckInterval)
	}
}

// compareOnly is a PasswordComparer that is no idp.FakeHasher, for
// checking a configuration: its fake hashes would cost a login's time
// each, for a provider that is thrown away.
type compareOnly struct{ idp.PasswordComparer }

var (
	throwawayOnce sync.Once
	throwaway     []idp.SigningKey
	throwawayErr  error
)

// throwawayKeys returns a key of each algorithm rot serves, made once per
// process, for checking a configuration whose keys are not loaded yet.
// They never sign anything.
func throwawayKeys(rot *keyRotation) ([]idp.SigningKey, error) {
	if rot == nil {
		return nil, nil
	}
	throwawayOnce.Do(func() {
		for _, alg := range []string{idp.RS256, idp.ES256} {
			k, err := idp.GenerateKey(alg)
			if err != nil {
				throwawayErr = err
				return
			}
			throwaway = append(throwaway, k)
		}
	})
	if throwawayErr != nil {
		return nil, throwawayErr
	}
	var keys []idp.SigningKey
	for _, k := range throwaway {
		if slices.Contains(rot.algs, k.Alg) {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// isEndpoint reports whether r is for one of the provider's endpoints,
// while the provider that would say is not built yet.
func (p *Provider) isEndpoint(r *http.Request) bool {
	base := ""
	if u, err := url.Parse(p.Issuer); err == nil {
		base = strings.TrimSuffix(u.Path, "/")
	}
	for _, path := range []string{
		idp.PathDiscovery, idp.PathJWKS, idp.PathAuthorize, idp.PathToken, idp.PathUserinfo, idp.PathEndSession,
		idp.PathRevocation, idp.PathIntrospect, idp.PathConsent, idp.PathLogin, idp.PathLogout,
	} {
		if r.URL.Path == base+path {
			return true
		}
	}
	return p.SessionManagement && r.URL.Path == base+idp.PathCheckSession
}

// servePending answers a request for an endpoint while the provider's
// keys are not loaded: 503 temporarily_unavailable (RFC 6749 §4.1.2.1's
// code) with Retry-After.
func servePending(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Retry-After", "1")
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintf(w, `{"error":%q,"error_description":"the provider's keys are not loaded yet; try again shortly"}`, idp.ErrTemporarilyUnavailable)
}
