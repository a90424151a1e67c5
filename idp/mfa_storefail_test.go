package idp_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

// prefixDownStore fails Get and Take of keys under prefix while down is
// set: the store is unavailable for that one lookup.
type prefixDownStore struct {
	idp.Store
	prefix string
	down   atomic.Bool
}

func (s *prefixDownStore) Get(ctx context.Context, key string) ([]byte, error) {
	if s.down.Load() && strings.HasPrefix(key, s.prefix) {
		return nil, errDown
	}
	return s.Store.Get(ctx, key)
}

func (s *prefixDownStore) Take(ctx context.Context, key string) ([]byte, error) {
	if s.down.Load() && strings.HasPrefix(key, s.prefix) {
		return nil, errDown
	}
	return s.Store.Take(ctx, key)
}

// TestTOTPPendingLoginStoreDown: the code step whose pending login the
// store cannot read answers 503 with Retry-After, not "expired" (400),
// and keeps the browser's cookie, so that a retry can finish the login.
func TestTOTPPendingLoginStoreDown(t *testing.T) {
	var ps *prefixDownStore
	ts := newServerWithStore(t, func(c *idp.Config) { c.Users[0].TOTPSecret = operatorSecret },
		func(s idp.Store) idp.Store { ps = &prefixDownStore{Store: s, prefix: "mfa/"}; return ps })
	c := passwordStep(t, ts)
	ps.down.Store(true)
	resp, err := c.Get(ts.URL + idp.PathLoginTOTP)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("code page, store down: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	ps.down.Store(false)
	resp2, body := codeStep(t, ts, c, codeAt(t, operatorSecret, ts.clock.Now()))
	if resp2.StatusCode != http.StatusSeeOther {
		t.Fatalf("code step once the store is back: %d %s", resp2.StatusCode, body)
	}
	// Not found is still "expired": the pending login was taken.
	resp, err = c.Get(ts.URL + idp.PathLoginTOTP)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("code page after the login: %d %s", resp.StatusCode, body)
	}
}

// passkeyLoginSetup opens the login page of a host-name issuer, gets a
// passkey login challenge, and returns a sender, the page's csrf_token,
// the cookies and the challenge.
func passkeyLoginSetup(t testing.TB, ts *testServer) (send func(method, path, body string, cookies []*http.Cookie) *httptest.ResponseRecorder, csrf string, cookies []*http.Cookie, challenge string) {
	t.Helper()
	send = func(method, path, body string, cookies []*http.Cookie) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "http://login.test"+path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Sec-Fetch-Site", "same-origin")
		for _, ck := range cookies {
			r.AddCookie(ck)
		}
		w := httptest.NewRecorder()
		ts.Provider.ServeHTTP(w, r)
		return w
	}
	page := send(http.MethodGet, idp.PathLogin, "", nil)
	cookies = page.Result().Cookies()
	m := regexp.MustCompile(`name="csrf_token" value="([^"]*)"`).FindStringSubmatch(page.Body.String())
	if m == nil {
		t.Fatalf("login page without a csrf_token: %s", page.Body)
	}
	csrf = html.UnescapeString(m[1])
	opts := send(http.MethodPost, idp.PathPasskeyOptions, url.Values{"purpose": {"login"}, "csrf_token": {csrf}}.Encode(), cookies)
	if opts.Code != http.StatusOK {
		t.Fatalf("passkey options: %d %s", opts.Code, opts.Body)
	}
	cookies = append(cookies, opts.Result().Cookies()...)
	var o struct {
		PublicKey struct {
			Challenge string `json:"challenge"`
		} `json:"publicKey"`
	}
	if err := json.Unmarshal(opts.Body.Bytes(), &o); err != nil || o.PublicKey.Challenge == "" {
		t.Fatalf("passkey options %s: %v", opts.Body, err)
	}
	return send, csrf, cookies, o.PublicKey.Challenge
}

// TestPasskeyLoginStoreDown: a passkey sign-in whose user's passkeys the
// store cannot read answers 503 with Retry-After; an unknown passkey is
// still 401.
func TestPasskeyLoginStoreDown(t *testing.T) {
	var ps *prefixDownStore
	ts := newServerWithStore(t, func(c *idp.Config) { c.Issuer = "http://login.test" },
		func(s idp.Store) idp.Store { ps = &prefixDownStore{Store: s}; return ps })
	for _, tc := range []struct {
		prefix string // of the keys the store fails
		down   bool
	}{{"passkeys/", true}, {"passkeychallenge/", true}, {"", false}} {
		ps.prefix = tc.prefix
		down := tc.down
		send, csrf, cookies, challenge := passkeyLoginSetup(t, ts)
		cd := base64.RawURLEncoding.EncodeToString([]byte(`{"type":"webauthn.get","challenge":"` + challenge + `","origin":"http://login.test"}`))
		rpHash := sha256.Sum256([]byte("login.test"))
		ad := base64.RawURLEncoding.EncodeToString(append(rpHash[:], 0x05, 0, 0, 0, 1)) // UP, UV, counter 1
		cred := `{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"` + cd + `","authenticatorData":"` + ad + `","signature":"AAAA","userHandle":"AAAA"}}`
		ps.down.Store(down)
		w := send(http.MethodPost, idp.PathPasskeyLogin, url.Values{"csrf_token": {csrf}, "credential": {cred}}.Encode(), cookies)
		ps.down.Store(false)
		want := http.StatusUnauthorized
		if down {
			want = http.StatusServiceUnavailable
		}
		if w.Code != want || down && w.Header().Get("Retry-After") == "" {
			t.Errorf("store down for %q: %d Retry-After %q, want %d", tc.prefix, w.Code, w.Header().Get("Retry-After"), want)
		}
	}
}

// TestPasskeyOptionsThrottled: each call of the passkey options stores a
// challenge for minutes, so one client IP gets some tens at once, then
// 429 with Retry-After, and more again as time passes.
func TestPasskeyOptionsThrottled(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) { c.Issuer = "http://login.test" })
	send, csrf, cookies, _ := passkeyLoginSetup(t, ts)
	form := url.Values{"purpose": {"login"}, "csrf_token": {csrf}}.Encode()
	ok := 1 // passkeyLoginSetup's
	var w *httptest.ResponseRecorder
	for range 200 {
		if w = send(http.MethodPost, idp.PathPasskeyOptions, form, cookies); w.Code != http.StatusOK {
			break
		}
		ok++
	}
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), `"error"`) {
		t.Fatalf("after %d options: %d Retry-After %q %s", ok, w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if ok < 20 || ok > 60 {
		t.Errorf("%d options before the throttle, want some tens", ok)
	}
	ts.clock.Advance(time.Minute)
	if w := send(http.MethodPost, idp.PathPasskeyOptions, form, cookies); w.Code != http.StatusOK {
		t.Fatalf("a minute later: %d %s", w.Code, w.Body)
	}
}
