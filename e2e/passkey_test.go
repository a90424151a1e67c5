package e2e_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/authgate/authgate/internal/caddytest"
)

// A WebAuthn relying party ID must be a domain, not an IP address
// (WebAuthn §5.1.4): the passkey tests' provider is at
// http://localhost:port, which browsers treat as a secure context, bound
// to 127.0.0.1.
var passkeyConfig = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

{{.Issuer}} {
	bind 127.0.0.1
	oidc_provider {{.Issuer}} {
		client pk-app {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.Callback}}{{.ClientExtra}}
		}
		user alice {
			password_hash {{.Hash}}
			claim name "Alice Smith"{{.UserExtra}}
		}
	}
}
`))

// passkeyRP is the relying party of the passkey tests: its callback takes
// the code, which the test redeems.
type passkeyRP struct {
	url   string
	mu    sync.Mutex
	codes []string
}

func newPasskeyRP(t testing.TB) *passkeyRP {
	rp := &passkeyRP{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/cb" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		rp.mu.Lock()
		rp.codes = append(rp.codes, q.Get("code"))
		rp.mu.Unlock()
		fmt.Fprintf(w, "callback: code=%t error=%s", q.Get("code") != "", q.Get("error"))
	}))
	t.Cleanup(srv.Close)
	rp.url = srv.URL
	return rp
}

func (rp *passkeyRP) lastCode() string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if len(rp.codes) == 0 {
		return ""
	}
	return rp.codes[len(rp.codes)-1]
}

// passkeySite is a provider at http://localhost:port for rp.
func passkeySite(t testing.TB, rp *passkeyRP, clientExtra, userExtra string) *site {
	t.Helper()
	s := &site{Caddy: caddytest.New(t, secretEnv+"="+clientSecret), issuer: fmt.Sprintf("http://localhost:%d", caddytest.FreePort(t))}
	s.Ready = []string{s.issuer + "/.well-known/openid-configuration"}
	s.WriteConfig(t, passkeyConfig, map[string]string{
		"Admin": s.AdminAddr, "Storage": s.Storage, "Issuer": s.issuer, "SecretEnv": secretEnv,
		"Callback": rp.url + "/cb", "Hash": passwordHash, "ClientExtra": clientExtra, "UserExtra": userExtra,
	})
	return s
}

// authenticator is a virtual authenticator in the browser: CTAP2.1 over
// the internal transport (a platform authenticator, as a laptop's), with
// resident keys (passkeys) and user verification that succeeds.
func (c *chrome) addAuthenticator(backupEligible bool) webauthn.AuthenticatorID {
	c.t.Helper()
	var id webauthn.AuthenticatorID
	c.do("adding a virtual authenticator", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
			return err
		}
		res, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
			Protocol: webauthn.AuthenticatorProtocolCtap2, Ctap2version: webauthn.Ctap2versionCtap21,
			Transport: webauthn.AuthenticatorTransportInternal, HasResidentKey: true, HasUserVerification: true,
			IsUserVerified: true, AutomaticPresenceSimulation: true, DefaultBackupEligibility: backupEligible,
		}})
		id = res.AuthenticatorID
		return err
	}))
	return id
}

func (c *chrome) credentials(id webauthn.AuthenticatorID) []*webauthn.Credential {
	c.t.Helper()
	var creds []*webauthn.Credential
	c.do("reading the authenticator's credentials", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		res, err := chromedp.Call(ctx, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: id})
		creds = res.Credentials
		return err
	}))
	return creds
}

func (c *chrome) removeAuthenticator(id webauthn.AuthenticatorID) {
	c.t.Helper()
	c.do("removing the virtual authenticator", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, webauthn.RemoveVirtualAuthenticator, webauthn.RemoveVirtualAuthenticatorParams{AuthenticatorID: id})
		return err
	}))
}

// addCredentialCommand is WebAuthn.addCredential with only the fields a
// copied passkey needs: cdproto's Credential always sends
// generateCmtgKeyOnNextOperation, which an authenticator without that
// extension refuses.
var addCredentialCommand = cdp.Command[addCredentialParams, cdp.Empty]{Method: webauthn.CommandAddCredential}

type addCredentialParams struct {
	AuthenticatorID webauthn.AuthenticatorID `json:"authenticatorId"`
	Credential      copiedCredential         `json:"credential"`
}

type copiedCredential struct {
	CredentialID         []byte  `json:"credentialId"`
	IsResidentCredential bool    `json:"isResidentCredential"`
	RpID                 string  `json:"rpId"`
	PrivateKey           []byte  `json:"privateKey"`
	UserHandle           []byte  `json:"userHandle,omitempty"`
	SignCount            float64 `json:"signCount"`
}

// addCredential puts a copy of cred, with signCount, into the
// authenticator id.
func (c *chrome) addCredential(id webauthn.AuthenticatorID, cred *webauthn.Credential, signCount float64) {
	c.t.Helper()
	c.do("adding a credential to the authenticator", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, addCredentialCommand, addCredentialParams{AuthenticatorID: id, Credential: copiedCredential{
			CredentialID: cred.CredentialID, IsResidentCredential: cred.IsResidentCredential, RpID: cred.RpID,
			PrivateKey: cred.PrivateKey, UserHandle: cred.UserHandle, SignCount: signCount,
		}})
		return err
	}))
}

// passkeyFlow is a code flow of pk-app with PKCE.
type passkeyFlow struct {
	conf     *oauth2.Config
	verifier *oidc.IDTokenVerifier
}

func newPasskeyFlow(t testing.TB, s *site, rp *passkeyRP) *passkeyFlow {
	t.Helper()
	op, err := oidc.NewProvider(testContext(t), s.issuer)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	return &passkeyFlow{
		conf: &oauth2.Config{ClientID: "pk-app", ClientSecret: clientSecret, Endpoint: op.Endpoint(),
			RedirectURL: rp.url + "/cb", Scopes: []string{oidc.ScopeOpenID}},
		verifier: op.Verifier(&oidc.Config{ClientID: "pk-app"}),
	}
}

// start returns an authorization URL and its verifier.
func (f *passkeyFlow) start(extra ...oauth2.AuthCodeOption) (string, string) {
	v := oauth2.GenerateVerifier()
	return f.conf.AuthCodeURL(rand.Text(), append(extra, oauth2.S256ChallengeOption(v))...), v
}

// claims redeems code and returns the ID token's amr and acr.
func (f *passkeyFlow) claims(t testing.TB, code, verifier string) (amr []string, acr string) {
	t.Helper()
	ctx := testContext(t)
	tok, err := f.conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("redeeming the code: %v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := f.verifier.Verify(ctx, raw)
	if err != nil {
		t.Fatalf("verifying the ID token: %v", err)
	}
	var c struct {
		AMR []string `json:"amr"`
		ACR string   `json:"acr"`
	}
	if err := idt.Claims(&c); err != nil {
		t.Fatal(err)
	}
	return c.AMR, c.ACR
}

// signOut signs the browser out on the provider's sign-out page.
func (c *chrome) signOut(issuer string) {
	c.t.Helper()
	c.navigate(issuer + "/account/logout")
	c.do("clicking sign out", chromedp.Click(chromedp.ID("logout")))
	c.waitText("You are signed out.")
}

// waitText waits until the tab's page shows text.
func (c *chrome) waitText(text string) {
	c.t.Helper()
	deadline := time.Now().Add(browserStepTimeout)
	var got string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(c.ctx, time.Second)
		// Between documents an evaluation may fail: try again.
		got, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		cancel()
		if strings.Contains(got, text) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("the page does not show %q: %q", text, got)
}

// noConditionalUI makes the tab's pages see no conditional mediation, so
// that a passkey signs in only when the button is clicked: Chromium's
// virtual authenticator answers a conditional request at once, which
// would race the click.
func (c *chrome) noConditionalUI() {
	c.t.Helper()
	c.do("turning conditional mediation off", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
			Source: `if (window.PublicKeyCredential) PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);`,
		})
		return err
	}))
}

// passkeySignIn opens an authorization request and signs in with the
// authenticator's passkey: by the login page's button if click, else by
// the page's conditional request alone. It returns where the browser
// ended: at rpURL, or on the login page with an error.
func (c *chrome) passkeySignIn(authURL, rpURL string, click bool) string {
	c.t.Helper()
	c.navigate(authURL)
	if click {
		c.do("clicking the passkey button", chromedp.WaitVisible(chromedp.ID("passkey-login")), chromedp.Click(chromedp.ID("passkey-login")))
	}
	deadline := time.Now().Add(browserStepTimeout)
	var loc string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(c.ctx, time.Second)
		// Between documents an evaluation may fail: try again.
		loc, _ = chromedp.Run(ctx, chromedp.Location())
		refused, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!document.getElementById("error")`))
		cancel()
		if strings.HasPrefix(loc, rpURL) || refused {
			return loc
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("after the passkey sign-in the tab is at %s", loc)
	return ""
}

// TestPasskey: in Chromium with a virtual authenticator, alice adds a
// passkey on her account page, signs out, and signs in with it alone, by
// the login page's button: the ID token says hwk and mfa (a device-bound
// key, user verified) and acr phrh. In another tab the login page's
// conditional request signs her in without a click. A copy of the passkey
// whose sign counter is behind (a cloned authenticator) is refused and
// logged at warn; once she removes the passkey it signs nobody in.
func TestPasskey(t *testing.T) {
	rp := newPasskeyRP(t)
	s := passkeySite(t, rp, "", "")
	s.Start(t)
	flow := newPasskeyFlow(t, s, rp)
	c := newChrome(t)
	c.noConditionalUI()
	auth := c.addAuthenticator(false)

	// The account page asks her to sign in first, then shows her methods.
	c.navigate(s.issuer + "/account")
	c.logIn("alice", password)
	c.waitVisible("methods")
	if got := c.text(); !strings.Contains(got, "signed in as alice") || !strings.Contains(got, "Passkeys") {
		t.Fatalf("account page: %q", got)
	}
	c.do("opening the passkeys page", chromedp.Click(`a[href$="/account/passkeys"]`), chromedp.WaitVisible(chromedp.ID("none")))

	// She adds a passkey named "laptop".
	c.do("naming the passkey", chromedp.SendKeys(chromedp.ID("passkey-name"), "laptop"))
	c.do("adding the passkey", chromedp.Click(chromedp.ID("passkey-register")))
	c.waitText("Your passkey was added.")
	if got := c.text(); !strings.Contains(got, "laptop") || !strings.Contains(got, "never") {
		t.Fatalf("passkeys page after adding one: %q", got)
	}
	if n := len(c.credentials(auth)); n != 1 {
		t.Fatalf("the authenticator holds %d credentials, want 1", n)
	}

	// Signed out, she signs in to pk-app with the passkey, no password.
	c.signOut(s.issuer)
	authURL, verifier := flow.start()
	if loc := c.passkeySignIn(authURL, rp.url, true); !strings.HasPrefix(loc, rp.url+"/cb?code=") {
		t.Fatalf("passkey sign-in ended at %s: %q", loc, c.text())
	}
	amr, acr := flow.claims(t, rp.lastCode(), verifier)
	if strings.Join(amr, " ") != "hwk mfa" || acr != "phrh" {
		t.Fatalf("after a passkey sign-in amr = %v, acr = %q; want [hwk mfa], phrh", amr, acr)
	}

	// The passkeys page says when it was last used.
	c.navigate(s.issuer + "/account/passkeys")
	if got := browserRun(c, "reading last used", chromedp.Evaluate[string](`document.querySelector(".last-used").textContent`)); got == "never" {
		t.Fatal("last used is still never after a sign-in")
	}

	// A clone: the credential as it is now, private key and counter.
	creds := c.credentials(auth)
	if len(creds) != 1 {
		t.Fatalf("the authenticator holds %d credentials, want 1", len(creds))
	}
	clone := creds[0]
	c.signOut(s.issuer)

	// Conditional UI, in a tab that has it: the passkey (a copy ahead of
	// the stored counter, as the original's next use would be) signs in
	// as soon as the login page asks, without a click.
	tab := c.newTab(t)
	ahead := tab.addAuthenticator(false)
	tab.addCredential(ahead, clone, clone.SignCount+5)
	authURL, verifier = flow.start()
	if loc := tab.passkeySignIn(authURL, rp.url, false); !strings.HasPrefix(loc, rp.url+"/cb?code=") {
		t.Fatalf("conditional passkey sign-in ended at %s: %q", loc, tab.text())
	}
	if amr, _ := flow.claims(t, rp.lastCode(), verifier); strings.Join(amr, " ") != "hwk mfa" {
		t.Fatalf("after a conditional passkey sign-in amr = %v", amr)
	}
	tab.removeAuthenticator(ahead)
	tab.signOut(s.issuer)

	// The clone, its counter now behind, is refused.
	c.removeAuthenticator(auth)
	cloned := c.addAuthenticator(false)
	c.addCredential(cloned, clone, clone.SignCount)
	authURL, _ = flow.start()
	loc := c.passkeySignIn(authURL, rp.url, true)
	if strings.HasPrefix(loc, rp.url) || !strings.Contains(c.text(), "That passkey could not sign you in") {
		t.Fatalf("a cloned passkey with a counter behind: at %s: %q", loc, c.text())
	}
	if log, _ := os.ReadFile(s.LogPath); !strings.Contains(string(log), `"level":"warn","ts":`) ||
		!strings.Contains(string(log), "passkey sign counter went back") {
		t.Errorf("the refused clone is not in Caddy's log at warn")
	}
	c.removeAuthenticator(cloned)

	// She removes the passkey (signed in with her password).
	c.navigate(s.issuer + "/account/passkeys")
	c.logIn("alice", password)
	c.waitVisible("passkeys")
	c.do("removing the passkey", chromedp.Click(chromedp.ID("remove-0")))
	c.waitText("The passkey was removed.")
	if got := c.text(); !strings.Contains(got, "no passkeys") {
		t.Fatalf("passkeys page after removing: %q", got)
	}
	c.signOut(s.issuer)
	// Even a copy with a counter far ahead signs nobody in now.
	c.addCredential(c.addAuthenticator(false), clone, clone.SignCount+1000)
	authURL, _ = flow.start()
	loc = c.passkeySignIn(authURL, rp.url, true)
	if strings.HasPrefix(loc, rp.url) || !strings.Contains(c.text(), "That passkey could not sign you in") {
		t.Fatalf("a removed passkey: at %s: %q", loc, c.text())
	}
}
