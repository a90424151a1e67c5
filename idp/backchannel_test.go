package idp_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/authgate/authgate/idp"
)

// receiver is a client's back-channel logout endpoint: it hands each
// logout token it gets to tokens, and answers what answer says.
type receiver struct {
	*httptest.Server
	tokens chan string
	mu     sync.Mutex
	calls  int
	answer func(call int) int // status of the call-th request (from 1)
}

func newReceiver(t testing.TB, answer func(call int) int) *receiver {
	t.Helper()
	rc := &receiver{tokens: make(chan string, 16), answer: answer}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			http.Error(w, "want a form POST", http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		rc.calls++
		call := rc.calls
		rc.mu.Unlock()
		status := http.StatusOK
		if rc.answer != nil {
			status = rc.answer(call)
		}
		if status == http.StatusOK {
			rc.tokens <- r.PostFormValue("logout_token")
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) Calls() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.calls
}

// await returns the next logout token the receiver accepts.
func (rc *receiver) await(t testing.TB) string {
	t.Helper()
	select {
	case tok := <-rc.tokens:
		return tok
	case <-time.After(5 * time.Second):
		t.Fatal("no logout token delivered")
		return ""
	}
}

// logSink collects the messages of a provider's log.
type logSink struct{ msgs chan string }

func (s logSink) Enabled(context.Context, slog.Level) bool { return true }
func (s logSink) Handle(_ context.Context, r slog.Record) error {
	select {
	case s.msgs <- r.Message:
	default:
	}
	return nil
}
func (s logSink) WithAttrs([]slog.Attr) slog.Handler { return s }
func (s logSink) WithGroup(string) slog.Handler      { return s }

// awaitLog waits for a log message starting with prefix.
func (s logSink) awaitLog(t testing.TB, prefix string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-s.msgs:
			if strings.HasPrefix(m, prefix) {
				return
			}
		case <-deadline:
			t.Fatalf("no log %q", prefix)
		}
	}
}

// withBackchannel registers rc as demo-app's back-channel logout URI, with
// retries fast enough for a test.
func withBackchannel(rc *receiver) func(*idp.Config) {
	return func(c *idp.Config) {
		c.Clients[0].BackchannelLogoutURI = rc.URL + "/logout?tenant=a"
		c.Clients[0].BackchannelLogoutSessionRequired = true
		c.Clients[0].AllowOfflineAccess = true
		c.Backchannel = idp.BackchannelConfig{Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Poll: 20 * time.Millisecond}
	}
}

func started(t testing.TB, ts *testServer) {
	t.Helper()
	ts.Provider.Start()
	t.Cleanup(func() { ts.Provider.Close() })
}

// logoutClaimsOf verifies tok with the provider's JWKS and returns its header's
// typ and its claims.
func logoutClaimsOf(t testing.TB, ts *testServer, tok string) (string, map[string]any) {
	t.Helper()
	resp, err := http.Get(ts.URL + "/.well-known/openid-configuration/jwks")
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(readBody(t, resp)), &set); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatalf("parsing logout token: %v", err)
	}
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		t.Fatalf("logout token signed by unknown key %q", jws.Signatures[0].Header.KeyID)
	}
	payload, err := jws.Verify(keys[0].Key)
	if err != nil {
		t.Fatalf("logout token signature: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	typ, _ := jws.Signatures[0].Header.ExtraHeaders[jose.HeaderType].(string)
	if alg := jws.Signatures[0].Header.Algorithm; alg != idp.RS256 {
		t.Errorf("alg %q, want demo-app's ID token alg RS256", alg)
	}
	return typ, claims
}

// idClaims returns the claims of an ID token, unverified.
func idClaims(t testing.TB, tok string) map[string]any {
	t.Helper()
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &c)
	return c
}

// signInOffline logs alice in with c and offline_access, and returns the
// tokens.
func signInOffline(t testing.TB, ts *testServer, c *http.Client) tokens {
	t.Helper()
	v, ch := pkce("v")
	q := authorizeParams(ch)
	q.Set("scope", "openid profile offline_access")
	u := login(t, ts, c, q, "alice", testPassword)
	resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(u.Query().Get("code"), v))
	var tk tokens
	if err := jsonUnmarshal(body, &tk); err != nil || resp.StatusCode != http.StatusOK || tk.RefreshToken == "" {
		t.Fatalf("exchange: %d %s", resp.StatusCode, body)
	}
	return tk
}

// TestBackchannelLogoutToken: each way a provider session ends sends
// demo-app a logout token as Back-Channel Logout 1.0 §2.4 says, posted as
// §2.5 says.
func TestBackchannelLogoutToken(t *testing.T) {
	tests := []struct {
		name string
		end  func(t *testing.T, ts *testServer, c *http.Client, tk tokens)
	}{
		{"rp-initiated logout", func(t *testing.T, ts *testServer, c *http.Client, tk tokens) {
			resp, err := c.Get(ts.URL + "/connect/endsession?" + url.Values{"id_token_hint": {tk.IDToken}}.Encode())
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
		}},
		{"account logout", func(t *testing.T, ts *testServer, c *http.Client, tk tokens) {
			form := loginForm(t, c, ts.URL, "/account/logout")
			form.Set("decision", "logout")
			postFrom(t, ts, c, "/account/logout", form, sameOrigin)
		}},
		{"refresh token reuse", func(t *testing.T, ts *testServer, c *http.Client, tk tokens) {
			if status, _, body := refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, ""); status != http.StatusOK {
				t.Fatalf("refresh: %d %s", status, body)
			}
			if status, _, _ := refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, ""); status != http.StatusBadRequest {
				t.Fatalf("reuse: %d, want 400", status)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, nil)
			ts := newServer(t, withBackchannel(rc))
			started(t, ts)
			c := browser(t)
			tk := signInOffline(t, ts, c)
			id := idClaims(t, tk.IDToken)
			if id["sid"] == nil || id["sid"] == "" {
				t.Fatalf("ID token without sid: %v", id)
			}

			tt.end(t, ts, c, tk)
			typ, claims := logoutClaimsOf(t, ts, rc.await(t))
			if typ != "logout+jwt" {
				t.Errorf("typ %q, want logout+jwt", typ)
			}
			now := float64(time.Now().Unix())
			iat, _ := claims["iat"].(float64)
			exp, _ := claims["exp"].(float64)
			switch {
			case claims["iss"] != ts.URL:
				t.Errorf("iss %v, want %s", claims["iss"], ts.URL)
			case claims["aud"] != "demo-app":
				t.Errorf("aud %v, want demo-app", claims["aud"])
			case iat < now-60 || iat > now+60 || exp <= iat || exp > iat+120:
				t.Errorf("iat %v exp %v: want now and at most two minutes later", iat, exp)
			case claims["jti"] == nil || claims["jti"] == "":
				t.Error("no jti")
			case claims["sid"] != id["sid"] || claims["sub"] != id["sub"]:
				t.Errorf("sid %v sub %v, want the ID token's %v %v", claims["sid"], claims["sub"], id["sid"], id["sub"])
			}
			if _, ok := claims["nonce"]; ok {
				t.Error("a logout token carries a nonce (§2.4 forbids it)")
			}
			events, _ := claims["events"].(map[string]any)
			if ev, ok := events["http://schemas.openid.net/event/backchannel-logout"].(map[string]any); !ok || len(ev) != 0 || len(events) != 1 {
				t.Errorf("events %v, want only the back-channel logout event with {}", claims["events"])
			}
			if signedIn(t, ts, c) {
				t.Error("still signed in at the provider")
			}
		})
	}
}

// TestBackchannelRetries: a client that fails (5xx) gets the token again
// after a backoff until it takes it; one that answers 400 refuses it
// (§2.8) and is not asked again.
func TestBackchannelRetries(t *testing.T) {
	tests := []struct {
		name   string
		answer func(call int) int
		log    string
		calls  int
	}{
		{"fails three times", func(call int) int {
			if call <= 3 {
				return http.StatusServiceUnavailable
			}
			return http.StatusOK
		}, "back-channel logout delivered", 4},
		{"refuses", func(int) int { return http.StatusBadRequest }, "back-channel logout refused", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, tt.answer)
			logs := logSink{msgs: make(chan string, 64)}
			ts := newServer(t, func(c *idp.Config) {
				withBackchannel(rc)(c)
				c.Now = time.Now // the retries wait on real time
				c.Logger = slog.New(logs)
			})
			started(t, ts)
			c := browser(t)
			tk := idTokenOf(t, ts, c, "alice")
			resp, _ := c.Get(ts.URL + "/connect/endsession?" + url.Values{"id_token_hint": {tk}}.Encode())
			readBody(t, resp)
			logs.awaitLog(t, tt.log)
			ts.Provider.Close() // waits for any attempt under way
			if got := rc.Calls(); got != tt.calls {
				t.Fatalf("%d attempts, want %d", got, tt.calls)
			}
		})
	}
}

// TestBackchannelQueueSurvivesRestart: a logout token queued by a
// provider that stopped (or never ran its worker) is delivered by the
// next provider on the same store.
func TestBackchannelQueueSurvivesRestart(t *testing.T) {
	rc := newReceiver(t, nil)
	ts := newServer(t, withBackchannel(rc)) // its worker never runs
	c := browser(t)
	tk := idTokenOf(t, ts, c, "alice")
	resp, _ := c.Get(ts.URL + "/connect/endsession?" + url.Values{"id_token_hint": {tk}}.Encode())
	readBody(t, resp)
	if n := rc.Calls(); n != 0 {
		t.Fatalf("%d deliveries without a worker", n)
	}

	cfg := testConfig(t)
	cfg.Issuer = ts.URL
	cfg.Now = ts.clock.Now
	withBackchannel(rc)(&cfg)
	next, err := idp.New(cfg, ts.Store)
	if err != nil {
		t.Fatal(err)
	}
	next.Start()
	defer next.Close()
	_, claims := logoutClaimsOf(t, ts, rc.await(t))
	if claims["sub"] != idClaims(t, tk)["sub"] {
		t.Fatalf("delivered %v", claims)
	}
}

// TestBackchannelOnlyRegistered: a client without a back-channel logout
// URI gets nothing; one with it gets exactly its own token.
func TestBackchannelOnlyRegistered(t *testing.T) {
	rc := newReceiver(t, nil)
	ts := newServer(t, func(c *idp.Config) {
		withBackchannel(rc)(c)
		c.Clients = append(c.Clients, idp.Client{ID: "other", Secret: "other-secret", RedirectURIs: []string{testRedirect}})
	})
	started(t, ts)
	c := browser(t)
	tk := idTokenOf(t, ts, c, "alice")
	// The same session signs in to other too.
	_, ch := pkce("v")
	q := authorizeParams(ch)
	q.Set("client_id", "other")
	if loc := authorize(t, ts, c, q).Header.Get("Location"); !strings.Contains(loc, "code=") {
		t.Fatalf("no single sign-on to other: %s", loc)
	}
	resp, _ := c.Get(ts.URL + "/connect/endsession?" + url.Values{"id_token_hint": {tk}}.Encode())
	readBody(t, resp)
	_, claims := logoutClaimsOf(t, ts, rc.await(t))
	if claims["aud"] != "demo-app" {
		t.Fatalf("aud %v", claims["aud"])
	}
	ts.Provider.Close()
	if n := rc.Calls(); n != 1 {
		t.Fatalf("%d deliveries, want 1", n)
	}
}

// TestBackchannelLogoutDoesNotWait: the logout answers while the client's
// endpoint hangs, and Close cuts the attempt short.
func TestBackchannelLogoutDoesNotWait(t *testing.T) {
	hung := make(chan struct{})
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(hung)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	ts := newServer(t, func(c *idp.Config) {
		c.Clients[0].BackchannelLogoutURI = hang.URL
	})
	started(t, ts)
	c := browser(t)
	tk := idTokenOf(t, ts, c, "alice")
	c.Timeout = 2 * time.Second
	resp, err := c.Get(ts.URL + "/connect/endsession?" + url.Values{"id_token_hint": {tk}}.Encode())
	if err != nil {
		t.Fatalf("logout waited for the back channel: %v", err)
	}
	readBody(t, resp)
	<-hung
	closed := make(chan struct{})
	go func() { ts.Provider.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("Close waits for a hanging client")
	}
}

// TestLogoutRevokesRefreshTokens: a client that asks for it loses the
// refresh tokens of a session when it ends; offline_access tokens of other
// clients outlive it (Back-Channel Logout 1.0 §2.7).
func TestLogoutRevokesRefreshTokens(t *testing.T) {
	for _, revoke := range []bool{true, false} {
		t.Run(map[bool]string{true: "revoked", false: "kept"}[revoke], func(t *testing.T) {
			ts := newServer(t, func(c *idp.Config) {
				c.Clients[0].AllowOfflineAccess = true
				c.Clients[0].LogoutRevokesRefreshTokens = revoke
			})
			c := browser(t)
			tk := signInOffline(t, ts, c)
			resp, _ := c.Get(ts.URL + "/connect/endsession?" + url.Values{"id_token_hint": {tk.IDToken}}.Encode())
			readBody(t, resp)
			status, _, body := refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, "")
			if want := map[bool]int{true: http.StatusBadRequest, false: http.StatusOK}[revoke]; status != want {
				t.Fatalf("refresh after logout: %d, want %d: %s", status, want, body)
			}
		})
	}
}

func TestBackchannelConfig(t *testing.T) {
	tests := []struct {
		name string
		edit func(*idp.Client)
		want string // error substring; "" is valid
	}{
		{"valid with query", func(c *idp.Client) { c.BackchannelLogoutURI = "https://app.example/bcl?x=1" }, ""},
		{"relative", func(c *idp.Client) { c.BackchannelLogoutURI = "/bcl" }, "not an absolute http(s) URI"},
		{"not http", func(c *idp.Client) { c.BackchannelLogoutURI = "ftp://app.example/bcl" }, "not an absolute http(s) URI"},
		{"fragment", func(c *idp.Client) { c.BackchannelLogoutURI = "https://app.example/bcl#x" }, "has a fragment"},
		{"session required without uri", func(c *idp.Client) { c.BackchannelLogoutSessionRequired = true }, "without a backchannel logout URI"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Issuer = "https://idp.example"
			tt.edit(&cfg.Clients[0])
			_, err := idp.New(cfg, idp.NewMemoryStore(nil))
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestDiscoveryBackchannel(t *testing.T) {
	ts := newServer(t, nil)
	resp, err := http.Get(ts.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	json.Unmarshal([]byte(readBody(t, resp)), &doc)
	if doc["backchannel_logout_supported"] != true || doc["backchannel_logout_session_supported"] != true {
		t.Fatalf("discovery: backchannel_logout_supported %v, backchannel_logout_session_supported %v",
			doc["backchannel_logout_supported"], doc["backchannel_logout_session_supported"])
	}
}
