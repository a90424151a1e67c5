package caddymodule

// The gateway's Prometheus metrics: requests by outcome, the latency of
// its requests to the provider, and its session caches' hits and misses.
// The collectors are made once per process and registered on the
// metrics registry of every config with a gateway, as Caddy's own are: a
// config reload makes a new registry, and the counts carry on rather than
// start again from zero. No label takes a value from a request: no user,
// token, path or host.

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// outcome is what the gateway did with a request, an index into
// outcomeNames and gatewayMetrics.requests. Every request that reaches
// the gateway is counted once, under one outcome.
type outcome uint8

const (
	outcomeNone                outcome = iota // not answered yet: go on
	outcomePassed                             // on to the next handler, no refresh needed
	outcomeRefreshed                          // on to the next handler after refreshing the tokens
	outcomeRefreshFailed                      // the refresh failed: refused (sent to log in or 401), or the provider unreachable while the token still works (passed on)
	outcomeLoginStarted                       // redirected to the provider to log in
	outcomeUnauthenticated                    // 401 (or, back from signing out, the signed-out page)
	outcomeForbidden                          // 403: the allow rules refuse the user
	outcomeProviderUnreachable                // 502: the provider could not be reached
	outcomeUnavailable                        // 503: the session key could not be loaded
	outcomeBadRequest                         // 400: a path with dot segments
	outcomeLoginCompleted                     // the callback made a session
	outcomeLoginFailed                        // the callback refused or failed
	outcomeSignOut                            // the sign-out path
	outcomeBackchannelLogout                  // the back-channel logout path
	outcomePreflight                          // a CORS preflight
	numOutcomes
)

var outcomeNames = [numOutcomes]string{
	outcomeNone:                "none",
	outcomePassed:              "passed",
	outcomeRefreshed:           "refreshed",
	outcomeRefreshFailed:       "refresh_failed",
	outcomeLoginStarted:        "login_started",
	outcomeUnauthenticated:     "unauthenticated",
	outcomeForbidden:           "forbidden",
	outcomeProviderUnreachable: "provider_unreachable",
	outcomeUnavailable:         "unavailable",
	outcomeBadRequest:          "bad_request",
	outcomeLoginCompleted:      "login_completed",
	outcomeLoginFailed:         "login_failed",
	outcomeSignOut:             "sign_out",
	outcomeBackchannelLogout:   "backchannel_logout",
	outcomePreflight:           "preflight",
}

// providerOp is what a request of the gateway to its provider is for, an
// index into providerOpNames.
type providerOp uint8

const (
	opOther providerOp = iota
	opDiscovery
	opJWKS
	opExchange
	opRefresh
	opIntrospect
	opRevoke
	opUserinfo
	numProviderOps
)

var providerOpNames = [numProviderOps]string{
	opOther:      "other",
	opDiscovery:  "discovery",
	opJWKS:       "jwks",
	opExchange:   "token_exchange",
	opRefresh:    "token_refresh",
	opIntrospect: "introspection",
	opRevoke:     "revocation",
	opUserinfo:   "userinfo",
}

// gatewayCollectors are the gateway's collectors, one set per process.
var gatewayCollectors = struct {
	requests         *prometheus.CounterVec
	providerDuration *prometheus.HistogramVec
	cache            *prometheus.CounterVec
}{
	requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "authgate", Subsystem: "gateway", Name: "requests_total",
		Help: "Requests that reached oidc_gateway, by outcome.",
	}, []string{"outcome"}),
	providerDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "authgate", Subsystem: "gateway", Name: "provider_request_duration_seconds",
		Help:    "Time to the response headers of the gateway's requests to its provider, by operation.",
		Buckets: prometheus.DefBuckets,
	}, []string{"operation"}),
	cache: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "authgate", Subsystem: "gateway", Name: "session_cache_lookups_total",
		Help: "Lookups in the gateway's caches of checked sessions (cache=session) and bearer tokens (cache=bearer), by result (hit or miss).",
	}, []string{"cache", "result"}),
}

// registerCollectors registers cols on reg. A collector already there,
// because another module of the same config registered it, is fine; one
// of the same name that is not ours is an error. A nil reg (a module
// provisioned outside of a Caddy config, in tests) registers nothing.
func registerCollectors(reg *prometheus.Registry, cols ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cols {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) || are.ExistingCollector != c {
				return err
			}
		}
	}
	return nil
}

// counter is the part of a prometheus.Counter the gateway uses, so that
// a gateway with metrics off counts into noCounter.
type counter interface{ Inc() }

type noCounter struct{}

func (noCounter) Inc() {}

// gatewayMetrics are one gateway's counters, resolved to their labels in
// Provision, so that counting on the request path is an atomic add and no
// label lookup or allocation.
type gatewayMetrics struct {
	requests    [numOutcomes]counter
	sessionHit  counter
	sessionMiss counter
	bearerHit   counter
	bearerMiss  counter
	providerOps [numProviderOps]prometheus.Observer // nil with metrics off
}

// newGatewayMetrics registers the gateway's collectors on reg and resolves
// the counters; with on false every counter is a no-op (and nothing is
// registered).
func newGatewayMetrics(reg *prometheus.Registry, on bool) (*gatewayMetrics, error) {
	m := new(gatewayMetrics)
	if !on {
		for i := range m.requests {
			m.requests[i] = noCounter{}
		}
		m.sessionHit, m.sessionMiss, m.bearerHit, m.bearerMiss = noCounter{}, noCounter{}, noCounter{}, noCounter{}
		return m, nil
	}
	c := &gatewayCollectors
	if err := registerCollectors(reg, c.requests, c.providerDuration, c.cache); err != nil {
		return nil, err
	}
	m.requests[outcomeNone] = noCounter{}
	for o := outcomeNone + 1; o < numOutcomes; o++ {
		m.requests[o] = c.requests.WithLabelValues(outcomeNames[o])
	}
	m.sessionHit = c.cache.WithLabelValues("session", "hit")
	m.sessionMiss = c.cache.WithLabelValues("session", "miss")
	m.bearerHit = c.cache.WithLabelValues("bearer", "hit")
	m.bearerMiss = c.cache.WithLabelValues("bearer", "miss")
	for op := range m.providerOps {
		m.providerOps[op] = c.providerDuration.WithLabelValues(providerOpNames[op])
	}
	return m, nil
}

// count counts a request under o.
func (m *gatewayMetrics) count(o outcome) {
	m.requests[o].Inc()
}

// transport wraps base, the transport of the gateway's requests to its
// provider, so that it times them by the operation their context names
// (see withProviderOp). With metrics off it is base.
func (m *gatewayMetrics) transport(base http.RoundTripper) http.RoundTripper {
	if m.providerOps[0] == nil {
		return base
	}
	return &timedTransport{base: base, ops: &m.providerOps}
}

// timedTransport observes how long each request takes to its response
// headers, or to its failure.
type timedTransport struct {
	base http.RoundTripper
	ops  *[numProviderOps]prometheus.Observer
}

func (t *timedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	op, _ := r.Context().Value(providerOpKey{}).(providerOp)
	start := time.Now()
	resp, err := t.base.RoundTrip(r)
	t.ops[op].Observe(time.Since(start).Seconds())
	return resp, err
}

type providerOpKey struct{}

// withProviderOp names the operation of the provider requests made with
// ctx, for their latency histogram.
func withProviderOp(ctx context.Context, op providerOp) context.Context {
	return context.WithValue(ctx, providerOpKey{}, op)
}
