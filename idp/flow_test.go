package idp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
)

// TestCodeFlow runs the whole authorization code flow with PKCE using
// golang.org/x/oauth2 and go-oidc as the client, as a relying party would.
func TestCodeFlow(t *testing.T) {
	ts := newServer(t, nil)
	ctx := context.Background()
	op, err := oidc.NewProvider(ctx, ts.URL)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	conf := oauth2.Config{
		ClientID:     "demo-app",
		ClientSecret: testSecret,
		Endpoint:     op.Endpoint(),
		RedirectURL:  testRedirect,
		Scopes:       []string{oidc.ScopeOpenID, "profile", "email", "api"},
	}
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL("state-1", oidc.Nonce("nonce-1"), oauth2.S256ChallengeOption(verifier))
	c := browser(t)
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	form := loginForm(t, c, ts.URL, resp.Header.Get("Location"))
	form.Set("username", "alice")
	form.Set("password", testPassword)
	resp, err = c.PostForm(ts.URL+"/account/login", form)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	cb, err := resp.Location()
	if err != nil {
		t.Fatalf("login did not redirect: status %d", resp.StatusCode)
	}
	if got := cb.Scheme + "://" + cb.Host + cb.Path; got != testRedirect {
		t.Fatalf("redirected to %s, want %s", got, testRedirect)
	}
	q := cb.Query()
	if q.Get("state") != "state-1" || q.Get("iss") != ts.URL {
		t.Fatalf("callback query %v: want state state-1 and iss %s", q, ts.URL)
	}

	tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := op.Verifier(&oidc.Config{ClientID: "demo-app"}).Verify(ctx, rawID)
	if err != nil {
		t.Fatalf("verifying id token: %v", err)
	}
	if idt.Nonce != "nonce-1" {
		t.Errorf("nonce = %q, want nonce-1", idt.Nonce)
	}
	if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
		t.Errorf("at_hash: %v", err)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"auth_time", "sid", "at_hash", "iat", "exp"} {
		if claims[name] == nil {
			t.Errorf("id token lacks %s: %v", name, claims)
		}
	}
	if claims["name"] != "Alice Smith" || claims["email"] != "AliceSmith@email.com" || claims["website"] != "http://alice.com" {
		t.Errorf("id token profile/email claims: %v", claims)
	}

	// The access token is an RFC 9068 JWT.
	at, err := jwt.ParseSigned(tok.AccessToken, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	if typ := at.Headers[0].ExtraHeaders[jose.HeaderType]; typ != "at+jwt" {
		t.Errorf("access token typ = %v, want at+jwt", typ)
	}
	var ac map[string]any
	if err := at.UnsafeClaimsWithoutVerification(&ac); err != nil {
		t.Fatal(err)
	}
	if ac["client_id"] != "demo-app" || ac["sub"] != idt.Subject || ac["iss"] != ts.URL || ac["scope"] != "openid profile email api" || ac["jti"] == nil {
		t.Errorf("access token claims: %v", ac)
	}
	if aud, _ := ac["aud"].([]any); len(aud) != 1 || aud[0] != "demo-api" {
		t.Errorf("access token aud = %v, want [demo-api]", ac["aud"])
	}

	ui, err := op.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	if ui.Subject != idt.Subject || ui.Email != "AliceSmith@email.com" || !ui.EmailVerified {
		t.Errorf("userinfo = %+v", ui)
	}
	var uiClaims map[string]any
	ui.Claims(&uiClaims)
	if uiClaims["given_name"] != "Alice" || uiClaims["preferred_username"] != "alice" {
		t.Errorf("userinfo claims = %v", uiClaims)
	}

	// Single sign-on: the next authorization needs no password.
	v2, ch2 := pkce("w")
	resp, err = c.Get(ts.URL + "/connect/authorize?" + authorizeParams(ch2).Encode())
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	loc, _ := resp.Location()
	if loc == nil || loc.Query().Get("code") == "" {
		t.Fatalf("second authorize: want a code at once, got status %d to %v", resp.StatusCode, loc)
	}
	if resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(loc.Query().Get("code"), v2)); resp.StatusCode != http.StatusOK {
		t.Fatalf("second exchange: %d %s", resp.StatusCode, body)
	}
}

// TestTokenResponse checks the headers and fields of a token response.
func TestTokenResponse(t *testing.T) {
	ts := newServer(t, nil)
	code, verifier := codeFor(t, ts)
	resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q", ct)
	}
	var tr map[string]any
	if err := json.Unmarshal([]byte(body), &tr); err != nil {
		t.Fatal(err)
	}
	if tr["token_type"] != "Bearer" || tr["expires_in"] != float64(3600) || tr["scope"] != "openid profile email" || tr["id_token"] == nil {
		t.Errorf("token response = %v", tr)
	}
	if _, ok := tr["refresh_token"]; ok {
		t.Errorf("refresh_token issued without offline_access")
	}
}
