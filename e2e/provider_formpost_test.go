package e2e_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// formPostRP is a web application that asks for response_mode=form_post,
// as ASP.NET Core's OpenID Connect handler does: its callback takes the
// code only by POST, checks state and iss (RFC 9207), redeems the code
// with x/oauth2 and PKCE, and then redirects within its own origin to a
// page that greets the user by name.
type formPostRP struct {
	url    string // http://127.0.0.1:port
	issuer string

	mu       sync.Mutex
	conf     *oauth2.Config // set once the provider runs
	verifier *oidc.IDTokenVerifier
	op       *oidc.Provider
	flows    map[string]formPostFlow // by state
	sessions map[string]string       // the user's name by session cookie
	posts    int                     // callbacks received by POST
}

type formPostFlow struct{ verifier, nonce string }

const formPostCallback = "/signin-oidc"

func newFormPostRP(t testing.TB, issuer string) *formPostRP {
	t.Helper()
	rp := &formPostRP{issuer: issuer, flows: map[string]formPostFlow{}, sessions: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", rp.start)
	mux.HandleFunc("POST "+formPostCallback, rp.callback)
	mux.HandleFunc("GET /home", rp.home)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	rp.url = srv.URL
	return rp
}

// discover reads the provider's discovery document, once it runs.
func (rp *formPostRP) discover(t testing.TB, ctx context.Context) {
	t.Helper()
	op, err := oidc.NewProvider(ctx, rp.issuer)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	var meta struct {
		Modes []string `json:"response_modes_supported"`
	}
	if err := op.Claims(&meta); err != nil || !strings.Contains(strings.Join(meta.Modes, " "), "form_post") {
		t.Fatalf("response_modes_supported %v (%v): want form_post", meta.Modes, err)
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.op = op
	rp.verifier = op.Verifier(&oidc.Config{ClientID: "formpost-app"})
	rp.conf = &oauth2.Config{
		ClientID:     "formpost-app",
		ClientSecret: clientSecret,
		Endpoint:     op.Endpoint(),
		RedirectURL:  rp.url + formPostCallback,
		Scopes:       []string{oidc.ScopeOpenID, "profile"},
	}
}

// start sends the browser to the provider.
func (rp *formPostRP) start(w http.ResponseWriter, r *http.Request) {
	state, nonce, verifier := rand.Text(), rand.Text(), oauth2.GenerateVerifier()
	rp.mu.Lock()
	rp.flows[state] = formPostFlow{verifier: verifier, nonce: nonce}
	conf := rp.conf
	rp.mu.Unlock()
	http.Redirect(w, r, conf.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("response_mode", "form_post")), http.StatusFound)
}

// callback redeems the posted code.
func (rp *formPostRP) callback(w http.ResponseWriter, r *http.Request) {
	fail := func(format string, args ...any) {
		http.Error(w, "callback: "+fmt.Sprintf(format, args...), http.StatusBadRequest)
	}
	if err := r.ParseForm(); err != nil {
		fail("%v", err)
		return
	}
	if r.URL.RawQuery != "" {
		fail("parameters in the query: %q", r.URL.RawQuery)
		return
	}
	state := r.PostForm.Get("state")
	rp.mu.Lock()
	rp.posts++
	flow, ok := rp.flows[state]
	delete(rp.flows, state)
	conf, verifier, op := rp.conf, rp.verifier, rp.op
	rp.mu.Unlock()
	switch {
	case !ok:
		fail("unknown state %q", state)
		return
	case r.PostForm.Get("iss") != rp.issuer:
		fail("iss %q, want %q", r.PostForm.Get("iss"), rp.issuer)
		return
	case r.PostForm.Get("error") != "":
		fail("error %q", r.PostForm.Get("error"))
		return
	}
	tok, err := conf.Exchange(r.Context(), r.PostForm.Get("code"), oauth2.VerifierOption(flow.verifier))
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
	ui, err := op.UserInfo(r.Context(), oauth2.StaticTokenSource(tok))
	if err != nil {
		fail("userinfo: %v", err)
		return
	}
	var claims struct {
		Name string `json:"name"`
	}
	if err := ui.Claims(&claims); err != nil {
		fail("userinfo claims: %v", err)
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
func (rp *formPostRP) home(w http.ResponseWriter, r *http.Request) {
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

func (rp *formPostRP) postCount() int {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.posts
}

// TestFormPostInBrowser signs alice in to a form_post client in
// Chromium: the provider's page posts the code to the client's callback by
// itself, and, with JavaScript off, when she presses its button.
func TestFormPostInBrowser(t *testing.T) {
	t.Parallel()
	// The provider must know the client's port before it starts.
	rp := newFormPostRP(t, "")
	s := newEmptySite(t)
	rp.issuer = s.issuer
	s.writeConfig(t, `
		client formpost-app {
			secret {env.`+secretEnv+`}
			redirect_uri `+rp.url+formPostCallback+`
		}`)
	s.Start(t)
	rp.discover(t, testContext(t))

	for _, script := range []bool{true, false} {
		t.Run(map[bool]string{true: "auto-submitted", false: "without JavaScript"}[script], func(t *testing.T) {
			c := newChrome(t)
			if !script {
				c.do("turning JavaScript off", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
					_, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
					return err
				}))
			}
			before := rp.postCount()
			c.navigate(rp.url + "/")
			c.logIn("alice", password)
			if !script {
				// The page waits for her: still the provider's, with its
				// button, and nothing posted yet.
				if loc := c.location(); !strings.HasPrefix(loc, s.issuer+"/") {
					t.Fatalf("without JavaScript the browser left the provider for %s", loc)
				}
				if rp.postCount() != before {
					t.Fatal("the form was posted without JavaScript or a click")
				}
				c.do("pressing Continue",
					chromedp.WaitVisible(chromedp.CSS(`form[method="post"] button[type="submit"]`)),
					chromedp.Click(chromedp.CSS(`form[method="post"] button[type="submit"]`)),
				)
			}
			c.waitLocation(rp.url + "/home")
			if got := c.text(); !strings.Contains(got, "Hello, Alice Smith") {
				t.Fatalf("the client's page says %q, want a greeting for Alice Smith", got)
			}
			if n := rp.postCount() - before; n != 1 {
				t.Fatalf("the callback got %d POSTs, want 1", n)
			}
		})
	}
}

// waitLocation waits until the tab's document is at url, failing the test
// with the page it shows when that does not happen within a step's time.
func (c *chrome) waitLocation(url string) {
	c.t.Helper()
	deadline := time.Now().Add(browserStepTimeout)
	var loc, text string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(c.ctx, time.Second)
		// Between documents an evaluation may fail: try again.
		loc, _ = chromedp.Run(ctx, chromedp.Location())
		if loc == url {
			cancel()
			return
		}
		text, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		cancel()
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("the tab is at %s, not %s; it shows %q", loc, url, text)
}
