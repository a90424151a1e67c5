package idp_test

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/authgate/authgate/idp"
)

// trickyState needs escaping in HTML, in a URL and in a fragment.
const trickyState = `s<"&'>#?= x`

// callback is an authorization response as the client receives it.
type callback struct {
	mode   string // how it came: query, fragment or form_post
	params url.Values
}

// readCallback reads the authorization response resp by the mode it came
// in, checking what that mode must look like.
func readCallback(t testing.TB, resp *http.Response, body string) callback {
	t.Helper()
	if resp.StatusCode == http.StatusFound || resp.StatusCode == http.StatusSeeOther {
		loc := resp.Header.Get("Location")
		if !strings.HasPrefix(loc, testRedirect) {
			t.Fatalf("redirected to %q, want the client's redirect URI", loc)
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("redirect Cache-Control %q, want no-store", resp.Header.Get("Cache-Control"))
		}
		u, err := url.Parse(loc)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case u.RawQuery != "" && u.Fragment == "":
			return callback{mode: "query", params: u.Query()}
		case u.RawQuery == "" && u.Fragment != "":
			v, err := url.ParseQuery(u.EscapedFragment())
			if err != nil {
				t.Fatalf("fragment %q: %v", u.EscapedFragment(), err)
			}
			return callback{mode: "fragment", params: v}
		}
		t.Fatalf("redirect %q has neither query nor fragment alone", loc)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want a redirect or the form_post page: %s", resp.StatusCode, body)
	}
	return callback{mode: "form_post", params: readFormPost(t, resp, body)}
}

// readFormPost checks the form_post page (Form Post Response Mode §2)
// and returns the fields its form posts.
func readFormPost(t testing.TB, resp *http.Response, body string) url.Values {
	t.Helper()
	h := resp.Header
	if h.Get("Cache-Control") != "no-store" || h.Get("Referrer-Policy") != "no-referrer" || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("form_post headers: %v", h)
	}
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var forms, buttons int
	var action, method, script string
	fields := url.Values{}
	for n := range doc.Descendants() {
		if n.Type != html.ElementNode {
			continue
		}
		attr := func(name string) string {
			for _, a := range n.Attr {
				if a.Key == name {
					return a.Val
				}
			}
			return ""
		}
		switch n.Data {
		case "form":
			forms++
			action, method = attr("action"), attr("method")
		case "input":
			if attr("type") != "hidden" {
				t.Fatalf("input %q is not hidden", attr("name"))
			}
			fields.Add(attr("name"), attr("value"))
		case "button":
			if attr("type") == "submit" && n.FirstChild != nil && strings.TrimSpace(n.FirstChild.Data) == "Continue" {
				buttons++
			}
		case "script":
			if n.FirstChild != nil {
				script += n.FirstChild.Data
			}
		}
	}
	if forms != 1 || action != testRedirect || !strings.EqualFold(method, "post") || buttons != 1 {
		t.Fatalf("want one form posting to %s with a Continue button; got %d forms, action %q, method %q, %d buttons:\n%s",
			testRedirect, forms, action, method, buttons, body)
	}
	// The CSP allows that one form target and that one script.
	sum := sha256.Sum256([]byte(script))
	wantCSP := "default-src 'none'; form-action " + testRedirect + "; script-src 'sha256-" +
		base64.StdEncoding.EncodeToString(sum[:]) + "'; frame-ancestors 'none'; base-uri 'none'"
	if script == "" || h.Get("Content-Security-Policy") != wantCSP {
		t.Fatalf("CSP %q, want %q", h.Get("Content-Security-Policy"), wantCSP)
	}
	return fields
}

func TestResponseModes(t *testing.T) {
	modes := []struct {
		param string // the response_mode parameter; empty: none
		want  string // how the response comes
	}{
		{"", "query"},
		{"query", "query"},
		{"fragment", "fragment"},
		{"form_post", "form_post"},
	}
	// Each case drives one way a response leaves the provider and returns
	// it with whether it should carry a code (else the error wantErr).
	cases := []struct {
		name    string
		edit    func(*idp.Config)
		run     func(t *testing.T, ts *testServer, q url.Values) (*http.Response, string)
		wantErr string
	}{
		{name: "login completes", run: func(t *testing.T, ts *testServer, q url.Values) (*http.Response, string) {
			c := browser(t)
			resp := authorize(t, ts, c, q)
			form := loginForm(t, c, ts.URL, resp.Header.Get("Location"))
			form.Set("username", "alice")
			form.Set("password", testPassword)
			return postFrom(t, ts, c, "/account/login", form, sameOrigin)
		}},
		{name: "single sign-on", run: func(t *testing.T, ts *testServer, q url.Values) (*http.Response, string) {
			c := browser(t)
			_, ch := pkce("w")
			login(t, ts, c, authorizeParams(ch), "alice", testPassword)
			resp, err := c.Get(ts.URL + "/connect/authorize?" + q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			return resp, readBody(t, resp)
		}},
		{name: "consent given", edit: func(c *idp.Config) { c.Clients[0].RequireConsent = true }, run: consentRun("allow")},
		{name: "consent denied", edit: func(c *idp.Config) { c.Clients[0].RequireConsent = true }, run: consentRun("deny"), wantErr: "access_denied"},
		{name: "prompt=none without session", run: func(t *testing.T, ts *testServer, q url.Values) (*http.Response, string) {
			q.Set("prompt", "none")
			resp, err := browser(t).PostForm(ts.URL+"/connect/authorize", q)
			if err != nil {
				t.Fatal(err)
			}
			return resp, readBody(t, resp)
		}, wantErr: "login_required"},
		{name: "invalid request", run: func(t *testing.T, ts *testServer, q url.Values) (*http.Response, string) {
			q.Set("request", "eyJ.x.y")
			resp, err := browser(t).Get(ts.URL + "/connect/authorize?" + q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			return resp, readBody(t, resp)
		}, wantErr: "request_not_supported"},
	}
	for _, tc := range cases {
		for _, m := range modes {
			t.Run(tc.name+"/"+m.want+"/"+m.param, func(t *testing.T) {
				ts := newServer(t, tc.edit)
				verifier, ch := pkce("v")
				q := authorizeParams(ch)
				q.Set("state", trickyState)
				if m.param != "" {
					q.Set("response_mode", m.param)
				}
				resp, body := tc.run(t, ts, q)
				cb := readCallback(t, resp, body)
				if cb.mode != m.want {
					t.Fatalf("response came by %s, want %s", cb.mode, m.want)
				}
				p := cb.params
				if p.Get("state") != trickyState || p.Get("iss") != ts.URL {
					t.Fatalf("state %q, iss %q; want %q and %q", p.Get("state"), p.Get("iss"), trickyState, ts.URL)
				}
				if tc.wantErr != "" {
					if p.Get("error") != tc.wantErr || p.Has("code") {
						t.Fatalf("params %v, want error %s and no code", p, tc.wantErr)
					}
					return
				}
				if p.Has("error") || p.Get("code") == "" {
					t.Fatalf("params %v, want a code", p)
				}
				if resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(p.Get("code"), verifier)); resp.StatusCode != http.StatusOK {
					t.Fatalf("exchanging the code: %d %s", resp.StatusCode, body)
				}
			})
		}
	}
}

// consentRun logs in for a client that asks for consent, and answers the
// consent page with decision.
func consentRun(decision string) func(t *testing.T, ts *testServer, q url.Values) (*http.Response, string) {
	return func(t *testing.T, ts *testServer, q url.Values) (*http.Response, string) {
		c := browser(t)
		resp := authorize(t, ts, c, q)
		form := loginForm(t, c, ts.URL, resp.Header.Get("Location"))
		form.Set("username", "alice")
		form.Set("password", testPassword)
		resp, _ = postFrom(t, ts, c, "/account/login", form, sameOrigin)
		loc := resp.Header.Get("Location")
		if !strings.Contains(loc, "/account/consent") {
			t.Fatalf("want the consent page, redirected to %s", loc)
		}
		form = loginForm(t, c, ts.URL, loc)
		form.Set("decision", decision)
		return postFrom(t, ts, c, "/account/consent", form, sameOrigin)
	}
}

// TestResponseModeRefused: a response mode that cannot be used is an
// invalid_request, which goes back by the default mode, query.
func TestResponseModeRefused(t *testing.T) {
	tests := []struct {
		name string
		edit func(url.Values)
		cfg  func(*idp.Config)
	}{
		{name: "unknown mode", edit: func(q url.Values) { q.Set("response_mode", "web_message") }},
		{name: "jwt mode", edit: func(q url.Values) { q.Set("response_mode", "form_post.jwt") }},
		{name: "mode given twice", edit: func(q url.Values) { q["response_mode"] = []string{"form_post", "form_post"} }},
		{name: "form_post to a native app", edit: func(q url.Values) {
			q.Set("redirect_uri", "com.example.app:/cb")
			q.Set("response_mode", "form_post")
		}, cfg: func(c *idp.Config) {
			c.Clients[0].RedirectURIs = append(c.Clients[0].RedirectURIs, "com.example.app:/cb")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newServer(t, tt.cfg)
			_, ch := pkce("v")
			q := authorizeParams(ch)
			tt.edit(q)
			resp := authorize(t, ts, browser(t), q)
			loc, err := resp.Location()
			if resp.StatusCode != http.StatusFound || err != nil {
				t.Fatalf("status %d, want a 302 to the client", resp.StatusCode)
			}
			if loc.Fragment != "" || !strings.HasPrefix(loc.String(), q.Get("redirect_uri")+"?") {
				t.Fatalf("redirected to %s, want the redirect URI's query", loc)
			}
			if got := loc.Query(); got.Get("error") != "invalid_request" || got.Get("state") != "st-123" || got.Get("iss") != ts.URL {
				t.Fatalf("callback query %v, want invalid_request with state and iss", got)
			}
		})
	}
}

func TestDiscoveryResponseModes(t *testing.T) {
	ts := newServer(t, nil)
	resp, err := http.Get(ts.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Modes []string `json:"response_modes_supported"`
	}
	if err := jsonUnmarshal(readBody(t, resp), &doc); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(doc.Modes, []string{"query", "fragment", "form_post"}) {
		t.Fatalf("response_modes_supported %v", doc.Modes)
	}
}

// TestFormPostEscapes: what the page carries is the client's state
// verbatim, never markup; the form target is exactly the redirect URI.
func TestFormPostEscapes(t *testing.T) {
	ts := newServer(t, nil)
	_, ch := pkce("v")
	q := authorizeParams(ch)
	q.Set("response_mode", "form_post")
	q.Set("prompt", "none")
	q.Set("state", `"><script>alert(1)</script><input name="code" value="x`)
	resp, err := browser(t).Get(ts.URL + "/connect/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if n := len(regexp.MustCompile(`(?i)<script`).FindAllString(body, -1)); n != 1 {
		t.Fatalf("%d script tags, want only the page's own:\n%s", n, body)
	}
	f := readFormPost(t, resp, body)
	if f.Get("state") != q.Get("state") || f.Has("code") || f.Get("error") != "login_required" {
		t.Fatalf("fields %v", f)
	}
}
