package caddymodule

import (
	"net/http"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The gateway's events in the audit log (AuditLoggerName). None is on
// the path of a request with a valid session: only sign-in, sign-out and
// back-channel logout write one.
const (
	auditSignIn     = "gateway_sign_in"            // a session made at the callback
	auditSignOut    = "gateway_sign_out"           // a session ended at the sign-out path
	auditBackLogout = "gateway_backchannel_logout" // a logout token, accepted or refused
	auditAccepted   = "accepted"
	auditRefused    = "refused"
)

// auditFields are the fields of every gateway event: which gateway (its
// issuer and client_id) and who called.
func (g *Gateway) auditFields(r *http.Request, event string, n int) []zap.Field {
	fields := make([]zap.Field, 0, 5+n)
	return append(fields,
		zap.String("event", event),
		zap.String("issuer", g.Issuer),
		zap.String("client_id", g.ClientID),
		zap.String("remote_ip", clientIP(r)),
		zap.String("user_agent", truncateAudit(r.UserAgent())))
}

// auditSession logs event for the session s: its user, the provider's
// sid, and a digest of the session's own id (sessionHash).
func (g *Gateway) auditSession(r *http.Request, level zapcore.Level, event string, s *session) {
	if g.audit == nil {
		return
	}
	ce := g.audit.Check(level, event)
	if ce == nil {
		return
	}
	fields := append(g.auditFields(r, event, 3), zap.String("sub", s.Subject), zap.String("session", sessionHash(s.ID)))
	if s.SID != "" {
		fields = append(fields, zap.String("sid", s.SID))
	}
	ce.Write(fields...)
}

// auditBackchannel logs a back-channel logout: accepted, with what it
// ended (a sid, or every session of a sub), or refused, with why.
func (g *Gateway) auditBackchannel(r *http.Request, outcome, reason string, lt *logoutToken) {
	if g.audit == nil {
		return
	}
	level := zapcore.InfoLevel
	if outcome == auditRefused {
		level = zapcore.WarnLevel
	}
	ce := g.audit.Check(level, auditBackLogout)
	if ce == nil {
		return
	}
	fields := append(g.auditFields(r, auditBackLogout, 4), zap.String("outcome", outcome))
	if reason != "" {
		fields = append(fields, zap.String("reason", truncateAudit(reason)))
	}
	if lt != nil {
		fields = append(fields, zap.String("sub", lt.sub))
		if lt.sid != "" {
			fields = append(fields, zap.String("sid", lt.sid))
		}
	}
	ce.Write(fields...)
}

// truncateAudit bounds what a client sent in an audit line.
func truncateAudit(s string) string {
	if len(s) > 256 {
		return s[:256] + "..."
	}
	return s
}
