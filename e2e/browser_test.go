package e2e_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

// Bounds of the browser's waits: starting it, and any one step (a
// navigation with its redirects, a click and the page it leads to, a
// wait for an element, a script).
const (
	browserStartTimeout = 30 * time.Second
	browserStepTimeout  = 15 * time.Second
)

// chrome is a headless Chromium with a profile of its own, driven over the
// DevTools protocol in one tab.
type chrome struct {
	t   testing.TB
	ctx context.Context // the tab's; steps derive their timeouts from it
	out *lockedBuffer   // the browser's stdout and stderr
}

// newChrome starts Chromium for the test and stops it when the test ends.
// A machine without Chromium fails the test: the browser tests are part of
// `make test`, whose deps step installs it.
func newChrome(t testing.TB) *chrome {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the browser tests need Chromium at %s (%v): install it: apt-get install -y chromium", chromiumPath, err)
	}
	out := new(lockedBuffer)
	// Only these flags: headless without a sandbox (tests often run as
	// root, in containers), and nothing that reaches the network on its
	// own. DefaultExecAllocatorOptions would add many more.
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.CombinedOutput(out),
	)
	ctx, cancel := chromedp.NewContext(alloc)
	c := &chrome{t: t, ctx: ctx, out: out}
	// Cleanups run last first: stop the browser (and wait for it, so that
	// its profile folder can go), then show its output.
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpOutput()
		}
	})
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})

	// The first action starts the browser and ties it to the context it
	// runs on, so it runs on ctx itself, bounded from here.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("starting Chromium: %v", err)
		}
	case <-time.After(browserStartTimeout):
		cancel()
		t.Fatalf("Chromium has not started after %v", browserStartTimeout)
	}
	return c
}

// newTab opens another tab of the same browser, with the same cookies,
// driven for t; it closes when t ends.
func (c *chrome) newTab(t testing.TB) *chrome {
	t.Helper()
	ctx, cancel := chromedp.NewContext(c.ctx)
	t.Cleanup(cancel)
	// As for the browser in newChrome: the first action creates the tab
	// and ties it to the context it runs on, so it runs on ctx itself.
	opened := make(chan error, 1)
	go func() { opened <- chromedp.Do(ctx) }()
	select {
	case err := <-opened:
		if err != nil {
			t.Fatalf("opening a tab: %v", err)
		}
	case <-time.After(browserStepTimeout):
		cancel()
		t.Fatalf("no new tab after %v", browserStepTimeout)
	}
	return &chrome{t: t, ctx: ctx, out: c.out}
}

// do runs actions in order, failing the test at the first error.
func (c *chrome) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, browserStepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		c.t.Fatalf("%s: %v", what, err)
	}
}

// browserRun runs an action that returns a value, failing the test on an
// error.
func browserRun[T any](c *chrome, what string, action chromedp.Action[T]) T {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, browserStepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		c.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// navigate loads url, follows its redirects, and returns the response of
// the document the tab ends on.
func (c *chrome) navigate(url string) *network.Response {
	c.t.Helper()
	return browserRun(c, "opening "+url, chromedp.NavigateResponse(url))
}

// waitVisible waits until the element with id is visible.
func (c *chrome) waitVisible(id string) {
	c.t.Helper()
	c.do("waiting for #"+id, chromedp.WaitVisible(chromedp.ID(id)))
}

// location is the URL of the tab's document.
func (c *chrome) location() string {
	c.t.Helper()
	return browserRun(c, "reading the location", chromedp.Location())
}

// logIn fills the provider's login form the tab shows and submits it as a
// user would, and returns the response of the document the tab ends on.
func (c *chrome) logIn(username, password string) *network.Response {
	c.t.Helper()
	c.do("filling the login form",
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), username),
		chromedp.SendKeys(chromedp.ID("password"), password),
	)
	ctx, cancel := context.WithTimeout(c.ctx, browserStepTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("login")))
	if err != nil {
		c.t.Fatalf("submitting the login form: %v", err)
	}
	return resp
}

// text is the text of the tab's document: what a plain-text or JSON
// response shows, which Chromium puts in a <pre>.
func (c *chrome) text() string {
	c.t.Helper()
	return browserRun(c, "reading the page", chromedp.Evaluate[string](
		`(document.querySelector("body > pre") || document.body).textContent`))
}

// fetchResult is what fetch() in the page got.
type fetchResult struct {
	Status int    `json:"status"`
	Body   string `json:"body"`
}

// fetch runs fetch(path) in the tab's page, as the page's own scripts
// would, and returns the status and body.
func (c *chrome) fetch(path string) fetchResult {
	c.t.Helper()
	script := `fetch(` + jsString(path) + `).then(async r => ({status: r.status, body: await r.text()}))`
	return browserRun(c, "fetch "+path, chromedp.Evaluate[fetchResult](script, chromedp.EvalAwaitPromise))
}

// cookies returns the browser's cookies that a request to url would carry.
func (c *chrome) cookies(url string) []*network.Cookie {
	c.t.Helper()
	res := browserRun(c, "reading cookies", func(ctx context.Context, _ *chromedp.Target) (network.GetCookiesResult, error) {
		return chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{url}})
	})
	return res.Cookies
}

// cookie returns the browser's cookie name for url, or nil.
func (c *chrome) cookie(url, name string) *network.Cookie {
	c.t.Helper()
	for _, ck := range c.cookies(url) {
		if ck.Name == name {
			return ck
		}
	}
	return nil
}

// cookieHeader is the Cookie header the browser would send to url, for
// requests made outside it with its session.
func (c *chrome) cookieHeader(url string) string {
	c.t.Helper()
	var parts []string
	for _, ck := range c.cookies(url) {
		parts = append(parts, ck.Name+"="+ck.Value)
	}
	return strings.Join(parts, "; ")
}

// setCookie stores a cookie for url as if url had set it.
func (c *chrome) setCookie(url, name, value string, httpOnly bool) {
	c.t.Helper()
	c.do("setting cookie "+name, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{
			Name: name, Value: value, URL: url, HTTPOnly: &httpOnly, SameSite: network.CookieSameSiteLax,
		})
		return err
	}))
}

// deleteCookie removes the browser's cookies name for url.
func (c *chrome) deleteCookie(url, name string) {
	c.t.Helper()
	c.do("deleting cookie "+name, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, network.DeleteCookies, network.DeleteCookiesParams{Name: name, URL: url})
		return err
	}))
}

// setExtraHeaders makes the tab send headers with every request from now
// on; none stops that.
func (c *chrome) setExtraHeaders(headers map[string]string) {
	c.t.Helper()
	h := network.Headers{}
	for k, v := range headers {
		h[k] = v
	}
	c.do("setting extra request headers", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: h})
		return err
	}))
}

// dumpOutput logs what Chromium printed, but for its complaints about the
// D-Bus that containers and CI machines lack.
func (c *chrome) dumpOutput() {
	c.t.Helper()
	var lines []string
	for line := range strings.Lines(c.out.String()) {
		if !strings.Contains(line, "dbus") {
			lines = append(lines, line)
		}
	}
	out := strings.Join(lines, "")
	const max = 8 << 10
	if len(out) > max {
		out = "..." + out[len(out)-max:]
	}
	if out != "" {
		c.t.Logf("Chromium's output:\n%s", out)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\u2028", `\u2028`, "\u2029", `\u2029`)
	return `"` + r.Replace(s) + `"`
}

// lockedBuffer is a bytes.Buffer that the browser's output goroutine and
// the test can share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
