package e2e_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"

	"github.com/authgate/authgate/internal/caddytest"
)

// TestProviderBackchannelLogout: RP-initiated logout at the provider,
// run by the real Caddy binary, posts a logout token (OpenID Connect
// Back-Channel Logout 1.0) to the back-channel logout URI of the client
// the user signed in to, a receiver of the test's on 127.0.0.1; the token
// verifies against the provider's JWKS.
func TestProviderBackchannelLogout(t *testing.T) {
	t.Parallel()
	tokens := make(chan string, 4)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			http.Error(w, "want a form POST", http.StatusBadRequest)
			return
		}
		tokens <- r.PostFormValue("logout_token")
	}))
	defer rcv.Close()

	s := newSite(t, `
		client bcl-app {
			secret bcl-app-secret
			redirect_uri `+redirectURI+`
			backchannel_logout_uri `+rcv.URL+`/oauth2/backchannel_logout
			backchannel_logout_session_required
		}`)
	s.Start(t)
	ctx := testContext(t)
	rp := newRP(t, ctx, s.issuer)
	var meta struct {
		Supported bool `json:"backchannel_logout_supported"`
		Session   bool `json:"backchannel_logout_session_supported"`
	}
	if err := rp.op.Claims(&meta); err != nil || !meta.Supported || !meta.Session {
		t.Fatalf("discovery: backchannel_logout_supported %v, backchannel_logout_session_supported %v (%v)", meta.Supported, meta.Session, err)
	}
	rp.conf.ClientID, rp.conf.ClientSecret = "bcl-app", "bcl-app-secret"
	browser := caddytest.NewBrowser(t)
	tok, idt := rp.signIn(t, ctx, browser)
	var id struct {
		SID string `json:"sid"`
	}
	if err := idt.Claims(&id); err != nil || id.SID == "" {
		t.Fatalf("id token without sid: %v", err)
	}

	raw, _ := tok.Extra("id_token").(string)
	resp, err := browser.Get(s.issuer + "/connect/endsession?" + url.Values{"id_token_hint": {raw}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	caddytest.ReadBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("end session: status %d", resp.StatusCode)
	}

	var logoutToken string
	select {
	case logoutToken = <-tokens:
	case <-time.After(10 * time.Second):
		t.Fatal("no logout token delivered")
	}
	jws, err := jose.ParseSignedCompact(logoutToken, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	if typ := jws.Signatures[0].Header.ExtraHeaders[jose.HeaderType]; typ != "logout+jwt" {
		t.Errorf("typ %v, want logout+jwt", typ)
	}
	// go-oidc checks signature, iss, aud and exp.
	lt, err := rp.op.Verifier(&oidc.Config{ClientID: "bcl-app"}).Verify(ctx, logoutToken)
	if err != nil {
		t.Fatalf("verifying the logout token: %v", err)
	}
	var claims struct {
		SID    string                    `json:"sid"`
		Events map[string]map[string]any `json:"events"`
		Nonce  *string                   `json:"nonce"`
		JTI    string                    `json:"jti"`
	}
	if err := lt.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	if _, ok := claims.Events["http://schemas.openid.net/event/backchannel-logout"]; !ok || claims.SID != id.SID || lt.Subject != idt.Subject || claims.Nonce != nil || claims.JTI == "" {
		t.Fatalf("logout token claims %+v sub %q: want the event, sid %q, sub %q, a jti and no nonce", claims, lt.Subject, id.SID, idt.Subject)
	}
}
