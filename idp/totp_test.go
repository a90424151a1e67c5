package idp_test

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/authgate/authgate/idp"
)

// operatorSecret is a 160-bit base32 secret, as an operator writes it.
const operatorSecret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

var (
	secretRE   = regexp.MustCompile(`<code id="secret">([A-Z2-7]+)</code>`)
	enrolRE    = regexp.MustCompile(`name="enrolment" value="([^"]*)"`)
	csrfRE     = regexp.MustCompile(`name="csrf_token" value="([^"]*)"`)
	recoveryRE = regexp.MustCompile(`<li>([a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4})</li>`)
	stateRE    = regexp.MustCompile(`data-state="([a-z_]+)"`)
)

// codeAt is the TOTP code of secret at t.
func codeAt(t testing.TB, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// page gets path with c and returns status and body.
func page(t testing.TB, c *http.Client, ts *testServer, path string) (int, string) {
	t.Helper()
	resp, err := c.Get(ts.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, readBody(t, resp)
}

func post(t testing.TB, c *http.Client, ts *testServer, path string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(ts.URL+path, form)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readBody(t, resp)
}

func csrfOf(t testing.TB, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf_token in %s", body)
	}
	return html.UnescapeString(m[1])
}

// signInDirect signs alice in at the login page itself (no client) with
// her password only, and returns the browser.
func signInDirect(t testing.TB, ts *testServer) *http.Client {
	t.Helper()
	c := browser(t)
	form := loginForm(t, c, ts.URL, "/account/login")
	form.Set("username", "alice")
	form.Set("password", testPassword)
	resp, body := post(t, c, ts, "/account/login", form)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "You are signed in") {
		t.Fatalf("direct login: %d %s", resp.StatusCode, body)
	}
	return c
}

// enrol signs alice in and enrols TOTP for her; it returns the secret
// and the recovery codes.
func enrol(t testing.TB, ts *testServer) (string, []string) {
	t.Helper()
	c := signInDirect(t, ts)
	st, body := page(t, c, ts, idp.PathTOTP)
	if st != http.StatusOK || stateRE.FindStringSubmatch(body)[1] != "enrol" {
		t.Fatalf("totp page: %d %s", st, body)
	}
	if !strings.Contains(body, `src="data:image/png;base64,`) {
		t.Errorf("no inline QR code: %s", body)
	}
	secret := secretRE.FindStringSubmatch(body)[1]
	form := url.Values{"csrf_token": {csrfOf(t, body)}, "action": {"enrol"}, "enrolment": {html.UnescapeString(enrolRE.FindStringSubmatch(body)[1])}}

	// A wrong code stores nothing, nor does a wrong password.
	form.Set("code", "000000")
	if codeAt(t, secret, ts.clock.Now()) == "000000" {
		form.Set("code", "111111")
	}
	form.Set("password", testPassword)
	_, body = post(t, c, ts, idp.PathTOTP, form)
	if !strings.Contains(body, "code is not right") || secretRE.FindStringSubmatch(body)[1] != secret {
		t.Fatalf("wrong confirmation code: %s", body)
	}
	form.Set("csrf_token", csrfOf(t, body))
	form.Set("code", codeAt(t, secret, ts.clock.Now()))
	form.Set("password", "not-"+testPassword)
	_, body = post(t, c, ts, idp.PathTOTP, form)
	if !strings.Contains(body, "password is not right") || secretRE.FindStringSubmatch(body)[1] != secret {
		t.Fatalf("wrong password: %s", body)
	}
	form.Set("password", testPassword)
	form.Set("csrf_token", csrfOf(t, body))
	form.Set("code", codeAt(t, secret, ts.clock.Now()))
	resp, body := post(t, c, ts, idp.PathTOTP, form)
	var codes []string
	for _, m := range recoveryRE.FindAllStringSubmatch(body, -1) {
		codes = append(codes, m[1])
	}
	if resp.StatusCode != http.StatusOK || len(codes) != 10 {
		t.Fatalf("confirmation: %d, %d recovery codes: %s", resp.StatusCode, len(codes), body)
	}
	return secret, codes
}

// passwordStep drives authorize and the password, and returns the
// browser, now at the code step.
func passwordStep(t testing.TB, ts *testServer) *http.Client {
	t.Helper()
	c := browser(t)
	_, ch := pkce("v")
	resp := authorize(t, ts, c, authorizeParams(ch))
	form := loginForm(t, c, ts.URL, resp.Header.Get("Location"))
	form.Set("username", "alice")
	form.Set("password", testPassword)
	resp, body := post(t, c, ts, "/account/login", form)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != idp.PathLoginTOTP {
		t.Fatalf("password step: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == idp.SessionCookie {
			t.Fatal("the password step made a session")
		}
	}
	return c
}

// codeStep sends code at the code step and returns the response.
func codeStep(t testing.TB, ts *testServer, c *http.Client, code string) (*http.Response, string) {
	t.Helper()
	st, body := page(t, c, ts, idp.PathLoginTOTP)
	if st != http.StatusOK {
		t.Fatalf("code page: %d %s", st, body)
	}
	return post(t, c, ts, idp.PathLoginTOTP, url.Values{"csrf_token": {csrfOf(t, body)}, "code": {code}})
}

// amrAfter exchanges the code of the redirect loc and returns the ID
// token's amr.
func amrAfter(t *testing.T, ts *testServer, loc string) string {
	t.Helper()
	u, _ := url.Parse(loc)
	code := u.Query().Get("code")
	if code == "" {
		t.Fatalf("no code in %s", loc)
	}
	verifier, _ := pkce("v")
	resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("exchange: %d %s", resp.StatusCode, body)
	}
	var tk tokens
	jsonUnmarshal(body, &tk)
	return fmt.Sprint(claimsOf(t, tk.IDToken)["amr"])
}

func TestTOTPEnrolAndSignIn(t *testing.T) {
	ts := newServer(t, nil)
	secret, codes := enrol(t, ts)

	// The confirming code is spent: it does not sign in.
	c := passwordStep(t, ts)
	resp, body := codeStep(t, ts, c, codeAt(t, secret, ts.clock.Now()))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "already used") {
		t.Fatalf("confirming code reused: %d %s", resp.StatusCode, body)
	}

	// The next code signs in, with amr pwd otp mfa.
	ts.clock.Advance(30 * time.Second)
	code := codeAt(t, secret, ts.clock.Now())
	resp, body = codeStep(t, ts, c, code)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("code step: %d %s", resp.StatusCode, body)
	}
	if got := amrAfter(t, ts, resp.Header.Get("Location")); got != "[pwd otp mfa]" {
		t.Errorf("amr = %s, want [pwd otp mfa]", got)
	}
	// The pending login is spent too.
	if st, _ := page(t, c, ts, idp.PathLoginTOTP); st != http.StatusBadRequest {
		t.Errorf("code page after the login: %d, want 400", st)
	}

	// A replayed code, in another login, is refused.
	c2 := passwordStep(t, ts)
	resp, body = codeStep(t, ts, c2, code)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "already used") {
		t.Fatalf("replayed code: %d %s", resp.StatusCode, body)
	}

	// A recovery code works, once.
	resp, body = codeStep(t, ts, c2, strings.ToUpper(codes[3]))
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("recovery code: %d %s", resp.StatusCode, body)
	}
	if got := amrAfter(t, ts, resp.Header.Get("Location")); got != "[pwd otp mfa]" {
		t.Errorf("amr after a recovery code = %s", got)
	}
	c3 := passwordStep(t, ts)
	resp, body = codeStep(t, ts, c3, codes[3])
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Invalid code") {
		t.Fatalf("recovery code used twice: %d %s", resp.StatusCode, body)
	}
}

func TestTOTPPendingLoginIsBoundToTheBrowser(t *testing.T) {
	ts := newServer(t, nil)
	secret, _ := enrol(t, ts)
	passwordStep(t, ts)
	ts.clock.Advance(30 * time.Second)
	// Another browser, without the cookie, cannot finish it.
	other := browser(t)
	st, _ := page(t, other, ts, idp.PathLoginTOTP)
	if st != http.StatusBadRequest {
		t.Fatalf("code page without the cookie: %d, want 400", st)
	}
	// Nor can the first after the pending login expired.
	c := passwordStep(t, ts)
	ts.clock.Advance(6 * time.Minute)
	resp, body := post(t, c, ts, idp.PathLoginTOTP, url.Values{"code": {codeAt(t, secret, ts.clock.Now())}})
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("code after 6 minutes: %d, want 400: %s", resp.StatusCode, body)
	}
}

func TestTOTPWrongCodesAreThrottled(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		c.Throttle.UserIP = idp.ThrottleLimit{Free: 3, Base: time.Minute, Max: time.Hour}
	})
	secret, _ := enrol(t, ts)
	ts.clock.Advance(30 * time.Second)
	c := passwordStep(t, ts)
	good := codeAt(t, secret, ts.clock.Now())
	wrong := fmt.Sprintf("%06d", (atoi(good)+1)%1000000)
	for i := range 4 {
		resp, body := codeStep(t, ts, c, wrong)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Invalid code") {
			t.Fatalf("wrong code %d: %d %s", i, resp.StatusCode, body)
		}
	}
	// The fifth attempt waits, even with the right code.
	resp, body := codeStep(t, ts, c, good)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("after 4 wrong codes: %d %s", resp.StatusCode, body)
	}
	ts.clock.Advance(61 * time.Second)
	c = passwordStep(t, ts)
	resp, body = codeStep(t, ts, c, codeAt(t, secret, ts.clock.Now()))
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after the wait: %d %s", resp.StatusCode, body)
	}
}

func atoi(s string) int {
	n := 0
	for _, r := range s {
		n = n*10 + int(r-'0')
	}
	return n
}

func TestTOTPConcurrentCodeOnce(t *testing.T) {
	ts := newServer(t, nil)
	secret, _ := enrol(t, ts)
	ts.clock.Advance(30 * time.Second)
	concurrentCodeOnce(t, ts, secret)
}

// concurrentCodeOnce sends the current code of secret from 4 browsers at
// once, each at its own code step: exactly one signs in.
func concurrentCodeOnce(t *testing.T, ts *testServer, secret string) {
	t.Helper()
	code := codeAt(t, secret, ts.clock.Now())
	var browsers []*http.Client
	var csrf []string
	for range 4 {
		c := passwordStep(t, ts)
		_, body := page(t, c, ts, idp.PathLoginTOTP)
		browsers, csrf = append(browsers, c), append(csrf, csrfOf(t, body))
	}
	var wg sync.WaitGroup
	statuses := make([]int, len(browsers))
	for i, c := range browsers {
		wg.Go(func() {
			resp, err := c.PostForm(ts.URL+idp.PathLoginTOTP, url.Values{"csrf_token": {csrf[i]}, "code": {code}})
			if err == nil {
				resp.Body.Close()
				statuses[i] = resp.StatusCode
			}
		})
	}
	wg.Wait()
	n := 0
	for _, st := range statuses {
		if st == http.StatusSeeOther {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("one code signed in %d times (%v)", n, statuses)
	}
}

// TestTOTPCodeOnceAcrossNodes: two providers sharing a store, each with
// its own (memory) login throttle, as two nodes on `store storage`: a
// code accepted at one is refused at the other, and sent from browsers at
// both at once it signs in once.
func TestTOTPCodeOnceAcrossNodes(t *testing.T) {
	operator := func(c *idp.Config) { c.Users[0].TOTPSecret = operatorSecret }
	a := newServer(t, operator)
	b := newServerWithStore(t, operator, func(idp.Store) idp.Store { return a.Store })
	code := codeAt(t, operatorSecret, a.clock.Now())
	resp, body := codeStep(t, a, passwordStep(t, a), code)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("node A: %d %s", resp.StatusCode, body)
	}
	resp, body = codeStep(t, b, passwordStep(t, b), code)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "already used") {
		t.Fatalf("node B, the same code: %d %s", resp.StatusCode, body)
	}

	a.clock.Advance(30 * time.Second)
	b.clock.Advance(30 * time.Second)
	code = codeAt(t, operatorSecret, a.clock.Now())
	var wg sync.WaitGroup
	var statuses [4]int
	for i := range statuses {
		ts := []*testServer{a, b}[i%2]
		c := passwordStep(t, ts)
		_, body := page(t, c, ts, idp.PathLoginTOTP)
		tok := csrfOf(t, body)
		wg.Go(func() {
			resp, err := c.PostForm(ts.URL+idp.PathLoginTOTP, url.Values{"csrf_token": {tok}, "code": {code}})
			if err == nil {
				resp.Body.Close()
				statuses[i] = resp.StatusCode
			}
		})
	}
	wg.Wait()
	n := 0
	for _, st := range statuses {
		if st == http.StatusSeeOther {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("one code sent to both nodes signed in %d times (%v)", n, statuses)
	}
}

// noAdder hides the store's Add: a store that cannot add atomically.
type noAdder struct{ idp.Store }

// TestTOTPCodeOnceWithoutAdder: on a store without idp.Adder the login
// throttle records used codes, so one node still accepts a code once.
func TestTOTPCodeOnceWithoutAdder(t *testing.T) {
	ts := newServerWithStore(t, func(c *idp.Config) { c.Users[0].TOTPSecret = operatorSecret },
		func(s idp.Store) idp.Store { return noAdder{s} })
	code := codeAt(t, operatorSecret, ts.clock.Now())
	resp, body := codeStep(t, ts, passwordStep(t, ts), code)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("first use: %d %s", resp.StatusCode, body)
	}
	resp, body = codeStep(t, ts, passwordStep(t, ts), code)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "already used") {
		t.Fatalf("replayed code: %d %s", resp.StatusCode, body)
	}
	ts.clock.Advance(30 * time.Second)
	concurrentCodeOnce(t, ts, operatorSecret)
}

func TestTOTPRemove(t *testing.T) {
	ts := newServer(t, nil)
	secret, _ := enrol(t, ts)
	ts.clock.Advance(30 * time.Second)
	// Sign in through the code step, then remove.
	c := browser(t)
	form := loginForm(t, c, ts.URL, "/account/login")
	form.Set("username", "alice")
	form.Set("password", testPassword)
	post(t, c, ts, "/account/login", form)
	resp, body := codeStep(t, ts, c, codeAt(t, secret, ts.clock.Now()))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "You are signed in") {
		t.Fatalf("direct code step: %d %s", resp.StatusCode, body)
	}
	_, body = page(t, c, ts, idp.PathTOTP)
	if stateRE.FindStringSubmatch(body)[1] != "enrolled" {
		t.Fatalf("totp page of an enrolled user: %s", body)
	}
	// The code just used does not remove it; a fresh one does.
	form = url.Values{"csrf_token": {csrfOf(t, body)}, "action": {"remove"}, "code": {codeAt(t, secret, ts.clock.Now())}}
	_, body = post(t, c, ts, idp.PathTOTP, form)
	if !strings.Contains(body, "already used") {
		t.Fatalf("removal with a used code: %s", body)
	}
	ts.clock.Advance(30 * time.Second)
	form.Set("csrf_token", csrfOf(t, body))
	form.Set("code", codeAt(t, secret, ts.clock.Now()))
	_, body = post(t, c, ts, idp.PathTOTP, form)
	if !strings.Contains(body, "TOTP is removed") {
		t.Fatalf("removal: %s", body)
	}
	signInDirect(t, ts) // the password alone again
}

// TestTOTPDirectLoginAsksForCode: a visit of the login page itself asks
// for the code too, and the password alone makes no session.
func TestTOTPDirectLoginAsksForCode(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) { c.Users[0].TOTPSecret = operatorSecret })
	c := browser(t)
	form := loginForm(t, c, ts.URL, "/account/login")
	form.Set("username", "alice")
	form.Set("password", testPassword)
	resp, body := post(t, c, ts, "/account/login", form)
	if resp.StatusCode != http.StatusSeeOther || strings.Contains(body, "You are signed in") {
		t.Fatalf("password of a TOTP user: %d %s", resp.StatusCode, body)
	}
	if _, body := page(t, c, ts, "/account/login"); strings.Contains(body, "You are signed in") {
		t.Fatal("signed in after the password alone")
	}
}

func TestTOTPOperatorSecret(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		c.Users[0].TOTPSecret = strings.ToLower(operatorSecret[:8]) + " " + operatorSecret[8:]
	})
	c := passwordStep(t, ts)
	resp, body := codeStep(t, ts, c, codeAt(t, operatorSecret, ts.clock.Now()))
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("operator secret: %d %s", resp.StatusCode, body)
	}
	if got := amrAfter(t, ts, resp.Header.Get("Location")); got != "[pwd otp mfa]" {
		t.Errorf("amr = %s", got)
	}
	// The page says so, and removal is refused.
	_, body = page(t, c, ts, idp.PathTOTP)
	if stateRE.FindStringSubmatch(body)[1] != "operator" {
		t.Fatalf("totp page: %s", body)
	}
	_, body = page(t, c, ts, "/account/login") // for a form token
	ts.clock.Advance(30 * time.Second)
	resp, _ = post(t, c, ts, idp.PathTOTP, url.Values{"csrf_token": {csrfOf(t, body)}, "action": {"remove"}, "code": {codeAt(t, operatorSecret, ts.clock.Now())}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("removal of the operator's secret: %d", resp.StatusCode)
	}
	// Nor can another be enrolled over it.
	_, body = page(t, c, ts, "/account/login")
	resp, _ = post(t, c, ts, idp.PathTOTP, url.Values{"csrf_token": {csrfOf(t, body)}, "action": {"enrol"}, "code": {"123456"}})
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("enrolment over the operator's secret: %d", resp.StatusCode)
	}
}

func TestTOTPSecretValidation(t *testing.T) {
	for _, tc := range []struct{ name, secret, want string }{
		{"not base32", "JBSWY3DPEHPK3PXP!BSWY3DPEHPK3PXP", "not base32"},
		{"digit 1", "JBSWY3DPEHPK3PX1JBSWY3DPEHPK3PXP", "not base32"},
		{"80 bits", "JBSWY3DPEHPK3PXP", "at least 128 bits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Issuer = "https://id.example"
			cfg.Users[0].TOTPSecret = tc.secret
			_, err := idp.New(cfg, idp.NewMemoryStore(nil))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"alice"`) || strings.Contains(err.Error(), tc.secret) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestTOTPPasswordGrant(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		c.Clients[0].AllowPasswordGrant = true
		c.Users[0].TOTPSecret = operatorSecret
	})
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {testPassword}, "scope": {"openid"}}
	resp, body := postToken(t, ts, "demo-app", testSecret, form)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"invalid_grant"`) || !strings.Contains(body, "second factor") {
		t.Fatalf("password grant of a TOTP user: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", resp.Header.Get("Cache-Control"))
	}
}

func TestTOTPPageSignedOut(t *testing.T) {
	ts := newServer(t, nil)
	st, body := page(t, browser(t), ts, idp.PathTOTP)
	if st != http.StatusOK || stateRE.FindStringSubmatch(body)[1] != "signed_out" {
		t.Fatalf("signed out: %d %s", st, body)
	}
	resp, _ := post(t, browser(t), ts, idp.PathTOTP, url.Values{"action": {"enrol"}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("signed-out POST: %d", resp.StatusCode)
	}
}

// FuzzNormalizeTOTPSecret: any input is either refused, without the
// input in the error, or normalized to base32 of at least 128 bits that
// normalizes to itself.
func FuzzNormalizeTOTPSecret(f *testing.F) {
	for _, s := range []string{operatorSecret, "jbsw y3dp ehpk 3pxp jbsw y3dp ehpk 3pxp", "JBSWY3DPEHPK3PXP====", "", "1", "====", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := idp.NormalizeTOTPSecret(s)
		if err != nil {
			if len(s) >= 16 && strings.Contains(err.Error(), s) {
				t.Fatalf("error %q echoes the secret", err)
			}
			return
		}
		again, err := idp.NormalizeTOTPSecret(n)
		if err != nil || again != n || len(n) < 26 || strings.Trim(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
			t.Fatalf("%q normalized to %q, then %q, %v", s, n, again, err)
		}
	})
}

// TestTOTPPasswordDoesNotResetCodeThrottle: the right password alone
// does not settle the throttle: were it to, password, wrong codes,
// password, wrong codes... would guess codes unthrottled.
func TestTOTPPasswordDoesNotResetCodeThrottle(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		c.Throttle.UserIP = idp.ThrottleLimit{Free: 5, Base: time.Minute, Max: time.Hour}
	})
	secret, _ := enrol(t, ts)
	ts.clock.Advance(30 * time.Second)
	good := codeAt(t, secret, ts.clock.Now())
	wrong := fmt.Sprintf("%06d", (atoi(good)+1)%1000000)
	throttled := false
	for round := 0; round < 4 && !throttled; round++ {
		c := browser(t)
		_, ch := pkce("v")
		form := loginForm(t, c, ts.URL, authorize(t, ts, c, authorizeParams(ch)).Header.Get("Location"))
		form.Set("username", "alice")
		form.Set("password", testPassword)
		resp, body := post(t, c, ts, "/account/login", form)
		if resp.StatusCode == http.StatusTooManyRequests {
			throttled = true
			break
		}
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("round %d, password: %d %s", round, resp.StatusCode, body)
		}
		for range 2 {
			resp, body := codeStep(t, ts, c, wrong)
			if resp.StatusCode == http.StatusTooManyRequests {
				throttled = true
				break
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("round %d, wrong code: %d %s", round, resp.StatusCode, body)
			}
		}
	}
	if !throttled {
		t.Fatal("4 rounds of the password and 2 wrong codes were never throttled")
	}
}

// TestTOTPSignInsSettleThrottle: a whole sign-in with a code settles its
// password step too: sign-ins one after the other from one address are
// not counted as failures.
func TestTOTPSignInsSettleThrottle(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		c.Throttle.IP = idp.ThrottleLimit{Free: 2, Base: time.Minute, Max: time.Hour}
	})
	secret, _ := enrol(t, ts)
	for i := range 4 {
		ts.clock.Advance(30 * time.Second) // a new code: each is good once
		c := passwordStep(t, ts)
		resp, body := codeStep(t, ts, c, codeAt(t, secret, ts.clock.Now()))
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign-in %d: %d %s", i, resp.StatusCode, body)
		}
	}
}
