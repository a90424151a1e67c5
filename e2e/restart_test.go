package e2e_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/authgate/authgate/internal/caddytest"
)

// TestRestartAndReload checks that tokens outlive a restart of Caddy on the
// same storage and a `caddy reload` with a changed configuration: the
// signing key is kept, so the old ID token verifies against the new JWKS
// and the old access token still works at userinfo.
func TestRestartAndReload(t *testing.T) {
	t.Parallel()
	s := newSite(t, "")
	s.Start(t)
	ctx := testContext(t)
	tok, idt := newRP(t, ctx, s.issuer).signIn(t, ctx, caddytest.NewBrowser(t))
	kid := jwtKeyID(t, tok.Extra("id_token").(string))

	stillValid := func(t *testing.T) {
		t.Helper()
		// A new relying party fetches discovery and the JWKS anew.
		rp := newRP(t, ctx, s.issuer)
		if kids := jwksKeyIDs(t, ctx, rp.op); !slices.Contains(kids, kid) {
			t.Errorf("JWKS has keys %q, not the id token's %q", kids, kid)
		}
		if got := rp.verify(t, ctx, tok); got.Subject != idt.Subject {
			t.Errorf("id token sub = %q, want %q", got.Subject, idt.Subject)
		}
		if resp := rp.userinfo(t, ctx, tok.AccessToken); resp.StatusCode != http.StatusOK {
			t.Errorf("userinfo with the old access token: status %d, WWW-Authenticate %q",
				resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}

	if !t.Run("restart", func(t *testing.T) {
		s.Stop(t)
		s.Start(t)
		stillValid(t)
	}) {
		return
	}

	t.Run("reload", func(t *testing.T) {
		s.writeConfig(t, `
		client second-app {
			secret second-app-secret
			redirect_uri http://second.test/callback
		}`)
		s.Reload(t)
		// The new client is known: the reload took effect.
		rp := newRP(t, ctx, s.issuer)
		conf := oauth2.Config{ClientID: "second-app", Endpoint: rp.op.Endpoint(), RedirectURL: "http://second.test/callback", Scopes: []string{oidc.ScopeOpenID}}
		resp, err := caddytest.NewBrowser(t).Get(conf.AuthCodeURL("state", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		if err != nil {
			t.Fatal(err)
		}
		caddytest.ReadBody(t, resp)
		if loc, err := url.Parse(resp.Header.Get("Location")); resp.StatusCode != http.StatusFound || err != nil || loc.Path != "/account/login" {
			t.Errorf("authorize for the new client: status %d, Location %q; want a redirect to the login page",
				resp.StatusCode, resp.Header.Get("Location"))
		}
		stillValid(t)
	})
}

// jwksKeyIDs returns the kids the provider publishes.
func jwksKeyIDs(t testing.TB, ctx context.Context, op *oidc.Provider) []string {
	t.Helper()
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := op.Claims(&meta); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, meta.JWKSURI, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var jwks struct {
		Keys []struct {
			KeyID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(caddytest.ReadBody(t, resp)), &jwks); err != nil {
		t.Fatalf("decoding the JWKS: %v", err)
	}
	var kids []string
	for _, k := range jwks.Keys {
		kids = append(kids, k.KeyID)
	}
	return kids
}

// jwtKeyID returns the kid of a compact JWS's protected header.
func jwtKeyID(t testing.TB, raw string) string {
	t.Helper()
	header, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		t.Fatalf("decoding the JWT header: %v", err)
	}
	var h struct {
		KeyID string `json:"kid"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("decoding the JWT header: %v", err)
	}
	if h.KeyID == "" {
		t.Fatal("the JWT header has no kid")
	}
	return h.KeyID
}
