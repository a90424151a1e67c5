package e2e_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"

	"golang.org/x/oauth2"

	"github.com/authgate/authgate/internal/caddytest"
)

var auditTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
	log audit {
		output file {{.AuditLog}}
		format json
		include authgate.audit
	}
}

{{.Issuer}} {
	oidc_provider {{.Issuer}} {
		client demo-app {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.RedirectURI}}
			post_logout_redirect_uri http://app.test/
			offline_access
		}
		user alice {
			password_hash {{.Hash}}
			claim email alice@example.com
		}
	}
}
`))

// auditLine is a line of the audit log, with the fields the README
// documents.
type auditLine struct {
	Logger    string `json:"logger"`
	Msg       string `json:"msg"`
	Event     string `json:"event"`
	Outcome   string `json:"outcome"`
	Username  string `json:"username"`
	Sub       string `json:"sub"`
	ClientID  string `json:"client_id"`
	SID       string `json:"sid"`
	GrantType string `json:"grant_type"`
	Error     string `json:"error"`
	Reason    string `json:"reason"`
	RemoteIP  string `json:"remote_ip"`
	UserAgent string `json:"user_agent"`
}

// TestAuditLog: the provider's security events reach a file through
// Caddy's own log configuration (a global log that includes
// authgate.audit), with the documented fields and none of the secrets
// that went by; its counters on Caddy's admin /metrics count them (issue
// 11 §1, §2).
func TestAuditLog(t *testing.T) {
	t.Parallel()
	s := newEmptySite(t)
	auditLog := filepath.Join(s.Dir, "audit.log")
	s.WriteConfig(t, auditTemplate, map[string]string{
		"Admin":       s.AdminAddr,
		"Storage":     s.Storage,
		"AuditLog":    auditLog,
		"Issuer":      s.issuer,
		"SecretEnv":   secretEnv,
		"RedirectURI": redirectURI,
		"Hash":        passwordHash,
	})
	s.Start(t)
	ctx := testContext(t)
	rp := newRP(t, ctx, s.issuer)
	rp.conf.Scopes = append(rp.conf.Scopes, "offline_access")

	const wrongPassword = "Wrong-Audit-Password-77"
	const agent = "audit-e2e/1.0"
	browser := caddytest.NewBrowser(t)
	browser.Transport = userAgent{agent, http.DefaultTransport}
	verifier := oauth2.GenerateVerifier()
	loginURL := redirectOf(t, browser, rp.conf.AuthCodeURL("state-audit", oauth2.S256ChallengeOption(verifier)), nil)
	if resp, page := caddytest.LoginAttempt(t, browser, loginURL, "alice", wrongPassword); resp.StatusCode != http.StatusOK {
		t.Fatalf("wrong password: status %d: %s", resp.StatusCode, page)
	}
	code := caddytest.Login(t, browser, loginURL, "alice", password).Query().Get("code")
	tok, err := rp.conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	idToken, _ := tok.Extra("id_token").(string)
	refreshed := tokenPost(t, rp, clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}}, http.StatusOK)
	var next struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal([]byte(refreshed), &next); err != nil || next.RefreshToken == "" {
		t.Fatalf("refresh: %s", refreshed)
	}
	const wrongSecret = "wrong-client-secret-123"
	tokenPost(t, rp, wrongSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {next.RefreshToken}}, http.StatusUnauthorized)
	// RP-initiated logout with the ID token of the browser's session.
	browserGet(t, browser, s.issuer+"/connect/endsession?"+url.Values{"id_token_hint": {idToken}}.Encode(), nil)

	// The counters, at Caddy's admin endpoint.
	resp, metrics := browserGet(t, http.DefaultClient, "http://"+s.AdminAddr+"/metrics", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: status %d", resp.StatusCode)
	}
	for _, want := range []string{
		`authgate_provider_logins_total{outcome="invalid"} 1`,
		`authgate_provider_logins_total{outcome="success"} 1`,
		`authgate_provider_logins_total{outcome="throttled"} 0`,
		`authgate_provider_tokens_issued_total{client_id="demo-app",grant_type="authorization_code"} 1`,
		`authgate_provider_tokens_issued_total{client_id="demo-app",grant_type="refresh_token"} 1`,
		`authgate_provider_refresh_total{outcome="rotated"} 1`,
		`authgate_provider_token_errors_total{error="invalid_client"} 1`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics has no line %s", want)
		}
	}

	// Stopping Caddy flushes every line to the file.
	s.Stop(t)
	raw, err := os.ReadFile(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	var lines []auditLine
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for sc.Scan() {
		var l auditLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		if l.Logger != "authgate.audit" || l.Event == "" || l.Msg != l.Event {
			t.Errorf("audit line %q: want logger authgate.audit, and event as msg", sc.Text())
		}
		lines = append(lines, l)
	}
	find := func(match func(auditLine) bool) *auditLine {
		for i := range lines {
			if match(lines[i]) {
				return &lines[i]
			}
		}
		return nil
	}
	sub := ""
	for _, tt := range []struct {
		name  string
		match func(auditLine) bool
		check func(auditLine) bool
	}{
		{"failed login", func(l auditLine) bool { return l.Event == "login" && l.Outcome == "invalid" },
			func(l auditLine) bool {
				return l.Username == "alice" && l.ClientID == "demo-app" && l.RemoteIP == "127.0.0.1" && l.UserAgent == agent
			}},
		{"login", func(l auditLine) bool { return l.Event == "login" && l.Outcome == "success" },
			func(l auditLine) bool {
				sub = l.Sub
				return l.Username == "alice" && l.Sub != "" && l.SID != "" && l.ClientID == "demo-app" && l.RemoteIP == "127.0.0.1" && l.UserAgent == agent
			}},
		{"code exchange", func(l auditLine) bool { return l.Event == "token_issued" && l.GrantType == "authorization_code" },
			func(l auditLine) bool { return l.Sub == sub && l.ClientID == "demo-app" && l.RemoteIP == "127.0.0.1" }},
		{"refresh", func(l auditLine) bool { return l.Event == "refresh" },
			func(l auditLine) bool { return l.Outcome == "rotated" && l.Sub == sub && l.ClientID == "demo-app" }},
		{"refreshed tokens", func(l auditLine) bool { return l.Event == "token_issued" && l.GrantType == "refresh_token" },
			func(l auditLine) bool { return l.Sub == sub && l.ClientID == "demo-app" }},
		{"token error", func(l auditLine) bool { return l.Event == "token_error" },
			func(l auditLine) bool {
				return l.Error == "invalid_client" && l.ClientID == "demo-app" && l.GrantType == "refresh_token"
			}},
		{"logout", func(l auditLine) bool { return l.Event == "logout" },
			func(l auditLine) bool { return l.Reason == "rp_initiated" && l.Sub == sub && l.SID != "" }},
	} {
		l := find(tt.match)
		switch {
		case l == nil:
			t.Errorf("the audit log has no %s line:\n%s", tt.name, raw)
		case !tt.check(*l):
			t.Errorf("%s line %+v: fields missing or wrong", tt.name, *l)
		}
	}
	for name, secret := range map[string]string{
		"password": password, "wrong password": wrongPassword, "client secret": clientSecret,
		"wrong client secret": wrongSecret, "code": code, "access token": tok.AccessToken,
		"refresh token": tok.RefreshToken, "ID token": idToken, "refreshed access token": next.AccessToken,
		"refreshed refresh token": next.RefreshToken, "password hash": passwordHash,
	} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("the audit log holds the %s", name)
		}
	}
}

// userAgent sets the User-Agent of every request.
type userAgent struct {
	agent string
	next  http.RoundTripper
}

func (u userAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", u.agent)
	return u.next.RoundTrip(r)
}

// tokenPost posts form to rp's token endpoint as demo-app with secret,
// checks the status and returns the body.
func tokenPost(t testing.TB, rp *relyingParty, secret string, form url.Values, want int) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, rp.conf.Endpoint.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("demo-app", secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := caddytest.ReadBody(t, resp)
	if resp.StatusCode != want {
		t.Fatalf("token endpoint: status %d, want %d: %s", resp.StatusCode, want, body)
	}
	return body
}
