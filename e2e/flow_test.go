package e2e_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/authgate/authgate/internal/caddytest"
)

// TestCodeFlow logs alice in to demo-app with the authorization code flow
// and PKCE, as a relying party built on x/oauth2 and go-oidc would.
func TestCodeFlow(t *testing.T) {
	t.Parallel()
	s := newSite(t, "")
	s.Start(t)
	ctx := testContext(t)
	rp := newRP(t, ctx, s.issuer)

	tok, idt := rp.signIn(t, ctx, caddytest.NewBrowser(t))
	var idClaims struct {
		Sid      string `json:"sid"`
		AuthTime int64  `json:"auth_time"`
	}
	if err := idt.Claims(&idClaims); err != nil {
		t.Fatal(err)
	}
	if idClaims.Sid == "" || idClaims.AuthTime == 0 {
		t.Errorf("id token has sid %q, auth_time %d: want both", idClaims.Sid, idClaims.AuthTime)
	}

	ui, err := rp.op.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	if ui.Subject != idt.Subject {
		t.Errorf("userinfo sub = %q, id token sub = %q", ui.Subject, idt.Subject)
	}
	var claims map[string]any
	if err := ui.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"name":           "Alice Smith",
		"given_name":     "Alice",
		"family_name":    "Smith",
		"email":          "AliceSmith@email.com",
		"email_verified": true,
		"website":        "http://alice.com",
	}
	for name, v := range want {
		if claims[name] != v {
			t.Errorf("userinfo %s = %#v, want %#v", name, claims[name], v)
		}
	}
}

// TestBadInput checks what a client gets for what it should not send:
// an OAuth error, never a token, and never a redirect to an unregistered
// URI.
func TestBadInput(t *testing.T) {
	t.Parallel()
	s := newSite(t, "")
	s.Start(t)
	// The parallel subtests may wait long for their turn in a loaded
	// run: the relying party's context lasts as long as the test, and
	// each subtest's own minute starts when it runs.
	rp := newRP(t, t.Context(), s.issuer)

	tests := []struct {
		name          string
		secret        string // default: the right one
		wrongVerifier bool
		replay        bool // exchange the code twice
		wantStatus    int
		wantError     string
		wantAuth      string // prefix of the WWW-Authenticate header
	}{
		{name: "code replay", replay: true, wantStatus: http.StatusBadRequest, wantError: "invalid_grant"},
		{name: "wrong verifier", wrongVerifier: true, wantStatus: http.StatusBadRequest, wantError: "invalid_grant"},
		{name: "wrong secret", secret: "not-the-secret", wantStatus: http.StatusUnauthorized, wantError: "invalid_client", wantAuth: "Basic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			verifier := oauth2.GenerateVerifier()
			code := rp.authorize(t, caddytest.NewBrowser(t), verifier, "nonce-"+tt.name)
			conf := rp.conf
			if tt.secret != "" {
				conf.ClientSecret = tt.secret
			}
			if tt.wrongVerifier {
				verifier = oauth2.GenerateVerifier()
			}
			var first *oauth2.Token
			if tt.replay {
				var err error
				if first, err = conf.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err != nil {
					t.Fatalf("first exchange: %v", err)
				}
			}
			tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
			if err == nil {
				t.Fatalf("exchange succeeded with token type %q, want %s", tok.TokenType, tt.wantError)
			}
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) {
				t.Fatalf("exchange: %v, want an OAuth error", err)
			}
			if re.Response.StatusCode != tt.wantStatus || re.ErrorCode != tt.wantError {
				t.Errorf("exchange: status %d, error %q; want %d, %q", re.Response.StatusCode, re.ErrorCode, tt.wantStatus, tt.wantError)
			}
			if got := re.Response.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, tt.wantAuth) || (tt.wantAuth == "") != (got == "") {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.wantAuth)
			}
			if first == nil {
				return
			}
			// RFC 6749 §4.1.2: a replayed code revokes what it issued.
			resp := rp.userinfo(t, ctx, first.AccessToken)
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
				t.Errorf("userinfo with the replayed code's token: status %d, WWW-Authenticate %q; want 401 with invalid_token",
					resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		})
	}

	t.Run("unregistered redirect_uri", func(t *testing.T) {
		t.Parallel()
		conf := rp.conf
		conf.RedirectURL = "http://evil.test/oauth2/callback"
		authURL := conf.AuthCodeURL("state", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
		resp, err := caddytest.NewBrowser(t).Get(authURL)
		if err != nil {
			t.Fatal(err)
		}
		body := caddytest.ReadBody(t, resp)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("status %d, want 400", resp.StatusCode)
		}
		if loc := resp.Header.Get("Location"); loc != "" {
			t.Errorf("redirected to %q: an unregistered redirect_uri must get an error page", loc)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("Content-Type = %q, want an HTML page", ct)
		}
		if strings.Contains(body, `href="http://evil.test`) {
			t.Errorf("error page links to the unregistered redirect_uri:\n%s", body)
		}
	})
}

// relyingParty is demo-app as an application would be written: discovery
// with go-oidc, the flow with x/oauth2.
type relyingParty struct {
	issuer string
	op     *oidc.Provider
	conf   oauth2.Config
	// userinfoURL is from discovery.
	userinfoURL string
}

func newRP(t testing.TB, ctx context.Context, issuer string) *relyingParty {
	t.Helper()
	op, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	var meta struct {
		UserinfoEndpoint string `json:"userinfo_endpoint"`
	}
	if err := op.Claims(&meta); err != nil {
		t.Fatal(err)
	}
	endpoint := op.Endpoint()
	// Only Basic: x/oauth2 would otherwise retry a failed request with
	// the secret in the body, and the test would see the retry's answer.
	endpoint.AuthStyle = oauth2.AuthStyleInHeader
	return &relyingParty{
		issuer: issuer,
		op:     op,
		conf: oauth2.Config{
			ClientID:     "demo-app",
			ClientSecret: clientSecret,
			Endpoint:     endpoint,
			RedirectURL:  redirectURI,
			Scopes:       []string{oidc.ScopeOpenID, "profile", "email"},
		},
		userinfoURL: meta.UserinfoEndpoint,
	}
}

// signIn runs the whole flow and returns the tokens with the verified ID
// token, whose nonce and at_hash it has checked.
func (rp *relyingParty) signIn(t testing.TB, ctx context.Context, browser *http.Client) (*oauth2.Token, *oidc.IDToken) {
	t.Helper()
	verifier := oauth2.GenerateVerifier()
	const nonce = "nonce-e2e"
	code := rp.authorize(t, browser, verifier, nonce)
	tok, err := rp.conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	idt := rp.verify(t, ctx, tok)
	if idt.Nonce != nonce {
		t.Errorf("id token nonce = %q, want %q", idt.Nonce, nonce)
	}
	return tok, idt
}

// verify checks tok's ID token against the provider's current JWKS.
func (rp *relyingParty) verify(t testing.TB, ctx context.Context, tok *oauth2.Token) *oidc.IDToken {
	t.Helper()
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		t.Fatal("token response has no id_token")
	}
	idt, err := rp.op.Verifier(&oidc.Config{ClientID: rp.conf.ClientID}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("verifying the id token: %v", err)
	}
	if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
		t.Errorf("id token at_hash: %v", err)
	}
	return idt
}

// authorize plays the browser from the authorization request to the
// redirect back with a code, logging alice in on the way, and returns the
// code.
func (rp *relyingParty) authorize(t testing.TB, browser *http.Client, verifier, nonce string) string {
	t.Helper()
	const state = "state-e2e"
	resp, err := browser.Get(rp.conf.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)))
	if err != nil {
		t.Fatal(err)
	}
	caddytest.ReadBody(t, resp)
	loginURL, err := resp.Location()
	if err != nil {
		t.Fatalf("authorize: status %d, no redirect to the login page", resp.StatusCode)
	}
	if loginURL.Path != "/account/login" {
		t.Fatalf("authorize redirected to %s, want the login page", loginURL)
	}

	cb := caddytest.Login(t, browser, loginURL, "alice", password)
	if got := cb.Scheme + "://" + cb.Host + cb.Path; got != redirectURI {
		t.Fatalf("login redirected to %s, want %s", got, redirectURI)
	}
	q := cb.Query()
	if q.Get("state") != state || q.Get("iss") != rp.issuer || q.Get("code") == "" {
		t.Fatalf("redirect query %q: want state %q, iss %q and a code", cb.RawQuery, state, rp.issuer)
	}
	return q.Get("code")
}

// userinfo calls the userinfo endpoint with a bearer token and returns the
// response, its body read.
func (rp *relyingParty) userinfo(t testing.TB, ctx context.Context, accessToken string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rp.userinfoURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	caddytest.ReadBody(t, resp)
	return resp
}

// testContext returns a context that ends with the test or after a
// minute, whichever comes first.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}
