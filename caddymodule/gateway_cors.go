package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// GatewayCORS lets scripts of other origins call what the gateway
// protects, by the CORS protocol of the Fetch standard (§3.2).
//
// A preflight (OPTIONS with Origin and Access-Control-Request-Method)
// carries no credentials, so the gateway cannot check who sends it: it
// answers preflights itself, and an origin not listed gets an answer
// without CORS headers, which the browser refuses. A preflight reaches the
// upstream only with Preflight "forward", and then without identity
// headers, without the gateway's cookies and without a body.
type GatewayCORS struct {
	// Origins whose scripts may call the protected site, as
	// scheme://host[:port]; "*" for any origin (not with Credentials).
	// Required.
	Origins []string `json:"origins,omitempty"`

	// Methods for Access-Control-Allow-Methods. Default: GET, HEAD, POST,
	// PUT, PATCH, DELETE.
	Methods []string `json:"methods,omitempty"`

	// Headers for Access-Control-Allow-Headers. Default: Authorization,
	// Content-Type, X-Requested-With, DPoP (RFC 9449 proofs).
	Headers []string `json:"headers,omitempty"`

	// MaxAge is how long a browser may reuse a preflight answer
	// (Access-Control-Max-Age). Default: 10m. Browsers cap it (Chromium at
	// 2h).
	MaxAge caddy.Duration `json:"max_age,omitempty"`

	// Credentials sends Access-Control-Allow-Credentials: true, so that
	// scripts of the origins may send cookies (fetch with credentials
	// "include") and read the answers. Default: off.
	Credentials bool `json:"credentials,omitempty"`

	// Preflight is "answer" (default): the gateway answers preflights from
	// the origins, and sets Access-Control-Allow-Origin (and -Credentials)
	// on every answer to them, the upstream's included; or "forward": the
	// upstream answers preflights from the origins and sets the CORS
	// headers of its own answers, and the gateway sets them only on its
	// own (401, 403, ...).
	Preflight string `json:"preflight,omitempty"`
}

// Defaults of the cors options.
var (
	defaultCORSMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}
	defaultCORSHeaders = []string{"Authorization", "Content-Type", "X-Requested-With", "DPoP"}
)

const defaultCORSMaxAge = 10 * time.Minute

// corsPolicy is a GatewayCORS made ready for the request path.
type corsPolicy struct {
	anyOrigin   bool
	origins     map[string]bool
	forward     bool
	credentials bool
	methods     string
	headers     string
	maxAge      string
	varyOrigin  bool // answers depend on Origin: not "*" for all
}

// validate checks the options; the Caddyfile parser reports the same
// mistakes with their line.
func (c *GatewayCORS) validate() error {
	if len(c.Origins) == 0 {
		return fmt.Errorf("cors needs at least one origin")
	}
	for _, o := range c.Origins {
		if _, err := normaliseOrigin(o); err != nil {
			return err
		}
		if o == "*" && c.Credentials {
			// Fetch §3.2.5: a credentialed answer must name its origin;
			// echoing any origin with credentials would let every site
			// read what the user's cookies unlock.
			return fmt.Errorf("cors origin * cannot go with credentials: list the origins")
		}
	}
	switch c.Preflight {
	case "", "answer":
	case "forward":
		if len(c.Methods) > 0 || len(c.Headers) > 0 || c.MaxAge != 0 {
			return fmt.Errorf("cors methods, headers and max_age are for preflight answer: with preflight forward the upstream answers preflights")
		}
	default:
		return fmt.Errorf("cors preflight %q is not answer or forward", c.Preflight)
	}
	if c.MaxAge < 0 {
		return fmt.Errorf("cors max_age %v is negative", time.Duration(c.MaxAge))
	}
	return nil
}

// normaliseOrigin returns an origin as browsers serialise it in the Origin
// header: scheme and host in lower case, no default port, no path.
func normaliseOrigin(o string) (string, error) {
	if o == "*" {
		return o, nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("cors origin %q is not scheme://host[:port] or *", o)
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	if scheme == "https" {
		host = strings.TrimSuffix(host, ":443")
	} else {
		host = strings.TrimSuffix(host, ":80")
	}
	return scheme + "://" + host, nil
}

// newCORSPolicy builds the policy of validated options, with defaults.
func newCORSPolicy(c *GatewayCORS) *corsPolicy {
	p := &corsPolicy{origins: make(map[string]bool), forward: c.Preflight == "forward", credentials: c.Credentials}
	for _, o := range c.Origins {
		o, _ = normaliseOrigin(o)
		if o == "*" {
			p.anyOrigin = true
		}
		p.origins[o] = true
	}
	p.varyOrigin = !p.anyOrigin || p.credentials
	methods, headers, maxAge := c.Methods, c.Headers, time.Duration(c.MaxAge)
	if len(methods) == 0 {
		methods = defaultCORSMethods
	}
	if len(headers) == 0 {
		headers = defaultCORSHeaders
	}
	if maxAge == 0 {
		maxAge = defaultCORSMaxAge
	}
	p.methods, p.headers = strings.Join(methods, ", "), strings.Join(headers, ", ")
	p.maxAge = strconv.FormatInt(int64(maxAge/time.Second), 10)
	return p
}

func (p *corsPolicy) allows(origin string) bool {
	return p != nil && origin != "" && (p.anyOrigin || p.origins[origin])
}

// setAllowOrigin sets the headers that let a script of origin read an
// answer, replacing any the upstream sent: a browser refuses an answer
// with two Access-Control-Allow-Origin values.
func (p *corsPolicy) setAllowOrigin(h http.Header, origin string) {
	if p.anyOrigin && !p.credentials {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Set("Access-Control-Allow-Origin", origin)
	}
	if p.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	} else {
		h.Del("Access-Control-Allow-Credentials")
	}
}

// isPreflight tells a CORS preflight (Fetch §3.2.2) from other OPTIONS
// requests, which are checked like any request.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" && r.Header.Get("Origin") != ""
}

// servePreflight answers a CORS preflight, or forwards it when the options
// say so. A preflight carries no credentials (Fetch §4.8), so none of it
// is authenticated: an upstream that ignores the method must never get one
// unless the operator asked for it.
func (g *Gateway) servePreflight(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	origin := r.Header.Get("Origin")
	h := w.Header()
	h.Add("Vary", "Origin")
	if !g.cors.allows(origin) {
		if ce := g.logger.Check(zap.DebugLevel, "CORS preflight from an origin not allowed"); ce != nil {
			ce.Write(zap.String("origin", origin), zap.String("path", r.URL.Path))
		}
		// No CORS headers: the browser does not send the request it asked
		// about.
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusForbidden)
		return nil
	}
	if g.cors.forward {
		g.strip.strip(r.Header)
		r.Header.Del("Authorization")
		g.stripOwnCookies(r)
		// The upstream gets no body; the server drains the one that came.
		r.Body, r.ContentLength, r.TransferEncoding = http.NoBody, 0, nil
		r.Header.Del("Content-Length")
		r.Header.Del("Transfer-Encoding")
		return next.ServeHTTP(w, r)
	}
	g.cors.setAllowOrigin(h, origin)
	h.Set("Access-Control-Allow-Methods", g.cors.methods)
	h.Set("Access-Control-Allow-Headers", g.cors.headers)
	h.Set("Access-Control-Max-Age", g.cors.maxAge)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// corsWriters returns the writers for the gateway's own answers and for
// the upstream's, which set the CORS headers for an allowed origin: on
// the gateway's answers always (so that a script can read a 401's
// login_url), on the upstream's when the gateway answers preflights. Then
// the upstream's answers to any other origin lose the CORS headers the
// upstream set.
func (g *Gateway) corsWriters(w http.ResponseWriter, r *http.Request) (own, upstream http.ResponseWriter) {
	if g.cors == nil {
		return w, w
	}
	if g.cors.varyOrigin {
		w.Header().Add("Vary", "Origin") // the answer depends on it
	}
	wrap := func(origin string, own bool) http.ResponseWriter {
		return &corsWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, policy: g.cors, origin: origin, own: own}
	}
	origin := r.Header.Get("Origin")
	switch {
	case !g.cors.allows(origin) && (origin == "" || g.cors.forward):
		return w, w
	case !g.cors.allows(origin):
		// The gateway's list is the policy: an upstream that lets any
		// origin read, as permissive framework defaults do, must not let
		// one the list leaves out.
		return w, wrap("", false)
	case g.cors.forward:
		return wrap(origin, true), w
	}
	return wrap(origin, true), wrap(origin, false)
}

// corsWriter sets the CORS headers for origin when the answer starts,
// after the handlers have set theirs; with no origin (one the policy does
// not allow), it removes those the handlers set.
type corsWriter struct {
	*caddyhttp.ResponseWriterWrapper
	policy      *corsPolicy
	origin      string
	own         bool // the gateway's own answers (401, 403, ...)
	wroteHeader bool
}

func (cw *corsWriter) WriteHeader(status int) {
	if !cw.wroteHeader && status >= 200 {
		cw.wroteHeader = true
		if cw.origin == "" {
			h := cw.Header()
			h.Del("Access-Control-Allow-Origin")
			h.Del("Access-Control-Allow-Credentials")
			h.Del("Access-Control-Expose-Headers")
		} else {
			cw.policy.setAllowOrigin(cw.Header(), cw.origin)
			if cw.own && cw.Header().Get("WWW-Authenticate") != "" {
				// Not a CORS-safelisted response header (Fetch §3.2.3):
				// without this a script sees the 401's body but not the
				// challenge and its RFC 6750 §3.1 error code.
				cw.Header().Set("Access-Control-Expose-Headers", "WWW-Authenticate")
			}
		}
	}
	cw.ResponseWriterWrapper.WriteHeader(status)
}

func (cw *corsWriter) Write(b []byte) (int, error) {
	if !cw.wroteHeader {
		cw.WriteHeader(http.StatusOK)
	}
	return cw.ResponseWriterWrapper.Write(b)
}

func (cw *corsWriter) ReadFrom(r io.Reader) (int64, error) {
	if !cw.wroteHeader {
		cw.WriteHeader(http.StatusOK)
	}
	return cw.ResponseWriterWrapper.ReadFrom(r)
}

// Interface guards
var (
	_ http.ResponseWriter = (*corsWriter)(nil)
	_ io.ReaderFrom       = (*corsWriter)(nil)
)
