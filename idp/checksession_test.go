package idp_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

// withSessionManagement turns on Session Management 1.0.
func withSessionManagement(c *idp.Config) { c.SessionManagement = true }

// wantSessionState computes session_state as Session Management §3.2 and
// the check_session_iframe's script do, for the salt of got.
func wantSessionState(t testing.TB, clientID, origin, browserState, got string) string {
	t.Helper()
	_, salt, ok := strings.Cut(got, ".")
	if !ok || salt == "" {
		t.Fatalf("session_state %q has no salt", got)
	}
	sum := sha256.Sum256([]byte(clientID + " " + origin + " " + browserState + " " + salt))
	return hex.EncodeToString(sum[:]) + "." + salt
}

// browserStateOf returns the OP browser state cookie c holds for the
// provider, or "".
func browserStateOf(ts *testServer, c *http.Client) string {
	u, _ := url.Parse(ts.URL)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == idp.BrowserStateCookie {
			return ck.Value
		}
	}
	return ""
}

// setBrowserState puts an OP browser state cookie into c's jar.
func setBrowserState(ts *testServer, c *http.Client, value string) {
	u, _ := url.Parse(ts.URL)
	c.Jar.SetCookies(u, []*http.Cookie{{Name: idp.BrowserStateCookie, Value: value, Path: "/"}})
}

// browserStateSet returns the OP browser state cookie resp sets, or nil.
func browserStateSet(resp *http.Response) *http.Cookie {
	for _, ck := range resp.Cookies() {
		if ck.Name == idp.BrowserStateCookie {
			return ck
		}
	}
	return nil
}

func TestCheckSessionDiscovery(t *testing.T) {
	for _, on := range []bool{false, true} {
		ts := newServer(t, func(c *idp.Config) { c.SessionManagement = on })
		resp, err := http.Get(ts.URL + "/.well-known/openid-configuration")
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := jsonUnmarshal(readBody(t, resp), &doc); err != nil {
			t.Fatal(err)
		}
		got, listed := doc["check_session_iframe"]
		if on && got != ts.URL+"/connect/checksession" || !on && listed {
			t.Errorf("session management %v: check_session_iframe %v", on, got)
		}
		resp, err = http.Get(ts.URL + "/connect/checksession")
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if want := map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[on]; resp.StatusCode != want {
			t.Errorf("session management %v: the iframe's status %d, want %d", on, resp.StatusCode, want)
		}
	}
}

var checkScriptRE = regexp.MustCompile(`(?s)<script>(.*)</script>`)

// TestCheckSessionPage: the iframe's page runs its one script by hash,
// any page may frame it, and it names no client and no origin; the
// provider's other pages still refuse to be framed.
func TestCheckSessionPage(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		c.SessionManagement = true
		c.Clients = append(c.Clients, idp.Client{ID: "spa", Public: true, RedirectURIs: []string{"https://spa.example:8443/cb", "com.example.app:/cb", "https://bücher.example/cb"},
			CORSOrigins: []string{"https://other.example"}})
	})
	resp, err := http.Get(ts.URL + "/connect/checksession")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	h := resp.Header
	m := checkScriptRE.FindStringSubmatch(body)
	if m == nil || strings.Count(body, "<script") != 1 {
		t.Fatalf("want one inline script:\n%s", body)
	}
	sum := sha256.Sum256([]byte(m[1]))
	wantCSP := "default-src 'none'; script-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; frame-ancestors *; base-uri 'none'; form-action 'none'"
	if got := h.Get("Content-Security-Policy"); got != wantCSP {
		t.Errorf("CSP %q, want %q", got, wantCSP)
	}
	if h.Get("X-Frame-Options") != "" || h.Get("Cache-Control") != "no-store" || h.Get("X-Content-Type-Options") != "nosniff" ||
		!strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Errorf("headers %v: want no X-Frame-Options, no-store, nosniff, text/html", h)
	}
	for _, secret := range []string{"demo-app", "spa", "app.example", "spa.example", "other.example", "com.example", "bcher"} {
		if strings.Contains(body, secret) {
			t.Errorf("the page names %q:\n%s", secret, body)
		}
	}
	pair := func(id, origin string) string {
		s := sha256.Sum256([]byte(id + " " + origin))
		return hex.EncodeToString(s[:])
	}
	for _, p := range []struct{ id, origin string }{
		{"demo-app", "https://app.example"}, {"spa", "https://spa.example:8443"}, {"spa", "https://other.example"},
		{"spa", "https://xn--bcher-kva.example"}, // as the browser serializes the origin
	} {
		if !strings.Contains(body, `"`+pair(p.id, p.origin)+`"`) {
			t.Errorf("the page does not allow %s from %s", p.id, p.origin)
		}
	}
	if strings.Count(body, `","`) != 3 {
		t.Errorf("the page allows other pairs than the four registered:\n%s", body)
	}

	resp, err = http.Post(ts.URL+"/connect/checksession", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: status %d, Allow %q; want 405 and GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
	}
	resp, err = http.Get(ts.URL + "/account/login")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.Header.Get("X-Frame-Options") != "DENY" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("the login page may be framed: %v", resp.Header)
	}
}

// TestBrowserStateCookie: a login sets a new OP browser state, readable by
// script, with the session cookie's path, lifetime and SameSite; a
// sign-out deletes it.
func TestBrowserStateCookie(t *testing.T) {
	ts := newServer(t, withSessionManagement)
	c := browser(t)
	_, ch := pkce("v")
	q := authorizeParams(ch)
	resp := authorize(t, ts, c, q)
	form := loginForm(t, c, ts.URL, resp.Header.Get("Location"))
	form.Set("username", "alice")
	form.Set("password", testPassword)
	resp, _ = postFrom(t, ts, c, "/account/login", form, sameOrigin)
	ck := browserStateSet(resp)
	if ck == nil {
		t.Fatal("the login set no OP browser state")
	}
	if ck.HttpOnly || ck.Path != "/" || ck.SameSite != http.SameSiteLaxMode || ck.MaxAge != int(idp.DefaultSessionLifetime/time.Second) || len(ck.Value) < 20 {
		t.Errorf("cookie %+v: want readable by script, path /, SameSite=Lax, the session's lifetime, a random value", ck)
	}
	first := ck.Value

	// prompt=login: a new login, a new state.
	q.Set("prompt", "login")
	resp = authorize(t, ts, c, q)
	form = loginForm(t, c, ts.URL, resp.Header.Get("Location"))
	form.Set("username", "alice")
	form.Set("password", testPassword)
	resp, _ = postFrom(t, ts, c, "/account/login", form, sameOrigin)
	if ck := browserStateSet(resp); ck == nil || ck.Value == first || ck.Value == "" {
		t.Errorf("a second login set the OP browser state %+v; want a new value", ck)
	}

	// Single sign-on leaves it alone.
	q.Del("prompt")
	if ck := browserStateSet(authorize(t, ts, c, q)); ck != nil {
		t.Errorf("single sign-on set the OP browser state %+v", ck)
	}

	form = loginForm(t, c, ts.URL, "/account/logout")
	form.Set("decision", "logout")
	resp, _ = postFrom(t, ts, c, "/account/logout", form, sameOrigin)
	if ck := browserStateSet(resp); ck == nil || ck.MaxAge >= 0 {
		t.Errorf("the sign-out left the OP browser state: %+v", ck)
	}
	if got := browserStateOf(ts, c); got != "" {
		t.Errorf("the browser still holds the OP browser state %q", got)
	}
}

// TestSessionState: Session Management §2: every authorization response,
// success or error, in every response mode, carries session_state for
// the client, the origin of its redirect URI and the OP browser state the
// browser holds once the response is in.
func TestSessionState(t *testing.T) {
	loginAs := func(t *testing.T, ts *testServer, c *http.Client, q url.Values) (*http.Response, string) {
		resp := authorize(t, ts, c, q)
		form := loginForm(t, c, ts.URL, resp.Header.Get("Location"))
		form.Set("username", "alice")
		form.Set("password", testPassword)
		return postFrom(t, ts, c, "/account/login", form, sameOrigin)
	}
	signIn := func(t *testing.T, ts *testServer, c *http.Client) {
		_, ch := pkce("w")
		login(t, ts, c, authorizeParams(ch), "alice", testPassword)
	}
	get := func(t *testing.T, ts *testServer, c *http.Client, q url.Values) (*http.Response, string) {
		resp, err := c.Get(ts.URL + "/connect/authorize?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		return resp, readBody(t, resp)
	}
	consent := func(decision string) func(t *testing.T, ts *testServer, c *http.Client, q url.Values) (*http.Response, string) {
		return func(t *testing.T, ts *testServer, c *http.Client, q url.Values) (*http.Response, string) {
			resp, _ := loginAs(t, ts, c, q)
			form := loginForm(t, c, ts.URL, resp.Header.Get("Location"))
			form.Set("decision", decision)
			return postFrom(t, ts, c, "/account/consent", form, sameOrigin)
		}
	}
	cases := []struct {
		name     string
		edit     func(*idp.Config)
		run      func(t *testing.T, ts *testServer, c *http.Client, q url.Values) (*http.Response, string)
		wantErr  string
		signedIn bool // the browser holds an OP browser state after the response
	}{
		{name: "login", run: loginAs, signedIn: true},
		{name: "single sign-on", run: func(t *testing.T, ts *testServer, c *http.Client, q url.Values) (*http.Response, string) {
			signIn(t, ts, c)
			return get(t, ts, c, q)
		}, signedIn: true},
		{name: "single sign-on with a session older than session management", run: func(t *testing.T, ts *testServer, c *http.Client, q url.Values) (*http.Response, string) {
			signIn(t, ts, c)
			u, _ := url.Parse(ts.URL)
			c.Jar.SetCookies(u, []*http.Cookie{{Name: idp.BrowserStateCookie, Path: "/", MaxAge: -1}})
			return get(t, ts, c, q)
		}, signedIn: true},
		{name: "consent given", edit: func(c *idp.Config) { c.Clients[0].RequireConsent = true }, run: consent("allow"), signedIn: true},
		{name: "consent denied", edit: func(c *idp.Config) { c.Clients[0].RequireConsent = true }, run: consent("deny"), wantErr: "access_denied", signedIn: true},
		{name: "prompt=none signed in, consent required", edit: func(c *idp.Config) { c.Clients[0].RequireConsent = true },
			run: func(t *testing.T, ts *testServer, c *http.Client, q url.Values) (*http.Response, string) {
				signIn(t, ts, c)
				q.Set("prompt", "none")
				return get(t, ts, c, q)
			}, wantErr: "consent_required", signedIn: true},
		{name: "prompt=none without session", run: func(t *testing.T, ts *testServer, c *http.Client, q url.Values) (*http.Response, string) {
			q.Set("prompt", "none")
			return get(t, ts, c, q)
		}, wantErr: "login_required"},
		{name: "prompt=none after the session ended elsewhere", run: func(t *testing.T, ts *testServer, c *http.Client, q url.Values) (*http.Response, string) {
			// A browser state left from a session that is over: the
			// response deletes it.
			setBrowserState(ts, c, "c3RhbGUtc3RhdGUtb2YtYS1nb25lLXNlc3Npb24")
			q.Set("prompt", "none")
			return get(t, ts, c, q)
		}, wantErr: "login_required"},
		{name: "invalid request, signed in", run: func(t *testing.T, ts *testServer, c *http.Client, q url.Values) (*http.Response, string) {
			signIn(t, ts, c)
			q.Set("request", "eyJ.x.y")
			return get(t, ts, c, q)
		}, wantErr: "request_not_supported", signedIn: true},
	}
	for _, tc := range cases {
		for _, mode := range []string{"query", "fragment", "form_post"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				ts := newServer(t, func(c *idp.Config) {
					c.SessionManagement = true
					if tc.edit != nil {
						tc.edit(c)
					}
				})
				c := browser(t)
				_, ch := pkce("v")
				q := authorizeParams(ch)
				q.Set("response_mode", mode)
				resp, body := tc.run(t, ts, c, q)
				cb := readCallback(t, resp, body)
				p := cb.params
				if cb.mode != mode || p.Get("error") != tc.wantErr {
					t.Fatalf("a %s response with %v; want %s with error %q", cb.mode, p, mode, tc.wantErr)
				}
				state := browserStateOf(ts, c)
				if (state != "") != tc.signedIn {
					t.Fatalf("the browser's OP browser state is %q; want one: %v", state, tc.signedIn)
				}
				got := p.Get("session_state")
				if want := wantSessionState(t, "demo-app", "https://app.example", state, got); got != want || strings.Contains(got, " ") {
					t.Fatalf("session_state %q, want %q", got, want)
				}
			})
		}
	}

	t.Run("fresh salt", func(t *testing.T) {
		ts := newServer(t, withSessionManagement)
		c := browser(t)
		signIn(t, ts, c)
		_, ch := pkce("v")
		first := authorize(t, ts, c, authorizeParams(ch)).Header.Get("Location")
		second := authorize(t, ts, c, authorizeParams(ch)).Header.Get("Location")
		a, _ := url.Parse(first)
		b, _ := url.Parse(second)
		if s := a.Query().Get("session_state"); s == "" || s == b.Query().Get("session_state") {
			t.Errorf("two responses carry the session_state %q and %q; want each its own salt", s, b.Query().Get("session_state"))
		}
	})

	t.Run("off", func(t *testing.T) {
		ts := newServer(t, nil)
		c := browser(t)
		_, ch := pkce("v")
		u := login(t, ts, c, authorizeParams(ch), "alice", testPassword)
		if u.Query().Has("session_state") || browserStateOf(ts, c) != "" {
			t.Errorf("without session management: %s, browser state %q", u, browserStateOf(ts, c))
		}
	})
}

// FuzzBrowserStateCookie sends authorization requests with an arbitrary
// OP browser state cookie: never a 5xx, always a session_state of hex,
// one dot and a salt, never the cookie's value, and the cookie deleted,
// since no session comes with it.
func FuzzBrowserStateCookie(f *testing.F) {
	f.Add("c3RhbGUtc3RhdGU")
	f.Add("")
	f.Add("a b.c;d=e")
	f.Add(strings.Repeat("x", 5000))
	ts := newServer(f, withSessionManagement)
	_, ch := pkce("v")
	q := authorizeParams(ch)
	q.Set("prompt", "none")
	sessionStateRE := regexp.MustCompile(`^[0-9a-f]{64}\.[A-Za-z0-9_-]{16}$`)
	f.Fuzz(func(t *testing.T, value string) {
		r := httptest.NewRequest(http.MethodGet, "/connect/authorize?"+q.Encode(), nil)
		r.Header.Set("Cookie", idp.BrowserStateCookie+"="+value)
		w := httptest.NewRecorder()
		ts.Provider.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%q: status %d", value, w.Code)
		}
		u, err := url.Parse(w.Header().Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		if ss := u.Query().Get("session_state"); !sessionStateRE.MatchString(ss) || u.Query().Get("error") != "login_required" {
			t.Fatalf("%q: redirected to %s; want login_required with a session_state", value, u)
		}
		if _, err := (&http.Request{Header: http.Header{"Cookie": {r.Header.Get("Cookie")}}}).Cookie(idp.BrowserStateCookie); err == nil {
			if ck := browserStateSet(&http.Response{Header: w.Header()}); ck == nil || ck.MaxAge >= 0 {
				t.Fatalf("%q: the cookie was not deleted: %v", value, w.Header())
			}
		}
	})
}
