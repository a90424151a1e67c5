package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"

	"github.com/authgate/authgate/idp"
)

// AuditLoggerName is the name of the logger that both modules write their
// security events to, one line per event: a Caddy `log` with
// `include authgate.audit` takes them, and `exclude authgate.audit` keeps
// them out of another log (the default one takes them too otherwise).
const AuditLoggerName = "authgate.audit"

// auditLogModule names the audit logger. Caddy's logs choose what they
// take by the module a logger belongs to, and a logger of a module is
// named by its ID: this ID, which no real module has, gives the audit a
// name of its own, which `include` and `exclude` match, rather than a
// sub-logger of the handler's (http.handlers.oidc_provider...).
type auditLogModule struct{}

// CaddyModule names the audit logger; auditLogModule is not registered.
func (auditLogModule) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: AuditLoggerName, New: func() caddy.Module { return auditLogModule{} }}
}

// auditLogger returns the logger of the audit log, as Caddy's logging
// configuration of ctx routes it.
func auditLogger(ctx caddy.Context) *zap.Logger {
	return ctx.Logger(auditLogModule{})
}

// providerAudit writes the provider's events to the audit log.
type providerAudit struct {
	logger *zap.Logger
	issuer string
}

// event logs e, at warn for what may be an attack or a fault (failed and
// throttled logins and device codes, token errors, refresh token reuse, code replays,
// deliveries given up), else at info.
func (a *providerAudit) event(_ context.Context, e idp.Event) {
	level := zapcore.InfoLevel
	switch {
	case e.Type == idp.EventLogin && e.Outcome != idp.OutcomeSuccess,
		e.Type == idp.EventTokenError,
		e.Type == idp.EventDeviceAuthorization && (e.Outcome == idp.OutcomeInvalid || e.Outcome == idp.OutcomeThrottled),
		e.Type == idp.EventCodeReplay,
		e.Type == idp.EventRefresh && (e.Outcome == idp.OutcomeReuseDetected || e.Outcome == idp.OutcomeWrongClient),
		e.Type == idp.EventBackchannel && (e.Outcome == idp.OutcomeGivenUp || e.Outcome == idp.OutcomeRefused):
		level = zapcore.WarnLevel
	}
	ce := a.logger.Check(level, e.Type)
	if ce == nil {
		return
	}
	fields := make([]zap.Field, 0, 16)
	fields = append(fields, zap.String("event", e.Type), zap.String("issuer", a.issuer))
	add := func(key, v string) {
		if v != "" {
			fields = append(fields, zap.String(key, v))
		}
	}
	add("outcome", e.Outcome)
	add("username", e.Username)
	add("sub", e.Subject)
	add("client_id", e.ClientID)
	add("sid", e.SID)
	add("grant_type", e.GrantType)
	add("error", e.Error)
	add("reason", e.Reason)
	add("remote_ip", e.RemoteIP)
	add("user_agent", e.UserAgent)
	switch e.Type {
	case idp.EventAdmin, idp.EventLogout:
		if e.Sessions > 0 || e.Families > 0 || e.Type == idp.EventAdmin {
			fields = append(fields, zap.Int("sessions", e.Sessions), zap.Int("families", e.Families))
		}
	case idp.EventBackchannel:
		fields = append(fields, zap.Int("attempt", e.Attempt))
	}
	ce.Write(fields...)
}

// sessionHash names a gateway session in the audit log: a digest of its
// id, enough to follow one session's lines, not the id itself.
func sessionHash(id string) string {
	if id == "" {
		return ""
	}
	sum := sha256.Sum256([]byte("authgate audit session\x00" + id))
	return hex.EncodeToString(sum[:8])
}

// providerEvents returns the event hook of a provider: the audit log and
// the event counters ([Config.Events] of idp).
func providerEvents(ctx caddy.Context, issuer string, clients []idp.Client) (func(context.Context, idp.Event), error) {
	ids := make([]string, len(clients))
	for i, c := range clients {
		ids[i] = c.ID
	}
	metrics, err := newProviderEventMetrics(ctx.GetMetricsRegistry(), ids)
	if err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	audit := &providerAudit{logger: auditLogger(ctx), issuer: issuer}
	return func(ctx context.Context, e idp.Event) {
		audit.event(ctx, e)
		metrics.event(ctx, e)
	}, nil
}
