package caddymodule

import (
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestGatewayAudit: the gateway's sign-in, sign-out and back-channel
// logouts (accepted and refused) each write one audit line with who and
// which session, and no cookie or token; a request with a valid session
// writes none.
func TestGatewayAudit(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, nil)
	core, logs := observer.New(zapcore.InfoLevel)
	gw.gw.audit = zap.New(core).Named(AuditLoggerName)
	u := newUser(t, gw, op)
	u.signIn("/")
	cookie := sessionCookieValue(t, u, "authgate")
	s, err := gw.gw.openSession(cookie)
	if err != nil {
		t.Fatal(err)
	}

	var all []observer.LoggedEntry
	lines := logs.TakeAll()
	all = append(all, lines...)
	if len(lines) != 1 {
		t.Fatalf("%d lines after sign-in, want 1: %v", len(lines), lines)
	}
	want := map[string]any{
		"event": auditSignIn, "issuer": op.URL, "client_id": "demo-app", "sub": s.Subject,
		"sid": s.SID, "session": sessionHash(s.ID), "remote_ip": "127.0.0.1",
	}
	checkAuditLine(t, lines[0], auditSignIn, want)

	// The hot path: nothing.
	for range 3 {
		if resp := sendCookie(t, u, "/headers", cookie, false); resp.StatusCode != http.StatusOK {
			t.Fatalf("with the session: %d", resp.StatusCode)
		}
	}
	if n := logs.Len(); n != 0 {
		t.Fatalf("%d audit lines for requests with a valid session, want none: %v", n, logs.TakeAll())
	}

	bad := "not.a.token"
	if resp, _ := postLogoutToken(t, gw, bad); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad logout token: %d", resp.StatusCode)
	}
	good := forgeTyped(t, "logout+jwt", logoutClaimsFor(op, s.SID, s.Subject))
	if resp, _ := postLogoutToken(t, gw, good); resp.StatusCode != http.StatusOK {
		t.Fatalf("logout token: %d", resp.StatusCode)
	}
	lines = logs.TakeAll()
	all = append(all, lines...)
	if len(lines) != 2 {
		t.Fatalf("%d lines after two logout tokens, want 2: %v", len(lines), lines)
	}
	checkAuditLine(t, lines[0], auditBackLogout, map[string]any{"outcome": auditRefused, "issuer": op.URL, "client_id": "demo-app"})
	if r, _ := lines[0].ContextMap()["reason"].(string); r == "" {
		t.Errorf("refused logout without a reason: %v", lines[0].ContextMap())
	}
	checkAuditLine(t, lines[1], auditBackLogout, map[string]any{"outcome": auditAccepted, "sub": s.Subject, "sid": s.SID})

	// A second user signs in and out.
	u2 := newUser(t, gw, op)
	u2.signIn("/")
	logs.TakeAll()
	u2.signOut()
	lines = logs.TakeAll()
	all = append(all, lines...)
	if len(lines) != 1 {
		t.Fatalf("%d lines after sign-out, want 1: %v", len(lines), lines)
	}
	checkAuditLine(t, lines[0], auditSignOut, map[string]any{"sub": s.Subject, "client_id": "demo-app"})

	for _, l := range all {
		for k, v := range l.ContextMap() {
			str, _ := v.(string)
			for _, secret := range []string{cookie, good, bad, s.IDToken, s.AccessToken, s.RefreshToken} {
				if secret != "" && strings.Contains(str, secret) {
					t.Errorf("audit field %s holds a cookie or token", k)
				}
			}
		}
	}
}

// checkAuditLine checks the message and the fields of an audit line.
func checkAuditLine(t testing.TB, e observer.LoggedEntry, msg string, want map[string]any) {
	t.Helper()
	if e.Message != msg || e.LoggerName != AuditLoggerName {
		t.Errorf("line %q of %q, want %q of %q", e.Message, e.LoggerName, msg, AuditLoggerName)
	}
	got := e.ContextMap()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %v, want %v (all: %v)", msg, k, got[k], v, got)
		}
	}
}
