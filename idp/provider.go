// Package idp is an OpenID Provider as a plain net/http handler: discovery,
// JWKS, the authorization endpoint with its login page, the token endpoint
// and userinfo, for the authorization code flow with PKCE.
package idp

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/gorilla/securecookie"
	"golang.org/x/crypto/bcrypt"
)

// Endpoint paths, relative to the issuer's path. They are IdentityServer's,
// so clients written against it work unchanged.
const (
	PathDiscovery  = "/.well-known/openid-configuration"
	PathJWKS       = "/.well-known/openid-configuration/jwks"
	PathAuthorize  = "/connect/authorize"
	PathToken      = "/connect/token"
	PathUserinfo   = "/connect/userinfo"
	PathEndSession = "/connect/endsession"
	PathRevocation = "/connect/revocation"
	PathIntrospect = "/connect/introspect"
	PathConsent    = "/account/consent"
	PathLogin      = "/account/login"
	PathLogout     = "/account/logout"

	// PathDeviceAuthorization is the device authorization endpoint and
	// PathDevice the page where users enter a device's user_code (RFC
	// 8628 §3.1, §3.3).
	PathDeviceAuthorization = "/connect/deviceauthorization"
	PathDevice              = "/device"
)

// Identity scopes of OpenID Connect Core §5.4 that the provider knows.
var identityScopes = map[string][]string{
	"openid":  {"sub"},
	"profile": {"name", "family_name", "given_name", "middle_name", "nickname", "preferred_username", "profile", "picture", "website", "gender", "birthdate", "zoneinfo", "locale", "updated_at"},
	"email":   {"email", "email_verified"},
	"address": {"address"},
	"phone":   {"phone_number", "phone_number_verified"},
	"groups":  {"groups"}, // not in the spec; as Dex has it
}

// Values of [Client.RefreshTokenUsage] and [Client.RefreshTokenExpiration].
const (
	RefreshOneTime  = "one_time"
	RefreshReuse    = "reuse"
	RefreshAbsolute = "absolute"
	RefreshSliding  = "sliding"
)

// scopeOfflineAccess asks for a refresh token (OpenID Connect Core §11).
const scopeOfflineAccess = "offline_access"

var defaultAllowedScopes = []string{"openid", "profile", "email"}

// Provider is an OpenID Provider. It is an [http.Handler] serving the paths
// under its issuer; [Provider.Owns] tells which requests those are.
type Provider struct {
	issuer      string
	base        string // issuer path without trailing slash
	secure      bool   // issuer is https: cookies are Secure
	origin      string // the issuer's origin, as browsers send it in Origin
	clients     map[string]*client
	corsOrigins map[string]bool         // origins any client registered
	accounts    atomic.Pointer[userSet] // swapped whole by SetUsers
	apiScopes   map[string]bool
	resources   []APIResource
	staticAud   string
	emitStatic  bool          // staticAud in every access token
	requirePAR  bool          // every client must push its authorization requests (RFC 9126 §5)
	revokeFloor time.Duration // least lifetime of a family revocation: the longest sliding lifetime without an absolute limit

	keys       atomic.Pointer[keyState] // swapped whole by SetKeys
	atAlg      string                   // access token algorithm
	jwksMaxAge string                   // Cache-Control of the JWKS

	cookies   *securecookie.SecureCookie
	totpSet   []securecookie.Codec // seals TOTP secrets at rest (totp.go)
	cookieSet []securecookie.Codec
	deviceSet []securecookie.Codec // cookieSet with the device cookie's lifetime

	codeTTL        time.Duration
	deviceTTL      time.Duration // of a device_code and its user_code
	deviceInterval time.Duration // between polls of a device_code
	sessionTTL     time.Duration
	comparer       PasswordComparer
	fakeKey        []byte // picks a fake hash for a username
	throttle       ThrottleStore
	throttleCfg    ThrottleConfig
	templates      *template.Template
	checkSession   *checkSession // nil unless Config.SessionManagement

	clientIPFunc func(*http.Request) string

	store          Store
	bcl            *backchannel
	trackedClients []*client // with a back- or front-channel logout URI or LogoutRevokesRefreshTokens, by id
	log            *slog.Logger
	events         func(context.Context, Event)
	now            func() time.Time
	random         io.Reader
	jwksClient     *http.Client // fetches clients' jwks_uri
	mux            *http.ServeMux
	dpop           *dpopState
	webauthn       *webauthn.WebAuthn // nil: passkeys are off
}

// unlimited says whether the client's refresh token families have no
// absolute end: each use moves the end a sliding lifetime ahead.
func (c *client) unlimited() bool { return c.AbsoluteRefreshTokenLifetime == NoAbsoluteLimit }

// familyLifetime is how long a new refresh token family of c lives unless
// it is used.
func (c *client) familyLifetime() time.Duration {
	if c.unlimited() {
		return c.SlidingRefreshTokenLifetime
	}
	return c.AbsoluteRefreshTokenLifetime
}

type client struct {
	Client
	redirects    map[string]bool
	loopback     map[string]bool // loopback IP redirect URIs without their port
	postLogout   map[string]bool
	claimsPrefix string
	scopes       map[string]bool
	secretHash   []byte
	methods      map[string]bool // token endpoint auth methods, but none
	keys         *clientKeys     // of a private_key_jwt client
	dpopJKT      string          // for one token request: the key its tokens are bound to (see tokenDPoP)
}

// New checks cfg and returns a provider keeping its state in store.
func New(cfg Config, store Store) (*Provider, error) {
	if store == nil {
		return nil, errors.New("idp: no store")
	}
	iss, err := url.Parse(cfg.Issuer)
	if err != nil || (iss.Scheme != "https" && iss.Scheme != "http") || iss.Host == "" {
		return nil, fmt.Errorf("idp: issuer %q is not an absolute http(s) URL", cfg.Issuer)
	}
	if iss.RawQuery != "" || iss.Fragment != "" {
		return nil, fmt.Errorf("idp: issuer %q has a query or fragment (OpenID Connect Discovery §3)", cfg.Issuer)
	}
	if err := checkIssuerPath(iss.Path); err != nil {
		return nil, fmt.Errorf("idp: issuer %q: %w", cfg.Issuer, err)
	}
	p := &Provider{
		issuer:         cfg.Issuer,
		base:           strings.TrimSuffix(iss.Path, "/"),
		secure:         iss.Scheme == "https",
		origin:         webOrigin(iss),
		clients:        make(map[string]*client),
		corsOrigins:    make(map[string]bool),
		apiScopes:      make(map[string]bool),
		resources:      cfg.APIResources,
		staticAud:      cfg.StaticAudience,
		emitStatic:     cfg.EmitStaticAudience,
		requirePAR:     cfg.RequirePushedAuthorizationRequests,
		codeTTL:        cmp(cfg.CodeLifetime, DefaultCodeLifetime),
		deviceTTL:      cmp(cfg.DeviceCodeLifetime, DefaultDeviceCodeLifetime),
		deviceInterval: cmp(cfg.DevicePollInterval, DefaultDevicePollInterval),
		sessionTTL:     cmp(cfg.SessionLifetime, DefaultSessionLifetime),
		comparer:       cfg.PasswordComparer,
		store:          store,
		log:            cfg.Logger,
		events:         cfg.Events,
		now:            cfg.Now,
		random:         cfg.Rand,
		jwksClient:     cfg.JWKSClient,

		clientIPFunc: cfg.ClientIP,
	}
	if p.staticAud == "" {
		p.staticAud = strings.TrimSuffix(cfg.Issuer, "/") + "/resources"
	}
	if p.comparer == nil {
		p.comparer = BcryptComparer{}
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.random == nil {
		p.random = rand.Reader
	}
	if p.jwksClient == nil {
		p.jwksClient = &http.Client{Timeout: jwksFetchTimeout}
	}
	if cfg.DeviceCodeLifetime < 0 || cfg.DevicePollInterval < 0 || p.deviceInterval%time.Second != 0 {
		return nil, errors.New("idp: device code lifetime and poll interval must be positive, the interval whole seconds")
	}
	p.throttle = cfg.ThrottleStore
	if p.throttle == nil {
		p.throttle = newMemoryThrottle()
	}
	if t := cfg.Throttle; t.UserIP.Base < 0 || t.UserIP.Max < 0 || t.User.Base < 0 || t.User.Max < 0 || t.IP.Base < 0 || t.IP.Max < 0 ||
		t.Device.Base < 0 || t.Device.Max < 0 || t.DeviceCookieLifetime < 0 {
		return nil, errors.New("idp: negative throttle duration")
	}
	p.throttleCfg = ThrottleConfig{
		UserIP:               cfg.Throttle.UserIP.orDefault(DefaultThrottleUserIP),
		User:                 cfg.Throttle.User.orDefault(DefaultThrottleUser),
		IP:                   cfg.Throttle.IP.orDefault(DefaultThrottleIP),
		Device:               cfg.Throttle.Device.orDefault(DefaultThrottleDevice),
		DeviceCookieLifetime: cmp(cfg.Throttle.DeviceCookieLifetime, DefaultDeviceCookieLifetime),
	}

	for _, s := range cfg.APIScopes {
		if _, ok := identityScopes[s]; ok || s == "offline_access" {
			return nil, fmt.Errorf("idp: api scope %q is an identity scope", s)
		}
		p.apiScopes[s] = true
	}
	for _, r := range cfg.APIResources {
		if r.Name == "" {
			return nil, errors.New("idp: api resource without a name")
		}
		for _, s := range r.Scopes {
			if !p.apiScopes[s] {
				return nil, fmt.Errorf("idp: api resource %q: scope %q is not an api scope", r.Name, s)
			}
		}
		for _, c := range r.UserClaims {
			if c == "" || slices.Contains(ReservedAccessTokenClaims, c) {
				return nil, fmt.Errorf("idp: api resource %q: user claim %q is set by the access token itself", r.Name, c)
			}
		}
	}
	if err := p.setClients(cfg.Clients); err != nil {
		return nil, err
	}
	if cfg.SessionManagement {
		p.checkSession = newCheckSession(p.clients) // before SetKeys builds discovery
	}
	if p.bcl, err = newBackchannel(cfg.Backchannel); err != nil {
		return nil, err
	}
	p.atAlg = cfg.AccessTokenAlg
	if p.atAlg == "" {
		p.atAlg = RS256
	}
	if cfg.JWKSMaxAge < 0 {
		return nil, errors.New("idp: negative JWKS max age")
	}
	p.jwksMaxAge = fmt.Sprintf("public, max-age=%d", int64(cmp(cfg.JWKSMaxAge, DefaultJWKSMaxAge)/time.Second))
	if err := p.SetKeys(cfg.Keys); err != nil {
		return nil, err
	}
	if err := p.setCookieKeys(cfg.CookieKeys); err != nil {
		return nil, err
	}
	p.setFakeKey(cfg.CookieKeys[0][0])
	p.totpSet = totpCodecs(cfg.CookieKeys)
	if p.dpop, err = p.newDPoPState(cfg); err != nil {
		return nil, err
	}
	us, err := p.newUserSet(cfg.Users, nil)
	if err != nil {
		return nil, err
	}
	p.accounts.Store(us)
	if p.templates, err = parseTemplates(cfg.Templates); err != nil {
		return nil, err
	}
	if err := p.setPasskeys(cfg, iss.Hostname()); err != nil {
		return nil, err
	}

	p.mux = http.NewServeMux()
	p.mux.HandleFunc(p.base+PathDiscovery, p.cors(p.serveDiscovery))
	p.mux.HandleFunc(p.base+PathJWKS, p.cors(p.serveJWKS))
	p.mux.HandleFunc(p.base+PathAuthorize, p.serveAuthorize)
	p.mux.HandleFunc(p.base+PathToken, p.cors(p.serveToken))
	p.mux.HandleFunc(p.base+PathUserinfo, p.cors(p.serveUserinfo))
	p.mux.HandleFunc(p.base+PathRevocation, p.cors(p.serveRevocation))
	p.mux.HandleFunc(p.base+PathIntrospect, p.serveIntrospect)
	p.mux.HandleFunc(p.base+PathConsent, p.serveConsent)
	p.mux.HandleFunc(p.base+PathEndSession, p.serveEndSession)
	p.mux.HandleFunc(p.base+PathLogin, p.serveLogin)
	p.mux.HandleFunc(p.base+PathLogout, p.serveLogout)
	p.mux.HandleFunc(p.base+PathDeviceAuthorization, p.serveDeviceAuthorization)
	p.mux.HandleFunc(p.base+PathPushedAuthorization, p.cors(p.servePushedAuthorization))
	p.mux.HandleFunc(p.base+PathDevice, p.serveDevice)
	p.mux.HandleFunc(p.base+PathTOTP, p.serveTOTP)
	p.mux.HandleFunc(p.base+PathLoginTOTP, p.serveLoginTOTP)
	if p.checkSession != nil {
		p.mux.HandleFunc(p.base+PathCheckSession, p.serveCheckSession)
	}
	p.routePasskeys()
	return p, nil
}

// ServeHTTP serves the provider's endpoints, and 404 for anything else.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mux.ServeHTTP(w, r)
}

// Owns reports whether r is for one of the provider's endpoints, so that a
// host can pass every other request on.
func (p *Provider) Owns(r *http.Request) bool {
	_, pattern := p.mux.Handler(r)
	return pattern != ""
}

// Issuer returns the issuer identifier.
func (p *Provider) Issuer() string { return p.issuer }

func (p *Provider) setClients(list []Client) error {
	for _, c := range list {
		if c.ID == "" {
			return errors.New("idp: client without an id")
		}
		if _, dup := p.clients[c.ID]; dup {
			return fmt.Errorf("idp: client %q is declared twice", c.ID)
		}
		cl, err := p.newClient(c)
		if err != nil {
			return fmt.Errorf("idp: client %q: %w", c.ID, err)
		}
		p.clients[c.ID] = cl
		if cl.tracked() {
			p.trackedClients = append(p.trackedClients, cl)
		}
		for _, o := range c.CORSOrigins {
			p.corsOrigins[o] = true
		}
	}
	return nil
}

// newClient checks a client's configuration and applies its defaults.
func (p *Provider) newClient(c Client) (*client, error) {
	switch {
	case c.Public && (c.Secret != "" || c.SecretHash != ""):
		return nil, errors.New("a public client has no secret")
	case c.Public && (c.InsecurePKCEOptional || c.AllowPlainPKCE):
		return nil, errors.New("a public client must use PKCE with S256")
	case c.Public && c.AllowClientCredentials:
		return nil, errors.New("a public client cannot use client_credentials")
	case c.Public && c.RefreshTokenUsage == RefreshReuse && !c.RequireDPoP:
		// RFC 9700 §4.14.2: a public client's refresh tokens must be
		// rotated or sender-constrained; they are sender-constrained
		// (bound to its DPoP key) only when it must use DPoP.
		// IdentityServer accepts ReUse here.
		return nil, errors.New(`refresh token usage "reuse" is refused for a public client unless it requires DPoP: RFC 9700 §4.14.2 requires its refresh tokens to be rotated or sender-constrained; use "one_time" (the default) or require DPoP`)
	case !c.Public && c.Secret == "" && c.SecretHash == "" && len(c.JWKS) == 0 && c.JWKSURI == "":
		return nil, errors.New("a secret, secret hash, jwks or jwks_uri is required")
	case c.Secret != "" && c.SecretHash != "":
		return nil, errors.New("secret and secret hash are exclusive")
	case len(c.RedirectURIs) == 0 && !c.AllowClientCredentials && !c.AllowPasswordGrant && !c.AllowDeviceFlow:
		return nil, errors.New("at least one redirect URI is required")
	}
	if !checkRequire(c.Require) {
		return nil, fmt.Errorf("require %q is not %q or %q", c.Require, RequirePasskey, RequirePasskeyOrOTP)
	}
	cl := &client{Client: c, redirects: make(map[string]bool), loopback: make(map[string]bool), postLogout: make(map[string]bool), scopes: make(map[string]bool)}
	if err := p.setAuthMethods(cl); err != nil {
		return nil, err
	}
	for _, u := range c.RedirectURIs {
		if err := checkRedirectURI(u); err != nil {
			return nil, fmt.Errorf("redirect URI %q %w", u, err)
		}
		cl.redirects[u] = true
		if key, ok := loopbackKey(u); ok {
			cl.loopback[key] = true
		}
	}
	for _, u := range c.PostLogoutRedirectURIs {
		if err := checkRedirectURI(u); err != nil {
			return nil, fmt.Errorf("post-logout redirect URI %q %w", u, err)
		}
		cl.postLogout[u] = true
	}
	if c.BackchannelLogoutURI != "" {
		if err := checkBackchannelURI(c.BackchannelLogoutURI); err != nil {
			return nil, fmt.Errorf("backchannel logout URI %q %w", c.BackchannelLogoutURI, err)
		}
	} else if c.BackchannelLogoutSessionRequired {
		return nil, errors.New("backchannel logout session required without a backchannel logout URI")
	}
	if c.FrontchannelLogoutURI != "" {
		if err := checkFrontchannelURI(c); err != nil {
			return nil, fmt.Errorf("frontchannel_logout_uri %q %w", c.FrontchannelLogoutURI, err)
		}
	} else if c.FrontchannelLogoutSessionRequired {
		return nil, errFrontchannelSession
	}
	for _, o := range c.CORSOrigins {
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			return nil, fmt.Errorf("CORS origin %q is not scheme://host[:port]", o)
		}
	}
	scopes := c.AllowedScopes
	if len(scopes) == 0 {
		scopes = defaultAllowedScopes
	}
	for _, s := range scopes {
		if !p.knownScope(s) {
			return nil, fmt.Errorf("scope %q is neither an identity scope nor an api scope", s)
		}
		cl.scopes[s] = true
	}
	if c.AllowOfflineAccess {
		cl.scopes[scopeOfflineAccess] = true
	}
	switch c.IDTokenAlg {
	case "":
		cl.IDTokenAlg = RS256
	case RS256, ES256:
	default:
		return nil, fmt.Errorf("id token algorithm %q is not RS256 or ES256", c.IDTokenAlg)
	}
	switch c.RefreshTokenUsage {
	case "":
		cl.RefreshTokenUsage = RefreshOneTime
	case RefreshOneTime, RefreshReuse:
	default:
		return nil, fmt.Errorf("refresh token usage %q is not one_time or reuse", c.RefreshTokenUsage)
	}
	switch c.RefreshTokenExpiration {
	case "":
		cl.RefreshTokenExpiration = RefreshAbsolute
	case RefreshAbsolute, RefreshSliding:
	default:
		return nil, fmt.Errorf("refresh token expiration %q is not absolute or sliding", c.RefreshTokenExpiration)
	}
	if c.AbsoluteRefreshTokenLifetime == NoAbsoluteLimit && cl.RefreshTokenExpiration != RefreshSliding {
		return nil, errors.New("no absolute refresh token lifetime needs sliding refresh token expiration: absolute tokens would never expire")
	}
	if c.AccessTokenLifetime < 0 || c.IDTokenLifetime < 0 || c.AbsoluteRefreshTokenLifetime < 0 && c.AbsoluteRefreshTokenLifetime != NoAbsoluteLimit ||
		c.SlidingRefreshTokenLifetime < 0 || c.RefreshTokenReuseGrace < 0 {
		return nil, errors.New("negative lifetime")
	}
	cl.AccessTokenLifetime = cmp(c.AccessTokenLifetime, DefaultAccessTokenLifetime)
	cl.IDTokenLifetime = cmp(c.IDTokenLifetime, DefaultIDTokenLifetime)
	cl.AbsoluteRefreshTokenLifetime = cmp(c.AbsoluteRefreshTokenLifetime, DefaultAbsoluteRefreshTokenLifetime)
	cl.SlidingRefreshTokenLifetime = cmp(c.SlidingRefreshTokenLifetime, DefaultSlidingRefreshTokenLifetime)
	if cl.unlimited() {
		// A revoked family of such a client lives on in tokens used up to
		// a sliding lifetime before: its revocation must outlast them.
		p.revokeFloor = max(p.revokeFloor, cl.SlidingRefreshTokenLifetime)
	}
	cl.claimsPrefix = "client_"
	if c.ClientClaimsPrefix != nil {
		cl.claimsPrefix = *c.ClientClaimsPrefix
	}
	if c.SecretHash != "" {
		cl.secretHash = []byte(c.SecretHash)
	}
	return cl, nil
}

// checkRedirectURI applies RFC 6749 §3.1.2: absolute, no fragment.
// checkIssuerPath accepts an issuer's path only if it is plain. It
// prefixes the pattern of every endpoint in an [http.ServeMux], where a
// brace starts a wildcard and a space ends a method, and a path that is
// not clean would be redirected away from the endpoints: so segments of
// RFC 3986 §3.3 pchar characters, none percent-encoded, empty, "." or "..".
func checkIssuerPath(path string) error {
	trimmed := strings.TrimSuffix(path, "/")
	if trimmed == "" {
		return nil
	}
	for _, seg := range strings.Split(trimmed[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("path %q is not clean", path)
		}
		for _, c := range []byte(seg) {
			plain := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~!$&'()*+,;=:@", c) >= 0
			if !plain {
				return fmt.Errorf("path %q has a character other than letters, digits and -._~!$&'()*+,;=:@", path)
			}
		}
	}
	return nil
}

func checkRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("is not a URL")
	}
	if !u.IsAbs() || u.Host == "" && (u.Scheme == "http" || u.Scheme == "https") {
		return errors.New("is not absolute")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return errors.New("has a fragment")
	}
	return nil
}

func (p *Provider) setCookieKeys(pairs [][2][]byte) error {
	if len(pairs) == 0 {
		return errors.New("idp: no cookie keys")
	}
	for i, pair := range pairs {
		if len(pair[0]) < 32 || len(pair[1]) != 32 {
			return fmt.Errorf("idp: cookie key pair %d: want a hash key of at least 32 bytes and a 32-byte block key", i)
		}
		sc := securecookie.New(pair[0], pair[1])
		sc.MaxAge(int(p.sessionTTL / time.Second))
		// A sealed authorization request carries the client's state and
		// nonce, which RFC 6749 does not bound: no length cap here, the
		// request size limits bound it instead.
		sc.MaxLength(0)
		sc.SetSerializer(securecookie.JSONEncoder{})
		p.cookieSet = append(p.cookieSet, sc)
		dc := securecookie.New(pair[0], pair[1])
		dc.MaxAge(int(p.throttleCfg.DeviceCookieLifetime / time.Second))
		dc.SetSerializer(securecookie.JSONEncoder{})
		p.deviceSet = append(p.deviceSet, dc)
	}
	p.cookies = p.cookieSet[0].(*securecookie.SecureCookie)
	// securecookie reports a bad key only when it first encodes: find out now.
	if _, err := p.cookies.Encode("probe", "probe"); err != nil {
		return fmt.Errorf("idp: cookie keys: %w", err)
	}
	return nil
}

func (p *Provider) knownScope(s string) bool {
	_, identity := identityScopes[s]
	return identity || s == scopeOfflineAccess || p.apiScopes[s]
}

// url returns the absolute URL of an endpoint path.
func (p *Provider) url(path string) string {
	return strings.TrimSuffix(p.issuer, "/") + path
}

func cmp(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// BcryptComparer is the default [PasswordComparer], and a [FakeHasher],
// for bcrypt hashes of any cost.
type BcryptComparer struct{}

// Compare implements [PasswordComparer]. bcrypt reads only the first 72
// bytes of a password, so that anything after them would match too: a
// longer password is refused, as [bcrypt.GenerateFromPassword] refuses
// to hash one, but only once hashed, so that it takes as long as any
// other.
func (BcryptComparer) Compare(hashed, plaintext []byte) (bool, error) {
	err := bcrypt.CompareHashAndPassword(hashed, plaintext)
	if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
		return false, nil
	}
	return err == nil && len(plaintext) <= maxBcryptPassword, err
}

// maxBcryptPassword is the most of a password that bcrypt reads.
const maxBcryptPassword = 72

// HashCost implements [FakeHasher].
func (BcryptComparer) HashCost(hashed []byte) (string, error) {
	cost, err := bcrypt.Cost(hashed)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("bcrypt cost %d", cost), nil
}

// FakeHash implements [FakeHasher].
func (BcryptComparer) FakeHash(hashed []byte) ([]byte, error) {
	cost, err := bcrypt.Cost(hashed)
	if err != nil {
		return nil, err
	}
	return bcrypt.GenerateFromPassword([]byte(rand.Text()), cost)
}

func (p *Provider) randomString(n int) string {
	b := make([]byte, n)
	if _, err := io.ReadFull(p.random, b); err != nil {
		panic("idp: reading randomness: " + err.Error())
	}
	return base64RawURL(b)
}
