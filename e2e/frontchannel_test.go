package e2e_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// frontchannelRP is a web application registered for front-channel
// logout (OpenID Connect Front-Channel Logout 1.0): it signs users in
// with the code flow and PKCE, keeps the ID token's sid, and records, in
// order, the requests to its front-channel logout URI and to its
// post-logout page.
type frontchannelRP struct {
	id     string
	url    string // http://127.0.0.1:port
	issuer string

	mu       sync.Mutex
	conf     *oauth2.Config
	verifier *oidc.IDTokenVerifier
	flows    map[string]string // verifier by state
	idToken  string            // the last ID token, raw
	sid      string            // its sid
	events   []rpEvent         // front-channel and post-logout requests, in order
	arrived  chan struct{}     // signalled at each event
}

// rpEvent is a request to a frontchannelRP: when it came, and when its
// answer was sent.
type rpEvent struct {
	url.URL
	came, answered time.Time
}

// frontchannelDelay is how long the front-channel logout URI takes to
// answer: the provider's page must wait for it before it leaves.
const frontchannelDelay = 500 * time.Millisecond

func newFrontchannelRP(t testing.TB, id string) *frontchannelRP {
	t.Helper()
	rp := &frontchannelRP{id: id, flows: map[string]string{}, arrived: make(chan struct{}, 16)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", rp.start)
	mux.HandleFunc("GET /cb", rp.callback)
	mux.HandleFunc("GET /home", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "signed in to %s", rp.id)
	})
	mux.HandleFunc("GET /frontchannel", rp.record("logged out", frontchannelDelay))
	mux.HandleFunc("GET /signed-out", rp.record("signed out of "+id, 0))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	rp.url = srv.URL
	return rp
}

// clientBlock is the oidc_provider client block of rp.
func (rp *frontchannelRP) clientBlock() string {
	return `
		client ` + rp.id + ` {
			secret {env.` + secretEnv + `}
			redirect_uri ` + rp.url + `/cb
			post_logout_redirect_uri ` + rp.url + `/signed-out
			frontchannel_logout_uri ` + rp.url + `/frontchannel?rp=` + rp.id + `
			frontchannel_logout_session_required
		}`
}

func (rp *frontchannelRP) discover(t testing.TB, ctx context.Context) {
	t.Helper()
	op, err := oidc.NewProvider(ctx, rp.issuer)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	var meta struct {
		Supported        bool `json:"frontchannel_logout_supported"`
		SessionSupported bool `json:"frontchannel_logout_session_supported"`
	}
	if err := op.Claims(&meta); err != nil || !meta.Supported || !meta.SessionSupported {
		t.Fatalf("discovery: frontchannel_logout_supported %v, frontchannel_logout_session_supported %v (%v): want both true",
			meta.Supported, meta.SessionSupported, err)
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.verifier = op.Verifier(&oidc.Config{ClientID: rp.id})
	rp.conf = &oauth2.Config{
		ClientID: rp.id, ClientSecret: clientSecret, Endpoint: op.Endpoint(),
		RedirectURL: rp.url + "/cb", Scopes: []string{oidc.ScopeOpenID},
	}
}

func (rp *frontchannelRP) start(w http.ResponseWriter, r *http.Request) {
	state, verifier := rand.Text(), oauth2.GenerateVerifier()
	rp.mu.Lock()
	rp.flows[state] = verifier
	conf := rp.conf
	rp.mu.Unlock()
	http.Redirect(w, r, conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), http.StatusFound)
}

func (rp *frontchannelRP) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rp.mu.Lock()
	verifier, ok := rp.flows[q.Get("state")]
	delete(rp.flows, q.Get("state"))
	conf, idv := rp.conf, rp.verifier
	rp.mu.Unlock()
	if !ok {
		http.Error(w, "unknown state", http.StatusBadRequest)
		return
	}
	tok, err := conf.Exchange(r.Context(), q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		http.Error(w, "exchange: "+err.Error(), http.StatusBadRequest)
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := idv.Verify(r.Context(), raw)
	var claims struct {
		SID string `json:"sid"`
	}
	if err != nil || idt.Claims(&claims) != nil || claims.SID == "" {
		http.Error(w, fmt.Sprintf("id token without sid: %v", err), http.StatusBadRequest)
		return
	}
	rp.mu.Lock()
	rp.idToken, rp.sid = raw, claims.SID
	rp.mu.Unlock()
	http.Redirect(w, r, "/home", http.StatusSeeOther)
}

// record answers a request with text after delay, and notes it.
func (rp *frontchannelRP) record(text string, delay time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		came := time.Now()
		time.Sleep(delay)
		// §2: the RP's answer should not be cached.
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, text)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		rp.mu.Lock()
		rp.events = append(rp.events, rpEvent{URL: *r.URL, came: came, answered: time.Now()})
		rp.mu.Unlock()
		select {
		case rp.arrived <- struct{}{}:
		default:
		}
	}
}

func (rp *frontchannelRP) session() (idToken, sid string) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.idToken, rp.sid
}

// takeEvents returns the requests recorded so far and forgets them.
func (rp *frontchannelRP) takeEvents() []rpEvent {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	ev := rp.events
	rp.events = nil
	return ev
}

// awaitFrontchannel waits, bounded, until rp has got a request to its
// front-channel logout URI.
func (rp *frontchannelRP) awaitFrontchannel(t testing.TB) {
	t.Helper()
	deadline := time.After(browserStepTimeout)
	for {
		rp.mu.Lock()
		for _, e := range rp.events {
			if e.Path == "/frontchannel" {
				rp.mu.Unlock()
				return
			}
		}
		rp.mu.Unlock()
		select {
		case <-rp.arrived:
		case <-deadline:
			t.Fatalf("%s: no front-channel logout request after %v", rp.id, browserStepTimeout)
		}
	}
}

// TestFrontchannelLogoutInBrowser signs alice in to one of two clients in
// Chromium and out at the provider, with the client's id_token_hint or
// by answering the provider's question: the provider's page loads that
// client's front-channel logout URI, with iss and the sid of its ID token,
// and not the other client's, then returns to the
// post_logout_redirect_uri; without JavaScript, by its link.
func TestFrontchannelLogoutInBrowser(t *testing.T) {
	t.Parallel()
	one, two := newFrontchannelRP(t, "app-one"), newFrontchannelRP(t, "app-two")
	s := newEmptySite(t)
	one.issuer, two.issuer = s.issuer, s.issuer
	s.writeConfig(t, one.clientBlock()+two.clientBlock())
	s.Start(t)
	one.discover(t, testContext(t))
	two.discover(t, testContext(t))

	tests := []struct {
		name   string
		script bool
		hint   bool // send the ID token as id_token_hint; else confirm
	}{
		{name: "redirected", script: true, hint: true},
		{name: "without JavaScript", hint: true},
		{name: "confirmed", script: true},
	}
	for _, tt := range tests {
		script := tt.script
		t.Run(tt.name, func(t *testing.T) {
			c := newChrome(t)
			if !script {
				c.do("turning JavaScript off", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
					_, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
					return err
				}))
			}
			c.navigate(one.url + "/")
			expectLoginPage(t, c, s.issuer)
			c.logIn("alice", password)
			c.waitLocation(one.url + "/home")
			idToken, sid := one.session()
			one.takeEvents()
			two.takeEvents()

			state := rand.Text()
			target := one.url + "/signed-out?state=" + state
			q := url.Values{
				"id_token_hint":            {idToken},
				"post_logout_redirect_uri": {one.url + "/signed-out"},
				"state":                    {state},
			}
			if !tt.hint {
				q.Del("id_token_hint")
				q.Set("client_id", one.id)
			}
			c.navigate(s.issuer + "/connect/endsession?" + q.Encode())
			if !tt.hint {
				// Without a hint the provider asks first (RP-Initiated
				// Logout §2); nothing is loaded before the answer.
				if ev := one.takeEvents(); len(ev) != 0 {
					t.Fatalf("app-one got %v before alice answered", ev)
				}
				c.submit(t, "logout")
			}
			if script {
				c.waitLocation(target)
			} else {
				// The page stays, its iframe loaded all the same, and
				// its link goes on.
				one.awaitFrontchannel(t)
				if loc := c.location(); !strings.HasPrefix(loc, s.issuer+"/connect/endsession") {
					t.Fatalf("without JavaScript the browser left the provider's page for %s", loc)
				}
				c.submit(t, "continue")
				c.waitLocation(target)
			}

			events := one.takeEvents()
			var paths []string
			for _, e := range events {
				paths = append(paths, e.Path)
			}
			if len(events) != 2 || events[0].Path != "/frontchannel" || events[1].Path != "/signed-out" {
				t.Fatalf("app-one got %q, want its front-channel logout URI, then its post-logout page", paths)
			}
			if script && events[1].came.Before(events[0].answered) {
				t.Errorf("the provider's page left for the post-logout page %v before the front-channel logout URI had answered",
					events[0].answered.Sub(events[1].came))
			}
			want := url.Values{"rp": {"app-one"}, "iss": {s.issuer}, "sid": {sid}}
			if got := events[0].Query(); got.Encode() != want.Encode() {
				t.Errorf("front-channel logout query %v, want %v (sid of the ID token)", got, want)
			}
			if ev := two.takeEvents(); len(ev) != 0 {
				t.Errorf("app-two, which alice never signed in to, got %v", ev)
			}

			// Signed out at the provider: the client asks her to log in
			// again.
			c.navigate(one.url + "/")
			expectLoginPage(t, c, s.issuer)
		})
	}
}
