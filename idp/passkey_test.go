package idp_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

// TestPasskeyPolicy: what a password sign-in gets where a passkey is
// required by the user, the client or acr_values (step-up), and the ACR
// values discovery lists.
func TestPasskeyPolicy(t *testing.T) {
	passwordLogin := func(t *testing.T, ts *testServer, c *http.Client, q url.Values) (*http.Response, string) {
		t.Helper()
		resp := authorize(t, ts, c, q)
		loc := resp.Header.Get("Location")
		if !strings.Contains(loc, "/account/login") {
			t.Fatalf("authorize went to %q, want the login page", loc)
		}
		form := loginForm(t, c, ts.URL, loc)
		form.Set("username", "alice")
		form.Set("password", testPassword)
		return postLogin(t, ts, c, form)
	}
	_, challenge := pkce("v")

	t.Run("user requires a passkey", func(t *testing.T) {
		ts := newServer(t, func(cfg *idp.Config) { cfg.Users[0].Require = idp.RequirePasskey })
		c := browser(t)
		resp, body := passwordLogin(t, ts, c, authorizeParams(challenge))
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "needs a passkey") {
			t.Fatalf("password login of a passkey user: %d %s", resp.StatusCode, body)
		}
		u, _ := url.Parse(ts.URL)
		for _, ck := range c.Jar.Cookies(u) {
			if ck.Name == idp.SessionCookie {
				t.Fatal("a session was written")
			}
		}
		// Nor does the password grant let her in.
		ts2 := newServer(t, func(cfg *idp.Config) {
			cfg.Users[0].Require = idp.RequirePasskey
			cfg.Clients[0].AllowPasswordGrant = true
		})
		form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {testPassword}, "scope": {"openid"}}
		resp, body = postToken(t, ts2, "demo-app", testSecret, form)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "invalid_grant") {
			t.Fatalf("password grant of a passkey user: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("client requires a passkey or a code", func(t *testing.T) {
		ts := newServer(t, func(cfg *idp.Config) { cfg.Clients[0].Require = idp.RequirePasskeyOrOTP })
		c := browser(t)
		resp, body := passwordLogin(t, ts, c, authorizeParams(challenge))
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "needs a passkey or a one-time code") {
			t.Fatalf("password login for a passkey client: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("acr_values steps up a password session", func(t *testing.T) {
		ts := newServer(t, nil)
		c := browser(t)
		u := login(t, ts, c, authorizeParams(challenge), "alice", testPassword)
		if u.Query().Get("code") == "" {
			t.Fatalf("no code after a password login: %s", u)
		}
		// Unknown values ask for nothing: single sign-on.
		q := authorizeParams(challenge)
		q.Set("acr_values", "urn:example:gold")
		if loc := authorize(t, ts, c, q).Header.Get("Location"); !strings.HasPrefix(loc, testRedirect) {
			t.Fatalf("acr_values of unknown values: went to %s, want single sign-on", loc)
		}
		// phr asks for a passkey: the login page again, which says so.
		q.Set("acr_values", "phr")
		loc := authorize(t, ts, c, q).Header.Get("Location")
		if !strings.Contains(loc, "/account/login") {
			t.Fatalf("acr_values=phr with a password session: went to %s, want the login page", loc)
		}
		resp, err := c.Get(resolve(ts.URL, loc))
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); !strings.Contains(body, "asks you to sign in with a passkey.") {
			t.Errorf("the step-up login page does not say a passkey is needed: %s", body)
		}
		// and without a page to show, login_required.
		q.Set("prompt", "none")
		loc = authorize(t, ts, c, q).Header.Get("Location")
		if r, _ := url.Parse(loc); r == nil || r.Query().Get("error") != "login_required" {
			t.Fatalf("acr_values=phr, prompt=none: %s", loc)
		}
	})

	t.Run("discovery", func(t *testing.T) {
		ts := newServer(t, nil)
		resp, err := http.Get(ts.URL + "/.well-known/openid-configuration")
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			ACR    []string `json:"acr_values_supported"`
			Claims []string `json:"claims_supported"`
		}
		if err := json.Unmarshal([]byte(readBody(t, resp)), &doc); err != nil {
			t.Fatal(err)
		}
		if want := []string{idp.ACRMFA, "phr", "phrh"}; !slices.Equal(doc.ACR, want) {
			t.Errorf("acr_values_supported = %v, want %v", doc.ACR, want)
		}
		if !slices.Contains(doc.Claims, "acr") || !slices.Contains(doc.Claims, "amr") {
			t.Errorf("claims_supported %v lacks acr or amr", doc.Claims)
		}
	})
}

// TestPasskeysConfig: an issuer on an IP address has no passkeys (no RP
// ID can name it); one on a host name has them, with the RP ID its own or
// a parent domain's, never another's.
func TestPasskeysConfig(t *testing.T) {
	ts := newServer(t, nil) // http://127.0.0.1:port
	c := browser(t)
	resp := authorize(t, ts, c, authorizeParams("x"+strings.Repeat("a", 42)))
	resp, err := c.Get(resolve(ts.URL, resp.Header.Get("Location")))
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); strings.Contains(body, "passkey-login") || strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src") {
		t.Errorf("login page of an IP issuer offers passkeys: %s", body)
	}

	cfg := testConfig(t)
	cfg.Issuer = "https://login.example.com"
	for _, tc := range []struct {
		rpID string
		ok   bool
	}{{"", true}, {"example.com", true}, {"login.example.com", true}, {"other.com", false}, {"ample.com", false}} {
		cfg.PasskeyRPID = tc.rpID
		_, err := idp.New(cfg, idp.NewMemoryStore(nil))
		if (err == nil) != tc.ok {
			t.Errorf("RP ID %q: err = %v, want ok %t", tc.rpID, err, tc.ok)
		}
	}
}

// TestPasskeyDevicePolicy: a device flow client that requires a passkey
// is not approved from a password session.
func TestPasskeyDevicePolicy(t *testing.T) {
	ts := newServer(t, withDevice(func(c *idp.Config) {
		c.Now = time.Now
		c.Clients[len(c.Clients)-1].Require = idp.RequirePasskey
	}))
	da, err := deviceConfig(ts, "openid").DeviceAuth(context.Background())
	if err != nil {
		t.Fatalf("DeviceAuth: %v", err)
	}
	c := browser(t)
	page := deviceSignIn(t, ts, c, da.VerificationURIComplete)
	status, body := postDevice(t, ts, c, page, da.UserCode, "allow")
	if status != http.StatusForbidden || !strings.Contains(body, "with a passkey") {
		t.Fatalf("approval from a password session: %d %s", status, body)
	}
	if e, _ := pollDevice(t, ts, da.DeviceCode); e != "authorization_pending" {
		t.Fatalf("device poll after the refusal: %q, want authorization_pending", e)
	}
}

// FuzzPasskeyLogin posts arbitrary passkey answers to the passkey login,
// with a genuine CSRF token, browser cookie and pending challenge: the
// answer is never a 5xx, and never signs anyone in.
func FuzzPasskeyLogin(f *testing.F) {
	ts := newServer(f, func(cfg *idp.Config) { cfg.Issuer = "http://login.test" })
	send := func(method, path, body string, cookies []*http.Cookie) *httptest.ResponseRecorder {
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
	cookies := page.Result().Cookies()
	m := regexp.MustCompile(`name="csrf_token" value="([^"]*)"`).FindStringSubmatch(page.Body.String())
	if m == nil || !strings.Contains(page.Body.String(), `id="passkey-login"`) {
		f.Fatalf("login page of a host name issuer without its passkey form: %s", page.Body)
	}
	csrf := html.UnescapeString(m[1])
	opts := send(http.MethodPost, idp.PathPasskeyOptions, url.Values{"purpose": {"login"}, "csrf_token": {csrf}}.Encode(), cookies)
	if opts.Code != http.StatusOK {
		f.Fatalf("passkey options: %d %s", opts.Code, opts.Body)
	}
	cookies = append(cookies, opts.Result().Cookies()...)
	var o struct {
		PublicKey struct {
			Challenge string `json:"challenge"`
		} `json:"publicKey"`
	}
	if err := json.Unmarshal(opts.Body.Bytes(), &o); err != nil || o.PublicKey.Challenge == "" {
		f.Fatalf("passkey options %s: %v", opts.Body, err)
	}
	cd := base64.RawURLEncoding.EncodeToString([]byte(`{"type":"webauthn.get","challenge":"` + o.PublicKey.Challenge + `","origin":"http://login.test"}`))
	f.Add(`{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"` + cd + `","authenticatorData":"AAAA","signature":"AAAA","userHandle":"AAAA"}}`)
	f.Add(`{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{}}`)
	f.Add(`{}`)
	f.Add(`not json`)
	f.Fuzz(func(t *testing.T, credential string) {
		w := send(http.MethodPost, idp.PathPasskeyLogin, url.Values{"csrf_token": {csrf}, "credential": {credential}}.Encode(), cookies)
		if w.Code >= 500 {
			t.Fatalf("%q: status %d", credential, w.Code)
		}
		for _, ck := range w.Result().Cookies() {
			if ck.Name == idp.SessionCookie && ck.Value != "" {
				t.Fatalf("%q signed someone in", credential)
			}
		}
	})
}

// TestPasskeyEnrolment: a user who must use a passkey and has none yet
// signs in with her password on the account page, to add one; that
// session gets no code for a client.
func TestPasskeyEnrolment(t *testing.T) {
	ts := newServer(t, func(cfg *idp.Config) {
		cfg.Issuer = "http://login.test" // a host name: passkeys on
		cfg.Users[0].Require = idp.RequirePasskey
	})
	c := browser(t)
	resp, err := c.Get(ts.URL + idp.PathPasskeys)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	loc := resp.Header.Get("Location")
	if !strings.Contains(loc, idp.PathLogin) {
		t.Fatalf("passkeys page without a session: %d %q, want the login page", resp.StatusCode, loc)
	}
	form := loginForm(t, c, ts.URL, loc)
	form.Set("username", "alice")
	form.Set("password", testPassword)
	resp, body := postLogin(t, ts, c, form)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != idp.PathPasskeys {
		t.Fatalf("password login to add a first passkey: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	resp, err = c.Get(ts.URL + idp.PathPasskeys)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="passkey-register"`) {
		t.Fatalf("passkeys page: %d %s", resp.StatusCode, body)
	}
	_, challenge := pkce("v")
	if loc := authorize(t, ts, c, authorizeParams(challenge)).Header.Get("Location"); !strings.Contains(loc, idp.PathLogin) {
		t.Fatalf("authorize with the enrolment session went to %s, want the login page", loc)
	}
}
