package e2e_test

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/pquerna/otp/totp"
	"golang.org/x/oauth2"

	"github.com/authgate/authgate/internal/caddytest"
	"github.com/authgate/authgate/internal/redistest"
)

// bobTOTP is bob's TOTP secret, which the operator gives him in the
// Caddyfile through the environment.
const bobTOTP = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"

// callbackRP is the redirect URI of the test's client: it keeps the
// query of each callback, for the test to redeem the code.
type callbackRP struct {
	url string
	got chan url.Values
}

func newCallbackRP(t testing.TB) *callbackRP {
	t.Helper()
	rp := &callbackRP{got: make(chan url.Values, 8)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/cb" {
			http.NotFound(w, r) // the browser's favicon
			return
		}
		rp.got <- r.URL.Query()
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "callback received")
	}))
	t.Cleanup(srv.Close)
	rp.url = srv.URL
	return rp
}

// TestTOTP: alice signs in, enrols TOTP at /account/totp (the secret read
// from the page, codes computed here), signs out, and signs in again
// through a client with her password and a code: the ID token says
// amr [pwd otp mfa]. A replayed code is refused; a recovery code works
// once. Bob, whose secret the operator set, is asked for his code.
func TestTOTP(t *testing.T) {
	t.Parallel()
	rp := newCallbackRP(t)
	s := &site{
		Caddy:  caddytest.New(t, secretEnv+"="+clientSecret, "AUTHGATE_E2E_BOB_TOTP="+bobTOTP),
		issuer: fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t)),
	}
	s.Ready = []string{s.issuer + "/.well-known/openid-configuration"}
	s.writeConfig(t, `
		client totp-app {
			secret {env.`+secretEnv+`}
			redirect_uri `+rp.url+`/cb
		}
		user bob {
			password_hash `+passwordHash+`
			totp_secret {env.AUTHGATE_E2E_BOB_TOTP}
		}`)
	c := newChrome(t)
	s.Start(t)

	ctx := context.Background()
	op, err := oidc.NewProvider(ctx, s.issuer)
	if err != nil {
		t.Fatal(err)
	}
	conf := &oauth2.Config{ClientID: "totp-app", ClientSecret: clientSecret, Endpoint: op.Endpoint(), RedirectURL: rp.url + "/cb", Scopes: []string{oidc.ScopeOpenID}}
	verifier := op.Verifier(&oidc.Config{ClientID: "totp-app"})

	// startFlow sends the tab to the authorization endpoint and returns
	// the state and PKCE verifier.
	startFlow := func(tab *chrome) (string, string) {
		state, pkce := oauth2.GenerateVerifier()[:16], oauth2.GenerateVerifier()
		tab.navigate(conf.AuthCodeURL(state, oauth2.S256ChallengeOption(pkce)))
		expectLoginPage(t, tab, s.issuer)
		return state, pkce
	}
	// redeem takes the callback of the flow, redeems its code and returns
	// the ID token's amr.
	redeem := func(state, pkce string) []string {
		t.Helper()
		var q url.Values
		select {
		case q = <-rp.got:
		case <-time.After(10 * time.Second):
			t.Fatal("no callback")
		}
		if q.Get("state") != state || q.Get("code") == "" {
			t.Fatalf("callback %v, want a code and state %q", q, state)
		}
		tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(pkce))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		raw, _ := tok.Extra("id_token").(string)
		idt, err := verifier.Verify(ctx, raw)
		if err != nil {
			t.Fatalf("ID token: %v", err)
		}
		var claims struct {
			AMR []string `json:"amr"`
		}
		if err := idt.Claims(&claims); err != nil {
			t.Fatal(err)
		}
		return claims.AMR
	}
	// enterCode types code at the code step and submits it.
	enterCode := func(tab *chrome, code string) {
		t.Helper()
		if loc := tab.location(); loc != s.issuer+"/account/login/totp" {
			t.Fatalf("the browser is at %s, want the code step; the page says:\n%s", loc, tab.text())
		}
		tab.do("typing the code", chromedp.WaitVisible(chromedp.ID("code")), chromedp.SendKeys(chromedp.ID("code"), code))
		tab.submit(t, "verify")
	}
	errorText := func(tab *chrome) string {
		return browserRun(tab, "reading the error", chromedp.Evaluate[string](`document.getElementById("error")?.textContent ?? ""`))
	}
	signOut := func(tab *chrome) {
		t.Helper()
		tab.navigate(s.issuer + "/account/logout")
		tab.submit(t, "logout")
	}
	code := func(secret string, at time.Time) string {
		t.Helper()
		v, err := totp.GenerateCode(secret, at)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	tab := c.newTab(t)
	tab.navigate(s.issuer + "/account/login")
	tab.logIn("alice", password)
	if !strings.Contains(tab.text(), "You are signed in as alice") {
		t.Fatalf("after the password: %s", tab.text())
	}

	// Enrolment.
	if resp := tab.navigate(s.issuer + "/account/totp"); resp.Status != http.StatusOK {
		t.Fatalf("/account/totp: %d", resp.Status)
	}
	tab.waitVisible("qr")
	// The QR code is an image the page's CSP lets the browser show.
	if w := browserRun(tab, "reading the QR code", chromedp.Evaluate[int](`document.getElementById("qr").naturalWidth`)); w < 100 {
		t.Fatalf("the QR code image is %d pixels wide: not loaded", w)
	}
	secret := browserRun(tab, "reading the secret", chromedp.Evaluate[string](`document.getElementById("secret").textContent`))
	tab.do("typing the password and the first code", chromedp.SendKeys(chromedp.ID("password"), password), chromedp.SendKeys(chromedp.ID("code"), code(secret, time.Now())))
	tab.submit(t, "enrol")
	tab.waitVisible("recovery-codes")
	recovery := strings.Fields(browserRun(tab, "reading the recovery codes", chromedp.Evaluate[string](`[...document.querySelectorAll("#recovery-codes li")].map(e => e.textContent).join(" ")`)))
	if len(recovery) != 10 {
		t.Fatalf("recovery codes %q, want 10", recovery)
	}
	signOut(tab)

	// Password, then a code: the next step's, which the enrolment's code
	// (this step's) cannot be, and which is accepted a step early.
	state, pkce := startFlow(tab)
	tab.logIn("alice", password)
	next := code(secret, time.Now().Add(30*time.Second))
	enterCode(tab, next)
	if amr := redeem(state, pkce); !slices.Equal(amr, []string{"pwd", "otp", "mfa"}) {
		t.Fatalf("amr %v, want [pwd otp mfa]", amr)
	}
	signOut(tab)

	// The same code again is refused; a recovery code works.
	state, pkce = startFlow(tab)
	tab.logIn("alice", password)
	enterCode(tab, next)
	if msg := errorText(tab); !strings.Contains(msg, "already used") {
		t.Fatalf("replayed code: the page says %q", msg)
	}
	enterCode(tab, recovery[0])
	if amr := redeem(state, pkce); !slices.Equal(amr, []string{"pwd", "otp", "mfa"}) {
		t.Fatalf("amr after a recovery code %v", amr)
	}
	signOut(tab)

	// Once.
	startFlow(tab)
	tab.logIn("alice", password)
	enterCode(tab, recovery[0])
	if msg := errorText(tab); !strings.Contains(msg, "Invalid code") {
		t.Fatalf("recovery code used twice: the page says %q", msg)
	}

	// Bob's secret is the operator's.
	bob := c.newTab(t)
	state, pkce = startFlow(bob)
	bob.logIn("bob", password)
	enterCode(bob, code(bobTOTP, time.Now()))
	if amr := redeem(state, pkce); !slices.Equal(amr, []string{"pwd", "otp", "mfa"}) {
		t.Fatalf("bob's amr %v", amr)
	}
	bob.navigate(s.issuer + "/account/totp")
	if st := browserRun(bob, "reading the state", chromedp.Evaluate[string](`document.getElementById("state").dataset.state`)); st != "operator" {
		t.Fatalf("bob's TOTP page is in state %q, want operator", st)
	}
}

var totpClusterTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

http://127.0.0.1:{{.Port}} {
	oidc_provider {{.Issuer}} {
		{{.Store}}
		client demo-app {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.RedirectURI}}
		}
		user bob {
			password_hash {{.Hash}}
			totp_secret {{.TOTP}}
		}
	}
}
`))

// TestTOTPCluster: two nodes sharing a store accept a code once between
// them: bob signs in at node A with a code, and the same code at node B
// is refused. The store is a redis-server, or Caddy's storage in a folder
// both nodes use (`store storage`), where each node's login throttle is
// its own memory: the record of the used code is in the store.
func TestTOTPCluster(t *testing.T) {
	t.Parallel()
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		redis := redistest.Start(t)
		totpCluster(t, "store redis {\n\t\t\taddress "+redis.Addr+"\n\t\t}", "")
	})
	t.Run("storage", func(t *testing.T) {
		t.Parallel()
		totpCluster(t, "store storage", t.TempDir())
	})
}

// totpCluster runs TestTOTPCluster on two nodes whose provider has the
// store directive store; a shared folder, if not "", is the Caddy
// storage of both.
func totpCluster(t *testing.T, store, shared string) {
	var ports [2]int
	var sites [2]string
	for i := range ports {
		ports[i] = caddytest.FreePort(t)
		sites[i] = fmt.Sprintf("http://127.0.0.1:%d", ports[i])
	}
	for i := range ports {
		node := caddytest.New(t, secretEnv+"="+clientSecret)
		storage := node.Storage
		if shared != "" {
			storage = shared
		}
		node.WriteConfig(t, totpClusterTemplate, map[string]any{
			"Admin": node.AdminAddr, "Storage": storage, "Port": ports[i], "Issuer": sites[0],
			"Store": store, "SecretEnv": secretEnv, "RedirectURI": redirectURI, "Hash": passwordHash, "TOTP": bobTOTP,
		})
		node.Ready = []string{sites[i] + "/.well-known/openid-configuration"}
		node.Start(t)
	}

	csrfRE := regexp.MustCompile(`name="csrf_token" value="([^"]*)"`)
	get := func(c *http.Client, u string) string {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
		}
		m := csrfRE.FindSubmatch(b)
		if m == nil {
			t.Fatalf("GET %s: no form token in %s", u, b)
		}
		return html.UnescapeString(string(m[1]))
	}
	post := func(c *http.Client, u string, form url.Values) (int, string) {
		t.Helper()
		resp, err := c.PostForm(u, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// signIn posts bob's password and then code at node i.
	signIn := func(i int, code string) (int, string) {
		t.Helper()
		c := caddytest.NewBrowser(t)
		tok := get(c, sites[i]+"/account/login")
		if st, body := post(c, sites[i]+"/account/login", url.Values{"csrf_token": {tok}, "username": {"bob"}, "password": {password}}); st != http.StatusSeeOther {
			t.Fatalf("node %d: password: %d %s", i, st, body)
		}
		tok = get(c, sites[i]+"/account/login/totp")
		return post(c, sites[i]+"/account/login/totp", url.Values{"csrf_token": {tok}, "code": {code}})
	}

	code, err := totp.GenerateCode(bobTOTP, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if st, body := signIn(0, code); st != http.StatusOK || !strings.Contains(body, "You are signed in as bob") {
		t.Fatalf("node A: %d %s", st, body)
	}
	if st, body := signIn(1, code); st != http.StatusOK || !strings.Contains(body, "already used") {
		t.Fatalf("node B, the same code: %d %s", st, body)
	}
}
