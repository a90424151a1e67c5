package idp

import (
	"context"
	"errors"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Front-channel logout (OpenID Connect Front-Channel Logout 1.0): when a
// user signs out at the provider, the signed-out page loads, in hidden
// iframes, the frontchannel_logout_uri of every client that got a code in
// the session that ended. Which clients did is the record back-channel
// logout keeps (backchannel.go, sessionClientKey): a client with a
// front-channel URI is tracked as one with a back-channel URI is.
//
// Browsers that block third-party cookies keep most such iframes from
// seeing the client's own session: back-channel logout is the one to
// rely on where it can be had (§4.1).

// frontchannelTemplate is the signed-out page with the iframes. It is not
// one an operator can override: its CSP allows its one script by hash and
// exactly the iframes it renders.
const frontchannelTemplate = "frontchannel_logout.html"

// frontchannelScript sends the browser on, to the link of id "continue"
// if the page has one, once the page and so every iframe has loaded (a
// document's load event waits for its iframes), or after
// frontchannelWait at the latest: an iframe that never answers must not
// keep the user on the page. Without JavaScript the link is there to
// follow.
const frontchannelScript = `(function () {
  var done = false;
  function go() {
    var a = document.getElementById("continue");
    if (done || !a) return;
    done = true;
    window.location.replace(a.href);
  }
  window.addEventListener("load", go);
  window.setTimeout(go, 3000);
})();`

// frontchannelScriptHash is frontchannelScript's CSP hash-source.
var frontchannelScriptHash = scriptHash(frontchannelScript)

// frontchannelPage is the data of frontchannel_logout.html.
type frontchannelPage struct {
	Title    string
	Message  string
	Frames   []string     // the iframes' URLs
	Continue template.URL // the post_logout_redirect_uri with its state, if any
	Script   template.JS
}

// frontchannelFrame is one client's iframe: its URL and the CSP source
// that allows it.
type frontchannelFrame struct {
	src    string
	source string
}

// checkFrontchannelURI applies §2 to c's FrontchannelLogoutURI: an
// absolute http(s) URI without a fragment, whose scheme, host and port
// are those of one of c's redirect URIs. §2 lets it be plain http only
// for a confidential client; a public client's may be only on a loopback
// host, as its redirect URIs may (RFC 8252 §7.3).
func checkFrontchannelURI(c Client) error {
	raw := c.FrontchannelLogoutURI
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("is not a URL")
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "":
		return errors.New("is not an absolute http(s) URI")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return errors.New("has a fragment")
	case u.User != nil:
		return errors.New("has a user name or password")
	case strings.ContainsAny(raw, " \t\r\n'\""):
		return errors.New("has a space or a quote")
	case strings.Contains(u.Hostname(), ":"):
		// CSP host-sources have no IPv6 literals: no frame-src could
		// allow it.
		return errors.New("has an IPv6 address as host, which no Content-Security-Policy frame-src can name: use a host name")
	case !isASCII(u.Host):
		return errors.New("has a host name that is not ASCII: use its punycode (xn--) form")
	case u.Scheme == "http" && c.Public && !loopbackHost(u.Hostname()):
		return errors.New("is plain http for a public client: use https (Front-Channel Logout §2)")
	}
	origin := originOf(u)
	for _, r := range c.RedirectURIs {
		if ru, err := url.Parse(r); err == nil && originOf(ru) == origin {
			return nil
		}
	}
	return errors.New("has not the scheme, host and port of a redirect URI (Front-Channel Logout §2)")
}

// originOf is u's scheme, host and port, lower case, with the scheme's
// default port made explicit.
func originOf(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// scriptScheme reports whether a link of this scheme would run script
// or carry content of its own rather than go somewhere.
func scriptScheme(scheme string) bool {
	switch strings.ToLower(scheme) {
	case "javascript", "vbscript", "data", "blob", "file":
		return true
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// frontchannelFrameOf is c's iframe for the provider session sid: its
// FrontchannelLogoutURI, with iss and sid added (§2) when the client
// requires them, its own query kept.
func (p *Provider) frontchannelFrameOf(c *client, sid string) frontchannelFrame {
	src := c.FrontchannelLogoutURI
	if c.FrontchannelLogoutSessionRequired {
		sep := "?"
		if strings.Contains(src, "?") {
			sep = "&"
			if strings.HasSuffix(src, "?") || strings.HasSuffix(src, "&") {
				sep = ""
			}
		}
		src += sep + url.Values{"iss": {p.issuer}, "sid": {sid}}.Encode()
	}
	return frontchannelFrame{src: src, source: frameSource(c.FrontchannelLogoutURI)}
}

// frameSource is the CSP source expression that matches raw, a checked
// frontchannel_logout_uri: its scheme, host, port and path (CSP3 §6.7.2.9;
// the query is not part of a source), the path's ";" and "," escaped, as
// they end a source list or a policy.
func frameSource(raw string) string {
	u, _ := url.Parse(raw)
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	path = strings.NewReplacer(";", "%3B", ",", "%2C").Replace(path)
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host) + path
}

// frontchannelFrames returns the iframes of the clients with a
// frontchannel_logout_uri that got a code in the session sid, read
// before the session's end takes their records ([Provider.EndSession]).
// A record that cannot be read costs that client its iframe, not the
// sign-out.
func (p *Provider) frontchannelFrames(ctx context.Context, sid string) []frontchannelFrame {
	var frames []frontchannelFrame
	for _, c := range p.trackedClients {
		if c.FrontchannelLogoutURI == "" {
			continue
		}
		if _, err := p.store.Get(ctx, sessionClientKey(sid, c.ID)); err != nil {
			if !errors.Is(err, ErrNotFound) {
				p.log.ErrorContext(ctx, "reading the clients of a session for front-channel logout", "client_id", c.ID, "error", err)
			}
			continue
		}
		frames = append(frames, p.frontchannelFrameOf(c, sid))
	}
	return frames
}

// frontchannelCSP is the signed-out page's Content-Security-Policy: the
// pages' own, with the iframes' sources and the page's script.
func frontchannelCSP(frames []frontchannelFrame) string {
	sources := make([]string, 0, len(frames))
	seen := make(map[string]bool)
	for _, f := range frames {
		if !seen[f.source] {
			seen[f.source] = true
			sources = append(sources, f.source)
		}
	}
	return pageCSP + "; frame-src " + strings.Join(sources, " ") + "; script-src " + frontchannelScriptHash
}

// renderFrontchannel shows the signed-out page that loads frames, then
// sends the browser on to continueTo when it is not empty.
func (p *Provider) renderFrontchannel(w http.ResponseWriter, r *http.Request, frames []frontchannelFrame, continueTo string) {
	page := frontchannelPage{Title: "Signed out", Message: "You are signed out.", Script: template.JS(frontchannelScript)}
	if continueTo != "" {
		// A registered post_logout_redirect_uri, matched exactly: it may
		// be a native app's own scheme, which html/template would
		// otherwise replace, but never a script.
		if u, err := url.Parse(continueTo); err == nil && !scriptScheme(u.Scheme) {
			page.Continue = template.URL(continueTo)
		}
	}
	for _, f := range frames {
		page.Frames = append(page.Frames, f.src)
	}
	p.log.InfoContext(r.Context(), "front-channel logout", "clients", len(frames))
	p.renderCSP(w, r, http.StatusOK, frontchannelTemplate, page, frontchannelCSP(frames))
}

// errFrontchannelSession is the error of FrontchannelLogoutSessionRequired
// without a FrontchannelLogoutURI.
var errFrontchannelSession = errors.New("frontchannel_logout_session_required without a frontchannel_logout_uri")

// afterLogoutURL is where lr sends the browser once signed out, with its
// state, as [Provider.redirectAfterLogout] does; empty for nowhere.
func afterLogoutURL(lr *logoutRequest) string {
	if lr.RedirectURI == "" {
		return ""
	}
	if lr.State == "" {
		return lr.RedirectURI
	}
	sep := "?"
	if strings.Contains(lr.RedirectURI, "?") {
		sep = "&"
	}
	return lr.RedirectURI + sep + url.Values{"state": {lr.State}}.Encode()
}
