package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// These tests run pushed authorization requests (RFC 9126) through the
// Caddy binary: a confidential web application in Go (x/oauth2, go-oidc,
// and a PAR call of its own, which x/oauth2 lacks) and a single-page app
// in Chromium (oidc-client-ts builds the request and redeems the code; the
// page pushes the request with its client_id alone), each signing alice
// in through the provider's login page.

// parRP is a confidential client that pushes its authorization requests.
type parRP struct {
	url    string // http://127.0.0.1:port
	issuer string

	mu          sync.Mutex
	conf        *oauth2.Config // set once the provider runs
	verifier    *oidc.IDTokenVerifier
	parEndpoint string
	flows       map[string]formPostFlow // by state
	sessions    map[string]string       // the user's name by session cookie
	requestURIs []string                // every request_uri it got
}

const parRPCallback = "/callback"

func newParRP(t testing.TB) *parRP {
	t.Helper()
	rp := &parRP{flows: map[string]formPostFlow{}, sessions: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", rp.start)
	mux.HandleFunc("GET "+parRPCallback, rp.callback)
	mux.HandleFunc("GET /home", rp.home)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	rp.url = srv.URL
	return rp
}

// discover reads the provider's discovery document, once it runs, and
// checks what it says of PAR.
func (rp *parRP) discover(t testing.TB, ctx context.Context, required bool) {
	t.Helper()
	op, err := oidc.NewProvider(ctx, rp.issuer)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	var meta struct {
		PAR      string `json:"pushed_authorization_request_endpoint"`
		Required *bool  `json:"require_pushed_authorization_requests"`
	}
	if err := op.Claims(&meta); err != nil {
		t.Fatal(err)
	}
	if meta.PAR != rp.issuer+"/connect/par" || meta.Required == nil || *meta.Required != required {
		t.Fatalf("discovery: pushed_authorization_request_endpoint %q, require_pushed_authorization_requests %v; want %s/connect/par, %v",
			meta.PAR, meta.Required, rp.issuer, required)
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.parEndpoint = meta.PAR
	rp.verifier = op.Verifier(&oidc.Config{ClientID: "par-app"})
	rp.conf = &oauth2.Config{
		ClientID:     "par-app",
		ClientSecret: clientSecret,
		Endpoint:     op.Endpoint(),
		RedirectURL:  rp.url + parRPCallback,
		Scopes:       []string{oidc.ScopeOpenID, "profile"},
	}
}

// authCodeURL is the authorization request x/oauth2 would send by the
// browser.
func (rp *parRP) authCodeURL(state, nonce, verifier string) string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.conf.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier))
}

// push posts the parameters of the authorization request authURL to the
// PAR endpoint with client_secret_basic (RFC 9126 §2.1), and returns the
// status and the decoded answer.
func (rp *parRP) push(ctx context.Context, authURL, secret string) (int, map[string]any, error) {
	u, err := url.Parse(authURL)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rp.parEndpoint, strings.NewReader(u.Query().Encode()))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(rp.conf.ClientID), url.QueryEscape(secret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("decoding the PAR answer: %w", err)
	}
	return resp.StatusCode, body, nil
}

// start pushes the request and sends the browser to the provider with
// client_id and request_uri only (RFC 9126 §4).
func (rp *parRP) start(w http.ResponseWriter, r *http.Request) {
	state, nonce, verifier := rand.Text(), rand.Text(), oauth2.GenerateVerifier()
	rp.mu.Lock()
	rp.flows[state] = formPostFlow{verifier: verifier, nonce: nonce}
	rp.mu.Unlock()
	status, body, err := rp.push(r.Context(), rp.authCodeURL(state, nonce, verifier), clientSecret)
	requestURI, _ := body["request_uri"].(string)
	if err != nil || status != http.StatusCreated || requestURI == "" {
		http.Error(w, fmt.Sprintf("PAR: status %d, %v, %v", status, body, err), http.StatusBadGateway)
		return
	}
	rp.mu.Lock()
	rp.requestURIs = append(rp.requestURIs, requestURI)
	authURL := rp.conf.Endpoint.AuthURL
	rp.mu.Unlock()
	http.Redirect(w, r, authURL+"?"+url.Values{"client_id": {"par-app"}, "request_uri": {requestURI}}.Encode(), http.StatusFound)
}

// callback redeems the code with x/oauth2 and the PKCE verifier.
func (rp *parRP) callback(w http.ResponseWriter, r *http.Request) {
	fail := func(format string, args ...any) {
		http.Error(w, "callback: "+fmt.Sprintf(format, args...), http.StatusBadRequest)
	}
	q := r.URL.Query()
	rp.mu.Lock()
	flow, ok := rp.flows[q.Get("state")]
	delete(rp.flows, q.Get("state"))
	conf, verifier := rp.conf, rp.verifier
	rp.mu.Unlock()
	switch {
	case q.Get("error") != "":
		fail("error %q", q.Get("error"))
		return
	case !ok:
		fail("unknown state %q", q.Get("state"))
		return
	case q.Get("iss") != rp.issuer:
		fail("iss %q, want %q", q.Get("iss"), rp.issuer)
		return
	}
	tok, err := conf.Exchange(r.Context(), q.Get("code"), oauth2.VerifierOption(flow.verifier))
	if err != nil {
		fail("exchange: %v", err)
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := verifier.Verify(r.Context(), raw)
	if err != nil || idt.Nonce != flow.nonce {
		fail("id token: %v (nonce ok: %v)", err, err == nil && idt.Nonce == flow.nonce)
		return
	}
	var claims struct {
		Name string `json:"name"`
	}
	if err := idt.Claims(&claims); err != nil {
		fail("id token claims: %v", err)
		return
	}
	sid := rand.Text()
	rp.mu.Lock()
	rp.sessions[sid] = claims.Name
	rp.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "rp_session", Value: sid, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/home", http.StatusSeeOther)
}

// home greets the signed-in user.
func (rp *parRP) home(w http.ResponseWriter, r *http.Request) {
	ck, err := r.Cookie("rp_session")
	rp.mu.Lock()
	name, ok := "", false
	if err == nil {
		name, ok = rp.sessions[ck.Value]
	}
	rp.mu.Unlock()
	if !ok {
		http.Error(w, "not signed in", http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, `<!doctype html><title>RP</title><h1 id="user">Hello, %s</h1>`, html.EscapeString(name))
}

func (rp *parRP) lastRequestURI(t testing.TB) string {
	t.Helper()
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if len(rp.requestURIs) == 0 {
		t.Fatal("the client pushed no request")
	}
	return rp.requestURIs[len(rp.requestURIs)-1]
}

// TestPARConfidentialClient signs alice in to a confidential client that
// must push its requests: through Chromium and the login page, code and
// PKCE; its used request_uri is refused, and so are its plain
// authorization request and a push with a wrong secret.
func TestPARConfidentialClient(t *testing.T) {
	t.Parallel()
	rp := newParRP(t)
	s := newEmptySite(t)
	rp.issuer = s.issuer
	s.writeConfig(t, `
		client par-app {
			secret {env.`+secretEnv+`}
			redirect_uri `+rp.url+parRPCallback+`
			require_pushed_authorization_requests
		}`)
	s.Start(t)
	ctx := testContext(t)
	rp.discover(t, ctx, false)

	c := newChrome(t)
	c.navigate(rp.url + "/")
	if loc := c.location(); !strings.HasPrefix(loc, s.issuer+"/account/login") {
		t.Fatalf("the browser is at %s, want the provider's login page", loc)
	}
	c.logIn("alice", password)
	c.waitLocation(rp.url + "/home")
	if got := c.text(); !strings.Contains(got, "Hello, Alice Smith") {
		t.Fatalf("the client's page says %q, want a greeting for Alice Smith", got)
	}

	t.Run("used request_uri", func(t *testing.T) {
		// alice is signed in at the provider, so a fresh request would go
		// straight back with a code; a used one gets the error page.
		used := s.issuer + "/connect/authorize?" + url.Values{"client_id": {"par-app"}, "request_uri": {rp.lastRequestURI(t)}}.Encode()
		resp := c.navigate(used)
		if resp.Status != http.StatusBadRequest || c.location() != used || !strings.Contains(c.text(), "already used") {
			t.Fatalf("status %d at %s: %q; want the provider's error page", resp.Status, c.location(), c.text())
		}
		// A fresh push works with the same single sign-on session.
		c.navigate(rp.url + "/")
		c.waitLocation(rp.url + "/home")
	})

	t.Run("plain authorization request", func(t *testing.T) {
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
		resp, err := noFollow.Get(rp.authCodeURL("st", "n", oauth2.GenerateVerifier()))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil || !strings.HasPrefix(loc.String(), rp.url+parRPCallback+"?") || loc.Query().Get("error") != "invalid_request" || loc.Query().Get("state") != "st" {
			t.Fatalf("status %d, Location %v; want invalid_request at the callback", resp.StatusCode, loc)
		}
	})

	t.Run("wrong secret", func(t *testing.T) {
		status, body, err := rp.push(ctx, rp.authCodeURL("st", "n", oauth2.GenerateVerifier()), "not-the-secret")
		if err != nil || status != http.StatusUnauthorized || body["error"] != "invalid_client" {
			t.Fatalf("status %d, %v, %v; want 401 invalid_client", status, body, err)
		}
	})
}

// parSPAPage is the single-page app: on / it builds the authorization
// request with oidc-client-ts, pushes it with client_id only (a public
// client, RFC 9126 §2.1), and goes to the provider with client_id and
// request_uri; on /callback oidc-client-ts checks state and redeems the
// code with its PKCE verifier at the token endpoint.
const parSPAPage = `<!doctype html>
<meta charset="utf-8"><title>PAR SPA</title>
<p id="status">starting</p>
<pre id="result"></pre>
<script src="/oidc-client-ts.min.js"></script>
<script>
const settings = {authority: %q, client_id: "par-spa", redirect_uri: location.origin + "/callback",
	response_type: "code", scope: "openid profile"};
const client = new oidc.OidcClient(settings);
const status = (s) => { document.getElementById("status").textContent = s; };
async function signIn() {
	const meta = await client.metadataService.getMetadata();
	const req = await client.createSigninRequest({});
	const resp = await fetch(meta.pushed_authorization_request_endpoint,
		{method: "POST", body: new URL(req.url).searchParams});
	const pushed = await resp.json();
	if (resp.status !== 201) throw new Error("PAR answered " + resp.status + " " + JSON.stringify(pushed));
	sessionStorage.setItem("request_uri", pushed.request_uri);
	location.assign(meta.authorization_endpoint + "?" +
		new URLSearchParams({client_id: settings.client_id, request_uri: pushed.request_uri}));
}
async function callback() {
	const r = await client.processSigninResponse(location.href);
	document.getElementById("result").textContent = JSON.stringify(
		{sub: r.profile.sub, access_token: r.access_token, request_uri: sessionStorage.getItem("request_uri")});
	status("signed in");
}
(location.pathname === "/callback" ? callback() : signIn()).catch((e) => status("failed: " + e.message));
</script>
`

// TestPARPublicClient signs alice in to a browser app that pushes its
// request with its client_id alone, under a provider that requires PAR
// of every client.
func TestPARPublicClient(t *testing.T) {
	t.Parallel()
	lib, err := filepath.Abs(filepath.Join("..", "examples", "spa", "node_modules", "oidc-client-ts", "dist", "browser", "oidc-client-ts.min.js"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(lib); err != nil {
		t.Fatalf("the SPA's oidc-client-ts is not installed (%v): run: (cd examples/spa && npm ci)", err)
	}
	s := newEmptySite(t)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oidc-client-ts.min.js", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, lib) })
	page := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, parSPAPage, s.issuer)
	}
	mux.HandleFunc("GET /{$}", page)
	mux.HandleFunc("GET /callback", page)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	// localhost, not 127.0.0.1: another site than the provider's, so that
	// its calls to the provider are cross-origin, as in a deployment.
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	spa := "http://localhost:" + port
	s.writeConfig(t, `
		client par-spa {
			public
			redirect_uri `+spa+`/callback
			cors_origin `+spa+`
		}
		require_pushed_authorization_requests`)
	s.Start(t)
	rp := &parRP{issuer: s.issuer, url: spa}
	rp.discover(t, testContext(t), true)

	c := newChrome(t)
	c.navigate(spa + "/")
	c.waitFor("the login page", `location.href.startsWith(`+jsString(s.issuer+"/account/login")+`) || document.getElementById("status")?.textContent.startsWith("failed")`, browserStepTimeout)
	if loc := c.location(); !strings.HasPrefix(loc, s.issuer+"/account/login") {
		t.Fatalf("the browser is at %s showing %q, want the provider's login page", loc, c.text())
	}
	c.logIn("alice", password)
	c.waitFor("the app's answer", `document.getElementById("status")?.textContent === "signed in" || document.getElementById("status")?.textContent.startsWith("failed")`, browserStepTimeout)
	type appState struct {
		Status string `json:"status"`
		Result string `json:"result"`
	}
	got := browserRun(c, "reading the app", chromedp.Evaluate[appState](`({status: document.getElementById("status").textContent, result: document.getElementById("result").textContent})`))
	var result struct {
		Sub         string `json:"sub"`
		AccessToken string `json:"access_token"`
		RequestURI  string `json:"request_uri"`
	}
	if got.Status != "signed in" || json.Unmarshal([]byte(got.Result), &result) != nil || result.Sub == "" || result.AccessToken == "" {
		t.Fatalf("the app says %q %q, want alice signed in", got.Status, got.Result)
	}

	// The access token works at userinfo: the code was redeemed for real.
	req, _ := http.NewRequestWithContext(testContext(t), http.MethodGet, s.issuer+"/connect/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+result.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ui struct {
		Sub  string `json:"sub"`
		Name string `json:"name"`
	}
	err = json.NewDecoder(resp.Body).Decode(&ui)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || ui.Sub != result.Sub || ui.Name != "Alice Smith" {
		t.Fatalf("userinfo: status %d, %+v, %v; want alice", resp.StatusCode, ui, err)
	}

	// The request_uri served once.
	used := s.issuer + "/connect/authorize?" + url.Values{"client_id": {"par-spa"}, "request_uri": {result.RequestURI}}.Encode()
	if r := c.navigate(used); r.Status != http.StatusBadRequest || c.location() != used {
		t.Fatalf("used request_uri: status %d at %s; want the provider's error page", r.Status, c.location())
	}
}
