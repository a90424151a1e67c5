package caddymodule

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/internal/redistest"
)

var (
	testKeysMu sync.Mutex
	testKeys   = map[string][]idp.SigningKey{}
)

// testKey returns the i-th test key of alg, made once per test binary:
// RSA keys are slow to make.
func testKey(t testing.TB, alg string, i int) idp.SigningKey {
	t.Helper()
	testKeysMu.Lock()
	defer testKeysMu.Unlock()
	for len(testKeys[alg]) <= i {
		k, err := idp.GenerateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		testKeys[alg] = append(testKeys[alg], k)
	}
	return testKeys[alg][i]
}

// keyMaker hands out test keys in turn and counts them.
type keyMaker struct {
	t    testing.TB
	next map[string]*atomic.Int32
	made atomic.Int32
}

func newKeyMaker(t testing.TB, skip int) *keyMaker {
	m := &keyMaker{t: t, next: map[string]*atomic.Int32{idp.RS256: {}, idp.ES256: {}}}
	m.next[idp.RS256].Store(int32(skip))
	m.next[idp.ES256].Store(int32(skip))
	return m
}

func (m *keyMaker) generate(alg string) (idp.SigningKey, error) {
	m.made.Add(1)
	return testKey(m.t, alg, int(m.next[alg].Add(1)-1)), nil
}

// memKeyStore is a keyStore in memory whose lock waits as a storage's
// does, until it is free or the context ends.
type memKeyStore struct {
	mu     sync.Mutex
	values map[string][]byte
	locks  map[string]chan struct{}
}

func newMemKeyStore() *memKeyStore {
	return &memKeyStore{values: map[string][]byte{}, locks: map[string]chan struct{}{}}
}

func (s *memKeyStore) Load(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.values[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return v, nil
}

func (s *memKeyStore) Store(_ context.Context, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[key] = value
	return nil
}

func (s *memKeyStore) delete(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.values, key)
}

func (s *memKeyStore) lock(name string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.locks[name]
	if !ok {
		l = make(chan struct{}, 1)
		s.locks[name] = l
	}
	return l
}

func (s *memKeyStore) Lock(ctx context.Context, name string) error {
	select {
	case s.lock(name) <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *memKeyStore) Unlock(_ context.Context, name string) error {
	select {
	case <-s.lock(name):
		return nil
	default:
		return fmt.Errorf("%s is not locked", name)
	}
}

// t0 is the test clock's start.
var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func ringOf(keys ...ringKey) keyRing { return keys }

func rk(k idp.SigningKey, signsFrom, retireAt time.Time) ringKey {
	return ringKey{SigningKey: k, ringTimes: ringTimes{SignsFrom: signsFrom, RetireAt: retireAt}}
}

// testSchedule: a key signs 10 hours, published 2 hours ahead, kept 3
// hours after.
var testSchedule = rotationSchedule{rotate: true, period: 10 * time.Hour, publishAhead: 2 * time.Hour, retention: 3 * time.Hour}

func ids(keys []idp.SigningKey) string { return strings.Join(keyIDs(keys), " ") }

func TestRingKeys(t *testing.T) {
	rsA, rsB, rsC := testKey(t, idp.RS256, 0), testKey(t, idp.RS256, 1), testKey(t, idp.RS256, 2)
	esA, esB := testKey(t, idp.ES256, 0), testKey(t, idp.ES256, 1)
	var never time.Time
	both := []string{idp.RS256, idp.ES256}
	tests := []struct {
		name string
		ring keyRing
		algs []string
		now  time.Time
		want []idp.SigningKey // signers first, then the other published keys
	}{
		{
			name: "ring of the first format: the first of each algorithm signs",
			ring: ringOf(rk(rsA, never, never), rk(esA, never, never), rk(rsB, never, never), rk(esB, never, never)),
			algs: both, now: t0,
			want: []idp.SigningKey{rsA, esA, rsB, esB},
		},
		{
			name: "a key published ahead does not sign yet",
			ring: ringOf(rk(rsA, at(0), never), rk(esA, at(0), never), rk(rsB, at(10*time.Hour), never)),
			algs: both, now: at(9 * time.Hour),
			want: []idp.SigningKey{rsA, esA, rsB},
		},
		{
			name: "it signs from its signs_from on",
			ring: ringOf(rk(rsA, at(0), at(13*time.Hour)), rk(esA, at(0), never), rk(rsB, at(10*time.Hour), never)),
			algs: both, now: at(10 * time.Hour),
			want: []idp.SigningKey{rsB, esA, rsA},
		},
		{
			name: "a retired key is not published",
			ring: ringOf(rk(rsA, at(0), at(13*time.Hour)), rk(esA, at(0), never), rk(rsB, at(10*time.Hour), never)),
			algs: both, now: at(13 * time.Hour),
			want: []idp.SigningKey{rsB, esA},
		},
		{
			name: "the newest of several that have come signs",
			ring: ringOf(rk(rsC, at(2*time.Hour), never), rk(rsA, at(0), never), rk(rsB, at(time.Hour), never)),
			algs: []string{idp.RS256}, now: at(3 * time.Hour),
			want: []idp.SigningKey{rsC, rsA, rsB},
		},
		{
			name: "none has come yet: the first to come signs",
			ring: ringOf(rk(rsB, at(2*time.Hour), never), rk(rsA, at(time.Hour), never)),
			algs: []string{idp.RS256}, now: t0,
			want: []idp.SigningKey{rsA, rsB},
		},
		{
			name: "algorithms not served are left out",
			ring: ringOf(rk(rsA, never, never), rk(esA, never, never)),
			algs: []string{idp.ES256}, now: t0,
			want: []idp.SigningKey{esA},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.ring.keys(tt.algs, tt.now); ids(got) != ids(tt.want) {
				t.Fatalf("keys\n got %s\nwant %s", ids(got), ids(tt.want))
			}
		})
	}
}

func TestRingPlan(t *testing.T) {
	rsA, rsB := testKey(t, idp.RS256, 0), testKey(t, idp.RS256, 1)
	esA := testKey(t, idp.ES256, 0)
	var never time.Time
	off := testSchedule
	off.rotate = false
	tests := []struct {
		name      string
		ring      keyRing
		alg       string
		now       time.Time
		sched     rotationSchedule
		make      bool
		signsFrom time.Time
		prune     []int
	}{
		{
			name: "young key: nothing to do",
			ring: ringOf(rk(rsA, at(0), never)), alg: idp.RS256, now: at(7 * time.Hour), sched: testSchedule,
		},
		{
			name: "a pre-publication before its period ends: a successor from then",
			ring: ringOf(rk(rsA, at(0), never)), alg: idp.RS256, now: at(8 * time.Hour), sched: testSchedule,
			make: true, signsFrom: at(10 * time.Hour),
		},
		{
			name: "late: a successor a pre-publication from now",
			ring: ringOf(rk(rsA, at(0), never)), alg: idp.RS256, now: at(30 * time.Hour), sched: testSchedule,
			make: true, signsFrom: at(32 * time.Hour),
		},
		{
			name: "successor scheduled: nothing to do",
			ring: ringOf(rk(rsA, at(0), never), rk(rsB, at(10*time.Hour), never)), alg: idp.RS256, now: at(9 * time.Hour), sched: testSchedule,
		},
		{
			name: "ring of the first format: due at once, with a pre-publication",
			ring: ringOf(rk(rsA, never, never), rk(esA, never, never)), alg: idp.ES256, now: t0, sched: testSchedule,
			make: true, signsFrom: at(2 * time.Hour),
		},
		{
			name: "no key of the algorithm: one that signs at once",
			ring: ringOf(rk(rsA, at(0), never)), alg: idp.ES256, now: at(time.Hour), sched: testSchedule,
			make: true, signsFrom: at(time.Hour),
		},
		{
			name: "no key of the algorithm, rotation off: one all the same",
			ring: ringOf(rk(rsA, at(0), never)), alg: idp.ES256, now: at(time.Hour), sched: off,
			make: true, signsFrom: at(time.Hour),
		},
		{
			name: "rotation off: an old key keeps signing",
			ring: ringOf(rk(rsA, at(0), never)), alg: idp.RS256, now: at(100 * time.Hour), sched: off,
		},
		{
			name: "a retired key is removed",
			ring: ringOf(rk(rsA, at(0), at(13*time.Hour)), rk(rsB, at(10*time.Hour), never)), alg: idp.RS256, now: at(13 * time.Hour), sched: testSchedule,
			prune: []int{0},
		},
		{
			name: "rotation off: a retired key stays in the ring",
			ring: ringOf(rk(rsA, at(0), at(13*time.Hour)), rk(rsB, at(10*time.Hour), never)), alg: idp.RS256, now: at(13 * time.Hour), sched: off,
		},
		{
			name: "every key retired: a new one at once",
			ring: ringOf(rk(rsA, at(0), at(13*time.Hour))), alg: idp.RS256, now: at(14 * time.Hour), sched: testSchedule,
			make: true, signsFrom: at(14 * time.Hour), prune: []int{0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.ring.plan(tt.alg, tt.now, tt.sched)
			if p.make != tt.make || !p.signsFrom.Equal(tt.signsFrom) || !slices.Equal(p.prune, tt.prune) {
				t.Fatalf("plan: make %v signs from %v prune %v; want make %v signs from %v prune %v",
					p.make, p.signsFrom, p.prune, tt.make, tt.signsFrom, tt.prune)
			}
			if due := tt.ring.due([]string{tt.alg}, tt.now, tt.sched); due != (tt.make || len(tt.prune) > 0) {
				t.Fatalf("due = %v", due)
			}
		})
	}
}

// TestRingRotate: a successor retires its predecessors a retention after
// it starts signing; algorithms rotate on their own.
func TestRingRotate(t *testing.T) {
	rsA, esA := testKey(t, idp.RS256, 0), testKey(t, idp.ES256, 0)
	var never time.Time
	ring := ringOf(rk(rsA, at(0), never), rk(esA, at(5*time.Hour), never))
	maker := newKeyMaker(t, 1)
	next, made, removed, err := ring.rotate([]string{idp.RS256, idp.ES256}, at(8*time.Hour), testSchedule, maker.generate)
	if err != nil {
		t.Fatal(err)
	}
	if len(made) != 1 || made[0].Alg != idp.RS256 || !made[0].SignsFrom.Equal(at(10*time.Hour)) || !made[0].Created.Equal(at(8*time.Hour)) || len(removed) != 0 {
		t.Fatalf("made %v, removed %v; want one RS256 key signing from +10h", made, removed)
	}
	if len(next) != 3 || !next[0].RetireAt.Equal(at(13*time.Hour)) || !next[1].RetireAt.IsZero() {
		t.Fatalf("retire times: %v, %v; want +13h for the old RS256 key, none for the ES256 key", next[0].RetireAt, next[1].RetireAt)
	}
	if !ring[0].RetireAt.IsZero() || len(ring) != 2 {
		t.Fatal("rotate changed the ring it was given")
	}
	// Keys of now at each step: the old key signs until +10h, is
	// published until +13h, then gone.
	for _, step := range []struct {
		now  time.Time
		want []idp.SigningKey
	}{
		{at(9 * time.Hour), []idp.SigningKey{rsA, esA, made[0].SigningKey}},
		{at(10 * time.Hour), []idp.SigningKey{made[0].SigningKey, esA, rsA}},
		{at(13 * time.Hour), []idp.SigningKey{made[0].SigningKey, esA}},
	} {
		if got := next.keys([]string{idp.RS256, idp.ES256}, step.now); ids(got) != ids(step.want) {
			t.Errorf("keys at %v: %s, want %s", step.now.Sub(t0), ids(got), ids(step.want))
		}
	}
	if nc := next.nextChange([]string{idp.RS256, idp.ES256}, at(8*time.Hour)); !nc.Equal(at(10 * time.Hour)) {
		t.Errorf("next change %v, want +10h", nc)
	}
}

func TestRingEncoding(t *testing.T) {
	rsA, esA := testKey(t, idp.RS256, 0), testKey(t, idp.ES256, 0)
	ring := ringOf(rk(rsA, at(0), at(13*time.Hour)), ringKey{SigningKey: esA, ringTimes: ringTimes{Created: at(time.Hour), SignsFrom: at(3 * time.Hour)}})
	data, err := ring.encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeRing(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 {
		t.Fatalf("decoded %d keys", len(back))
	}
	for i := range ring {
		if back[i].ID != ring[i].ID || back[i].Alg != ring[i].Alg || !back[i].Created.Equal(ring[i].Created) ||
			!back[i].SignsFrom.Equal(ring[i].SignsFrom) || !back[i].RetireAt.Equal(ring[i].RetireAt) {
			t.Fatalf("key %d decoded as %+v, was %+v", i, back[i].ringTimes, ring[i].ringTimes)
		}
	}
	// Each key is still a JWK that the reader of the first format (and
	// any JWK reader) takes; the schedule is in members of its own.
	var stored storedSigningKeys
	if err := json.Unmarshal(data, &stored); err != nil {
		t.Fatal(err)
	}
	if _, err := idp.ParseKey(stored.Keys[0]); err != nil {
		t.Fatalf("a stored key is no JWK to idp.ParseKey: %v", err)
	}
	if !strings.Contains(string(stored.Keys[0]), `"signs_from":"2025-01-01T00:00:00Z"`) || strings.Contains(string(stored.Keys[1]), "retire_at") {
		t.Fatalf("stored keys %s", data)
	}

	// A ring of the first format: keys without times.
	var old storedSigningKeys
	for _, k := range []idp.SigningKey{rsA, esA} {
		jwk, err := idp.MarshalKey(k)
		if err != nil {
			t.Fatal(err)
		}
		old.Keys = append(old.Keys, jwk)
	}
	oldData, _ := json.Marshal(old)
	back, err = decodeRing(oldData)
	if err != nil || len(back) != 2 || !back[0].SignsFrom.IsZero() || !back[0].RetireAt.IsZero() {
		t.Fatalf("ring of the first format: %v, %v", back, err)
	}
}

func TestKeyRotationSchedule(t *testing.T) {
	tests := []struct {
		name    string
		r       *KeyRotation
		clients []idp.Client
		want    rotationSchedule
		wantErr string
	}{
		{
			name: "defaults", r: nil,
			want: rotationSchedule{rotate: true, period: 30 * 24 * time.Hour, publishAhead: 24 * time.Hour, retention: time.Hour},
		},
		{
			name: "retention from the longest lifetime", r: &KeyRotation{Period: caddy.Duration(48 * time.Hour)},
			clients: []idp.Client{{ID: "a"}, {ID: "b", AccessTokenLifetime: 3 * time.Hour}, {ID: "c", IDTokenLifetime: 5 * time.Hour, AccessTokenLifetime: time.Minute}},
			want:    rotationSchedule{rotate: true, period: 48 * time.Hour, publishAhead: 24 * time.Hour, retention: 6 * time.Hour},
		},
		{
			name: "default client lifetimes", r: &KeyRotation{Off: true}, clients: []idp.Client{{ID: "a"}},
			want: rotationSchedule{rotate: false, period: 30 * 24 * time.Hour, publishAhead: 24 * time.Hour, retention: 2 * time.Hour},
		},
		{name: "publish_ahead not shorter", r: &KeyRotation{Period: caddy.Duration(time.Hour), PublishAhead: caddy.Duration(time.Hour)}, wantErr: "key_rotation: publish_ahead 1h0m0s must be shorter than period 1h0m0s"},
		{name: "default publish_ahead longer", r: &KeyRotation{Period: caddy.Duration(time.Hour)}, wantErr: "key_rotation: publish_ahead 24h0m0s must be shorter than period 1h0m0s"},
		{name: "negative", r: &KeyRotation{Period: caddy.Duration(-time.Hour)}, wantErr: "key_rotation: period -1h0m0s"},
		{name: "off with a period", r: &KeyRotation{Off: true, Period: caddy.Duration(time.Hour)}, wantErr: "key_rotation: off takes no period"},
		{name: "publish_ahead under a second", r: &KeyRotation{Period: caddy.Duration(time.Second), PublishAhead: caddy.Duration(500 * time.Millisecond)}, wantErr: "key_rotation: publish_ahead 500ms is shorter than 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.r.schedule(tt.clients)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("schedule = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	s := rotationSchedule{period: 4 * time.Second, publishAhead: 2 * time.Second}
	if s.checkInterval() != 250*time.Millisecond || s.jwksMaxAge() != 250*time.Millisecond {
		t.Errorf("short schedule: check every %v, JWKS max age %v; want an eighth of publish_ahead", s.checkInterval(), s.jwksMaxAge())
	}
	s.publishAhead = 24 * time.Hour
	if s.checkInterval() != 5*time.Second || s.jwksMaxAge() != 5*time.Minute {
		t.Errorf("default schedule: check every %v, JWKS max age %v; want 5s and 5m", s.checkInterval(), s.jwksMaxAge())
	}
}

// recordingSetter records the key sets it is given.
type recordingSetter struct {
	mu   sync.Mutex
	sets [][]idp.SigningKey
}

func (r *recordingSetter) SetKeys(keys []idp.SigningKey) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets = append(r.sets, keys)
	return nil
}

func (r *recordingSetter) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.sets) == 0 {
		return ""
	}
	return ids(r.sets[len(r.sets)-1])
}

// testClock is a clock the test moves.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

const ringKeyName = "authgate/provider/test/signing_keys.json"

func newTestRotation(t testing.TB, store keyStore, clock *testClock, maker *keyMaker, fileKeys ...idp.SigningKey) (*keyRotation, *recordingSetter) {
	m := newKeyRotation(store, ringKeyName, fileKeys, testSchedule, zap.NewNop())
	m.now, m.generate = clock.Now, maker.generate
	target := &recordingSetter{}
	if _, err := m.init(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.target = target
	return m, target
}

// TestKeyRotationTicks runs a rotation through its schedule: made and
// published ahead, signing on time, the old key retired after the
// retention and removed from the ring.
func TestKeyRotationTicks(t *testing.T) {
	ctx := context.Background()
	store := newMemKeyStore()
	clock := &testClock{now: t0}
	maker := newKeyMaker(t, 0)
	m, target := newTestRotation(t, store, clock, maker)
	if maker.made.Load() != 2 || len(m.ring) != 2 {
		t.Fatalf("init made %d keys, ring of %d; want an RS256 and an ES256 key", maker.made.Load(), len(m.ring))
	}
	rsA, esA := m.ring[0].SigningKey, m.ring[1].SigningKey
	if m.tick(ctx); target.last() != "" || maker.made.Load() != 2 {
		t.Fatalf("tick with nothing due: set %q, made %d", target.last(), maker.made.Load())
	}

	clock.set(at(8 * time.Hour))
	wait := m.tick(ctx)
	if maker.made.Load() != 4 {
		t.Fatalf("tick when due made %d keys in all, want 4", maker.made.Load())
	}
	rsB, esB := m.ring[2].SigningKey, m.ring[3].SigningKey
	if want := ids([]idp.SigningKey{rsA, esA, rsB, esB}); target.last() != want {
		t.Fatalf("keys after the rotation was made: %s, want %s (old ones still signing)", target.last(), want)
	}
	if wait != testSchedule.checkInterval() {
		t.Errorf("wait %v, want the check interval", wait)
	}
	stored, _, err := m.read(ctx)
	if err != nil || len(stored) != 4 {
		t.Fatalf("stored ring: %d keys, %v", len(stored), err)
	}

	// Close to the switch, the tick wakes at it.
	clock.set(at(10*time.Hour - 100*time.Millisecond))
	if wait := m.tick(ctx); wait != 101*time.Millisecond {
		t.Errorf("wait before the switch %v, want 101ms", wait)
	}
	clock.set(at(10 * time.Hour))
	m.tick(ctx)
	if want := ids([]idp.SigningKey{rsB, esB, rsA, esA}); target.last() != want {
		t.Fatalf("keys at the switch: %s, want %s", target.last(), want)
	}

	clock.set(at(13 * time.Hour))
	m.tick(ctx)
	if want := ids([]idp.SigningKey{rsB, esB}); target.last() != want {
		t.Fatalf("keys after the retention: %s, want %s", target.last(), want)
	}
	if stored, _, _ := m.read(ctx); len(stored) != 2 {
		t.Fatalf("stored ring after the retention has %d keys, want the 2 retired ones removed", len(stored))
	}
}

// TestKeyRotationOneRotates: nodes on one store that find a rotation due
// at once make one key between them, and all take it.
func TestKeyRotationOneRotates(t *testing.T) {
	ctx := context.Background()
	store := newMemKeyStore()
	clock := &testClock{now: t0}
	maker := newKeyMaker(t, 0)
	const nodes = 4
	var rots []*keyRotation
	var targets []*recordingSetter
	for range nodes {
		m, target := newTestRotation(t, store, clock, maker)
		rots, targets = append(rots, m), append(targets, target)
	}
	if maker.made.Load() != 2 {
		t.Fatalf("%d nodes starting made %d keys, want 2", nodes, maker.made.Load())
	}
	clock.set(at(9 * time.Hour))
	var wg sync.WaitGroup
	for _, m := range rots {
		wg.Go(func() { m.tick(ctx) })
	}
	wg.Wait()
	if maker.made.Load() != 4 {
		t.Fatalf("a due rotation on %d nodes made %d keys, want 2", nodes, maker.made.Load()-2)
	}
	for i, target := range targets {
		if target.last() != targets[0].last() || len(rots[i].ring) != 4 {
			t.Fatalf("node %d has keys %q, node 0 %q", i, target.last(), targets[0].last())
		}
	}
}

// TestKeyRotationRingLost: a ring gone from the store (a Redis without
// persistence restarted) is stored again from memory, not replaced by new
// keys that would orphan every token out there.
func TestKeyRotationRingLost(t *testing.T) {
	ctx := context.Background()
	store := newMemKeyStore()
	clock := &testClock{now: t0}
	maker := newKeyMaker(t, 0)
	m, _ := newTestRotation(t, store, clock, maker)
	before, _ := store.Load(ctx, ringKeyName)
	store.delete(ringKeyName)
	m.tick(ctx)
	after, err := store.Load(ctx, ringKeyName)
	if err != nil || string(after) != string(before) || maker.made.Load() != 2 {
		t.Fatalf("ring after loss: %v, made %d keys; want the same ring stored again", err, maker.made.Load())
	}
}

// TestKeyRotationFileKey: an algorithm with a signing_key file does not
// rotate, and its file key signs; the other is generated and rotates.
func TestKeyRotationFileKey(t *testing.T) {
	ctx := context.Background()
	store := newMemKeyStore()
	clock := &testClock{now: t0}
	maker := newKeyMaker(t, 0)
	file := testKey(t, idp.RS256, 5)
	m, target := newTestRotation(t, store, clock, maker, file)
	if !slices.Equal(m.algs, []string{idp.ES256}) || maker.made.Load() != 1 || m.ring[0].Alg != idp.ES256 {
		t.Fatalf("algorithms %v, made %d; want only ES256 in the ring", m.algs, maker.made.Load())
	}
	clock.set(at(8 * time.Hour))
	m.tick(ctx)
	if want := ids([]idp.SigningKey{file, m.ring[0].SigningKey, m.ring[1].SigningKey}); target.last() != want || maker.made.Load() != 2 {
		t.Fatalf("keys %s, want %s: the file key first, ES256 rotated", target.last(), want)
	}
}

// TestKeyRotationBadRing: a ring that does not decode is an error at
// start and is never replaced.
func TestKeyRotationBadRing(t *testing.T) {
	ctx := context.Background()
	store := newMemKeyStore()
	store.Store(ctx, ringKeyName, []byte(`{"keys":[{"kty":"oct"}]}`))
	m := newKeyRotation(store, ringKeyName, nil, testSchedule, zap.NewNop())
	if _, err := m.init(ctx); err == nil || !strings.Contains(err.Error(), "decoding") {
		t.Fatalf("init = %v, want a decoding error", err)
	}
	m.tick(ctx)
	if v, _ := store.Load(ctx, ringKeyName); string(v) != `{"keys":[{"kty":"oct"}]}` {
		t.Fatalf("bad ring replaced by %s", v)
	}
}

// TestProvisionOneSigningKeyFile: a signing_key file for RS256 signs
// RS256 and does not rotate; ES256 is generated into the ring, alone.
func TestProvisionOneSigningKeyFile(t *testing.T) {
	root := t.TempDir()
	file := testKey(t, idp.RS256, 6)
	der, err := x509.MarshalPKCS8PrivateKey(file.Key)
	if err != nil {
		t.Fatal(err)
	}
	filename := filepath.Join(t.TempDir(), "rs256.pem")
	if err := os.WriteFile(filename, pemBlock("PRIVATE KEY", der), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testProvider("https://login.example.com")
	p.SigningKeys = []string{filename}
	provision(t, newTestContext(t, root), p)
	got := jwksKeyIDs(t, p)
	if len(got) != 2 || got[0] != idp.RS256+" "+file.ID || !strings.HasPrefix(got[1], idp.ES256+" ") {
		t.Fatalf("JWKS %q, want the file's RS256 key and a generated ES256 key", got)
	}
	data, err := os.ReadFile(filepath.Join(root, providerStoragePrefix(p.Issuer), "signing_keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	ring, err := decodeRing(data)
	if err != nil || len(ring) != 1 || ring[0].Alg != idp.ES256 {
		t.Fatalf("stored ring %v, %v; want one ES256 key", ring, err)
	}
}

// TestProvisionKeysInRedis: with store redis, signing and cookie keys live
// in Redis, without a time to live: nodes with Caddy storages of their
// own publish the same keys, and nothing is in Caddy's storage.
func TestProvisionKeysInRedis(t *testing.T) {
	srv := redistest.Start(t)
	roots := []string{t.TempDir(), t.TempDir()}
	var jwks [][]string
	for _, root := range roots {
		p := redisProvider(srv.Addr)
		provision(t, newTestContext(t, root), p)
		jwks = append(jwks, jwksKeyIDs(t, p))
		if _, err := os.Stat(filepath.Join(root, providerStoragePrefix(p.Issuer))); !os.IsNotExist(err) {
			t.Fatalf("provider state in Caddy's storage: %v", err)
		}
	}
	if len(jwks[0]) != 2 || !slices.Equal(jwks[0], jwks[1]) {
		t.Fatalf("JWKS of two nodes: %q and %q, want the same two keys", jwks[0], jwks[1])
	}
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	prefix := "test:" + providerStoragePrefix("https://login.example.com")
	for _, name := range []string{"/signing_keys.json", "/cookie_keys.json"} {
		if ttl, err := rc.TTL(context.Background(), prefix+name).Result(); err != nil || ttl != -1 {
			t.Errorf("%s in Redis: TTL %v, %v; want a key without one", name, ttl, err)
		}
	}
}

// TestProvisionKeysRedisDown: Redis down at start: provisioning passes,
// the provider's endpoints answer 503, other paths go on, and once Redis
// is back the provider serves with no restart.
func TestProvisionKeysRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	srv.Kill()
	p := redisProvider(srv.Addr)
	p.Store.Redis.DialTimeout = caddy.Duration(200 * time.Millisecond)
	provision(t, newTestContext(t, t.TempDir()), p)

	resp, passed := serve(t, p, p.Issuer+idp.PathJWKS)
	if passed || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("JWKS with Redis down: status %d, passed on %v; want 503 with Retry-After", resp.StatusCode, passed)
	}
	var body struct {
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error != "temporarily_unavailable" {
		t.Fatalf("body: %+v, %v", body, err)
	}
	if _, passed := serve(t, p, p.Issuer+"/app"); !passed {
		t.Fatal("a path not the provider's was not passed on")
	}

	srv.Restart()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, _ := serve(t, p, p.Issuer+idp.PathJWKS)
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("JWKS still %d after Redis came back", resp.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ids := jwksKeyIDs(t, p); len(ids) != 2 {
		t.Fatalf("JWKS %q once Redis is back", ids)
	}
}

// TestProvisionKeyRotationError: a bad key_rotation fails provisioning,
// naming the option.
func TestProvisionKeyRotationError(t *testing.T) {
	p := testProvider("https://login.example.com")
	p.KeyRotation = &KeyRotation{Period: caddy.Duration(time.Hour), PublishAhead: caddy.Duration(2 * time.Hour)}
	err := p.Provision(newTestContext(t, t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), "key_rotation: publish_ahead 2h0m0s must be shorter than period 1h0m0s") {
		p.Cleanup()
		t.Fatalf("Provision = %v", err)
	}
	if err := p.Cleanup(); err != nil {
		t.Fatal(err)
	}
}

// TestProvisionCleanupRotatesNothing: `caddy validate` provisions a
// configuration and cleans it up, often while Caddy runs on the same
// storage. A ring that the validated schedule finds due must come out as
// it went in: rotating is for the configuration that runs, on its
// schedule and with its clients' retention, not for one being checked.
func TestProvisionCleanupRotatesNothing(t *testing.T) {
	root := t.TempDir()
	p := testProvider("https://login.example.com")
	// Due under the validated schedule (a key signing for over 2h
	// with a period of 2h), not under the default one that runs.
	signed := time.Now().Add(-10 * time.Hour)
	ring := ringOf(rk(testKey(t, idp.RS256, 0), signed, time.Time{}), rk(testKey(t, idp.ES256, 0), signed, time.Time{}))
	data, err := ring.encode()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, providerStoragePrefix(p.Issuer), "signing_keys.json")
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	p.KeyRotation = &KeyRotation{Period: caddy.Duration(2 * time.Hour), PublishAhead: caddy.Duration(time.Hour)}
	if err := p.Provision(newTestContext(t, root)); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if err := p.Cleanup(); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(data) {
		got, _ := decodeRing(after)
		t.Fatalf("ring after Provision and Cleanup has %d keys, want the 2 stored, unchanged", len(got))
	}
}

// TestProvisionKeysRedisDownOnReload: a reload while Redis is down (the
// new configuration provisioned before the old is cleaned up) serves at
// once with the keys the running configuration has: discovery and JWKS
// need no Redis, and a gateway that verifies bearer tokens needs the
// JWKS; once Redis is back, the new configuration reads the ring again.
func TestProvisionKeysRedisDownOnReload(t *testing.T) {
	srv := redistest.Start(t)
	ctx := newTestContext(t, t.TempDir())
	newProvider := func() *Provider {
		p := redisProvider(srv.Addr)
		p.Store.Redis.DialTimeout = caddy.Duration(200 * time.Millisecond)
		p.KeyRotation = &KeyRotation{Period: caddy.Duration(time.Hour), PublishAhead: caddy.Duration(8 * time.Second)}
		return p
	}
	old := newProvider()
	provision(t, ctx, old)
	want := jwksKeyIDs(t, old)

	srv.Kill()
	p := newProvider()
	provision(t, ctx, p)
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if got := jwksKeyIDs(t, p); !slices.Equal(got, want) {
		t.Fatalf("JWKS after a reload with Redis down: %q, want the running keys %q", got, want)
	}

	// Back (empty: the test's Redis keeps nothing): the new
	// configuration's rotation runs, and stores the ring again from the
	// keys it serves rather than making new ones.
	srv.Restart()
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	ringKey := "test:" + providerStoragePrefix(p.Issuer) + "/signing_keys.json"
	deadline := time.Now().Add(15 * time.Second)
	for {
		data, err := rc.Get(context.Background(), ringKey).Bytes()
		if err == nil {
			ring, err := decodeRing(data)
			if err != nil {
				t.Fatal(err)
			}
			var stored []string
			for _, k := range ring {
				stored = append(stored, k.Alg+" "+k.ID)
			}
			if !slices.Equal(stored, want) {
				t.Fatalf("ring stored again: %q, want %q", stored, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ring is not in Redis 15s after it came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestProvisionKeysAfterFailedReload: a reload that fails after the
// provider was provisioned (another module's error) leaves the running
// configuration's keys, as it reads them, for the next reload: if Redis
// is down then, that reload serves the ring as it is now, not as the
// failed configuration found it.
func TestProvisionKeysAfterFailedReload(t *testing.T) {
	srv := redistest.Start(t)
	ctx := newTestContext(t, t.TempDir())
	newProvider := func() *Provider {
		p := redisProvider(srv.Addr)
		p.Store.Redis.DialTimeout = caddy.Duration(200 * time.Millisecond)
		p.KeyRotation = &KeyRotation{Period: caddy.Duration(time.Hour), PublishAhead: caddy.Duration(8 * time.Second)}
		return p
	}
	running := newProvider()
	provision(t, ctx, running)
	jwksKeyIDs(t, running) // loaded
	failed := newProvider()
	provision(t, ctx, failed)
	jwksKeyIDs(t, failed)
	if err := failed.Cleanup(); err != nil {
		t.Fatal(err)
	}

	// Another node publishes a successor; the running configuration
	// reads it.
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	ringKey := "test:" + providerStoragePrefix(running.Issuer) + "/signing_keys.json"
	data, err := rc.Get(context.Background(), ringKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	ring, err := decodeRing(data)
	if err != nil {
		t.Fatal(err)
	}
	ring = append(ring, rk(testKey(t, idp.RS256, 7), time.Now().Add(30*time.Minute), time.Time{}))
	if data, err = ring.encode(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Set(context.Background(), ringKey, data, 0).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	var want []string
	for want = jwksKeyIDs(t, running); len(want) != 3; want = jwksKeyIDs(t, running) {
		if time.Now().After(deadline) {
			t.Fatalf("JWKS %q 15s after a successor was stored, want 3 keys", want)
		}
		time.Sleep(50 * time.Millisecond)
	}

	srv.Kill()
	p := newProvider()
	provision(t, ctx, p)
	if got := jwksKeyIDs(t, p); !slices.Equal(got, want) {
		t.Fatalf("JWKS after a reload with Redis down: %q, want the running keys %q", got, want)
	}
}

// TestProvisionCookieKeysLost: cookie keys gone from Redis (a Redis
// without persistence that restarted) are stored again by the running
// nodes, as the ring is, so that a node that starts later takes the keys
// every other node uses rather than making new ones that open none of
// their cookies.
func TestProvisionCookieKeysLost(t *testing.T) {
	srv := redistest.Start(t)
	p := redisProvider(srv.Addr)
	p.KeyRotation = &KeyRotation{Period: caddy.Duration(time.Hour), PublishAhead: caddy.Duration(8 * time.Second)}
	provision(t, newTestContext(t, t.TempDir()), p)
	jwksKeyIDs(t, p) // loaded

	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	key := "test:" + providerStoragePrefix(p.Issuer) + "/cookie_keys.json"
	want, err := rc.Get(context.Background(), key).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Del(context.Background(), key).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := rc.Get(context.Background(), key).Bytes()
		if err == nil {
			var a, b storedCookieKeys
			if json.Unmarshal(got, &a) != nil || json.Unmarshal(want, &b) != nil || fmt.Sprint(a) != fmt.Sprint(b) {
				t.Fatalf("cookie keys stored again differ from those in use")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cookie keys not stored again 15s after they were lost: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
