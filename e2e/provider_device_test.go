package e2e_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/authgate/authgate/idp"
)

// deviceClient is the Caddyfile of the public client cli, which may use
// the device flow, with polls every second.
const deviceClient = `
		device_poll_interval 1s
		client cli {
			public
			device_flow
			offline_access
			scopes openid profile email offline_access
		}`

func deviceOAuth2(issuer string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: "cli",
		Endpoint: oauth2.Endpoint{
			DeviceAuthURL: issuer + idp.PathDeviceAuthorization,
			TokenURL:      issuer + idp.PathToken,
			AuthStyle:     oauth2.AuthStyleInParams,
		},
		Scopes: []string{"openid", "profile", "email", "offline_access"},
	}
}

// enterUserCode types code into the device page the tab shows and
// continues, as a user would.
func enterUserCode(t testing.TB, c *chrome, code string) {
	t.Helper()
	c.waitVisible("user_code")
	browserRun(c, "clearing the code field", chromedp.Evaluate[bool](`(document.getElementById("user_code").value = "", true)`))
	c.do("typing the code", chromedp.SendKeys(chromedp.ID("user_code"), code))
	if resp := c.submit(t, "continue"); resp == nil || resp.Status != http.StatusOK {
		t.Fatalf("after entering the code: status %d; the page says:\n%s", respStatus(resp), c.text())
	}
}

// TestProviderDeviceFlow: a CLI (x/oauth2) starts the device flow and
// polls, while the user signs in in Chromium, enters a wrong code, then
// the right one typed in lower case, sees the client and its scopes, and
// approves: the CLI gets tokens for alice.
func TestProviderDeviceFlow(t *testing.T) {
	t.Parallel()
	s := newSite(t, deviceClient)
	c := newChrome(t)
	s.Start(t)
	cfg := deviceOAuth2(s.issuer)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("DeviceAuth: %v", err)
	}
	type result struct {
		tok *oauth2.Token
		err error
	}
	done := make(chan result, 1)
	go func() {
		tok, err := cfg.DeviceAccessToken(ctx, da)
		done <- result{tok, err}
	}()

	c.navigate(da.VerificationURI)
	if resp := c.logIn("alice", password); resp == nil || resp.Status != http.StatusOK || !strings.HasPrefix(c.location(), s.issuer+idp.PathDevice) {
		t.Fatalf("after logging in from the device page: status %d at %s", respStatus(resp), c.location())
	}
	enterUserCode(t, c, "BBBB-BBBB")
	if page := c.text(); !strings.Contains(page, "That code is wrong") {
		t.Fatalf("a wrong code: the page says:\n%s", page)
	}
	enterUserCode(t, c, strings.ToLower(da.UserCode))
	c.waitVisible("allow")
	if page := c.text(); !strings.Contains(page, "runs cli") || !strings.Contains(page, "offline access") || !strings.Contains(page, "Your email address") {
		t.Fatalf("the consent page does not show the client and its scopes:\n%s", page)
	}
	if resp := c.submit(t, "allow"); resp == nil || resp.Status != http.StatusOK || !strings.Contains(c.text(), "Device connected") {
		t.Fatalf("after allowing: status %d; the page says:\n%s", respStatus(resp), c.text())
	}

	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		t.Fatal("the CLI got no token")
	}
	if res.err != nil {
		t.Fatalf("DeviceAccessToken: %v", res.err)
	}
	if res.tok.RefreshToken == "" {
		t.Error("no refresh token for offline_access")
	}
	prov, err := oidc.NewProvider(ctx, s.issuer)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := res.tok.Extra("id_token").(string)
	idt, err := prov.Verifier(&oidc.Config{ClientID: "cli"}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("ID token: %v", err)
	}
	var claims struct {
		Name string `json:"name"`
	}
	if err := idt.Claims(&claims); err != nil || claims.Name != "Alice Smith" {
		t.Errorf("ID token name %q (%v), want Alice Smith", claims.Name, err)
	}
	// The same device_code again gets nothing.
	if _, err := cfg.DeviceAccessToken(ctx, da); !isOAuthError(err, idp.ErrInvalidGrant) {
		t.Errorf("the used device_code again: %v, want invalid_grant", err)
	}
}

// TestProviderDeviceExpired: once its lifetime is over, the device page
// refuses the user_code and the CLI gets expired_token.
func TestProviderDeviceExpired(t *testing.T) {
	t.Parallel()
	s := newSite(t, deviceClient+`
		device_code_lifetime 2s`)
	c := newChrome(t)
	s.Start(t)
	cfg := deviceOAuth2(s.issuer)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("DeviceAuth: %v", err)
	}
	// x/oauth2 stops at the expiry it was told: poll by hand, every
	// second as asked, until the provider says expired_token.
	v := map[string][]string{"grant_type": {idp.GrantTypeDeviceCode}, "device_code": {da.DeviceCode}, "client_id": {"cli"}}
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, err := cfg.Exchange(ctx, "", oauth2.SetAuthURLParam("grant_type", v["grant_type"][0]), oauth2.SetAuthURLParam("device_code", da.DeviceCode))
		if isOAuthError(err, idp.ErrExpiredToken) {
			break
		}
		if !isOAuthError(err, idp.ErrAuthorizationPending) {
			t.Fatalf("polling: %v, want authorization_pending until expired_token", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no expired_token before the deadline")
		}
		time.Sleep(time.Second) // the poll interval the provider asked for
	}
	c.navigate(da.VerificationURIComplete)
	c.logIn("alice", password)
	enterUserCode(t, c, da.UserCode)
	if page := c.text(); !strings.Contains(page, "That code is wrong, expired or already used") {
		t.Fatalf("an expired code: the page says:\n%s", page)
	}
}

func isOAuthError(err error, code string) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.ErrorCode == code
}
