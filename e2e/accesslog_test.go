package e2e_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"

	"github.com/authgate/authgate/internal/caddytest"
)

// TestAccessLogRedaction logs in through the gateway with the access log
// filter of the README ("Access logs") on both sites, and checks that the
// log has an entry for each step of the login but none of its secrets: the
// state and the code of the callback, the sealed login request, the
// id_token_hint of the sign-out, the access token sent as a bearer token
// and in a URL, and the cookies. The same login without the filter must
// leave every one of them in the log, so that the test sees each place a
// secret can appear.
//
// The server's log_credentials option is on, as an operator debugging a
// login may turn it on: Caddy then logs Authorization, Cookie and
// Set-Cookie in full, and only the filter keeps them out.
func TestAccessLogRedaction(t *testing.T) {
	t.Parallel()
	snippets := readmeLogSnippets(t)
	for _, tt := range []struct {
		name     string
		filtered bool
	}{
		{"README filter", true},
		{"no filter", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newAccessLogSite(t, snippets, tt.filtered)
			s.Start(t)
			secrets := s.login(t)
			// Caddy writes a request's entry after its response: stopping
			// Caddy is what guarantees that every entry is in the file.
			s.Stop(t)
			log, entries := s.readAccessLog(t)

			for _, want := range []string{
				"GET /",
				"GET /connect/authorize",
				"GET /account/login",
				"POST /account/login",
				"GET /oauth2/callback",
				"GET /connect/userinfo",
				"GET /oauth2/sign_out",
				"POST /oauth2/sign_out",
				"GET /connect/endsession",
			} {
				if !slices.Contains(entries, want) {
					t.Errorf("the access log has no entry for %s; it has %q", want, entries)
				}
			}
			for _, sec := range secrets {
				found := strings.Contains(log, sec.value) || strings.Contains(log, url.QueryEscape(sec.value))
				switch {
				case tt.filtered && found:
					t.Errorf("the filtered access log holds the %s", sec.name)
				case !tt.filtered && !found:
					t.Errorf("the unfiltered access log lacks the %s: the test does not reach where it is logged", sec.name)
				}
			}
			if tt.filtered && !strings.Contains(log, "code=REDACTED") {
				t.Errorf("the filtered access log does not show the callback's code=REDACTED")
			}
		})
	}
}

// readmeLogSnippets returns the Caddyfile snippets of the README's access
// log filter, (authgate_redact_query) and (authgate_log_filter), as
// written there, and checks that the demo Caddyfile has them as written.
func readmeLogSnippets(t testing.TB) string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	demo, err := os.ReadFile(filepath.Join("..", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	var snippets []string
	for _, name := range []string{"authgate_redact_query", "authgate_log_filter"} {
		// A snippet runs from its "(name) {" line to the first line that
		// is a lone closing brace.
		m := regexp.MustCompile(`(?ms)^\(` + name + `\) \{\n.*?^\}$`).Find(readme)
		if m == nil {
			t.Fatalf("README.md has no snippet (%s)", name)
		}
		if !strings.Contains(string(demo), string(m)) {
			t.Errorf("the demo Caddyfile does not have the README's snippet (%s) as written there", name)
		}
		snippets = append(snippets, string(m))
	}
	return strings.Join(snippets, "\n\n")
}

// accessLogSite is a Caddy with the provider, the gateway and the echoing
// upstream, whose two sites write their access logs to one file.
type accessLogSite struct {
	*site
	gateway   string // http://127.0.0.1:port, the gateway's site
	accessLog string // the access log file
}

var accessLogTemplate = template.Must(template.New("Caddyfile").Delims("[[", "]]").Parse(`{
	admin [[.Admin]]
	storage file_system [[.Storage]]
	persist_config off
	grace_period 2s
	servers {
		log_credentials
	}
}

[[.Snippets]]

(access_log) {
	log {
		output file [[.AccessLog]]
[[- if .Filtered]]
		import authgate_log_filter
[[- end]]
	}
}

[[.Issuer]] {
	import access_log
	oidc_provider [[.Issuer]] {
		client demo-app {
			secret {env.[[.SecretEnv]]}
			redirect_uri [[.Gateway]]/oauth2/callback
			post_logout_redirect_uri [[.Gateway]]/
		}
		user alice {
			password_hash [[.Hash]]
			claim email alice@example.com
		}
	}
}

[[.Gateway]] {
	import access_log
	oidc_gateway {
		issuer [[.Issuer]]
		client_id demo-app
		client_secret {env.[[.SecretEnv]]}
		pass_access_token
		sign_out_id_token_hint
		post_logout_redirect /
	}
	reverse_proxy [[.Upstream]]
}
`))

func newAccessLogSite(t testing.TB, snippets string, filtered bool) *accessLogSite {
	t.Helper()
	s := &accessLogSite{
		site:    newEmptySite(t),
		gateway: fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t)),
	}
	s.accessLog = filepath.Join(s.Dir, "access.log")
	s.WriteConfig(t, accessLogTemplate, map[string]any{
		"Admin":     s.AdminAddr,
		"Storage":   s.Storage,
		"Snippets":  snippets,
		"AccessLog": s.accessLog,
		"Filtered":  filtered,
		"Issuer":    s.issuer,
		"Gateway":   s.gateway,
		"Upstream":  newUpstream(t),
		"SecretEnv": secretEnv,
		"Hash":      passwordHash,
	})
	return s
}

// secret is a value that no access log may hold.
type secret struct {
	name, value string
}

// login plays a browser through a login at the gateway, a bearer call to
// the provider and the sign-out, and returns the secrets it met on the way.
func (s *accessLogSite) login(t testing.TB) []secret {
	t.Helper()
	browser := caddytest.NewBrowser(t)
	var secrets []secret
	seen := map[string]bool{}
	keep := func(name, value string) {
		t.Helper()
		if value == "" {
			t.Fatalf("no %s", name)
		}
		if !seen[value] {
			seen[value] = true
			secrets = append(secrets, secret{name, value})
		}
	}
	// Cookie values are secrets too: the session, the login flow's, and
	// the provider's session and CSRF cookies. Both sites are 127.0.0.1,
	// so the jar holds them all for either URL.
	keepCookies := func() {
		t.Helper()
		u, _ := url.Parse(s.gateway)
		for _, c := range browser.Jar.Cookies(u) {
			if c.Value != "" {
				keep("value of cookie "+c.Name, c.Value)
			}
		}
	}

	// The app sends the browser to the provider, which sends it on to
	// its login page with the sealed request.
	authorize := redirectOf(t, browser, s.gateway+"/", http.Header{"Accept": {"text/html"}})
	keep("state", authorize.Query().Get("state"))
	keepCookies()
	loginURL := redirectOf(t, browser, authorize.String(), nil)
	keep("sealed login request", loginURL.Query().Get("request"))

	callback := caddytest.Login(t, browser, loginURL, "alice", password)
	keep("authorization code", callback.Query().Get("code"))
	keepCookies()
	redirectOf(t, browser, callback.String(), nil)
	keepCookies()

	// The app's page, fetched as a script of a single-page app's callback
	// page would fetch it: with that page's URL, code included, as the
	// Referer. The upstream echoes the access token the gateway passes on.
	resp, body := browserGet(t, browser, s.gateway+"/", http.Header{
		"Accept":  {"application/json"},
		"Referer": {callback.String()},
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("app: status %d: %s", resp.StatusCode, body)
	}
	accessToken, ok := strings.CutPrefix(parseEcho(t, body).Headers.Get("Authorization"), "Bearer ")
	if !ok {
		t.Fatalf("the upstream got no bearer token: %s", body)
	}
	keep("access token", accessToken)

	// The access token as a bearer token, and in a URL, where the
	// provider refuses it (RFC 6750 §2.3 is not offered) but Caddy still
	// logs the URL.
	userinfo := s.issuer + "/connect/userinfo"
	if resp, body := browserGet(t, browser, userinfo, http.Header{"Authorization": {"Bearer " + accessToken}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("userinfo: status %d: %s", resp.StatusCode, body)
	}
	browserGet(t, browser, userinfo+"?access_token="+url.QueryEscape(accessToken), nil)

	// Sign-out (the page, then its button) sends the ID token to the
	// provider as id_token_hint.
	endSession := caddytest.SignOut(t, browser, s.gateway+"/oauth2/sign_out")
	keep("id_token_hint", endSession.Query().Get("id_token_hint"))
	redirectOf(t, browser, endSession.String(), nil)
	return secrets
}

// browserGet sends a GET with browser and returns the response, its body
// read.
func browserGet(t testing.TB, browser *http.Client, target string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, caddytest.ReadBody(t, resp)
}

// redirectOf GETs target, which must redirect, and returns where to,
// resolved against target.
func redirectOf(t testing.TB, browser *http.Client, target string, header http.Header) *url.URL {
	t.Helper()
	resp, body := browserGet(t, browser, target, header)
	loc, err := resp.Location()
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("GET %s: status %d, want a redirect: %s", target, resp.StatusCode, body)
	}
	return loc
}

// readAccessLog returns the access log file and its entries as "METHOD
// path".
func (s *accessLogSite) readAccessLog(t testing.TB) (string, []string) {
	t.Helper()
	b, err := os.ReadFile(s.accessLog)
	if err != nil {
		t.Fatal(err)
	}
	var entries []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e struct {
			Request struct {
				Method string `json:"method"`
				URI    string `json:"uri"`
			} `json:"request"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("access log line %q: %v", sc.Text(), err)
		}
		path, _, _ := strings.Cut(e.Request.URI, "?")
		entries = append(entries, e.Request.Method+" "+path)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return string(b), entries
}
