package caddytest

import (
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// NewBrowser returns a client that keeps cookies and, so that each step
// can be checked, does not follow redirects.
func NewBrowser(t testing.TB) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Login logs username in on the provider's login page at loginURL, where
// an authorization request has sent browser, and submits the form as a
// browser would: its hidden csrf_token and request with the credentials,
// to its action. It returns where the provider then redirects, without
// following it.
func Login(t testing.TB, browser *http.Client, loginURL *url.URL, username, password string) *url.URL {
	t.Helper()
	resp, page := LoginAttempt(t, browser, loginURL, username, password)
	next, err := resp.Location()
	if err != nil {
		t.Fatalf("login: status %d, no redirect:\n%s", resp.StatusCode, page)
	}
	return next
}

// LoginAttempt submits the login form as [Login] does, and returns the
// provider's answer with its body, whatever it is.
func LoginAttempt(t testing.TB, browser *http.Client, loginURL *url.URL, username, password string) (*http.Response, string) {
	t.Helper()
	resp, page := send(t, browser, loginURL.String(), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login page: status %d:\n%s", resp.StatusCode, page)
	}
	rawAction, ok := attr(page, `<form[^>]*\baction="([^"]*)"`)
	if !ok {
		t.Fatalf("login page has no form action:\n%s", page)
	}
	action, err := loginURL.Parse(rawAction)
	if err != nil {
		t.Fatalf("login page: form action %q: %v", rawAction, err)
	}
	form := url.Values{
		"csrf_token": {hiddenInput(t, page, "csrf_token")},
		"request":    {hiddenInput(t, page, "request")},
		"username":   {username},
		"password":   {password},
	}
	return send(t, browser, action.String(), form)
}

// Consent allows what the provider's consent page at consentURL asks, as
// a user does who leaves "Remember my decision" checked: it opens the page
// and posts its form to its action. It returns where the provider then
// redirects, without following it.
func Consent(t testing.TB, browser *http.Client, consentURL *url.URL) *url.URL {
	t.Helper()
	resp, page := send(t, browser, consentURL.String(), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("consent page: status %d:\n%s", resp.StatusCode, page)
	}
	rawAction, ok := attr(page, `<form[^>]*\baction="([^"]*)"`)
	if !ok {
		t.Fatalf("consent page has no form action:\n%s", page)
	}
	action, err := consentURL.Parse(rawAction)
	if err != nil {
		t.Fatalf("consent page: form action %q: %v", rawAction, err)
	}
	form := url.Values{
		"csrf_token": {hiddenInput(t, page, "csrf_token")},
		"request":    {hiddenInput(t, page, "request")},
		"remember":   {"1"},
		"decision":   {"allow"},
	}
	resp, page = send(t, browser, action.String(), form)
	next, err := resp.Location()
	if err != nil {
		t.Fatalf("consent: status %d, no redirect:\n%s", resp.StatusCode, page)
	}
	return next
}

// SignOut signs browser out of the gateway whose sign-out page is at
// signOutURL as a user does: it opens the page and posts its form, with
// the form's token, to its action. It returns where the gateway then
// redirects, without following it.
func SignOut(t testing.TB, browser *http.Client, signOutURL string) *url.URL {
	t.Helper()
	resp, page := send(t, browser, signOutURL, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sign-out page: status %d:\n%s", resp.StatusCode, page)
	}
	resp, page = send(t, browser, signOutURL, url.Values{"token": {hiddenInput(t, page, "token")}})
	next, err := resp.Location()
	if err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: status %d, want 303:\n%s", resp.StatusCode, page)
	}
	return next
}

// send sends browser to target, a GET, or with form a POST of it as a
// browser submits a form, and returns the response with its body read.
func send(t testing.TB, browser *http.Client, target string, form url.Values) (*http.Response, string) {
	t.Helper()
	method, body := http.MethodGet, io.Reader(nil)
	if form != nil {
		method, body = http.MethodPost, strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(t.Context(), method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, ReadBody(t, resp)
}

// hiddenInput returns the value of the form input named name in page.
func hiddenInput(t testing.TB, page, name string) string {
	t.Helper()
	v, ok := attr(page, `<input[^>]*\bname="`+regexp.QuoteMeta(name)+`"[^>]*\bvalue="([^"]*)"`)
	if !ok {
		t.Fatalf("page has no input %q:\n%s", name, page)
	}
	return v
}

// attr returns the attribute value that the group of pattern matches in
// page, unescaped.
func attr(page, pattern string) (string, bool) {
	m := regexp.MustCompile(pattern).FindStringSubmatch(page)
	if m == nil {
		return "", false
	}
	return html.UnescapeString(m[1]), true
}

// ReadBody reads resp's body and closes it.
func ReadBody(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
