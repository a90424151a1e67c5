package caddymodule

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/caddyserver/caddy/v2"
)

// requestCounts reads authgate_gateway_requests_total by outcome.
func requestCounts() map[outcome]float64 {
	counts := make(map[outcome]float64)
	for o := outcomeNone + 1; o < numOutcomes; o++ {
		counts[o] = testutil.ToFloat64(gatewayCollectors.requests.WithLabelValues(outcomeNames[o]))
	}
	return counts
}

// providerOpCount reads the sample count of the gateway's provider
// latency histogram for op.
func providerOpCount(t testing.TB, op providerOp) uint64 {
	t.Helper()
	var m dto.Metric
	if err := gatewayCollectors.providerDuration.WithLabelValues(providerOpNames[op]).(prometheus.Histogram).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func cacheCount(cache, result string) float64 {
	return testutil.ToFloat64(gatewayCollectors.cache.WithLabelValues(cache, result))
}

// TestGatewayMetricsOutcomes drives a gateway through a 401, a login, a
// cached request, a refresh and a refresh with the provider gone, and
// checks that each request is counted once, under its outcome, and that
// the requests to the provider are timed by operation.
func TestGatewayMetricsOutcomes(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, func(g *Gateway) {
		g.Scopes = []string{"openid", "profile", "email", "offline_access"}
		// Longer than the access token lives: every new session is
		// refreshed at its first request.
		g.RefreshBefore = caddy.Duration(24 * time.Hour)
	})
	u := newUser(t, gw, op)
	step := func(name string, do func(), want map[outcome]float64) {
		t.Helper()
		before := requestCounts()
		do()
		after := requestCounts()
		for o := outcomeNone + 1; o < numOutcomes; o++ {
			if got := after[o] - before[o]; got != want[o] {
				t.Errorf("%s: requests_total{outcome=%q} moved by %v, want %v", name, outcomeNames[o], got, want[o])
			}
		}
	}
	step("api request without a session", func() {
		resp, _ := u.get("http://gw.test/x", map[string]string{"Accept": "application/json"})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", resp.StatusCode)
		}
	}, map[outcome]float64{outcomeUnauthenticated: 1})

	discovery, jwks := providerOpCount(t, opDiscovery), providerOpCount(t, opJWKS)
	exchange, refresh := providerOpCount(t, opExchange), providerOpCount(t, opRefresh)
	misses := cacheCount("session", "miss")
	step("login, then the first request, which refreshes", func() {
		u.signIn("/headers")
	}, map[outcome]float64{outcomeLoginStarted: 1, outcomeLoginCompleted: 1, outcomeRefreshed: 1})
	if got := providerOpCount(t, opDiscovery) - discovery; got != 1 {
		t.Errorf("discovery timed %d times, want 1", got)
	}
	if got := providerOpCount(t, opJWKS) - jwks; got != 1 {
		t.Errorf("jwks timed %d times, want 1", got)
	}
	if got := providerOpCount(t, opExchange) - exchange; got != 1 {
		t.Errorf("token_exchange timed %d times, want 1", got)
	}
	if got := providerOpCount(t, opRefresh) - refresh; got != 1 {
		t.Errorf("token_refresh timed %d times, want 1", got)
	}
	if got := cacheCount("session", "miss") - misses; got != 1 {
		t.Errorf("session cache misses moved by %v, want 1 (the first request)", got)
	}

	// The provider is gone: the refresh fails, but the access token
	// still works, so the request goes on.
	op.Close()
	step("refresh with the provider gone", func() {
		u.echo("/headers", nil)
	}, map[outcome]float64{outcomeRefreshFailed: 1})
}

// TestGatewayMetricsPassedAndCached checks the plain path: a request of
// a session that needs no refresh passes, from the cache once its cookie
// was seen; and a gateway with metrics off counts nothing.
func TestGatewayMetricsPassedAndCached(t *testing.T) {
	op := newOP(t, nil)
	for _, tc := range []struct {
		name string
		off  bool
	}{
		{"on", false},
		{"off", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := newGateway(t, op, func(g *Gateway) { g.DisableMetrics = tc.off })
			u := newUser(t, gw, op)
			u.signIn("/headers")
			before, hits := requestCounts(), cacheCount("session", "hit")
			u.echo("/headers", nil)
			u.echo("/headers", nil)
			want, wantHits := 2.0, 2.0
			if tc.off {
				want, wantHits = 0, 0
			}
			if got := requestCounts()[outcomePassed] - before[outcomePassed]; got != want {
				t.Errorf("passed moved by %v, want %v", got, want)
			}
			if got := cacheCount("session", "hit") - hits; got != wantHits {
				t.Errorf("session cache hits moved by %v, want %v", got, wantHits)
			}
		})
	}
}

// TestGatewayMetricsForbidden counts a user whom the allow rules refuse.
func TestGatewayMetricsForbidden(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, func(g *Gateway) { g.Allow = []GatewayRule{{Email: "nobody@example.com"}} })
	u := newUser(t, gw, op)
	resp, _ := u.get("http://gw.test/", nil)
	u.login(resp)
	before := requestCounts()
	resp, _ = u.get("http://gw.test/", nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want 403", resp.StatusCode)
	}
	if got := requestCounts()[outcomeForbidden] - before[outcomeForbidden]; got != 1 {
		t.Errorf("forbidden moved by %v, want 1", got)
	}
}

// TestGatewayMetricsRegistry checks that the collectors land on the
// config's registry, that two gateways of one config and a reload (a new
// config, a new registry) register without error, and that a collector
// of the same name that is not ours is refused.
func TestGatewayMetricsRegistry(t *testing.T) {
	provision := func(ctx caddy.Context) error {
		g := &Gateway{Issuer: "http://127.0.0.1:1", ClientID: "c", ClientSecret: "s", SessionKeys: []string{"registry-session-key-0123456789"}}
		err := g.Provision(ctx)
		if err == nil {
			t.Cleanup(func() { g.Cleanup() })
		}
		return err
	}
	for i := range 2 { // a config, then its reload
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		t.Cleanup(cancel)
		for j := range 2 {
			if err := provision(ctx); err != nil {
				t.Fatalf("config %d, gateway %d: %v", i, j, err)
			}
		}
		n, err := testutil.GatherAndCount(ctx.GetMetricsRegistry(), "authgate_gateway_requests_total", "authgate_gateway_session_cache_lookups_total", "authgate_gateway_provider_request_duration_seconds")
		if err != nil {
			t.Fatal(err)
		}
		if want := int(numOutcomes-1) + 4 + int(numProviderOps); n != want {
			t.Errorf("config %d: %d series on the registry, want %d", i, n, want)
		}
	}

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	ctx.GetMetricsRegistry().MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "authgate_gateway_requests_total", Help: "Requests that reached oidc_gateway, by outcome.",
	}, []string{"outcome"}))
	if err := provision(ctx); err == nil {
		t.Fatal("Provision registered over another collector of the same name")
	}
}
