package idp_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
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
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/authgate/authgate/idp"
)

const (
	testPassword = "Abcd@1234"
	testSecret   = "demo-app-secret"
	testRedirect = "https://app.example/oauth2/callback"
)

var (
	keysOnce sync.Once
	testKeys []idp.SigningKey
	hashOnce sync.Once
	testHash string
)

// signingKeys returns an RS256 and an ES256 key, made once per test binary:
// RSA generation is slow enough to dominate the suite otherwise.
func signingKeys(t testing.TB) []idp.SigningKey {
	t.Helper()
	keysOnce.Do(func() {
		for _, alg := range []string{idp.RS256, idp.ES256} {
			k, err := idp.GenerateKey(alg)
			if err != nil {
				panic(err)
			}
			testKeys = append(testKeys, k)
		}
	})
	return testKeys
}

func passwordHash(t testing.TB) string {
	t.Helper()
	hashOnce.Do(func() {
		h, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
		if err != nil {
			panic(err)
		}
		testHash = string(h)
	})
	return testHash
}

// testConfig is a provider with user alice and the confidential client
// demo-app; the issuer is filled in by newServer.
func testConfig(t testing.TB) idp.Config {
	t.Helper()
	return idp.Config{
		Clients: []idp.Client{{
			ID:                     "demo-app",
			Secret:                 testSecret,
			RedirectURIs:           []string{testRedirect},
			PostLogoutRedirectURIs: []string{"https://app.example/"},
			AllowedScopes:          []string{"openid", "profile", "email", "api"},
		}},
		Users: []idp.User{{
			Username:     "alice",
			PasswordHash: passwordHash(t),
			Claims: map[string]any{
				"name": "Alice Smith", "given_name": "Alice", "family_name": "Smith",
				"email": "AliceSmith@email.com", "email_verified": true, "website": "http://alice.com",
			},
		}},
		APIScopes:    []string{"api"},
		APIResources: []idp.APIResource{{Name: "demo-api", Scopes: []string{"api"}}},
		Keys:         signingKeys(t),
		CookieKeys:   [][2][]byte{{[]byte(strings.Repeat("h", 32)), []byte(strings.Repeat("b", 32))}},
	}
}

type testServer struct {
	*httptest.Server
	Provider *idp.Provider
	Store    *idp.MemoryStore
	clock    *clock
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// newServer mounts a provider built from cfg (after edit, if given) on an
// httptest server whose URL is the issuer.
func newServer(t testing.TB, edit func(*idp.Config)) *testServer {
	t.Helper()
	return newServerWithStore(t, edit, nil)
}

// newServerWithStore is newServer with the provider's store wrapped by
// wrap, when not nil.
func newServerWithStore(t testing.TB, edit func(*idp.Config), wrap func(idp.Store) idp.Store) *testServer {
	t.Helper()
	ts := &testServer{clock: &clock{now: time.Now()}}
	var h http.Handler
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(ts.Close)
	cfg := testConfig(t)
	cfg.Issuer = ts.URL
	cfg.Now = ts.clock.Now
	if edit != nil {
		edit(&cfg)
	}
	ts.Store = idp.NewMemoryStore(ts.clock.Now)
	t.Cleanup(func() { ts.Store.Close() })
	var store idp.Store = ts.Store
	if wrap != nil {
		store = wrap(store)
	}
	p, err := idp.New(cfg, store)
	if err != nil {
		t.Fatalf("idp.New: %v", err)
	}
	ts.Provider = p
	h = p
	return ts
}

// browser returns a client with a cookie jar that does not follow
// redirects, so each hop can be checked.
func browser(t testing.TB) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	return &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
}

// pkce returns a verifier and its S256 challenge.
func pkce(seed string) (verifier, challenge string) {
	verifier = strings.Repeat(seed, 43/len(seed)+1)[:43]
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

// authorizeParams is a valid authorization request of demo-app.
func authorizeParams(challenge string) url.Values {
	return url.Values{
		"client_id":             {"demo-app"},
		"redirect_uri":          {testRedirect},
		"response_type":         {"code"},
		"scope":                 {"openid profile email"},
		"state":                 {"st-123"},
		"nonce":                 {"n-456"},
		"code_challenge":        {challenge},
		"code_challenge_method": {"S256"},
	}
}

var hiddenRE = regexp.MustCompile(`name="(csrf_token|request)" value="([^"]*)"`)

// loginForm fetches the login page at loc and returns its hidden fields.
func loginForm(t testing.TB, c *http.Client, base, loc string) url.Values {
	t.Helper()
	resp, err := c.Get(resolve(base, loc))
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login page: status %d: %s", resp.StatusCode, body)
	}
	form := url.Values{}
	for _, m := range hiddenRE.FindAllStringSubmatch(body, -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	if form.Get("csrf_token") == "" {
		t.Fatalf("login page has no csrf_token: %s", body)
	}
	return form
}

// login drives authorize → login page → credentials, and returns the final
// redirect to the client.
func login(t testing.TB, ts *testServer, c *http.Client, params url.Values, username, password string) *url.URL {
	t.Helper()
	resp, err := c.Get(ts.URL + "/connect/authorize?" + params.Encode())
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: status %d, want 302", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	if !strings.Contains(loc, "/account/login") {
		// Single sign-on: straight back to the client.
		u, _ := url.Parse(loc)
		return u
	}
	form := loginForm(t, c, ts.URL, loc)
	form.Set("username", username)
	form.Set("password", password)
	resp, err = c.PostForm(ts.URL+"/account/login", form)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	// RFC 9700 §4.12: a redirect after a POST that carried credentials is
	// a 303, so that no client re-posts them to the client's redirect URI.
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: status %d, want 303: %s", resp.StatusCode, body)
	}
	u, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// codeFor logs alice in and returns a code with its verifier.
func codeFor(t testing.TB, ts *testServer) (code, verifier string) {
	t.Helper()
	verifier, challenge := pkce("v")
	u := login(t, ts, browser(t), authorizeParams(challenge), "alice", testPassword)
	code = u.Query().Get("code")
	if code == "" {
		t.Fatalf("no code in %s", u)
	}
	return code, verifier
}

func exchangeForm(code, verifier string) url.Values {
	return url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {testRedirect},
		"code_verifier": {verifier},
	}
}

// postToken posts form to the token endpoint with Basic credentials when
// id is not empty.
func postToken(t testing.TB, ts *testServer, id, secret string, form url.Values) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, ts.URL+"/connect/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if id != "" {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readBody(t, resp)
}

func readBody(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func resolve(base, loc string) string {
	b, _ := url.Parse(base)
	l, _ := url.Parse(loc)
	return b.ResolveReference(l).String()
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// authorize sends the authorization request q with c and returns the
// response, its body read: the redirect to check is in its Location.
func authorize(t testing.TB, ts *testServer, c *http.Client, q url.Values) *http.Response {
	t.Helper()
	resp, err := c.Get(ts.URL + "/connect/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	return resp
}
