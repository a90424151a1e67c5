package bench_test

import (
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/authgate/authgate/internal/caddytest"
)

// sessionCookie logs alice in at the gateway site as a browser does and
// returns the Cookie header that carries her session: the authgate cookie
// and its chunks, without the provider's or the flow's cookies.
func sessionCookie(b *testing.B, s *server) string {
	b.Helper()
	browser := caddytest.NewBrowser(b)
	req, err := http.NewRequest(http.MethodGet, s.gateway+"/", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Accept", "text/html")
	resp := do(b, browser, req)
	authURL, err := resp.Location()
	if err != nil {
		b.Fatalf("gateway: status %d, no redirect to the provider", resp.StatusCode)
	}
	if !strings.HasPrefix(authURL.String(), s.issuer+"/") {
		b.Fatalf("gateway redirected to %s, want the provider at %s", authURL, s.issuer)
	}

	cb := authorize(b, browser, authURL.String())
	if got := cb.Scheme + "://" + cb.Host + cb.Path; got != s.gateway+"/oauth2/callback" {
		b.Fatalf("provider redirected to %s, want the gateway's callback", got)
	}
	resp = get(b, browser, cb.String())
	if resp.StatusCode != http.StatusFound {
		b.Fatalf("callback: status %d, want 302 back to the app", resp.StatusCode)
	}

	u, err := url.Parse(s.gateway)
	if err != nil {
		b.Fatal(err)
	}
	var parts []string
	for _, c := range browser.Jar.Cookies(u) {
		if isSessionCookie(c.Name) {
			parts = append(parts, c.Name+"="+c.Value)
		}
	}
	if len(parts) == 0 {
		b.Fatal("no session cookie after the callback")
	}
	return strings.Join(parts, "; ")
}

// signOutOtherSession logs alice in once more at the gateway site and
// signs that session out with the sign-out page's form, so that the
// gateways' revocation list is not empty: the load then measures
// requests that look their session up in it, as in production.
func signOutOtherSession(b *testing.B, s *server) {
	b.Helper()
	cookie := sessionCookie(b, s)
	req, err := http.NewRequest(http.MethodGet, s.gateway+"/oauth2/sign_out", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Cookie", cookie)
	resp := do(b, http.DefaultClient, req)
	m := signOutTokenField.FindSubmatch(resp.body)
	if resp.StatusCode != http.StatusOK || m == nil {
		b.Fatalf("sign-out page: status %d, no token in:\n%s", resp.StatusCode, resp.body)
	}
	form := url.Values{"token": {html.UnescapeString(string(m[1]))}}
	req, err = http.NewRequest(http.MethodPost, s.gateway+"/oauth2/sign_out", strings.NewReader(form.Encode()))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Cookie", cookie)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if resp := do(b, noRedirect, req); resp.StatusCode/100 != 3 {
		b.Fatalf("sign-out: status %d, want a redirect:\n%s", resp.StatusCode, resp.body)
	}
}

// signOutTokenField finds the token of the sign-out page's form.
var signOutTokenField = regexp.MustCompile(`name="token" value="([^"]+)"`)

// isSessionCookie tells the gateway's session cookie, authgate, and its
// chunks, authgate_1, authgate_2, ..., from the other cookies of the host.
func isSessionCookie(name string) bool {
	rest, ok := strings.CutPrefix(name, "authgate")
	if !ok {
		return false
	}
	if rest == "" {
		return true
	}
	n, ok := strings.CutPrefix(rest, "_")
	return ok && n != "" && strings.Trim(n, "0123456789") == ""
}

// accessToken gets demo-app an access token for the API demo-api with
// the code flow (PKCE S256, client_secret_post) and scope openid api.
func accessToken(b *testing.B, s *server) string {
	b.Helper()
	var meta struct {
		AuthorizationEndpoint string `json:"authorization_endpoint"`
		TokenEndpoint         string `json:"token_endpoint"`
	}
	resp := get(b, http.DefaultClient, s.issuer+"/.well-known/openid-configuration")
	if err := json.Unmarshal(resp.body, &meta); err != nil {
		b.Fatalf("discovery: %v", err)
	}
	conf := oauth2.Config{
		ClientID:     "demo-app",
		ClientSecret: clientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:   meta.AuthorizationEndpoint,
			TokenURL:  meta.TokenEndpoint,
			AuthStyle: oauth2.AuthStyleInParams,
		},
		RedirectURL: s.gateway + "/oauth2/callback",
		Scopes:      []string{"openid", "api"},
	}
	const state = "state-bench"
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", "nonce-bench"))
	cb := authorize(b, caddytest.NewBrowser(b), authURL)
	q := cb.Query()
	if q.Get("state") != state || q.Get("code") == "" {
		b.Fatalf("redirect query %q: want state %q and a code", cb.RawQuery, state)
	}
	tok, err := conf.Exchange(b.Context(), q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		b.Fatalf("exchange: %v", err)
	}
	if tok.AccessToken == "" {
		b.Fatal("token response has no access_token")
	}
	return tok.AccessToken
}

// authorize follows an authorization request through the login page,
// logging alice in, and returns the redirect back to the client without
// following it.
func authorize(b *testing.B, browser *http.Client, authURL string) *url.URL {
	b.Helper()
	resp := get(b, browser, authURL)
	next, err := resp.Location()
	if err != nil {
		b.Fatalf("authorize: status %d, no redirect:\n%s", resp.StatusCode, resp.body)
	}
	if next.Path != "/account/login" {
		return next // already logged in: straight back with a code
	}
	return caddytest.Login(b, browser, next, "alice", password)
}

// response is an http.Response whose body has been read.
type response struct {
	*http.Response
	body []byte
}

func get(b *testing.B, c *http.Client, rawURL string) response {
	b.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		b.Fatal(err)
	}
	return do(b, c, req)
}

func do(b *testing.B, c *http.Client, req *http.Request) response {
	b.Helper()
	resp, err := c.Do(req.WithContext(b.Context()))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	return response{resp, body}
}
