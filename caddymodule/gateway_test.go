package caddymodule

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/authgate/authgate/idp"
)

const gwPassword = "Abcd@1234"

var (
	gwKeysOnce sync.Once
	gwKeys     []idp.SigningKey
	gwHash     string
)

// opServer is a real idp provider on an httptest server, counting token
// requests by grant type.
type opServer struct {
	*httptest.Server
	refreshes   atomic.Int32
	jwksFetches atomic.Int32

	mu         sync.Mutex
	clientAuth []string // per token or revocation request: "<path> <method> <client_id>"
}

// clientAuthLog returns how the token and revocation requests so far
// authenticated their client.
func (op *opServer) clientAuthLog() []string {
	op.mu.Lock()
	defer op.mu.Unlock()
	return append([]string(nil), op.clientAuth...)
}

func newOP(t testing.TB, edit func(*idp.Config)) *opServer {
	t.Helper()
	gwKeysOnce.Do(func() {
		for _, alg := range []string{idp.RS256, idp.ES256} {
			k, err := idp.GenerateKey(alg)
			if err != nil {
				panic(err)
			}
			gwKeys = append(gwKeys, k)
		}
		h, _ := bcrypt.GenerateFromPassword([]byte(gwPassword), bcrypt.MinCost)
		gwHash = string(h)
	})
	op := &opServer{}
	var h http.Handler
	op.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/openid-configuration/jwks" {
			op.jwksFetches.Add(1)
		}
		if r.URL.Path == "/connect/token" || r.URL.Path == "/connect/revocation" {
			r.ParseForm()
			if r.PostForm.Get("grant_type") == "refresh_token" {
				op.refreshes.Add(1)
			}
			id, method := r.PostForm.Get("client_id"), "none"
			if user, _, ok := r.BasicAuth(); ok {
				id, method = user, "basic"
			} else if r.PostForm.Has("client_secret") {
				method = "post"
			}
			op.mu.Lock()
			op.clientAuth = append(op.clientAuth, r.URL.Path+" "+method+" "+id)
			op.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(op.Close)
	cfg := idp.Config{
		Issuer: op.URL,
		Clients: []idp.Client{{
			ID: "demo-app", Secret: "demo-app-secret", RedirectURIs: []string{"http://gw.test/oauth2/callback"},
			PostLogoutRedirectURIs: []string{"http://gw.test/"}, AllowOfflineAccess: true,
			AllowedScopes: []string{"openid", "profile", "email", "groups", "api"},
		}},
		Users: []idp.User{{Username: "alice", PasswordHash: gwHash, Claims: map[string]any{
			"name": "Alice Smith", "email": "alice@example.com", "email_verified": true, "groups": []any{"staff", "admins"},
		}}},
		APIScopes:    []string{"api"},
		APIResources: []idp.APIResource{{Name: "demo-api", Scopes: []string{"api"}}},
		Keys:         gwKeys,
		CookieKeys:   [][2][]byte{{make([]byte, 32), make([]byte, 32)}},
	}
	if edit != nil {
		edit(&cfg)
	}
	p, err := idp.New(cfg, idp.NewMemoryStore(nil))
	if err != nil {
		t.Fatal(err)
	}
	h = p
	return op
}

// gwServer runs a provisioned Gateway in front of an upstream that echoes
// the request headers as JSON. Its requests reach it as host gw.test.
type gwServer struct {
	*httptest.Server
	gw *Gateway
}

func newGateway(t testing.TB, op *opServer, edit func(*Gateway)) *gwServer {
	t.Helper()
	g := &Gateway{
		Issuer:       op.URL,
		ClientID:     "demo-app",
		ClientSecret: "demo-app-secret",
		SessionKeys:  []string{"a-test-session-key-of-enough-length"},
		Cookie:       GatewayCookie{Secure: "never"}, // gw.test is plain http
	}
	if edit != nil {
		edit(g)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := g.Provision(ctx); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if err := g.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	g.logger = zap.NewNop()
	g.audit = zap.NewNop()
	upstream := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		out := map[string]any{"headers": r.Header, "id": repl.ReplaceAll("{http.auth.user.id}", ""), "name": repl.ReplaceAll("{http.auth.user.claim.name}", ""), "groups": repl.ReplaceAll("{http.auth.user.claim.groups}", "")}
		return json.NewEncoder(w).Encode(out)
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Host = "gw.test"
		repl := caddy.NewReplacer()
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
		if err := g.ServeHTTP(w, r, upstream); err != nil {
			t.Errorf("ServeHTTP: %v", err)
		}
	}))
	t.Cleanup(srv.Close)
	return &gwServer{Server: srv, gw: g}
}

// user is a browser-like client: a cookie jar, no automatic redirects, and
// gw.test resolved to the gateway server.
type user struct {
	t   testing.TB
	c   *http.Client
	gw  *gwServer
	op  *opServer
	jar *cookiejar.Jar
}

func newUser(t testing.TB, gw *gwServer, op *opServer) *user {
	jar, _ := cookiejar.New(nil)
	u := &user{t: t, gw: gw, op: op, jar: jar}
	u.c = &http.Client{
		Jar:           jar,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.URL.Host == "gw.test" {
				r2 := r.Clone(r.Context())
				r2.URL.Host = strings.TrimPrefix(gw.URL, "http://")
				r2.Host = "gw.test"
				return http.DefaultTransport.RoundTrip(r2)
			}
			return http.DefaultTransport.RoundTrip(r)
		}),
	}
	return u
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// get requests a URL as a browser navigation would.
func (u *user) get(rawURL string, header map[string]string) (*http.Response, string) {
	u.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, rawURL, nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := u.c.Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var formField = regexp.MustCompile(`name="(csrf_token|request)" value="([^"]*)"`)

// login follows a 302 to the provider through its login page and back to
// the gateway's callback, and returns the callback's response.
func (u *user) login(resp *http.Response) *http.Response {
	u.t.Helper()
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), u.op.URL) {
		u.t.Fatalf("want a redirect to the provider, got %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = u.get(resp.Header.Get("Location"), nil)
	if resp.StatusCode == http.StatusFound && strings.HasPrefix(resp.Header.Get("Location"), "/account/login") {
		resp2, body := u.get(u.op.URL+resp.Header.Get("Location"), nil)
		form := url.Values{"username": {"alice"}, "password": {gwPassword}}
		for _, m := range formField.FindAllStringSubmatch(body, -1) {
			form.Set(m[1], html.UnescapeString(m[2]))
		}
		_ = resp2
		r, err := u.c.PostForm(u.op.URL+"/account/login", form)
		if err != nil {
			u.t.Fatal(err)
		}
		r.Body.Close()
		resp = r
	}
	cb := resp.Header.Get("Location")
	if !strings.HasPrefix(cb, "http://gw.test/oauth2/callback") {
		u.t.Fatalf("provider did not redirect to the callback: %d %s", resp.StatusCode, cb)
	}
	resp, _ = u.get(cb, nil)
	return resp
}

// signIn logs in through path and returns the echo of path.
func (u *user) signIn(path string) map[string]any {
	u.t.Helper()
	resp, _ := u.get("http://gw.test"+path, nil)
	resp = u.login(resp)
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != path {
		u.t.Fatalf("callback: %d to %q, want 302 to %s", resp.StatusCode, loc, path)
	}
	return u.echo(path, nil)
}

func (u *user) echo(path string, header map[string]string) map[string]any {
	u.t.Helper()
	resp, body := u.get("http://gw.test"+path, header)
	if resp.StatusCode != http.StatusOK {
		u.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		u.t.Fatalf("GET %s: not the upstream's echo: %s", path, body)
	}
	return out
}

func echoHeader(echo map[string]any, name string) string {
	h, _ := echo["headers"].(map[string]any)
	vals, _ := h[name].([]any)
	if len(vals) == 0 {
		return ""
	}
	return vals[0].(string)
}

func TestGatewayLoginAndIdentity(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, func(g *Gateway) {
		g.Headers = map[string]string{"X-User-Name": "name"}
		g.Scopes = []string{"openid", "profile", "email", "groups"}
	})
	u := newUser(t, gw, op)
	echo := u.signIn("/headers?x=1")
	sub := idp.DeriveSubject("alice")
	want := map[string]string{
		"X-Auth-Request-User":               sub,
		"X-Auth-Request-Email":              "alice@example.com",
		"X-Auth-Request-Preferred-Username": "alice",
		"X-Auth-Request-Groups":             "staff,admins",
		"X-User-Name":                       "Alice Smith",
	}
	for k, v := range want {
		if got := echoHeader(echo, k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if echo["id"] != sub || echo["name"] != "Alice Smith" || echo["groups"] != "staff,admins" {
		t.Errorf("placeholders: id %v name %v groups %v", echo["id"], echo["name"], echo["groups"])
	}

	t.Run("spoofed identity headers never pass", func(t *testing.T) {
		echo := u.echo("/headers", map[string]string{
			"X-Auth-Request-User": "attacker", "X_Auth_Request_User": "attacker", "x-auth-request-email": "attacker@evil",
			"X.User.Name": "attacker",
		})
		h := echo["headers"].(map[string]any)
		for name, vals := range h {
			for _, v := range vals.([]any) {
				if strings.Contains(v.(string), "attacker") {
					t.Errorf("spoofed header reached upstream: %s: %v", name, v)
				}
			}
		}
	})
	t.Run("sign-out by client_id", func(t *testing.T) {
		u := newUser(t, gw, op)
		u.signIn("/")
		resp := u.signOut()
		loc := resp.Header.Get("Location")
		if strings.Contains(loc, "id_token_hint") || !strings.Contains(loc, "client_id=demo-app") {
			t.Fatalf("sign-out went to %s; want client_id and, by default, no id_token_hint", loc)
		}
		// Without an id_token_hint the provider asks first (OpenID Connect
		// RP-Initiated Logout 1.0 §2); the user's answer signs out.
		resp, body := u.get(loc, nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Sign out?") {
			t.Fatalf("the provider did not ask: %d %s", resp.StatusCode, resp.Header.Get("Location"))
		}
		form := url.Values{"decision": {"logout"}}
		for _, m := range formField.FindAllStringSubmatch(body, -1) {
			form.Set(m[1], html.UnescapeString(m[2]))
		}
		r, err := u.c.PostForm(u.op.URL+"/account/logout", form)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		// With the gateway's state, for its signed-out page.
		if !strings.HasPrefix(r.Header.Get("Location"), "http://gw.test/?state=") {
			t.Fatalf("the provider did not return to the post-logout URI: %d %s", r.StatusCode, r.Header.Get("Location"))
		}
	})
	t.Run("session cookie does not reach upstream", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "http://gw.test/headers", nil)
		req.AddCookie(&http.Cookie{Name: "app", Value: "keep"})
		resp, err := u.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var echo map[string]any
		json.NewDecoder(resp.Body).Decode(&echo)
		cookie := echoHeader(echo, "Cookie")
		if strings.Contains(cookie, "authgate") || !strings.Contains(cookie, "app=keep") {
			t.Errorf("upstream Cookie = %q; want app=keep without authgate cookies", cookie)
		}
	})
}

func TestGatewayUnauthenticated(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, nil)
	tests := []struct {
		name     string
		header   map[string]string
		wantCode int
	}{
		{"navigation", map[string]string{"Accept": "text/html"}, http.StatusFound},
		{"fetch metadata navigate", map[string]string{"Sec-Fetch-Mode": "navigate", "Accept": "*/*"}, http.StatusFound},
		{"fetch from a page", map[string]string{"Sec-Fetch-Mode": "cors", "Accept": "text/html"}, http.StatusUnauthorized},
		{"JSON client", map[string]string{"Accept": "application/json"}, http.StatusUnauthorized},
		{"XHR", map[string]string{"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"}, http.StatusUnauthorized},
		{"html ranked below json", map[string]string{"Accept": "application/json, text/html;q=0.5"}, http.StatusUnauthorized},
		{"no Accept", map[string]string{"Accept": ""}, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUser(t, gw, op)
			req, _ := http.NewRequest(http.MethodGet, "http://gw.test/api/x", nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := u.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantCode)
			}
			if tt.wantCode == http.StatusUnauthorized {
				var body map[string]string
				json.NewDecoder(resp.Body).Decode(&body)
				if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(body["login_url"], "/oauth2/start?rd=%2Fapi%2Fx") {
					t.Fatalf("401: WWW-Authenticate %q body %v", resp.Header.Get("WWW-Authenticate"), body)
				}
			}
		})
	}
}

func TestGatewayTamperedCookieAndSignOut(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, func(g *Gateway) { g.SignOutIDTokenHint = true })
	u := newUser(t, gw, op)
	u.signIn("/")
	gwURL, _ := url.Parse("http://gw.test/")
	cookies := u.jar.Cookies(gwURL)
	var sess *http.Cookie
	for _, c := range cookies {
		if c.Name == "authgate" {
			sess = c
		}
	}
	if sess == nil {
		t.Fatalf("no session cookie in %v", cookies)
	}

	// Tampered: a fresh login, not a 5xx.
	tampered := newUser(t, gw, op)
	v := []byte(sess.Value)
	v[len(v)/2] ^= 1
	tampered.jar.SetCookies(gwURL, []*http.Cookie{{Name: "authgate", Value: string(v)}})
	resp, _ := tampered.get("http://gw.test/", nil)
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), op.URL) {
		t.Fatalf("tampered cookie: %d %s; want a new login", resp.StatusCode, resp.Header.Get("Location"))
	}

	// Sign out: cookies cleared, provider session ended, next visit logs in again.
	resp = u.signOut()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, op.URL+"/connect/endsession?") || !strings.Contains(loc, "id_token_hint=") {
		t.Fatalf("sign out: %d %s", resp.StatusCode, loc)
	}
	resp, _ = u.get(loc, nil)
	if got := resp.Header.Get("Location"); !strings.HasPrefix(got, "http://gw.test/?state=") {
		t.Fatalf("end session redirected to %q", got)
	}
	resp, _ = u.get("http://gw.test/", nil)
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), op.URL) {
		t.Fatalf("after sign out: %d %s; want login", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = u.get(resp.Header.Get("Location"), nil)
	if !strings.HasPrefix(resp.Header.Get("Location"), "/account/login") {
		t.Fatalf("provider session survived sign out: %s", resp.Header.Get("Location"))
	}
}

func TestGatewayRefresh(t *testing.T) {
	op := newOP(t, func(c *idp.Config) { c.Clients[0].AccessTokenLifetime = 3 * time.Second })
	gw := newGateway(t, op, func(g *Gateway) {
		g.Scopes = []string{"openid", "profile", "email", "offline_access"}
		g.RefreshBefore = caddy.Duration(time.Second)
	})
	u := newUser(t, gw, op)
	u.signIn("/")
	if n := op.refreshes.Load(); n != 0 {
		t.Fatalf("%d refreshes before expiry", n)
	}
	// Wait until the access token is inside its refresh window.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && op.refreshes.Load() == 0 {
		var wg sync.WaitGroup
		var failures atomic.Int32
		for range 20 {
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodGet, "http://gw.test/headers", nil)
				req.Header.Set("Accept", "application/json")
				resp, err := u.c.Do(req)
				if err != nil || resp.StatusCode != http.StatusOK {
					failures.Add(1)
				}
				if resp != nil {
					resp.Body.Close()
				}
			})
		}
		wg.Wait()
		if failures.Load() > 0 {
			t.Fatalf("%d of 20 concurrent requests failed", failures.Load())
		}
		if op.refreshes.Load() == 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if n := op.refreshes.Load(); n != 1 {
		t.Fatalf("provider saw %d refreshes, want exactly 1", n)
	}
	// The new cookie works without another refresh.
	u.echo("/headers", nil)
	if n := op.refreshes.Load(); n != 1 {
		t.Fatalf("provider saw %d refreshes after the new cookie, want 1", n)
	}
}

func TestGatewayPolicy(t *testing.T) {
	op := newOP(t, nil)
	tests := []struct {
		name  string
		rules []GatewayRule
		allow bool
	}{
		{"no rules", nil, true},
		{"exact email", []GatewayRule{{Email: "Alice@Example.com"}}, true},
		{"domain", []GatewayRule{{Email: "*@example.com"}}, true},
		{"other domain", []GatewayRule{{Email: "*@evil.com"}}, false},
		{"suffix is not a domain", []GatewayRule{{Email: "*@ample.com"}}, false},
		{"group", []GatewayRule{{Group: "admins"}}, true},
		{"missing group", []GatewayRule{{Group: "root"}}, false},
		{"claim", []GatewayRule{{Claim: "name", Value: "Alice Smith"}}, true},
		{"any rule", []GatewayRule{{Group: "root"}, {Email: "alice@example.com"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := newGateway(t, op, func(g *Gateway) {
				g.Allow = tt.rules
				g.Scopes = []string{"openid", "profile", "email", "groups"}
			})
			u := newUser(t, gw, op)
			resp, _ := u.get("http://gw.test/", nil)
			u.login(resp)
			resp, body := u.get("http://gw.test/", nil)
			if tt.allow && resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200: %s", resp.StatusCode, body)
			}
			if !tt.allow && (resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "alice@example.com") || !strings.Contains(body, "/oauth2/sign_out")) {
				t.Fatalf("status %d, want 403 naming the user with a sign-out link: %s", resp.StatusCode, body)
			}
		})
	}
}

func TestGatewaySessionChunksAndKeyRotation(t *testing.T) {
	big := strings.Repeat("x", 5000)
	op := newOP(t, func(c *idp.Config) { c.Users[0].Claims["website"] = big })
	oldKey := "the-old-session-key-0123456789"
	gw := newGateway(t, op, func(g *Gateway) {
		g.SessionKeys = []string{oldKey}
		g.Headers = map[string]string{"X-Website": "website"}
	})
	u := newUser(t, gw, op)
	echo := u.signIn("/")
	if got := echoHeader(echo, "X-Website"); got != big {
		t.Fatalf("X-Website has %d bytes, want %d", len(got), len(big))
	}
	gwURL, _ := url.Parse("http://gw.test/")
	names := map[string]bool{}
	total := 0
	for _, c := range u.jar.Cookies(gwURL) {
		names[c.Name] = true
		total += len(c.Name) + len(c.Value) + 3
		if len(c.Name)+len(c.Value) > 4000 {
			t.Errorf("cookie %s is %d bytes", c.Name, len(c.Value))
		}
	}
	if !names["authgate"] || !names["authgate_1"] {
		t.Fatalf("large session not chunked: cookies %v", names)
	}
	if total > sessionBudget+200 {
		t.Fatalf("session cookies take %d bytes, over the %d budget", total, sessionBudget)
	}

	// A new key put first: the old cookie still decodes.
	rotated := newGateway(t, op, func(g *Gateway) { g.SessionKeys = []string{"the-new-session-key-0123456789", oldKey} })
	u.gw = rotated
	u.c.Transport = newUser(t, rotated, op).c.Transport
	echo = u.echo("/headers", nil)
	if echoHeader(echo, "X-Auth-Request-User") != idp.DeriveSubject("alice") {
		t.Fatalf("old cookie after rotation: %v", echo)
	}
	// Without the old key, it is a fresh login.
	dropped := newGateway(t, op, func(g *Gateway) { g.SessionKeys = []string{"the-new-session-key-0123456789"} })
	u.c.Transport = newUser(t, dropped, op).c.Transport
	if resp, _ := u.get("http://gw.test/", nil); resp.StatusCode != http.StatusFound {
		t.Fatalf("cookie under a dropped key: status %d, want a login", resp.StatusCode)
	}
}

// TestGatewayOversizedIdentity: a session over the cookie budget keeps
// only the claims in use; one that cannot fit at all is refused with a
// page, never cookies that the server would then reject.
func TestGatewayOversizedIdentity(t *testing.T) {
	t.Run("unused claims dropped", func(t *testing.T) {
		op := newOP(t, func(c *idp.Config) { c.Users[0].Claims["website"] = strings.Repeat("w", 12000) })
		gw := newGateway(t, op, func(g *Gateway) { g.SignOutIDTokenHint = true })
		u := newUser(t, gw, op)
		echo := u.signIn("/")
		if echoHeader(echo, "X-Auth-Request-Email") != "alice@example.com" {
			t.Fatalf("identity lost: %v", echo)
		}
		resp := u.signOut()
		if loc := resp.Header.Get("Location"); strings.Contains(loc, "id_token_hint") || !strings.Contains(loc, "client_id=demo-app") {
			t.Fatalf("sign-out without the ID token: %s", loc)
		}
	})
	t.Run("too large even so", func(t *testing.T) {
		op := newOP(t, func(c *idp.Config) { c.Users[0].Claims["website"] = strings.Repeat("w", 12000) })
		gw := newGateway(t, op, func(g *Gateway) { g.Headers = map[string]string{"X-Website": "website"} })
		u := newUser(t, gw, op)
		resp, _ := u.get("http://gw.test/", nil)
		resp = u.login(resp)
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d, want 502", resp.StatusCode)
		}
		for _, c := range resp.Cookies() {
			if c.Name == "authgate" && c.MaxAge >= 0 {
				t.Fatalf("a session cookie was set: %s (%d bytes)", c.Name, len(c.Value))
			}
		}
	})
}

func TestGatewayCallbackErrors(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, nil)
	u := newUser(t, gw, op)
	// newState starts a login and returns its state.
	newState := func() string {
		resp, _ := u.get("http://gw.test/private", nil)
		authURL, _ := url.Parse(resp.Header.Get("Location"))
		return authURL.Query().Get("state")
	}
	iss := "&iss=" + url.QueryEscape(op.URL)
	tests := []struct {
		name  string
		query func() string
		want  int
		text  string
	}{
		{"no state", func() string { return "code=x" }, http.StatusBadRequest, "no state"},
		{"unknown state", func() string { return "code=x&state=nope" + iss }, http.StatusBadRequest, "expired"},
		{"error from another issuer", func() string {
			return "error=access_denied&iss=https%3A%2F%2Fevil.example&state=" + newState()
		}, http.StatusBadRequest, "another issuer"},
		{"error without iss", func() string { return "error=access_denied&state=" + newState() }, http.StatusBadRequest, "another issuer"},
		{"provider error", func() string { return "error=access_denied" + iss + "&state=" + newState() }, http.StatusForbidden, "access_denied"},
		{"forged code", func() string { return "code=forged" + iss + "&state=" + newState() }, http.StatusBadRequest, "did not accept"},
	}
	for _, tt := range tests {
		resp, body := u.get("http://gw.test/oauth2/callback?"+tt.query(), nil)
		if resp.StatusCode != tt.want || resp.Header.Get("Location") != "" || !strings.Contains(body, tt.text) {
			t.Errorf("%s: status %d, want %d page saying %q: %s", tt.name, resp.StatusCode, tt.want, tt.text, body)
		}
	}
	// A state is used once: replaying it fails.
	state := newState()
	u.get("http://gw.test/oauth2/callback?error=access_denied"+iss+"&state="+state, nil)
	if resp, body := u.get("http://gw.test/oauth2/callback?code=x"+iss+"&state="+state, nil); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "expired") {
		t.Errorf("replayed state: %d", resp.StatusCode)
	}
}

func TestGatewayFlowCookiesBounded(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, nil)
	u := newUser(t, gw, op)
	for range 12 {
		u.get("http://gw.test/", nil)
	}
	gwURL, _ := url.Parse("http://gw.test/")
	n := 0
	for _, c := range u.jar.Cookies(gwURL) {
		if strings.HasPrefix(c.Name, "authgate_flow_") {
			n++
		}
	}
	if n == 0 || n > maxFlows {
		t.Fatalf("%d flow cookies, want 1..%d", n, maxFlows)
	}
}

func TestGatewayProviderDown(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, nil)
	op.Close()
	u := newUser(t, gw, op)
	start := time.Now()
	resp, body := u.get("http://gw.test/", nil)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "cannot be reached") {
		t.Fatalf("status %d: %s; want a 502 page", resp.StatusCode, body)
	}
	if time.Since(start) > providerTimeout {
		t.Fatalf("took %v", time.Since(start))
	}
}

func TestSafeReturnURL(t *testing.T) {
	tests := map[string]string{
		"/":                   "/",
		"/a/b?c=d":            "/a/b?c=d",
		"":                    "/",
		"//evil.com":          "/",
		"/\\evil.com":         "/",
		"https://evil.com/":   "/",
		"evil.com":            "/",
		"/a\r\nLocation: x":   "/",
		"/%2F%2Fevil.com":     "/%2F%2Fevil.com",
		"javascript:alert(1)": "/",
	}
	for in, want := range tests {
		if got := safeReturnURL(in); got != want {
			t.Errorf("safeReturnURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHTMLPreferred(t *testing.T) {
	tests := []struct {
		accept string
		want   bool
	}{
		{"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", true},
		{"application/json", false},
		{"*/*", false},
		{"application/json;q=0.9, text/html", true},
		{"text/html;q=0.1, application/json", false},
		{"text/html;q=0", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := htmlPreferred(tt.accept); got != tt.want {
			t.Errorf("htmlPreferred(%q) = %v, want %v", tt.accept, got, tt.want)
		}
	}
}

func TestJWTExpiry(t *testing.T) {
	tests := []struct {
		name, token string
		want        int64
	}{
		{"jwt", "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDB9.sig", 1700000000},
		{"opaque", "abc", 0},
		{"no exp", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig", 0},
		{"bad base64", "a.!!!.c", 0},
	}
	for _, tt := range tests {
		if got := jwtExpiry(tt.token); got != tt.want {
			t.Errorf("%s: jwtExpiry = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestReadSessionCookie(t *testing.T) {
	full := strings.Repeat("a", chunkSize)
	tests := []struct {
		name    string
		headers []string
		want    string
	}{
		{"none", nil, ""},
		{"one", []string{"x=1; authgate=abc; y=2"}, "abc"},
		{"prefix lookalikes", []string{"authgatex=1; authgate_flow_ab=2; authgate_provider_session=3; authgate=v"}, "v"},
		{"chunks in order", []string{"authgate=" + full + "; authgate_1=tail"}, full + "tail"},
		{"chunks out of order, two lines", []string{"authgate_1=tail", "authgate=" + full}, full + "tail"},
		{"short first ignores stray chunk", []string{"authgate=short; authgate_1=tail"}, "short"},
		{"duplicate name: first wins", []string{"authgate=first; authgate=second"}, "first"},
		{"chunk past the limit ignored", []string{"authgate=" + full + "; authgate_1=" + full + "; authgate_2=" + full + "; authgate_3=x"}, full + full + full},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		for _, h := range tt.headers {
			r.Header.Add("Cookie", h)
		}
		if got := readSessionCookie(r, "authgate"); got != tt.want {
			t.Errorf("%s: got %d bytes %.20q, want %d bytes %.20q", tt.name, len(got), got, len(tt.want), tt.want)
		}
	}
}
