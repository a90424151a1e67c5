package caddymodule

// The provider's latency metrics: how long its endpoints take to answer,
// and how long its store takes, with the store's errors. Like the
// gateway's (gateway_metrics.go), the collectors are made once per process
// and registered on each config's registry; the labels are fixed sets.
// The provider's security events are counted in provider_event_metrics.go.

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authgate/authgate/idp"
)

// providerCollectors are the provider's latency collectors, one set per
// process.
var providerCollectors = struct {
	requestDuration *prometheus.HistogramVec
	storeDuration   *prometheus.HistogramVec
	storeErrors     *prometheus.CounterVec
}{
	requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "authgate", Subsystem: "provider", Name: "request_duration_seconds",
		Help:    "Time oidc_provider takes to answer a request to one of its endpoints, by endpoint.",
		Buckets: prometheus.DefBuckets,
	}, []string{"endpoint"}),
	storeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "authgate", Subsystem: "provider", Name: "store_operation_duration_seconds",
		Help:    "Time of the provider's store operations, by store (bolt, storage, redis) and operation.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"store", "operation"}),
	storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "authgate", Subsystem: "provider", Name: "store_errors_total",
		Help: "Store operations that failed (an absent key is not a failure), by store and operation.",
	}, []string{"store", "operation"}),
}

// providerEndpoints maps each endpoint path of idp to its label. A request
// the provider owns at any other path is "other".
var providerEndpoints = map[string]string{
	idp.PathDiscovery:  "discovery",
	idp.PathJWKS:       "jwks",
	idp.PathAuthorize:  "authorize",
	idp.PathToken:      "token",
	idp.PathUserinfo:   "userinfo",
	idp.PathEndSession: "end_session",
	idp.PathRevocation: "revoke",
	idp.PathIntrospect: "introspect",
	idp.PathConsent:    "consent",
	idp.PathLogin:      "login",
	idp.PathLogout:     "logout",

	idp.PathDeviceAuthorization: "device_authorization",
	idp.PathDevice:              "device",

	idp.PathPushedAuthorization: "pushed_authorization",
	idp.PathCheckSession:        "check_session",
	idp.PathAccount:             "account",
	idp.PathPasskeys:            "passkeys",
	idp.PathPasskeyOptions:      "passkey_options",
	idp.PathPasskeyLogin:        "passkey_login",
	idp.PathTOTP:                "totp",
	idp.PathLoginTOTP:           "login_totp",
}

// providerMetrics are one provider's observers, resolved to their labels
// in Provision.
type providerMetrics struct {
	endpoints map[string]prometheus.Observer // by the full path, the issuer's path first
	other     prometheus.Observer
}

// newProviderMetrics registers the provider's collectors on reg and
// resolves the endpoint observers of the provider of issuer.
func newProviderMetrics(reg *prometheus.Registry, issuer string) (*providerMetrics, error) {
	c := &providerCollectors
	if err := registerCollectors(reg, c.requestDuration, c.storeDuration, c.storeErrors); err != nil {
		return nil, err
	}
	base := ""
	if u, err := url.Parse(issuer); err == nil {
		base = strings.TrimSuffix(u.Path, "/")
	}
	m := &providerMetrics{endpoints: make(map[string]prometheus.Observer, len(providerEndpoints)), other: c.requestDuration.WithLabelValues("other")}
	for path, name := range providerEndpoints {
		m.endpoints[base+path] = c.requestDuration.WithLabelValues(name)
	}
	return m, nil
}

// observe records that a request to path took since start.
func (m *providerMetrics) observe(path string, start time.Time) {
	o, ok := m.endpoints[path]
	if !ok {
		o = m.other
	}
	o.Observe(time.Since(start).Seconds())
}

// storeOp is a store operation, an index into storeOpNames.
type storeOp uint8

const (
	storePut storeOp = iota
	storeGet
	storeTake
	storeDelete
	storePutAll
	storeSwap
	storeAdd
	numStoreOps
)

var storeOpNames = [numStoreOps]string{"put", "get", "take", "delete", "put_all", "swap", "add"}

// storeObservers are the latency observers and error counters of one
// store, by operation.
type storeObservers struct {
	duration [numStoreOps]prometheus.Observer
	errors   [numStoreOps]prometheus.Counter
}

// done records an operation that started at start and ended with err.
func (o *storeObservers) done(op storeOp, start time.Time, err error) {
	o.duration[op].Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, idp.ErrNotFound) {
		o.errors[op].Inc()
	}
}

// instrumentStore wraps s so that its operations are timed and its
// errors counted under the label kind. The wrapper has the optional
// interfaces of s, idp.MultiPutter, idp.Swapper and idp.Adder, exactly: idp asks a
// store for them, and a wrapper that hid one would make refreshes and
// redemptions take their slower, non-atomic way; one that claimed one s
// lacks could not serve it.
func instrumentStore(s idp.Store, kind string) idp.Store {
	c := &providerCollectors
	o := new(storeObservers)
	for op := range numStoreOps {
		o.duration[op] = c.storeDuration.WithLabelValues(kind, storeOpNames[op])
		o.errors[op] = c.storeErrors.WithLabelValues(kind, storeOpNames[op])
	}
	t := &timedStore{s: s, o: o}
	if ad, ok := s.(idp.Adder); ok {
		return addTimer(t, ad)
	}
	return plainTimer(t)
}

// plainTimer is instrumentStore of a store without idp.Adder.
func plainTimer(t *timedStore) idp.Store {
	s := t.s
	mp, isMP := s.(idp.MultiPutter)
	sw, isSw := s.(idp.Swapper)
	switch {
	case isMP && isSw:
		return &timedSwapMultiPutter{timedStore: t, mp: mp, sw: sw}
	case isMP:
		return &timedMultiPutter{timedStore: t, mp: mp}
	case isSw:
		return &timedSwapper{timedStore: t, sw: sw}
	}
	return t
}

// storeKind is the store label of a provider state's description.
func storeKind(where string) string {
	kind, _, _ := strings.Cut(where, " ")
	switch kind {
	case "bolt", "storage", "redis":
		return kind
	}
	return "other"
}

// timedStore is an [idp.Store] that times the operations of another.
type timedStore struct {
	s idp.Store
	o *storeObservers
}

func (t *timedStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	start := time.Now()
	err := t.s.Put(ctx, key, value, ttl)
	t.o.done(storePut, start, err)
	return err
}

func (t *timedStore) Get(ctx context.Context, key string) ([]byte, error) {
	start := time.Now()
	v, err := t.s.Get(ctx, key)
	t.o.done(storeGet, start, err)
	return v, err
}

func (t *timedStore) Take(ctx context.Context, key string) ([]byte, error) {
	start := time.Now()
	v, err := t.s.Take(ctx, key)
	t.o.done(storeTake, start, err)
	return v, err
}

func (t *timedStore) Delete(ctx context.Context, key string) error {
	start := time.Now()
	err := t.s.Delete(ctx, key)
	t.o.done(storeDelete, start, err)
	return err
}

func (t *timedStore) putAll(ctx context.Context, mp idp.MultiPutter, entries []idp.Entry) error {
	start := time.Now()
	err := mp.PutAll(ctx, entries)
	t.o.done(storePutAll, start, err)
	return err
}

func (t *timedStore) swap(ctx context.Context, sw idp.Swapper, key string, old []byte, entries []idp.Entry) (bool, error) {
	start := time.Now()
	ok, err := sw.Swap(ctx, key, old, entries)
	t.o.done(storeSwap, start, err)
	return ok, err
}

// timedMultiPutter is a timedStore of an [idp.MultiPutter].
type timedMultiPutter struct {
	*timedStore
	mp idp.MultiPutter
}

func (t *timedMultiPutter) PutAll(ctx context.Context, entries []idp.Entry) error {
	return t.putAll(ctx, t.mp, entries)
}

// timedSwapper is a timedStore of an [idp.Swapper].
type timedSwapper struct {
	*timedStore
	sw idp.Swapper
}

func (t *timedSwapper) Swap(ctx context.Context, key string, old []byte, entries []idp.Entry) (bool, error) {
	return t.swap(ctx, t.sw, key, old, entries)
}

// timedSwapMultiPutter is a timedStore of a store that is both.
type timedSwapMultiPutter struct {
	*timedStore
	mp idp.MultiPutter
	sw idp.Swapper
}

func (t *timedSwapMultiPutter) PutAll(ctx context.Context, entries []idp.Entry) error {
	return t.putAll(ctx, t.mp, entries)
}

func (t *timedSwapMultiPutter) Swap(ctx context.Context, key string, old []byte, entries []idp.Entry) (bool, error) {
	return t.swap(ctx, t.sw, key, old, entries)
}

func (t *timedStore) add(ctx context.Context, ad idp.Adder, key string, value []byte, ttl time.Duration) (bool, error) {
	start := time.Now()
	ok, err := ad.Add(ctx, key, value, ttl)
	t.o.done(storeAdd, start, err)
	return ok, err
}

// addTimer is instrumentStore of an [idp.Adder]: the wrapper plainTimer
// makes, with Add.
func addTimer(t *timedStore, ad idp.Adder) idp.Store {
	switch w := plainTimer(t).(type) {
	case *timedSwapMultiPutter:
		return &timedSwapMultiPutAdder{w, ad}
	case *timedMultiPutter:
		return &timedMultiPutAdder{w, ad}
	case *timedSwapper:
		return &timedSwapAdder{w, ad}
	default:
		return &timedAdder{t, ad}
	}
}

type timedAdder struct {
	*timedStore
	ad idp.Adder
}

func (t *timedAdder) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	return t.add(ctx, t.ad, key, value, ttl)
}

type timedMultiPutAdder struct {
	*timedMultiPutter
	ad idp.Adder
}

func (t *timedMultiPutAdder) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	return t.add(ctx, t.ad, key, value, ttl)
}

type timedSwapAdder struct {
	*timedSwapper
	ad idp.Adder
}

func (t *timedSwapAdder) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	return t.add(ctx, t.ad, key, value, ttl)
}

type timedSwapMultiPutAdder struct {
	*timedSwapMultiPutter
	ad idp.Adder
}

func (t *timedSwapMultiPutAdder) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	return t.add(ctx, t.ad, key, value, ttl)
}

// Interface guards
var (
	_ idp.Adder       = (*timedAdder)(nil)
	_ idp.Adder       = (*timedMultiPutAdder)(nil)
	_ idp.Adder       = (*timedSwapAdder)(nil)
	_ idp.Adder       = (*timedSwapMultiPutAdder)(nil)
	_ idp.Swapper     = (*timedSwapMultiPutAdder)(nil)
	_ idp.MultiPutter = (*timedSwapMultiPutAdder)(nil)
	_ idp.Store       = (*timedStore)(nil)
	_ idp.MultiPutter = (*timedMultiPutter)(nil)
	_ idp.Swapper     = (*timedSwapper)(nil)
	_ idp.MultiPutter = (*timedSwapMultiPutter)(nil)
	_ idp.Swapper     = (*timedSwapMultiPutter)(nil)
)
