package idp_test

import (
	"context"
	"errors"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/authgate/authgate/idp"
)

// withDevice adds the public client cli, allowed the device flow and
// offline_access, and polls of every second.
func withDevice(edit func(*idp.Config)) func(*idp.Config) {
	return func(c *idp.Config) {
		c.Clients = append(c.Clients, idp.Client{
			ID: "cli", Public: true, AllowDeviceFlow: true, AllowOfflineAccess: true,
			AllowedScopes: []string{"openid", "profile", "email", "api"},
		})
		c.DevicePollInterval = time.Second
		if edit != nil {
			edit(c)
		}
	}
}

func deviceConfig(ts *testServer, scopes ...string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: "cli",
		Endpoint: oauth2.Endpoint{
			DeviceAuthURL: ts.URL + idp.PathDeviceAuthorization,
			TokenURL:      ts.URL + idp.PathToken,
			AuthStyle:     oauth2.AuthStyleInParams,
		},
		Scopes: scopes,
	}
}

var deviceFieldRE = regexp.MustCompile(`name="(csrf_token|user_code)" value="([^"]*)"`)

// deviceFields returns the hidden and prefilled fields of a device page.
func deviceFields(t testing.TB, body string) url.Values {
	t.Helper()
	form := url.Values{}
	for _, m := range deviceFieldRE.FindAllStringSubmatch(body, -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	if form.Get("csrf_token") == "" {
		t.Fatalf("device page has no csrf_token: %s", body)
	}
	return form
}

// deviceSignIn opens the device page at loc in c, signs alice in on the
// login page it sends to, and returns the device page it comes back to.
func deviceSignIn(t testing.TB, ts *testServer, c *http.Client, loc string) string {
	t.Helper()
	resp, err := c.Get(resolve(ts.URL, loc))
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if l := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.Contains(l, idp.PathLogin) {
		t.Fatalf("device page without a session: %d %q, want a redirect to the login page", resp.StatusCode, l)
	}
	form := loginForm(t, c, ts.URL, resp.Header.Get("Location"))
	form.Set("username", "alice")
	form.Set("password", testPassword)
	resp, err = c.PostForm(ts.URL+idp.PathLogin, form)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	back := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(back, idp.PathDevice) {
		t.Fatalf("login from the device page: %d %q, want 303 back to the device page", resp.StatusCode, back)
	}
	resp, err = c.Get(resolve(ts.URL, back))
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("device page: %d: %s", resp.StatusCode, body)
	}
	return body
}

// postDevice posts the device page's form with user_code and, if not
// empty, decision, and returns status and body.
func postDevice(t testing.TB, ts *testServer, c *http.Client, page, userCode, decision string) (int, string) {
	t.Helper()
	form := deviceFields(t, page)
	form.Set("user_code", userCode)
	if decision != "" {
		form.Set("decision", decision)
	}
	resp, err := c.PostForm(ts.URL+idp.PathDevice, form)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, readBody(t, resp)
}

// pollDevice polls the token endpoint once for code as client cli and
// returns the error code, or "" with tokens.
func pollDevice(t testing.TB, ts *testServer, code string) (string, map[string]any) {
	t.Helper()
	resp, body := postToken(t, ts, "", "", url.Values{"grant_type": {idp.GrantTypeDeviceCode}, "device_code": {code}, "client_id": {"cli"}})
	var out map[string]any
	if err := jsonUnmarshal(body, &out); err != nil {
		t.Fatalf("token response %q: %v", body, err)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	if e, _ := out["error"].(string); e != "" {
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("error %s with status %d, want 400", e, resp.StatusCode)
		}
		return e, nil
	}
	return "", out
}

// TestDeviceFlow: x/oauth2 polls while a signed-in user enters the code,
// sees the client and scopes and approves; the device gets an access
// token, an ID token with the user's claims and a refresh token, once.
func TestDeviceFlow(t *testing.T) {
	var events eventLog
	ts := newServer(t, withEvents(&events, withDevice(func(c *idp.Config) { c.Now = time.Now })))
	cfg := deviceConfig(ts, "openid", "profile", "email", "offline_access")
	ctx := context.Background()
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("DeviceAuth: %v", err)
	}
	if !regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`).MatchString(da.UserCode) {
		t.Errorf("user_code %q, want XXXX-XXXX of consonants", da.UserCode)
	}
	if da.VerificationURI != ts.URL+idp.PathDevice || da.VerificationURIComplete != ts.URL+idp.PathDevice+"?user_code="+da.UserCode {
		t.Errorf("verification URIs %q %q", da.VerificationURI, da.VerificationURIComplete)
	}
	if da.Interval != 1 || time.Until(da.Expiry) < 9*time.Minute || time.Until(da.Expiry) > 10*time.Minute {
		t.Errorf("interval %d, expiry in %v; want 1 and 10m", da.Interval, time.Until(da.Expiry))
	}
	if len(da.DeviceCode) < 40 {
		t.Errorf("device_code %q is short", da.DeviceCode)
	}

	type result struct {
		tok *oauth2.Token
		err error
	}
	done := make(chan result, 1)
	pollCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	go func() {
		tok, err := cfg.DeviceAccessToken(pollCtx, da)
		done <- result{tok, err}
	}()

	c := browser(t)
	page := deviceSignIn(t, ts, c, da.VerificationURIComplete)
	if f := deviceFields(t, page); f.Get("user_code") != da.UserCode {
		t.Errorf("device page prefilled %q, want %q", f.Get("user_code"), da.UserCode)
	}
	// Typed in lower case, without the dash, with a space.
	typed := strings.ToLower(strings.Replace(da.UserCode, "-", " ", 1))
	status, consent := postDevice(t, ts, c, page, typed, "")
	if status != http.StatusOK || !strings.Contains(consent, `id="client">cli<`) || !strings.Contains(consent, `data-scope="offline_access"`) || !strings.Contains(consent, `id="allow"`) {
		t.Fatalf("consent page: %d: %s", status, consent)
	}
	status, body := postDevice(t, ts, c, consent, deviceFields(t, consent).Get("user_code"), "allow")
	if status != http.StatusOK || !strings.Contains(body, "Device connected") {
		t.Fatalf("approve: %d: %s", status, body)
	}

	var res result
	select {
	case res = <-done:
	case <-pollCtx.Done():
		t.Fatal("no token before the deadline")
	}
	if res.err != nil {
		t.Fatalf("DeviceAccessToken: %v", res.err)
	}
	if res.tok.AccessToken == "" || res.tok.RefreshToken == "" {
		t.Errorf("token %+v: want access and refresh tokens", res.tok)
	}
	raw, _ := res.tok.Extra("id_token").(string)
	prov, err := oidc.NewProvider(ctx, ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	idt, err := prov.Verifier(&oidc.Config{ClientID: "cli"}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("id token: %v", err)
	}
	var claims struct {
		Name  string `json:"name"`
		Email string `json:"email"`
	}
	if err := idt.Claims(&claims); err != nil || claims.Name != "Alice Smith" || claims.Email != "AliceSmith@email.com" || idt.Subject != idp.DeriveSubject("alice") {
		t.Errorf("id token claims %+v sub %q (%v)", claims, idt.Subject, err)
	}
	// The device_code is spent.
	if code, _ := pollDevice(t, ts, da.DeviceCode); code != idp.ErrInvalidGrant {
		t.Errorf("poll after the tokens: %q, want invalid_grant", code)
	}
	// The user_code too.
	if status, body := postDevice(t, ts, c, page, da.UserCode, ""); status != http.StatusOK || !strings.Contains(body, `id="error"`) {
		t.Errorf("used user_code: %d: %s", status, body)
	}
	events.await(t, "device approval", func(e idp.Event) bool {
		return e.Type == idp.EventDeviceAuthorization && e.Outcome == idp.OutcomeGranted && e.ClientID == "cli" && e.Subject == idp.DeriveSubject("alice")
	})
	events.await(t, "device token", func(e idp.Event) bool {
		return e.Type == idp.EventTokenIssued && e.GrantType == idp.GrantTypeDeviceCode && e.ClientID == "cli"
	})

	// Discovery says so.
	var doc struct {
		Endpoint string   `json:"device_authorization_endpoint"`
		Grants   []string `json:"grant_types_supported"`
	}
	resp, err := http.Get(ts.URL + idp.PathDiscovery)
	if err != nil {
		t.Fatal(err)
	}
	if err := jsonUnmarshal(readBody(t, resp), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Endpoint != ts.URL+idp.PathDeviceAuthorization || !strings.Contains(strings.Join(doc.Grants, " "), idp.GrantTypeDeviceCode) {
		t.Errorf("discovery: %+v", doc)
	}
}

// TestDevicePolling: pending, slow_down with an interval 5 s longer each
// time, denied, expired, and the device_code of another client.
func TestDevicePolling(t *testing.T) {
	var events eventLog
	ts := newServer(t, withEvents(&events, withDevice(func(c *idp.Config) {
		c.Clients = append(c.Clients, idp.Client{ID: "tv", Secret: "tv-secret", AllowDeviceFlow: true})
	})))
	cfg := deviceConfig(ts, "openid")
	ctx := context.Background()

	t.Run("pending and slow_down", func(t *testing.T) {
		da, err := cfg.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			after time.Duration
			want  string
		}{
			{0, idp.ErrAuthorizationPending},
			{0, idp.ErrSlowDown},               // interval 1 s, now 6 s
			{5 * time.Second, idp.ErrSlowDown}, // now 11 s
			{11 * time.Second, idp.ErrAuthorizationPending},
			{11 * time.Second, idp.ErrAuthorizationPending},
		}
		for i, s := range steps {
			ts.clock.Advance(s.after)
			if got, _ := pollDevice(t, ts, da.DeviceCode); got != s.want {
				t.Fatalf("poll %d: %q, want %q", i, got, s.want)
			}
		}
		for _, e := range events.all() {
			if e.Type == idp.EventTokenError {
				t.Errorf("a poll was reported as a token error: %+v", e)
			}
		}
	})

	t.Run("denied", func(t *testing.T) {
		da, err := cfg.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := browser(t)
		page := deviceSignIn(t, ts, c, da.VerificationURI)
		status, body := postDevice(t, ts, c, page, da.UserCode, "deny")
		if status != http.StatusOK || !strings.Contains(body, "denied") {
			t.Fatalf("deny: %d: %s", status, body)
		}
		_, err = cfg.DeviceAccessToken(ctx, da)
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != idp.ErrAccessDenied {
			t.Fatalf("DeviceAccessToken after a denial: %v, want access_denied", err)
		}
		events.await(t, "device denial", func(e idp.Event) bool {
			return e.Type == idp.EventDeviceAuthorization && e.Outcome == idp.OutcomeDenied && e.ClientID == "cli"
		})
	})

	t.Run("expired", func(t *testing.T) {
		da, err := cfg.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ts.clock.Advance(idp.DefaultDeviceCodeLifetime)
		c := browser(t)
		page := deviceSignIn(t, ts, c, da.VerificationURIComplete)
		if status, body := postDevice(t, ts, c, page, da.UserCode, ""); status != http.StatusOK || !strings.Contains(body, `id="error"`) {
			t.Errorf("expired user_code: %d: %s", status, body)
		}
		_, err = cfg.DeviceAccessToken(ctx, da)
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != idp.ErrExpiredToken {
			t.Fatalf("DeviceAccessToken after expiry: %v, want expired_token", err)
		}
	})

	t.Run("another client", func(t *testing.T) {
		da, err := cfg.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		resp, body := postToken(t, ts, "tv", "tv-secret", url.Values{"grant_type": {idp.GrantTypeDeviceCode}, "device_code": {da.DeviceCode}})
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, idp.ErrInvalidGrant) {
			t.Errorf("device_code of cli from tv: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("unknown and missing device_code", func(t *testing.T) {
		if got, _ := pollDevice(t, ts, "nope"); got != idp.ErrInvalidGrant {
			t.Errorf("unknown device_code: %q", got)
		}
		if got, _ := pollDevice(t, ts, ""); got != idp.ErrInvalidRequest {
			t.Errorf("no device_code: %q", got)
		}
	})
}

// TestDeviceAuthorizationErrors: the endpoint refuses clients not allowed
// the grant, scopes they may not have, and bad credentials.
func TestDeviceAuthorizationErrors(t *testing.T) {
	ts := newServer(t, withDevice(func(c *idp.Config) {
		c.Clients = append(c.Clients, idp.Client{ID: "tv", Secret: "tv-secret", AllowDeviceFlow: true})
	}))
	ctx := context.Background()
	tests := []struct {
		name, id, secret string
		scopes           []string
		want             string
	}{
		{"client without the grant", "demo-app", testSecret, []string{"openid"}, idp.ErrUnauthorizedClient},
		{"unknown scope", "cli", "", []string{"openid", "nope"}, idp.ErrInvalidScope},
		{"no scope", "cli", "", nil, idp.ErrInvalidScope},
		{"wrong secret", "tv", "wrong", []string{"openid"}, idp.ErrInvalidClient},
		{"unknown client", "who", "", []string{"openid"}, idp.ErrInvalidClient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := deviceConfig(ts, tt.scopes...)
			cfg.ClientID = tt.id
			var opts []oauth2.AuthCodeOption
			if tt.secret != "" {
				// DeviceAuth sends no secret of its own (x/oauth2 v0.37).
				opts = append(opts, oauth2.SetAuthURLParam("client_secret", tt.secret))
			}
			_, err := cfg.DeviceAuth(ctx, opts...)
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) || re.ErrorCode != tt.want {
				t.Fatalf("DeviceAuth: %v, want %s", err, tt.want)
			}
		})
	}
	t.Run("confidential client", func(t *testing.T) {
		cfg := deviceConfig(ts, "openid")
		cfg.ClientID = "tv"
		da, err := cfg.DeviceAuth(ctx, oauth2.SetAuthURLParam("client_secret", "tv-secret"))
		if err != nil || da.DeviceCode == "" {
			t.Fatalf("DeviceAuth: %v", err)
		}
	})
}

// TestDeviceUserCodeThrottle: wrong codes on the device page count
// against the session and the client IP; past the free ones the page
// refuses to look any code up, the right one too.
func TestDeviceUserCodeThrottle(t *testing.T) {
	var events eventLog
	ts := newServer(t, withEvents(&events, withDevice(func(c *idp.Config) {
		c.Throttle.UserIP = idp.ThrottleLimit{Free: 1, Base: time.Minute, Max: time.Hour}
	})))
	da, err := deviceConfig(ts, "openid").DeviceAuth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := browser(t)
	page := deviceSignIn(t, ts, c, idp.PathDevice)
	for i, typed := range []string{"BBBB-BBBB", "not a code"} {
		if status, body := postDevice(t, ts, c, page, typed, ""); status != http.StatusOK || !strings.Contains(body, "That code is wrong") {
			t.Fatalf("wrong code %d: %d: %s", i, status, body)
		}
	}
	status, body := postDevice(t, ts, c, page, da.UserCode, "")
	if status != http.StatusTooManyRequests || !strings.Contains(body, "Too many wrong codes") {
		t.Fatalf("right code after the free wrong ones: %d: %s", status, body)
	}
	events.await(t, "throttled", func(e idp.Event) bool {
		return e.Type == idp.EventDeviceAuthorization && e.Outcome == idp.OutcomeThrottled
	})
	ts.clock.Advance(time.Minute)
	if status, body := postDevice(t, ts, c, page, da.UserCode, ""); status != http.StatusOK || !strings.Contains(body, `id="allow"`) {
		t.Fatalf("right code after the wait: %d: %s", status, body)
	}
}

// TestDevicePageCSRF: a form posted without its token, or from another
// site, decides nothing.
func TestDevicePageCSRF(t *testing.T) {
	ts := newServer(t, withDevice(nil))
	da, err := deviceConfig(ts, "openid").DeviceAuth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := browser(t)
	page := deviceSignIn(t, ts, c, idp.PathDevice)
	form := deviceFields(t, page)
	form.Set("user_code", da.UserCode)
	form.Set("decision", "allow")
	req, _ := http.NewRequest(http.MethodPost, ts.URL+idp.PathDevice, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("cross-site post: %d: %s", resp.StatusCode, body)
	}
	form.Del("csrf_token")
	resp, err = c.PostForm(ts.URL+idp.PathDevice, form)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("post without a token: %d: %s", resp.StatusCode, body)
	}
	if got, _ := pollDevice(t, ts, da.DeviceCode); got != idp.ErrAuthorizationPending {
		t.Errorf("after the refused forms: %q, want authorization_pending", got)
	}
}
