package e2e_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/authgate/authgate/internal/caddytest"
)

// secretContent is what the careless upstream of the CORS tests answers to
// every request, whatever its method.
const secretContent = "payroll: alice 1000000"

// recordedRequest is a request the careless upstream got.
type recordedRequest struct {
	method string
	header http.Header
	body   string
}

// carelessUpstream is an app that relies on the gateway for every check:
// it answers any method with its protected content, and records what it
// got.
type carelessUpstream struct {
	mu   sync.Mutex
	reqs []recordedRequest
}

func newCarelessUpstream(t testing.TB) (*carelessUpstream, string) {
	t.Helper()
	u := new(carelessUpstream)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, recordedRequest{method: r.Method, header: r.Header.Clone(), body: string(b)})
		u.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, secretContent)
	}))
	t.Cleanup(srv.Close)
	return u, srv.Listener.Addr().String()
}

// take returns the requests recorded since the last call.
func (u *carelessUpstream) take() []recordedRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	reqs := u.reqs
	u.reqs = nil
	return reqs
}

// pageServer serves an empty page with an id, on 127.0.0.1, to be opened
// as http://localhost:<port>: another site than the gateway's 127.0.0.1.
func pageServer(t testing.TB, id, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, `<!doctype html><title>`+id+`</title><h1 id="`+id+`">`+id+`</h1>`+body)
	}))
	t.Cleanup(srv.Close)
	return strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
}

// sendPreflight sends a CORS preflight for a PUT from origin to url, with
// a body and the gateway's cookie name, which no browser would send with
// one, and returns the answer with its body.
func sendPreflight(t testing.TB, target, origin string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodOptions, target, strings.NewReader("amount=1000000"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", http.MethodPut)
	req.Header.Set("Access-Control-Request-Headers", "content-type")
	req.Header.Set("X-Auth-Request-User", "attacker")
	req.Header.Set("Cookie", "authgate=forged; app_pref=dark")
	resp, err := noRedirectClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, caddytest.ReadBody(t, resp)
}

// crossOriginFetch runs, in the page the tab shows, a PUT with a JSON body
// (which needs a preflight) to target with the browser's cookies; status
// 0 is a fetch the browser refused.
func crossOriginFetch(c *chrome, target string) fetchResult {
	c.t.Helper()
	script := `fetch(` + jsString(target) + `, {method: "PUT", credentials: "include", headers: {"Content-Type": "application/json"}, body: "{}"})
		.then(async r => ({status: r.status, body: await r.text()}), e => ({status: 0, body: String(e)}))`
	return browserRun(c, "fetch "+target, chromedp.Evaluate[fetchResult](script, chromedp.EvalAwaitPromise))
}

// TestGatewayCORS: a preflight never reaches an upstream that ignores the
// method, unless the gateway is told to forward it, and then stripped of
// what a preflight must not carry; the gateway answers preflights from the
// origins of its cors option, and a script there can read its 401.
func TestGatewayCORS(t *testing.T) {
	t.Parallel()
	g := newGatewaySite(t, gatewayConfig{})
	upstream, addr := newCarelessUpstream(t)
	g.upstream = addr
	g.writeGatewayConfig(t)
	allowed := pageServer(t, "allowed", "")
	other := pageServer(t, "other", "")
	c := newChrome(t)
	g.Start(t)
	target := g.gateway + "/payroll"

	checkRefused := func(t *testing.T, resp *http.Response, body string) {
		t.Helper()
		if resp.StatusCode != http.StatusForbidden || strings.Contains(body, secretContent) {
			t.Errorf("preflight: %d %q, want 403 without the upstream's content", resp.StatusCode, body)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("Access-Control-Allow-Origin %q, want none", got)
		}
		if reqs := upstream.take(); len(reqs) != 0 {
			t.Errorf("the upstream got %d requests (first: %s), want none", len(reqs), reqs[0].method)
		}
	}

	if !t.Run("no cors option", func(t *testing.T) {
		resp, body := sendPreflight(t, target, allowed)
		checkRefused(t, resp, body)
	}) {
		return
	}

	if !t.Run("preflight answer", func(t *testing.T) {
		g.reload(t, gatewayConfig{Gateway: []string{"cors " + allowed + " {", "	credentials", "}"}})
		resp, body := sendPreflight(t, target, allowed)
		if resp.StatusCode != http.StatusNoContent || body != "" {
			t.Errorf("preflight from %s: %d %q, want 204 without a body", allowed, resp.StatusCode, body)
		}
		want := map[string]string{
			"Access-Control-Allow-Origin":      allowed,
			"Access-Control-Allow-Credentials": "true",
			"Access-Control-Allow-Methods":     "GET, HEAD, POST, PUT, PATCH, DELETE",
			"Access-Control-Allow-Headers":     "Authorization, Content-Type, X-Requested-With, DPoP",
			"Access-Control-Max-Age":           "600",
			"Vary":                             "Origin",
		}
		for name, w := range want {
			if got := strings.Join(resp.Header.Values(name), ", "); got != w {
				t.Errorf("%s: %q, want %q", name, got, w)
			}
		}
		if reqs := upstream.take(); len(reqs) != 0 {
			t.Errorf("the upstream got %d requests, want none", len(reqs))
		}

		resp, body = sendPreflight(t, target, other)
		checkRefused(t, resp, body)

		// A browser on the allowed origin gets past the preflight and reads
		// the 401 (its fetch carries no cookie: SameSite=Lax); one on
		// another origin gets nothing.
		c.navigate(allowed + "/")
		res := crossOriginFetch(c, target+"?via=cors")
		if res.Status != http.StatusUnauthorized {
			t.Fatalf("fetch from %s: status %d, want 401:\n%s", allowed, res.Status, res.Body)
		}
		checkUnauthorized(t, res.Body, g.gateway+"/oauth2/start?rd="+url.QueryEscape("/payroll?via=cors"))
		// The challenge too: WWW-Authenticate is no CORS-safelisted
		// response header (Fetch §3.2.3), the browser hides it unless
		// exposed.
		script := `fetch(` + jsString(target+"?via=cors") + `).then(r => ({status: r.status, body: r.headers.get("WWW-Authenticate") || ""}))`
		challenge := browserRun(c, "reading the 401's WWW-Authenticate", chromedp.Evaluate[fetchResult](script, chromedp.EvalAwaitPromise))
		if !strings.HasPrefix(challenge.Body, "Bearer ") {
			t.Errorf("a script of %s reads WWW-Authenticate %q on the 401 (%d), want the Bearer challenge", allowed, challenge.Body, challenge.Status)
		}
		c.navigate(other + "/")
		if res := crossOriginFetch(c, target+"?via=cors"); res.Status != 0 {
			t.Errorf("fetch from %s: status %d, want a fetch the browser refuses:\n%s", other, res.Status, res.Body)
		}
		if reqs := upstream.take(); len(reqs) != 0 {
			t.Errorf("the upstream got %d requests from the browsers, want none", len(reqs))
		}
	}) {
		return
	}

	t.Run("preflight forward", func(t *testing.T) {
		g.reload(t, gatewayConfig{Gateway: []string{"cors " + allowed + " {", "	preflight forward", "}"}})
		resp, body := sendPreflight(t, target, allowed)
		if resp.StatusCode != http.StatusOK || body != secretContent {
			t.Errorf("forwarded preflight: %d %q, want the upstream's answer", resp.StatusCode, body)
		}
		reqs := upstream.take()
		if len(reqs) != 1 {
			t.Fatalf("the upstream got %d requests, want the preflight", len(reqs))
		}
		got := reqs[0]
		if got.method != http.MethodOptions || got.body != "" || got.header.Get("X-Auth-Request-User") != "" {
			t.Errorf("upstream got %s with body %q and X-Auth-Request-User %q; want OPTIONS, no body, no identity",
				got.method, got.body, got.header.Get("X-Auth-Request-User"))
		}
		if cookie := got.header.Get("Cookie"); cookie != "app_pref=dark" {
			t.Errorf("upstream got Cookie %q, want only app_pref=dark", cookie)
		}

		resp, body = sendPreflight(t, target, other)
		checkRefused(t, resp, body)
	})
}
