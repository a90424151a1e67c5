package caddymodule

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authgate/authgate/idp"
)

// gathered returns the value of the series of name whose labels are
// labels (name=value pairs), as reg exposes it, or -1 if it has none.
func gathered(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if len(got) != len(labels)/2 {
				continue
			}
			for i := 0; i < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

// TestProviderEventMetrics: the counters count the events they are for;
// a client_id the configuration does not have is counted as "other"; a
// second provider in the config and a reload (a new registry) register
// the same counters again, which go on counting.
func TestProviderEventMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := newProviderEventMetrics(reg, []string{"demo-app"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newProviderEventMetrics(reg, []string{"other-app"}); err != nil {
		t.Fatalf("a second provider in the same config: %v", err)
	}
	base := func(name string, labels ...string) float64 { return max(gathered(t, reg, name, labels...), 0) }
	before := map[string]float64{
		"login":   base("authgate_provider_logins_total", "outcome", "throttled"),
		"issued":  base("authgate_provider_tokens_issued_total", "grant_type", "password", "client_id", "demo-app"),
		"other":   base("authgate_provider_tokens_issued_total", "grant_type", "password", "client_id", "other"),
		"refresh": base("authgate_provider_refresh_total", "outcome", "reuse_detected"),
		"error":   base("authgate_provider_token_errors_total", "error", "invalid_client"),
		"bcl":     base("authgate_provider_backchannel_deliveries_total", "outcome", "given_up"),
	}
	ctx := context.Background()
	for _, e := range []idp.Event{
		{Type: idp.EventLogin, Outcome: idp.OutcomeThrottled, Username: "alice"},
		{Type: idp.EventTokenIssued, GrantType: "password", ClientID: "demo-app"},
		{Type: idp.EventTokenIssued, GrantType: "password", ClientID: "made-up-by-a-request"},
		{Type: idp.EventRefresh, Outcome: idp.OutcomeReuseDetected, ClientID: "demo-app"},
		{Type: idp.EventTokenError, Error: "invalid_client", ClientID: "made-up-by-a-request"},
		{Type: idp.EventBackchannel, Outcome: idp.OutcomeGivenUp, ClientID: "demo-app"},
		{Type: idp.EventConsent, Outcome: idp.OutcomeGranted}, // not counted
	} {
		m.event(ctx, e)
	}

	// A reload: a new registry, the same counters.
	reg2 := prometheus.NewPedanticRegistry()
	if _, err := newProviderEventMetrics(reg2, []string{"demo-app"}); err != nil {
		t.Fatalf("after a reload: %v", err)
	}
	for _, r := range []*prometheus.Registry{reg, reg2} {
		for _, c := range []struct {
			key    string
			name   string
			labels []string
		}{
			{"login", "authgate_provider_logins_total", []string{"outcome", "throttled"}},
			{"issued", "authgate_provider_tokens_issued_total", []string{"grant_type", "password", "client_id", "demo-app"}},
			{"other", "authgate_provider_tokens_issued_total", []string{"grant_type", "password", "client_id", "other"}},
			{"refresh", "authgate_provider_refresh_total", []string{"outcome", "reuse_detected"}},
			{"error", "authgate_provider_token_errors_total", []string{"error", "invalid_client"}},
			{"bcl", "authgate_provider_backchannel_deliveries_total", []string{"outcome", "given_up"}},
		} {
			if got := gathered(t, r, c.name, c.labels...); got != before[c.key]+1 {
				t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, before[c.key]+1)
			}
		}
		if got := gathered(t, r, "authgate_provider_tokens_issued_total", "grant_type", "password", "client_id", "made-up-by-a-request"); got != -1 {
			t.Errorf("a client_id from a request became a label")
		}
	}
}

// TestProviderAudit: an event is one line of the audit logger, named by
// its type, with the documented snake_case fields, at warn for failures.
func TestProviderAudit(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	a := &providerAudit{logger: zap.New(core).Named(AuditLoggerName), issuer: "https://id.example"}
	a.event(context.Background(), idp.Event{
		Type: idp.EventLogin, Outcome: idp.OutcomeInvalid, Username: "alice", ClientID: "demo-app",
		RemoteIP: "192.0.2.1", UserAgent: "agent/1",
	})
	a.event(context.Background(), idp.Event{
		Type: idp.EventTokenIssued, Subject: "sub-1", ClientID: "demo-app", GrantType: "authorization_code", SID: "sid-1",
	})
	a.event(context.Background(), idp.Event{Type: idp.EventAdmin, Outcome: idp.ActionEndUserSessions, Subject: "sub-1", Sessions: 2, Families: 1})
	lines := logs.TakeAll()
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3", len(lines))
	}
	for i, want := range []struct {
		level  zapcore.Level
		fields map[string]any
	}{
		{zapcore.WarnLevel, map[string]any{"event": "login", "issuer": "https://id.example", "outcome": "invalid", "username": "alice", "client_id": "demo-app", "remote_ip": "192.0.2.1", "user_agent": "agent/1"}},
		{zapcore.InfoLevel, map[string]any{"event": "token_issued", "issuer": "https://id.example", "sub": "sub-1", "client_id": "demo-app", "grant_type": "authorization_code", "sid": "sid-1"}},
		{zapcore.InfoLevel, map[string]any{"event": "admin", "issuer": "https://id.example", "outcome": "end_user_sessions", "sub": "sub-1", "sessions": int64(2), "families": int64(1)}},
	} {
		l := lines[i]
		got := l.ContextMap()
		if l.Level != want.level || l.Message != want.fields["event"] || l.LoggerName != AuditLoggerName {
			t.Errorf("line %d: %s %q of %q", i, l.Level, l.Message, l.LoggerName)
		}
		if len(got) != len(want.fields) {
			t.Errorf("line %d: fields %v, want %v", i, got, want.fields)
		}
		for k, v := range want.fields {
			if got[k] != v {
				t.Errorf("line %d: %s = %#v, want %#v", i, k, got[k], v)
			}
		}
		for k := range got {
			if strings.ToLower(k) != k || strings.Contains(k, "-") {
				t.Errorf("field %q is not snake_case", k)
			}
		}
	}
}
