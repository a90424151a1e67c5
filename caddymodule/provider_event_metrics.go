package caddymodule

import (
	"context"
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authgate/authgate/idp"
)

// providerEventCounters count the provider's security events. They are
// made once per process and registered on the metrics registry of each
// config that has a provider, as Caddy's own metrics are: a config reload
// makes a new registry, and the counts carry on rather than restart.
var providerEventCounters struct {
	once          sync.Once
	logins        *prometheus.CounterVec
	tokensIssued  *prometheus.CounterVec
	refresh       *prometheus.CounterVec
	tokenErrors   *prometheus.CounterVec
	backchannel   *prometheus.CounterVec
	collectorList []prometheus.Collector
}

// otherClient is the client_id label of a client that the configuration
// does not have: a label value is never taken from what a request says.
const otherClient = "other"

func initProviderEventCounters() {
	c := &providerEventCounters
	c.once.Do(func() {
		const ns, sub = "authgate", "provider"
		c.logins = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "logins_total",
			Help: "Password logins at the login page and in the password grant, by outcome (success, invalid, disabled, throttled).",
		}, []string{"outcome"})
		c.tokensIssued = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "tokens_issued_total",
			Help: "Successful token responses, by grant type and client.",
		}, []string{"grant_type", "client_id"})
		c.refresh = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "refresh_total",
			Help: "Uses of refresh tokens, by outcome (rotated, kept, grace, reuse_detected, expired, revoked, invalid, wrong_client, disabled).",
		}, []string{"outcome"})
		c.tokenErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "token_errors_total",
			Help: "Error answers of the token endpoint, by OAuth error code.",
		}, []string{"error"})
		c.backchannel = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "backchannel_deliveries_total",
			Help: "Attempts to deliver back-channel logout tokens, by outcome (delivered, refused, retrying, given_up).",
		}, []string{"outcome"})
		c.collectorList = []prometheus.Collector{c.logins, c.tokensIssued, c.refresh, c.tokenErrors, c.backchannel}
		// The outcomes a dashboard looks for are there from the start, at 0.
		for _, o := range []string{idp.OutcomeSuccess, idp.OutcomeInvalid, idp.OutcomeDisabled, idp.OutcomeThrottled} {
			c.logins.WithLabelValues(o)
		}
		for _, o := range []string{idp.OutcomeRotated, idp.OutcomeReuseDetected, idp.OutcomeExpired, idp.OutcomeRevoked, idp.OutcomeInvalid} {
			c.refresh.WithLabelValues(o)
		}
	})
}

// providerEventMetrics counts one provider's events.
type providerEventMetrics struct {
	clients map[string]bool // the configured client_ids
}

// newProviderEventMetrics registers the counters on reg (nil: none, as in
// tests without a Caddy config) and returns the counting of a provider
// whose clients are clientIDs.
func newProviderEventMetrics(reg *prometheus.Registry, clientIDs []string) (*providerEventMetrics, error) {
	initProviderEventCounters()
	if reg != nil {
		for _, col := range providerEventCounters.collectorList {
			if err := reg.Register(col); err != nil {
				// Two providers in one config register the same counters.
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) || are.ExistingCollector != col {
					return nil, err
				}
			}
		}
	}
	m := &providerEventMetrics{clients: make(map[string]bool, len(clientIDs))}
	for _, id := range clientIDs {
		m.clients[id] = true
	}
	return m, nil
}

// event counts e.
func (m *providerEventMetrics) event(_ context.Context, e idp.Event) {
	c := &providerEventCounters
	switch e.Type {
	case idp.EventLogin:
		c.logins.WithLabelValues(e.Outcome).Inc()
	case idp.EventTokenIssued:
		client := e.ClientID
		if !m.clients[client] {
			client = otherClient
		}
		c.tokensIssued.WithLabelValues(e.GrantType, client).Inc()
	case idp.EventRefresh:
		c.refresh.WithLabelValues(e.Outcome).Inc()
	case idp.EventTokenError:
		c.tokenErrors.WithLabelValues(e.Error).Inc()
	case idp.EventBackchannel:
		c.backchannel.WithLabelValues(e.Outcome).Inc()
	}
}
