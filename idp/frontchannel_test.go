package idp_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/authgate/authgate/idp"
)

// TestFrontchannelURIChecked: Front-Channel Logout 1.0 §2: the URI is
// absolute, has no fragment, and has the scheme, host and port of a
// redirect URI; a bad one stops idp.New with an error naming the client
// and the option.
func TestFrontchannelURIChecked(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(c *idp.Client)
		wantErr string // empty: accepted
	}{
		{name: "same origin", edit: func(c *idp.Client) { c.FrontchannelLogoutURI = "https://app.example/fc" }},
		{name: "with a query", edit: func(c *idp.Client) { c.FrontchannelLogoutURI = "https://app.example/fc?a=b" }},
		{name: "explicit default port", edit: func(c *idp.Client) { c.FrontchannelLogoutURI = "https://APP.example:443/fc" }},
		{name: "with session required", edit: func(c *idp.Client) {
			c.FrontchannelLogoutURI = "https://app.example/fc"
			c.FrontchannelLogoutSessionRequired = true
		}},
		{name: "relative", edit: func(c *idp.Client) { c.FrontchannelLogoutURI = "/fc" }, wantErr: "is not an absolute http(s) URI"},
		{name: "no scheme", edit: func(c *idp.Client) { c.FrontchannelLogoutURI = "app.example/fc" }, wantErr: "is not an absolute http(s) URI"},
		{name: "other scheme", edit: func(c *idp.Client) { c.FrontchannelLogoutURI = "javascript://app.example/%0aalert(1)" }, wantErr: "is not an absolute http(s) URI"},
		{name: "fragment", edit: func(c *idp.Client) { c.FrontchannelLogoutURI = "https://app.example/fc#x" }, wantErr: "has a fragment"},
		{name: "empty fragment", edit: func(c *idp.Client) { c.FrontchannelLogoutURI = "https://app.example/fc#" }, wantErr: "has a fragment"},
		{name: "other host", edit: func(c *idp.Client) { c.FrontchannelLogoutURI = "https://evil.example/fc" }, wantErr: "redirect URI"},
		{name: "other port", edit: func(c *idp.Client) { c.FrontchannelLogoutURI = "https://app.example:8443/fc" }, wantErr: "redirect URI"},
		{name: "other scheme than the redirect URI", edit: func(c *idp.Client) { c.FrontchannelLogoutURI = "http://app.example/fc" }, wantErr: "redirect URI"},
		{name: "user info", edit: func(c *idp.Client) { c.FrontchannelLogoutURI = "https://u:p@app.example/fc" }, wantErr: "user name"},
		{name: "IPv6 host", edit: func(c *idp.Client) {
			c.RedirectURIs = append(c.RedirectURIs, "https://[2001:db8::1]/cb")
			c.FrontchannelLogoutURI = "https://[2001:db8::1]/fc"
		}, wantErr: "IPv6"},
		{name: "non-ASCII host", edit: func(c *idp.Client) {
			c.RedirectURIs = append(c.RedirectURIs, "https://bücher.example/cb")
			c.FrontchannelLogoutURI = "https://bücher.example/fc"
		}, wantErr: "punycode"},
		{name: "session required without URI", edit: func(c *idp.Client) { c.FrontchannelLogoutSessionRequired = true }, wantErr: "frontchannel_logout_session_required without a frontchannel_logout_uri"},
		{name: "http, public client", edit: func(c *idp.Client) {
			*c = idp.Client{ID: c.ID, Public: true, RedirectURIs: []string{"http://spa.example/cb"}, FrontchannelLogoutURI: "http://spa.example/fc"}
		}, wantErr: "plain http for a public client"},
		{name: "http, public client on loopback", edit: func(c *idp.Client) {
			*c = idp.Client{ID: c.ID, Public: true, RedirectURIs: []string{"http://127.0.0.1:8081/cb"}, FrontchannelLogoutURI: "http://127.0.0.1:8081/fc"}
		}},
		{name: "http, confidential client", edit: func(c *idp.Client) {
			c.RedirectURIs = append(c.RedirectURIs, "http://app.example/cb")
			c.FrontchannelLogoutURI = "http://app.example/fc"
		}},
		{name: "no redirect URI", edit: func(c *idp.Client) {
			c.RedirectURIs = nil
			c.AllowDeviceFlow = true
			c.FrontchannelLogoutURI = "https://app.example/fc"
		}, wantErr: "redirect URI"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Issuer = "https://id.example"
			tt.edit(&cfg.Clients[0])
			_, err := idp.New(cfg, idp.NewMemoryStore(nil))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("idp.New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("idp.New accepted %q", cfg.Clients[0].FrontchannelLogoutURI)
			}
			if msg := err.Error(); !strings.Contains(msg, `client "demo-app"`) || !strings.Contains(msg, "frontchannel_logout_") || !strings.Contains(msg, tt.wantErr) {
				t.Fatalf("error %q: want one naming client \"demo-app\", the option, and %q", msg, tt.wantErr)
			}
		})
	}
}

// withFrontchannel registers front-channel logout URIs: demo-app's
// requires iss and sid and has a query of its own; "second" and "unused"
// require nothing.
func withFrontchannel(c *idp.Config) {
	c.Clients[0].FrontchannelLogoutURI = "https://app.example/oauth2/frontchannel?tenant=a%20b"
	c.Clients[0].FrontchannelLogoutSessionRequired = true
	for _, id := range []string{"second", "unused"} {
		c.Clients = append(c.Clients, idp.Client{
			ID:                     id,
			Secret:                 testSecret,
			RedirectURIs:           []string{"https://" + id + ".example/cb"},
			PostLogoutRedirectURIs: []string{"https://" + id + ".example/"},
			FrontchannelLogoutURI:  "https://" + id + ".example/fc",
		})
	}
}

// signInTo signs alice in at client id with c, her provider session's
// single sign-on after the first, and returns the ID token.
func signInTo(t testing.TB, ts *testServer, c *http.Client, id string) string {
	t.Helper()
	v, ch := pkce("v")
	q := authorizeParams(ch)
	redirect := testRedirect
	if id != "demo-app" {
		redirect = "https://" + id + ".example/cb"
	}
	q.Set("client_id", id)
	q.Set("redirect_uri", redirect)
	u := login(t, ts, c, q, "alice", testPassword)
	form := exchangeForm(u.Query().Get("code"), v)
	form.Set("redirect_uri", redirect)
	resp, body := postToken(t, ts, id, testSecret, form)
	var tk tokens
	if err := jsonUnmarshal(body, &tk); err != nil || resp.StatusCode != http.StatusOK || tk.IDToken == "" {
		t.Fatalf("exchange at %s: %d %s", id, resp.StatusCode, body)
	}
	return tk.IDToken
}

var (
	iframeRE   = regexp.MustCompile(`<iframe [^>]*src="([^"]*)"`)
	continueRE = regexp.MustCompile(`<a id="continue" href="([^"]*)"`)
	scriptRE   = regexp.MustCompile(`(?s)<script>(.*?)</script>`)
)

// TestFrontchannelLogout: signing out at the provider, by each way there
// is, shows a page that loads the front-channel logout URI of every client
// the session signed in to, and of no other, with iss and sid where the
// client requires them (§2), under a CSP that allows exactly those
// frames; then it goes on to the post_logout_redirect_uri.
func TestFrontchannelLogout(t *testing.T) {
	tests := []struct {
		name string
		// clients are those alice signs in to.
		clients []string
		// end signs out and returns the response; hint is demo-app's ID
		// token.
		end  func(t *testing.T, ts *testServer, c *http.Client, hint string) (*http.Response, string)
		next string
	}{
		{name: "id_token_hint", clients: []string{"demo-app", "second"}, next: "https://app.example/?state=s1",
			end: func(t *testing.T, ts *testServer, c *http.Client, hint string) (*http.Response, string) {
				q := url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {"https://app.example/"}, "state": {"s1"}}
				resp, err := c.Get(ts.URL + "/connect/endsession?" + q.Encode())
				if err != nil {
					t.Fatal(err)
				}
				return resp, readBody(t, resp)
			}},
		{name: "id_token_hint, one client", clients: []string{"demo-app"},
			end: func(t *testing.T, ts *testServer, c *http.Client, hint string) (*http.Response, string) {
				resp, err := c.Get(ts.URL + "/connect/endsession?" + url.Values{"id_token_hint": {hint}}.Encode())
				if err != nil {
					t.Fatal(err)
				}
				return resp, readBody(t, resp)
			}},
		{name: "confirmed", clients: []string{"second", "demo-app"}, next: "https://second.example/?state=s%26t",
			end: func(t *testing.T, ts *testServer, c *http.Client, _ string) (*http.Response, string) {
				q := url.Values{"client_id": {"second"}, "post_logout_redirect_uri": {"https://second.example/"}, "state": {"s&t"}}
				form := loginForm(t, c, ts.URL, "/connect/endsession?"+q.Encode())
				form.Set("decision", "logout")
				return postFrom(t, ts, c, "/account/logout", form, sameOrigin)
			}},
		{name: "provider's own sign-out", clients: []string{"second"},
			end: func(t *testing.T, ts *testServer, c *http.Client, _ string) (*http.Response, string) {
				form := loginForm(t, c, ts.URL, "/account/logout")
				form.Set("decision", "logout")
				return postFrom(t, ts, c, "/account/logout", form, sameOrigin)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newServer(t, withFrontchannel)
			c := browser(t)
			sids := map[string]string{}
			for _, id := range tt.clients {
				sids[id], _ = idClaims(t, signInTo(t, ts, c, id))["sid"].(string)
			}
			hint := ""
			if slices.Contains(tt.clients, "demo-app") {
				hint = signInTo(t, ts, c, "demo-app")
			}
			sid := sids[tt.clients[0]]
			if sid == "" || len(sids) > 1 && sids["demo-app"] != sids["second"] {
				t.Fatalf("ID tokens' sids %v: want one session's", sids)
			}

			resp, body := tt.end(t, ts, c, hint)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" {
				t.Fatalf("status %d, Location %q; want 200 and the signed-out page:\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", cc)
			}

			want := map[string]bool{}
			sources := map[string]bool{}
			for _, id := range tt.clients {
				switch id {
				case "demo-app":
					want["https://app.example/oauth2/frontchannel?tenant=a%20b&"+url.Values{"iss": {ts.URL}, "sid": {sid}}.Encode()] = true
					sources["https://app.example/oauth2/frontchannel"] = true
				default:
					want["https://"+id+".example/fc"] = true
					sources["https://"+id+".example/fc"] = true
				}
			}
			got := map[string]bool{}
			for _, m := range iframeRE.FindAllStringSubmatch(body, -1) {
				got[html.UnescapeString(m[1])] = true
			}
			if !mapsEqual(got, want) {
				t.Errorf("iframes %v, want %v", keys(got), keys(want))
			}
			if strings.Contains(body, "unused.example") {
				t.Error("the page loads the logout URI of a client the session never signed in to")
			}

			csp := resp.Header.Get("Content-Security-Policy")
			directives := map[string][]string{}
			for _, d := range strings.Split(csp, ";") {
				f := strings.Fields(d)
				if len(f) > 0 {
					directives[f[0]] = f[1:]
				}
			}
			gotSources := map[string]bool{}
			for _, s := range directives["frame-src"] {
				gotSources[s] = true
			}
			if !mapsEqual(gotSources, sources) {
				t.Errorf("CSP frame-src %v, want exactly %v (CSP %q)", directives["frame-src"], keys(sources), csp)
			}
			for d, v := range map[string]string{"default-src": "'none'", "frame-ancestors": "'none'"} {
				if len(directives[d]) != 1 || directives[d][0] != v {
					t.Errorf("CSP %s %v, want %s", d, directives[d], v)
				}
			}
			scripts := scriptRE.FindAllStringSubmatch(body, -1)
			if len(scripts) != 1 {
				t.Fatalf("%d scripts, want 1", len(scripts))
			}
			sum := sha256.Sum256([]byte(scripts[0][1]))
			if hash := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; len(directives["script-src"]) != 1 || directives["script-src"][0] != hash {
				t.Errorf("CSP script-src %v, want exactly the page's script %s", directives["script-src"], hash)
			}

			m := continueRE.FindStringSubmatch(body)
			switch {
			case tt.next == "" && m != nil:
				t.Errorf("a continue link to %s, want none", m[1])
			case tt.next != "" && (m == nil || html.UnescapeString(m[1]) != tt.next):
				t.Errorf("continue link %v, want %s:\n%s", m, tt.next, body)
			}
			if !sessionCleared(resp) || signedIn(t, ts, c) {
				t.Error("still signed in")
			}
		})
	}
}

// TestFrontchannelNotUsed: a session none of whose clients has a
// front-channel logout URI signs out as before: straight to the
// post_logout_redirect_uri.
func TestFrontchannelNotUsed(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		withFrontchannel(c)
		c.Clients[0].FrontchannelLogoutURI = ""
		c.Clients[0].FrontchannelLogoutSessionRequired = false
	})
	c := browser(t)
	hint := signInTo(t, ts, c, "demo-app")
	q := url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {"https://app.example/"}, "state": {"s1"}}
	resp, err := c.Get(ts.URL + "/connect/endsession?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != "https://app.example/?state=s1" {
		t.Fatalf("status %d, Location %q; want 302 to https://app.example/?state=s1:\n%s", resp.StatusCode, loc, body)
	}
}

// TestFrontchannelSecondSignOut: the iframes are rendered once: a second
// sign-out of the ended session (another tab) has no session and no
// iframes.
func TestFrontchannelSecondSignOut(t *testing.T) {
	ts := newServer(t, withFrontchannel)
	c := browser(t)
	hint := signInTo(t, ts, c, "demo-app")
	for i, want := range []int{1, 0} {
		resp, err := c.Get(ts.URL + "/connect/endsession?" + url.Values{"id_token_hint": {hint}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if n := len(iframeRE.FindAllString(body, -1)); n != want {
			t.Errorf("sign-out %d: %d iframes, want %d", i+1, n, want)
		}
	}
}

// TestFrontchannelNativeContinue: a native app's post_logout_redirect_uri
// of its own scheme is the page's link as registered, which html/template
// would otherwise have replaced by a harmless placeholder.
func TestFrontchannelNativeContinue(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		withFrontchannel(c)
		c.Clients[0].PostLogoutRedirectURIs = append(c.Clients[0].PostLogoutRedirectURIs, "com.example.app:/signed-out")
	})
	c := browser(t)
	hint := signInTo(t, ts, c, "demo-app")
	q := url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {"com.example.app:/signed-out"}, "state": {"s1"}}
	resp, err := c.Get(ts.URL + "/connect/endsession?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if m := continueRE.FindStringSubmatch(body); m == nil || html.UnescapeString(m[1]) != "com.example.app:/signed-out?state=s1" {
		t.Fatalf("continue link %v, want com.example.app:/signed-out?state=s1:\n%s", m, body)
	}
}

func TestDiscoveryFrontchannel(t *testing.T) {
	ts := newServer(t, nil)
	resp, err := http.Get(ts.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	json.Unmarshal([]byte(readBody(t, resp)), &doc)
	if doc["frontchannel_logout_supported"] != true || doc["frontchannel_logout_session_supported"] != true {
		t.Fatalf("discovery: frontchannel_logout_supported %v, frontchannel_logout_session_supported %v",
			doc["frontchannel_logout_supported"], doc["frontchannel_logout_session_supported"])
	}
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
