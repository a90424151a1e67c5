package caddymodule

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/hkdf"
	"golang.org/x/sync/singleflight"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(Gateway{})
}

// Gateway makes a user log in with an OpenID provider before a request
// goes on to the next handler, typically reverse_proxy. It is a
// confidential OpenID Connect client (authorization code flow with PKCE
// S256) that keeps the login in an encrypted cookie session, refreshes the
// access token before it expires, applies the allow rules, and passes the
// identity to the upstream as headers.
//
// Identity headers, always deleted from the incoming request in every
// spelling (any case, "_" or "." for "-") before ours are set:
// X-Auth-Request-User (sub), X-Auth-Request-Email,
// X-Auth-Request-Preferred-Username, X-Auth-Request-Groups (comma
// separated), every header of the headers map, and Authorization when
// pass_access_token is on.
//
// With IdentityAssertion, the upstream also gets a JWT that the gateway
// signs, in X-Authgate-Assertion (see GatewayAssertion); that header is
// deleted from every incoming request, whether the assertion is on or not.
//
// Placeholders set: {http.auth.user.id} (sub), {http.auth.user.email},
// {http.auth.user.claim.<name>} for any claim of the ID token (lists
// joined by commas).
//
// Paths it owns: redirect_path (the callback), sign_in_path (starts a login;
// ?rd= is where to return), sign_out_path (a page whose button signs
// out), backchannel_logout_path (where the provider ends sessions) and,
// with IdentityAssertion, /.well-known/authgate/jwks.json (the keys that
// verify the assertion). It answers CORS preflights itself (see GatewayCORS) and refuses
// paths with dot segments (see AllowDotSegments).
type Gateway struct {
	// Issuer is the OpenID provider's issuer URL. Required. Discovery is
	// fetched from it on first use, not at start.
	Issuer string `json:"issuer,omitempty"`

	// ClientID is this gateway's client_id at the provider. Required.
	ClientID string `json:"client_id,omitempty"`

	// ClientSecret is the client secret; placeholders such as
	// {env.CLIENT_SECRET} are resolved at start. Required, unless
	// PublicClient is set or Mode is bearer without Introspect: an empty
	// secret (no option, or an unset environment variable) fails at start
	// rather than at the first login.
	ClientSecret string `json:"client_secret,omitempty"`

	// PublicClient makes the gateway a public client that authenticates
	// with PKCE alone: it sends its client_id and no secret to the token
	// and revocation endpoints (token endpoint auth method "none", RFC
	// 6749 §2.3), for a client registered as public at the provider.
	// Default: off, a confidential client with ClientSecret.
	PublicClient bool `json:"public_client,omitempty"`

	// TokenAuthMethod is how the gateway authenticates at the token,
	// revocation and introspection endpoints: "basic"
	// (client_secret_basic) or "post" (client_secret_post). Default:
	// chosen once per discovery from token_endpoint_auth_methods_supported,
	// client_secret_basic when it is listed or nothing is, else
	// client_secret_post; a PublicClient sends its client_id alone.
	TokenAuthMethod string `json:"token_auth_method,omitempty"`

	// Scopes to request. Default: openid profile email. Add
	// offline_access to get refresh tokens.
	Scopes []string `json:"scopes,omitempty"`

	// RedirectPath is the callback path, registered at the provider as
	// <scheme>://<host><redirect_path>. Default: /oauth2/callback.
	RedirectPath string `json:"redirect_path,omitempty"`

	// SignInPath starts a login and returns to ?rd= afterwards. Default:
	// /oauth2/start.
	SignInPath string `json:"sign_in_path,omitempty"`

	// SignOutPath shows a page whose button (a POST with a token bound to
	// the session) clears the session and signs out at the provider.
	// Default: /oauth2/sign_out.
	SignOutPath string `json:"sign_out_path,omitempty"`

	// BackchannelLogoutPath receives the provider's logout tokens
	// (OpenID Connect Back-Channel Logout 1.0), registered at the
	// provider as the client's backchannel_logout_uri,
	// <scheme>://<host><backchannel_logout_path>. A valid token ends
	// every session of its provider session (sid), or of its user (sub),
	// on every node. It needs no cookie and no allow rule lets it
	// through or stops it: the provider's signature is its
	// authentication. Default: /oauth2/backchannel_logout.
	BackchannelLogoutPath string `json:"backchannel_logout_path,omitempty"`

	// PostLogoutRedirect is where the browser lands after sign-out, absolute
	// or a path on this site. Default: "/".
	PostLogoutRedirect string `json:"post_logout_redirect,omitempty"`

	// SignOutIDTokenHint keeps the ID token in the session so that
	// sign-out can send it as id_token_hint, for providers that require
	// one. Off by default: sign-out sends client_id, which RP-Initiated
	// Logout 1.0 allows, and the session cookie stays about a kilobyte
	// smaller, which every request pays for.
	SignOutIDTokenHint bool `json:"sign_out_id_token_hint,omitempty"`

	// Cookie configures the session cookie.
	Cookie GatewayCookie `json:"cookie,omitzero"`

	// SessionKeys encrypt and sign session cookies: the first encodes, all
	// decode, so a new key can be put first while old sessions stay valid.
	// Placeholders are resolved at start. Default: one key generated on
	// first start and kept in Caddy's storage, shared by every gateway of
	// this Caddy (and every instance sharing the storage). Either way the
	// cookie keys are derived from it with the Issuer and ClientID, so
	// only gateways of the same issuer and client_id share a login.
	SessionKeys []string `json:"session_keys,omitempty"`

	// Store, when set and SessionKeys is not, keeps the generated session
	// key in Redis instead of Caddy's storage: created once by whichever
	// node needs it first, and used by every node, so that any node
	// accepts the cookies of any other with no key in the Caddyfile. Give
	// it the same store as the provider's (one client serves both).
	Store *StateStore `json:"store,omitempty"`

	// Headers maps upstream header names to ID token claims, in addition
	// to the X-Auth-Request-* defaults.
	Headers map[string]string `json:"headers,omitempty"`

	// PassAccessToken sends "Authorization: Bearer <access token>" upstream.
	PassAccessToken bool `json:"pass_access_token,omitempty"`

	// Allow lists who may pass; any rule matching lets a user through. No
	// rules: any logged-in user.
	Allow []GatewayRule `json:"allow,omitempty"`

	// AllowUnverifiedEmail lets email rules admit an address whatever its
	// email_verified claim says, for providers that never send the claim
	// (Microsoft Entra ID). Default: off, an email rule admits only an
	// address whose email_verified is true.
	AllowUnverifiedEmail bool `json:"allow_unverified_email,omitempty"`

	// Mode is "browser" (default: navigations without a session are sent to
	// log in, other requests get 401), "api" (never a redirect: 401; also
	// accepts bearer tokens) or "bearer" (only Authorization: Bearer
	// tokens, no cookie session).
	Mode string `json:"mode,omitempty"`

	// Audience is what a bearer token's aud must contain (one of). Required
	// for modes api and bearer, unless AcceptIDTokens is set or BearerCheck
	// is "userinfo" (which forbids it).
	Audience []string `json:"audience,omitempty"`

	// Introspect asks the provider's introspection endpoint (RFC 7662)
	// whether a bearer token is still active, so a revoked token is
	// refused at once instead of when it expires. The gateway
	// authenticates with client_id and client_secret (for our provider,
	// an api_resource name and secret). Default: off.
	Introspect bool `json:"introspect,omitempty"`

	// IntrospectCache is how long an introspection answer is reused.
	// Default: 10s.
	IntrospectCache caddy.Duration `json:"introspect_cache,omitempty"`

	// ClockSkew is the difference between the provider's clock and ours
	// that bearer tokens and ID tokens are checked with: a token is good
	// until its exp plus this, from its nbf minus this, and refused when
	// its iat is further than this in the future. Default: 30s (clocks
	// kept by NTP are within a second; ASP.NET's 5 minutes would keep an
	// expired token working that long); 0 for none; at most 5m.
	ClockSkew *caddy.Duration `json:"clock_skew,omitempty"`

	// BearerCheck is how modes api and bearer check a bearer token:
	// "jwt" (default) verifies it here as a JWT of the issuer (JWKS
	// signature, iss, exp, aud in Audience); "userinfo" sends it to the
	// provider's userinfo endpoint instead, as an opaque string, for
	// providers whose access tokens are not JWTs (Google). With
	// "userinfo" the identity is the userinfo answer's claims, and no
	// audience can be checked: see gateway_userinfo.go.
	BearerCheck string `json:"bearer_check,omitempty"`

	// UserinfoCache is how long a userinfo answer to a bearer token is
	// reused. Default: 10s.
	UserinfoCache caddy.Duration `json:"userinfo_cache,omitempty"`

	// AcceptIDTokens lets modes api and bearer take, besides access
	// tokens for Audience, JWTs of the issuer whose aud is one of these
	// client ids: ID tokens, and access tokens that look like them
	// (Dex's carry at_hash and nonce). Weaker than an access token for
	// this API: see the README. Default: none, ID tokens are refused.
	AcceptIDTokens []string `json:"accept_id_tokens,omitempty"`

	// RefreshBefore is how long before the access token expires it is
	// refreshed. Default: 60s.
	RefreshBefore caddy.Duration `json:"refresh_before,omitempty"`

	// AllowDotSegments lets through requests whose path has a segment
	// that, without its ";" parameters and percent-decoded (once or
	// twice), is "." or "..". Off by default: browsers never send such
	// paths, and upstreams resolve them differently from Caddy's matchers
	// (Tomcat reads /public/..;/admin as /admin), so they are refused with
	// 400 rather than reach a route whose policy was chosen for another
	// path. Turn it on only for an upstream that takes "." or ".." as
	// names. Paths with a segment that is only a ";" parameter, a control
	// character or an overlong UTF-8 form are refused either way.
	AllowDotSegments bool `json:"allow_dot_segments,omitempty"`

	// CORS lets scripts of the listed origins call the protected site.
	// Default: none; a CORS preflight gets 403 and never reaches the
	// upstream.
	CORS *GatewayCORS `json:"cors,omitempty"`

	// DisableMetrics stops the gateway counting into its Prometheus
	// metrics (authgate_gateway_*, see the README's "Metrics"). Default:
	// off, the metrics are counted and exposed wherever Caddy's are.
	DisableMetrics bool `json:"disable_metrics,omitempty"`

	// IdentityAssertion, when set, sends the upstream a signed JWT of the
	// user's identity, and serves its keys. Default: none.
	IdentityAssertion *GatewayAssertion `json:"identity_assertion,omitempty"`

	logger        *zap.Logger
	audit         *zap.Logger // the audit log (gateway_audit.go); nil: none
	metrics       *gatewayMetrics
	oidc          *oidcClient
	codec         *sessionCodec
	cache         *sessionCache
	bearerCache   *sessionCache
	dpopSeen      *replaySet // DPoP proofs seen, shared by the gateways of this process (dpopReplays)
	refresher     *refresher
	cors          *corsPolicy      // nil: no origin allowed
	assertion     *assertionSigner // nil: no identity assertion
	strip         headerStripper
	cookieName    string
	flowPrefix    string
	scopes        []string
	allowAll      bool
	browserMode   bool
	acceptBearer  bool
	acceptCookie  bool
	refreshBefore time.Duration
	lifetime      time.Duration
	clockSkew     time.Duration
	scopeNeeded   string // the scope of insufficient_scope challenges: the first scope rule's

	introspectCache time.Duration
	userinfoCheck   bool                // BearerCheck is "userinfo"
	userinfoCache   time.Duration       // UserinfoCache, defaulted
	userinfoCalls   *singleflight.Group // one userinfo call per token at a time
	keptClaims      map[string]bool     // what a session too large for its cookies keeps
	binding         string              // sessionBinding of Issuer and ClientID
	foreignCookie   *sync.Once          // warns once that another gateway's cookie came here
	secretGiven     bool                // client_secret was configured, before its placeholders were resolved
	refresherKey    string              // the key of refresher in refreshers, once loaded
	redisKey        string              // the key of the store's client in redisPool, once loaded
	revocations     *revocations        // the revocation list of the store, shared
	revocationsKey  string              // its key in revocationPool, once loaded
}

// GatewayCookie configures the gateway's cookies.
type GatewayCookie struct {
	// Name of the session cookie; chunks are <name>_1, <name>_2, ... and
	// login flow cookies <name>_flow_<id>. Default: authgate. Gateways of
	// different issuers or client_ids on one host need names of their
	// own: they ignore each other's cookies but leave them alone, so with
	// one name each login replaces the other's.
	Name string `json:"name,omitempty"`
	// Domain of the cookies. Default: none (this host only).
	Domain string `json:"domain,omitempty"`
	// Path of the cookies. Default: /.
	Path string `json:"path,omitempty"`
	// Lifetime of a session. Default: 168h.
	Lifetime caddy.Duration `json:"lifetime,omitempty"`
	// SameSite is lax (default), strict or none.
	SameSite string `json:"same_site,omitempty"`
	// Secure is "auto" (default: Secure unless the request is plain http
	// to a loopback host), "always" or "never".
	Secure string `json:"secure,omitempty"`
}

// GatewayRule is one allow rule: exactly one of Email, Group, Claim or
// Scope.
type GatewayRule struct {
	// Email is an exact address or *@domain, compared without ASCII
	// case; an address with more than one "@" matches neither. It
	// admits only an address whose email_verified claim is true, unless
	// the gateway's AllowUnverifiedEmail is set.
	Email string `json:"email,omitempty"`
	// Group must be in the groups claim.
	Group string `json:"group,omitempty"`
	// Claim and Value: the claim must equal, or as a list contain, Value.
	Claim string `json:"claim,omitempty"`
	Value string `json:"value,omitempty"`
	// Scope lists scopes a bearer token must all carry (modes api and
	// bearer), in its scope claim (a space-separated string, RFC 9068
	// §2.2.3) or its scp claim (a list or such a string, as Microsoft
	// Entra ID and Okta send it). A cookie session matches no scope rule:
	// its identity is the ID token's, which has no scope.
	Scope []string `json:"scope,omitempty"`
}

// Defaults of the gateway's options.
const (
	defaultRedirectPath  = "/oauth2/callback"
	defaultSignInPath    = "/oauth2/start"
	defaultSignOutPath   = "/oauth2/sign_out"
	defaultCookieName    = "authgate"
	defaultLifetime      = 168 * time.Hour
	defaultRefreshBefore = 60 * time.Second
	defaultClockSkew     = 30 * time.Second
	maxClockSkew         = 5 * time.Minute
	sessionKeyStorageKey = "authgate/gateway/session_key"
)

// CaddyModule returns the Caddy module information.
func (Gateway) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.oidc_gateway",
		New: func() caddy.Module { return new(Gateway) },
	}
}

// Provision resolves placeholders, applies defaults and derives the cookie
// keys. It makes no request to the issuer: discovery waits for the first
// request that needs it.
func (g *Gateway) Provision(ctx caddy.Context) error {
	g.logger = ctx.Logger()
	g.audit = auditLogger(ctx)
	repl := caddy.NewReplacer()
	g.secretGiven = g.ClientSecret != ""
	g.ClientSecret = repl.ReplaceAll(g.ClientSecret, "")

	if g.RedirectPath == "" {
		g.RedirectPath = defaultRedirectPath
	}
	if g.SignInPath == "" {
		g.SignInPath = defaultSignInPath
	}
	if g.SignOutPath == "" {
		g.SignOutPath = defaultSignOutPath
	}
	if g.BackchannelLogoutPath == "" {
		g.BackchannelLogoutPath = defaultBackchannelLogoutPath
	}
	if g.PostLogoutRedirect == "" {
		g.PostLogoutRedirect = "/"
	}
	g.scopes = g.Scopes
	if len(g.scopes) == 0 {
		g.scopes = []string{"openid", "profile", "email"}
	}
	g.cookieName = g.Cookie.Name
	if g.cookieName == "" {
		g.cookieName = defaultCookieName
	}
	g.flowPrefix = g.cookieName + "_flow_"
	if g.Cookie.Path == "" {
		g.Cookie.Path = "/"
	}
	g.lifetime = time.Duration(g.Cookie.Lifetime)
	if g.lifetime == 0 {
		g.lifetime = defaultLifetime
	}
	g.refreshBefore = time.Duration(g.RefreshBefore)
	if g.refreshBefore == 0 {
		g.refreshBefore = defaultRefreshBefore
	}
	switch g.Mode {
	case "", "browser":
		g.browserMode, g.acceptCookie = true, true
	case "api":
		g.acceptCookie, g.acceptBearer = true, true
	case "bearer":
		g.acceptBearer = true
	}
	g.allowAll = len(g.Allow) == 0
	g.clockSkew = defaultClockSkew
	if g.ClockSkew != nil {
		g.clockSkew = time.Duration(*g.ClockSkew)
	}
	g.keptClaims = map[string]bool{"email": true, "email_verified": true, "preferred_username": true, "groups": true, "name": true}
	for _, claim := range g.Headers {
		g.keptClaims[claim] = true
	}
	for _, rule := range g.Allow {
		if rule.Claim != "" {
			g.keptClaims[rule.Claim] = true
		}
		if len(rule.Scope) != 0 && g.scopeNeeded == "" {
			g.scopeNeeded = strings.Join(rule.Scope, " ")
		}
	}
	if g.CORS != nil && g.CORS.validate() == nil {
		g.cors = newCORSPolicy(g.CORS) // Validate reports bad options
	}
	g.introspectCache = time.Duration(g.IntrospectCache)
	if g.introspectCache == 0 {
		g.introspectCache = 10 * time.Second
	}
	g.provisionUserinfo()

	secrets := make([]string, 0, len(g.SessionKeys))
	for _, k := range g.SessionKeys {
		secrets = append(secrets, repl.ReplaceAll(k, ""))
	}
	var shared *sharedSessionKey
	if len(secrets) == 0 && g.Store != nil && g.Store.Redis != nil {
		r, key, err := loadRedis(g.Store.Redis, g.logger)
		if err != nil {
			return err
		}
		g.redisKey = key
		shared = &sharedSessionKey{store: r, issuer: g.Issuer, clientID: g.ClientID, maxAge: g.lifetime}
	}
	if len(secrets) == 0 && shared == nil {
		data, _, err := loadOrCreate(ctx, ctx.Storage(), sessionKeyStorageKey, newSessionKeySecret)
		if err != nil {
			return fmt.Errorf("session key: %w", err)
		}
		secrets = append(secrets, string(data))
	}
	// Keys and sessions are bound to the issuer and client_id: a login is
	// shared by the gateways of one client at one provider, never by the
	// others, whatever session keys they have.
	g.binding = sessionBinding(g.Issuer, g.ClientID)
	g.foreignCookie = new(sync.Once)
	var err error
	if shared != nil {
		// Loaded at the first request: Provision makes no connection.
		g.codec = &sessionCodec{tag: g.binding, shared: shared}
	} else if g.codec, err = newSessionCodec(secrets, g.Issuer, g.ClientID, g.lifetime); err != nil {
		return err
	}
	if err := g.provisionAssertion(ctx); err != nil {
		return err
	}
	g.strip = newHeaderStripper(g.identityHeaderNames())
	g.cache = newSessionCache(4096)
	g.bearerCache = newSessionCache(4096)
	g.loadReplaySet()
	rf, _, err := refreshers.LoadOrNew(g.binding, func() (caddy.Destructor, error) {
		return newRefresher(), nil
	})
	if err != nil {
		return err
	}
	g.refresher, g.refresherKey = rf.(*refresher), g.binding
	if g.revocations, g.revocationsKey, err = g.openRevocations(contextStorage(ctx)); err != nil {
		return err
	}
	if g.metrics, err = newGatewayMetrics(ctx.GetMetricsRegistry(), !g.DisableMetrics); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	g.oidc = newOIDCClient(g.Issuer, g.logger)
	g.oidc.clientID, g.oidc.clientSecret, g.oidc.scopes, g.oidc.authMethod = g.ClientID, g.ClientSecret, g.scopes, g.TokenAuthMethod
	g.oidc.clockSkew = g.clockSkew
	if g.PublicClient {
		g.oidc.authMethod = "none"
	}
	g.oidc.http.Transport = g.metrics.transport(http.DefaultTransport)
	return nil
}

// Validate checks the options together.
func (g *Gateway) Validate() error {
	if g.Issuer == "" {
		return errors.New("oidc_gateway: issuer is required")
	}
	if u, err := url.Parse(g.Issuer); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("oidc_gateway: issuer %q is not an absolute http(s) URL", g.Issuer)
	}
	if g.acceptCookie && g.ClientID == "" {
		return errors.New("oidc_gateway: client_id is required")
	}
	switch g.Mode {
	case "", "browser", "api", "bearer":
	default:
		return fmt.Errorf("oidc_gateway: mode %q is not browser, api or bearer", g.Mode)
	}
	if g.Introspect && (!g.acceptBearer || g.ClientID == "" || g.ClientSecret == "") {
		return errors.New("oidc_gateway: introspect needs mode api or bearer, client_id and client_secret")
	}
	switch {
	case g.TokenAuthMethod != "" && g.TokenAuthMethod != "basic" && g.TokenAuthMethod != "post":
		return fmt.Errorf("oidc_gateway: token_auth_method %q is not basic or post", g.TokenAuthMethod)
	case g.TokenAuthMethod != "" && g.PublicClient:
		return errors.New("oidc_gateway: public_client sends no secret, so it takes no token_auth_method; remove one of them")
	}
	if err := g.validateSecret(); err != nil {
		return err
	}
	if err := g.validateBearerCheck(); err != nil {
		return err
	}
	if g.acceptBearer && len(g.Audience) == 0 && len(g.AcceptIDTokens) == 0 && g.BearerCheck != bearerCheckUserinfo {
		return fmt.Errorf("oidc_gateway: mode %s needs an audience that bearer tokens must carry", g.Mode)
	}
	for _, p := range []string{g.RedirectPath, g.SignInPath, g.SignOutPath, g.BackchannelLogoutPath} {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("oidc_gateway: path %q must start with /", p)
		}
	}
	switch strings.ToLower(g.Cookie.SameSite) {
	case "", "lax", "strict", "none":
	default:
		return fmt.Errorf("oidc_gateway: cookie same_site %q is not lax, strict or none", g.Cookie.SameSite)
	}
	switch g.Cookie.Secure {
	case "", "auto", "always", "never":
	default:
		return fmt.Errorf("oidc_gateway: cookie secure %q is not auto, always or never", g.Cookie.Secure)
	}
	if g.CORS != nil {
		if err := g.CORS.validate(); err != nil {
			return fmt.Errorf("oidc_gateway: %w", err)
		}
	}
	if g.IdentityAssertion != nil {
		if err := g.IdentityAssertion.validate(); err != nil {
			return fmt.Errorf("oidc_gateway: %w", err)
		}
	}
	if g.ClockSkew != nil && (*g.ClockSkew < 0 || time.Duration(*g.ClockSkew) > maxClockSkew) {
		return fmt.Errorf("oidc_gateway: clock_skew %s is not between 0 and %s", time.Duration(*g.ClockSkew), maxClockSkew)
	}
	for i, r := range g.Allow {
		n := 0
		for _, set := range []bool{r.Email != "", r.Group != "", r.Claim != "", r.Scope != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("oidc_gateway: allow rule %d must have exactly one of email, group, claim or scope", i+1)
		}
		if r.Scope != nil {
			if !g.acceptBearer {
				return fmt.Errorf("oidc_gateway: allow scope (rule %d) needs mode api or bearer: only bearer tokens carry scopes", i+1)
			}
			if g.BearerCheck == bearerCheckUserinfo {
				return fmt.Errorf("oidc_gateway: allow scope (rule %d) cannot work with bearer_check userinfo: userinfo answers claims, never the token's scopes", i+1)
			}
			if err := checkScopeTokens(r.Scope); err != nil {
				return fmt.Errorf("oidc_gateway: allow scope (rule %d): %w", i+1, err)
			}
		}
	}
	return nil
}

// validateSecret checks that a gateway that runs the code flow can
// authenticate at the token endpoint: a confidential client needs a
// secret, and an empty one would only fail at the first login, as "Sign-in
// failed". Errors never quote the secret.
func (g *Gateway) validateSecret() error {
	switch {
	case g.PublicClient && g.ClientSecret != "":
		return errors.New("oidc_gateway: public_client sends no client_secret; remove one of them")
	case g.PublicClient, !g.acceptCookie, strings.TrimSpace(g.ClientSecret) != "":
		// A public client has no secret; a bearer-only gateway has no
		// token endpoint to call (introspect is checked above).
		return nil
	case g.ClientSecret != "":
		return errors.New("oidc_gateway: client_secret is required (it is only white space)")
	case g.secretGiven:
		return errors.New("oidc_gateway: client_secret is required (empty after resolving placeholders; is the environment variable set?)")
	default:
		return errors.New("oidc_gateway: client_secret is required (or public_client, for a client registered at the provider as public, which authenticates with PKCE alone)")
	}
}

// ServeHTTP handles the gateway's own paths and checks every other request.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if err := checkPath(r.URL.Path, g.AllowDotSegments); err != nil {
		// Caddy's matchers chose this route without reading the path as
		// the upstream may: refused, whatever the route's policy.
		g.metrics.count(outcomeBadRequest)
		return caddyhttp.Error(http.StatusBadRequest, err)
	}
	if g.acceptCookie {
		switch r.URL.Path {
		case g.RedirectPath:
			return g.serveCallback(w, r)
		case g.SignInPath:
			return g.serveSignIn(w, r)
		case g.SignOutPath:
			g.metrics.count(outcomeSignOut)
			return g.serveSignOut(w, r)
		case g.BackchannelLogoutPath:
			g.metrics.count(outcomeBackchannelLogout)
			return g.serveBackchannelLogout(w, r)
		}
	}

	if g.assertion != nil && r.URL.Path == AssertionJWKSPath {
		return g.assertion.serveJWKS(w, r)
	}

	if isPreflight(r) {
		g.metrics.count(outcomePreflight)
		return g.servePreflight(w, r, next)
	}
	w, upstream := g.corsWriters(w, r)

	var id *identity
	o := outcomeNone
	if g.acceptBearer {
		if id, o = g.bearerIdentity(w, r); o != outcomeNone {
			g.metrics.count(o)
			return nil // answered
		}
	}
	if id == nil && g.acceptCookie {
		if id, o = g.cookieIdentity(w, r); id == nil {
			g.metrics.count(o)
			return nil
		}
	}
	if id == nil {
		g.metrics.count(g.unauthenticated(w, r, ""))
		return nil
	}
	if !g.allowed(id) {
		g.metrics.count(g.forbidden(w, r, id))
		return nil
	}
	if o == outcomeNone {
		o = outcomePassed
	}
	assertion := ""
	if g.assertion != nil {
		var err error
		if assertion, err = g.assertion.assertionFor(r, id, time.Now()); err != nil {
			g.metrics.count(outcomeUnavailable)
			w.Header().Set("Retry-After", "5")
			return caddyhttp.Error(http.StatusServiceUnavailable, err)
		}
	}
	g.metrics.count(o)
	g.forward(r, id, assertion)
	if longLived(r) {
		return g.serveLongLived(upstream, r, id, next)
	}
	return next.ServeHTTP(upstream, r)
}

// Cleanup releases the gateway's share of its refresher and store.
func (g *Gateway) Cleanup() error {
	var errs []error
	if g.refresherKey != "" {
		_, err := refreshers.Delete(g.refresherKey)
		errs = append(errs, err)
		g.refresherKey = ""
	}
	if g.revocationsKey != "" {
		_, err := revocationPool.Delete(g.revocationsKey)
		errs = append(errs, err)
		g.revocationsKey = ""
	}
	errs = append(errs, g.cleanupAssertion())
	if g.dpopSeen != nil {
		_, err := dpopReplays.Delete(dpopReplaysKey)
		errs = append(errs, err)
		g.dpopSeen = nil
	}
	if g.redisKey != "" {
		_, err := redisPool.Delete(g.redisKey)
		errs = append(errs, err)
		g.redisKey = ""
	}
	return errors.Join(errs...)
}

// checkScopeTokens checks an allow scope rule's scopes: at least one,
// each a scope-token of RFC 6749 §3.3 (printable ASCII without space, '"'
// or backslash), which the insufficient_scope challenge can quote as it is.
func checkScopeTokens(scopes []string) error {
	if len(scopes) == 0 {
		return errors.New("no scope given")
	}
	for _, sc := range scopes {
		if sc == "" {
			return errors.New("an empty scope")
		}
		for i := 0; i < len(sc); i++ {
			if c := sc[i]; c <= 0x20 || c >= 0x7f || c == '"' || c == '\\' {
				return fmt.Errorf("scope %q is not a scope-token (RFC 6749 §3.3)", sc)
			}
		}
	}
	return nil
}

// deriveKey makes a key from a session key secret for one purpose of the
// gateways of one issuer and client_id (HKDF-SHA256, RFC 5869: the context
// goes in info, §3.2), once, in Provision. So a session key shared by
// several gateways, the default one in Caddy's storage or a configured
// one, gives each client its own keys.
func deriveKey(secret, purpose, issuer, clientID string, n int) ([]byte, error) {
	info := "authgate " + purpose + "\x00" + issuer + "\x00" + clientID
	key := make([]byte, n)
	if _, err := io.ReadFull(hkdf.New(sha256.New, []byte(secret), nil, []byte(info)), key); err != nil {
		return nil, err
	}
	return key, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Gateway)(nil)
	_ caddy.Validator             = (*Gateway)(nil)
	_ caddy.CleanerUpper          = (*Gateway)(nil)
	_ caddyhttp.MiddlewareHandler = (*Gateway)(nil)
	_ caddyfile.Unmarshaler       = (*Gateway)(nil)
)
