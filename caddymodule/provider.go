package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/authgate/authgate/idp"
)

func init() {
	caddy.RegisterModule(Provider{})
}

// Provider is a bundled OpenID Provider: it lets the users configured here
// log in to the clients configured here with OpenID Connect, so that a
// single Caddy serves both the login and the apps behind it.
//
// It serves the endpoints of an OpenID Provider under the issuer's path:
// discovery at `<issuer>/.well-known/openid-configuration`, JWKS,
// authorization with its login page, token, userinfo and end session. Every
// other request goes on to the next handler. A login is remembered in an
// encrypted cookie, so that one login serves every client (single sign-on).
// The provider sets no placeholders.
//
// Clients use the authorization code flow with PKCE. Passwords and client
// secrets are kept as bcrypt or argon2id hashes, as made by
// `caddy hash-password`; secrets and hashes may be `{env.*}` or `{file.*}`
// placeholders.
//
// Unless signing keys are configured, the provider generates an RS256 and
// an ES256 key on first start, and a key for its cookies: in Caddy's
// storage under `authgate/provider/<digest of the issuer>/`, or in Redis
// with `store redis`; the signing keys rotate on a schedule kept with them
// (see [KeyRotation]). Its authorization codes, refresh tokens and
// revocations live in its store: by default a bbolt file in Caddy's data
// directory, `authgate/provider-<digest of the issuer>.db` (see
// [StateStore]), so that tokens and logins survive reloads and restarts.
// Several Caddy instances serving one issuer share a Redis store.
type Provider struct {
	// Issuer is the provider's identifier, the http(s) URL that clients
	// discover it at and that tokens name in `iss`, for example
	// `https://login.example.com`. Required. Generated keys and the
	// provider's state are kept in storage by issuer: another issuer
	// starts with keys of its own.
	Issuer string `json:"issuer,omitempty"`

	// Clients are the applications (relying parties) that may send users
	// here to log in.
	Clients []ProviderClient `json:"clients,omitempty"`

	// Users are the accounts that can log in.
	Users []ProviderUser `json:"users,omitempty"`

	// UsersFile is the path of a JSON file holding more users: an array of
	// objects of the same shape as Users, as `caddy authgate user` writes
	// it. It is read when the config loads, and again whenever it changes
	// (see UsersFilePoll).
	UsersFile string `json:"users_file,omitempty"`

	// UsersFilePoll is how often the users file is looked at for changes
	// (its size, modification time and content), at least 100ms; a
	// negative value reads it only when the config loads. Default: 5s.
	UsersFilePoll caddy.Duration `json:"users_file_poll,omitempty"`

	// APIScopes are scopes, besides OpenID Connect's identity scopes
	// (openid, profile, email, address, phone), that clients may request
	// for APIs. Default: none.
	APIScopes []string `json:"api_scopes,omitempty"`

	// APIResources are the APIs that accept the provider's access tokens.
	// An access token's audience lists each resource one of whose scopes
	// it grants. Default: none.
	APIResources []ProviderAPIResource `json:"api_resources,omitempty"`

	// StaticAudience is the audience of access tokens that grant no API
	// resource's scope. Default: the issuer followed by `/resources`, as
	// IdentityServer names it.
	StaticAudience string `json:"static_audience,omitempty"`

	// EmitStaticAudience puts StaticAudience into every access token's
	// audience, beside the API resources it grants, as IdentityServer's
	// EmitStaticAudienceClaim. Default: false (only into tokens that grant
	// no API resource).
	EmitStaticAudience bool `json:"emit_static_audience,omitempty"`

	// AccessTokenAlg is the algorithm that signs access tokens: RS256 or
	// ES256. Default: RS256.
	AccessTokenAlg string `json:"access_token_alg,omitempty"`

	// CodeLifetime is how long an authorization code can be redeemed.
	// Default: 1m.
	CodeLifetime caddy.Duration `json:"code_lifetime,omitempty"`

	// DeviceCodeLifetime is how long a device_code and its user_code of
	// the device authorization grant stay good. Default: 10m.
	DeviceCodeLifetime caddy.Duration `json:"device_code_lifetime,omitempty"`

	// DevicePollInterval is how long a device must wait between polls of
	// the token endpoint, in whole seconds; one that polls sooner gets
	// slow_down and 5s more. Default: 5s.
	DevicePollInterval caddy.Duration `json:"device_poll_interval,omitempty"`

	// SessionLifetime is how long a login lasts for single sign-on.
	// Default: 10h.
	SessionLifetime caddy.Duration `json:"session_lifetime,omitempty"`

	// SessionManagement turns on OpenID Connect Session Management 1.0:
	// the check_session_iframe at /connect/checksession, listed in
	// discovery, and session_state in every authorization response, so
	// that a client on the same site as the provider notices a sign-out
	// made elsewhere. Default: off.
	SessionManagement bool `json:"session_management,omitempty"`
	// PasskeyRPID is the WebAuthn relying party ID of passkeys: the
	// issuer's host name or a parent domain of it. Default: the issuer's
	// host name; an issuer on an IP address has no passkeys.
	PasskeyRPID string `json:"passkey_rp_id,omitempty"`

	// PasskeyRPName is the name authenticators show beside a passkey.
	// Default: the RP ID.
	PasskeyRPName string `json:"passkey_rp_name,omitempty"`

	// Templates is a directory of page templates (login.html,
	// consent.html, error.html, message.html, logout.html, device.html,
	// account.html) that replace the built-in ones of the same name.
	// Default: the built-in pages.
	Templates string `json:"templates,omitempty"`

	// SigningKeys are paths of PEM files of private keys (RSA of at least
	// 2048 bits for RS256, or ECDSA P-256 for ES256; PKCS #8, PKCS #1 or
	// SEC 1) that sign tokens. The first key of each algorithm signs; the
	// others are only published, so that tokens they signed keep verifying
	// while keys rotate. An algorithm with a file does not rotate; one
	// without gets generated keys. Default: keys generated on first start
	// and kept in the provider's store (Caddy's storage, or Redis), rotated
	// as KeyRotation says.
	SigningKeys []string `json:"signing_keys,omitempty"`

	// KeyRotation schedules the rotation of generated signing keys.
	// Default: a new key every 30 days, published a day before it signs.
	KeyRotation *KeyRotation `json:"key_rotation,omitempty"`

	// LoginThrottle slows down password guessing: per username and client
	// IP, per username from every address, and per client IP; a browser
	// that has logged in as the user before (its device cookie) is spared
	// the per-username limit. Default: see [ProviderLoginThrottle].
	LoginThrottle *ProviderLoginThrottle `json:"login_throttle,omitempty"`

	// Store says where the provider keeps its state (codes, refresh
	// tokens, revocations, consents, ended sessions): a bbolt file,
	// Caddy's storage, or Redis (with the login throttle's counts and the
	// generated signing and cookie keys, for several nodes). Default: the
	// bbolt file, see [StateStore].
	Store *StateStore `json:"store,omitempty"`

	// BackchannelLogout tunes the delivery of back-channel logout tokens
	// to the clients with a BackchannelLogoutURI. Default: see
	// [ProviderBackchannelLogout].
	BackchannelLogout *ProviderBackchannelLogout `json:"backchannel_logout,omitempty"`

	// RequirePushedAuthorizationRequests holds every client to pushed
	// authorization requests (RFC 9126): an authorization request must
	// refer by request_uri to parameters the client pushed to
	// /connect/par. Default: false (see the client option of the same
	// name).
	RequirePushedAuthorizationRequests bool `json:"require_pushed_authorization_requests,omitempty"`

	// DPoPNonce makes the token and PAR endpoints require a nonce of its own in
	// DPoP proofs (RFC 9449 §8): stateless, shared by every node with
	// the same cookie keys, and new every DPoPNonceLifetime. Default:
	// off.
	DPoPNonce bool `json:"dpop_nonce,omitempty"`

	// DPoPNonceLifetime is how long each DPoP nonce is handed out (one is
	// accepted for up to twice as long). Default: 5m.
	DPoPNonceLifetime caddy.Duration `json:"dpop_nonce_lifetime,omitempty"`

	provider *liveProvider
	stopKeys func() // stops the key rotation (and loading)
	logger   *zap.Logger
	state    providerState // once provisioned, until Cleanup
	metrics  *providerMetrics

	// stopUsersFile stops the polling of the users file; usersSeen is
	// what the provisioning read of it.
	stopUsersFile func()
	usersSeen     fileIdentity
}

// ProviderClient is a client (relying party) of a [Provider].
type ProviderClient struct {
	// ID is the client_id. Required.
	ID string `json:"id,omitempty"`

	// Secret is the client secret in plain text, usually a placeholder
	// such as `{env.APP_SECRET}`. One of Secret, SecretHash and keys
	// (JWKS, JWKSFile, JWKSURI) is required, unless the client is Public.
	Secret string `json:"secret,omitempty"`

	// SecretHash is a bcrypt or argon2id hash of the client secret, as
	// made by `caddy hash-password`.
	SecretHash string `json:"secret_hash,omitempty"`

	// JWKS is the JWK Set (JSON) of the public keys the client signs its
	// client assertions with (private_key_jwt, RFC 7523). Exclusive with
	// JWKSFile and JWKSURI. Default: none.
	JWKS json.RawMessage `json:"jwks,omitempty"`

	// JWKSFile is a file holding the client's JWK Set, read at
	// provisioning: a reload picks up new keys. Placeholders are replaced.
	// Default: none.
	JWKSFile string `json:"jwks_file,omitempty"`

	// JWKSURI is where the client publishes its JWK Set: fetched on first
	// use (not at provisioning), kept an hour, fetched again for an
	// unknown kid at most every 15 s. Default: none.
	JWKSURI string `json:"jwks_uri,omitempty"`

	// TokenEndpointAuthMethods are how the client may authenticate at the
	// token, revocation, introspection and device authorization
	// endpoints: private_key_jwt, client_secret_basic,
	// client_secret_post. Default: private_key_jwt for a client with
	// keys, both secret methods for one with a secret; a client with both
	// must list them.
	TokenEndpointAuthMethods []string `json:"token_endpoint_auth_methods,omitempty"`

	// RedirectURIs are the URIs the client may receive codes at, compared
	// exactly. At least one is required.
	RedirectURIs []string `json:"redirect_uris,omitempty"`

	// PostLogoutRedirectURIs are the URIs the client may send users back
	// to after logout. Default: none.
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris,omitempty"`

	// Scopes the client may request. Default: openid, profile, email.
	Scopes []string `json:"scopes,omitempty"`

	// AccessTokenLifetime is how long access tokens last. Default: 1h.
	AccessTokenLifetime caddy.Duration `json:"access_token_lifetime,omitempty"`

	// IDTokenLifetime is how long ID tokens last. Default: 5m.
	IDTokenLifetime caddy.Duration `json:"id_token_lifetime,omitempty"`

	// IDTokenAlg signs the client's ID tokens: RS256 or ES256. Default:
	// RS256.
	IDTokenAlg string `json:"id_token_alg,omitempty"`

	// RequirePKCE makes PKCE mandatory for the client. Turning it off is
	// insecure: PKCE stops stolen or injected codes (RFC 9700 §2.1.1).
	// Default: true.
	RequirePKCE *bool `json:"require_pkce,omitempty"`

	// AllowPlainPKCE accepts the plain code challenge method from the
	// client, besides S256. Default: false.
	AllowPlainPKCE bool `json:"allow_plain_pkce,omitempty"`

	// OfflineAccess lets the client request the offline_access scope and
	// so get refresh tokens, which rotate on every use. Default: false.
	OfflineAccess bool `json:"offline_access,omitempty"`

	// Public marks a client without a secret, such as a single-page app:
	// it sends only its client_id and must use PKCE S256. Default: false.
	Public bool `json:"public,omitempty"`

	// CORSOrigins are browser origins whose scripts may call discovery,
	// JWKS, token, userinfo and revocation. Default: none.
	CORSOrigins []string `json:"cors_origins,omitempty"`

	// RefreshTokenUsage is one_time (default: each use returns a new
	// refresh token) or reuse.
	RefreshTokenUsage string `json:"refresh_token_usage,omitempty"`

	// RefreshTokenExpiration is absolute (default) or sliding.
	RefreshTokenExpiration string `json:"refresh_token_expiration,omitempty"`

	// AbsoluteRefreshTokenLifetime bounds the refresh tokens of one login.
	// A negative value (the Caddyfile's 0) is no absolute limit, only with
	// sliding expiration: the tokens live as long as each is used within
	// the sliding lifetime. Default: 720h (30 days).
	AbsoluteRefreshTokenLifetime caddy.Duration `json:"absolute_refresh_token_lifetime,omitempty"`

	// SlidingRefreshTokenLifetime is how far each use extends a sliding
	// refresh token. Default: 360h (15 days).
	SlidingRefreshTokenLifetime caddy.Duration `json:"sliding_refresh_token_lifetime,omitempty"`

	// RefreshTokenReuseGrace is how long a just-rotated refresh token may
	// be presented again and get the same successor. Default: 0.
	RefreshTokenReuseGrace caddy.Duration `json:"refresh_token_reuse_grace,omitempty"`

	// ClientCredentials allows the client_credentials grant. Default: false.
	ClientCredentials bool `json:"client_credentials,omitempty"`

	// PasswordGrant allows the legacy resource owner password grant.
	// Default: false.
	PasswordGrant bool `json:"password_grant,omitempty"`

	// DeviceFlow allows the device authorization grant (RFC 8628), for
	// command-line tools and TVs; such a client needs no redirect URI.
	// Default: false.
	DeviceFlow bool `json:"device_flow,omitempty"`

	// RequireConsent asks the user to allow the requested scopes. Default:
	// false.
	RequireConsent bool `json:"require_consent,omitempty"`

	// RequirePushedAuthorizationRequests holds the client to pushed
	// authorization requests (RFC 9126): its authorization requests must
	// refer by request_uri to parameters it pushed to /connect/par.
	// Default: false.
	RequirePushedAuthorizationRequests bool `json:"require_pushed_authorization_requests,omitempty"`

	// RequireDPoP refuses the client's token requests without a DPoP
	// proof (RFC 9449), so that all its tokens are bound to its key;
	// for a public client it allows refresh_token_usage reuse. Default:
	// false (a proof is taken from any client, and binds its tokens).
	RequireDPoP bool `json:"require_dpop,omitempty"`

	// Claims are added to the client's client_credentials tokens.
	Claims map[string]any `json:"claims,omitempty"`

	// ClientClaimsPrefix prefixes the names of Claims. Default: client_.
	ClientClaimsPrefix *string `json:"client_claims_prefix,omitempty"`

	// BackchannelLogoutURI is where the client takes logout tokens
	// (OpenID Connect Back-Channel Logout 1.0): when a provider session in
	// which it signed a user in ends, a logout token is posted there,
	// retried for an hour. An absolute http(s) URI without a fragment.
	// Default: none.
	BackchannelLogoutURI string `json:"backchannel_logout_uri,omitempty"`

	// BackchannelLogoutSessionRequired records that the client needs sid
	// in logout tokens; ours always carry it. Requires
	// BackchannelLogoutURI. Default: false.
	BackchannelLogoutSessionRequired bool `json:"backchannel_logout_session_required,omitempty"`

	// LogoutRevokesRefreshTokens revokes the refresh tokens the client got
	// in a provider session when the session ends. They are offline_access
	// tokens, which outlive sign-out unless the client asks. Default:
	// false.
	LogoutRevokesRefreshTokens bool `json:"logout_revokes_refresh_tokens,omitempty"`

	// FrontchannelLogoutURI is the page of the client that the provider's
	// signed-out page loads in a hidden iframe when a provider session in
	// which the client signed a user in ends at the provider (OpenID
	// Connect Front-Channel Logout 1.0). An absolute http(s) URI without a
	// fragment, with the scheme, host and port of one of RedirectURIs.
	// Default: none.
	FrontchannelLogoutURI string `json:"frontchannel_logout_uri,omitempty"`

	// FrontchannelLogoutSessionRequired adds iss and sid (the sid of the
	// client's ID tokens) to FrontchannelLogoutURI's query. Requires
	// FrontchannelLogoutURI. Default: false.
	FrontchannelLogoutSessionRequired bool `json:"frontchannel_logout_session_required,omitempty"`
	// Require is how users must have signed in to get a code for this
	// client: "passkey" or "passkey_or_otp". A single sign-on session that
	// falls short asks the user to sign in again; the password grant is
	// refused. Default: any way.
	Require string `json:"require,omitempty"`
}

// ProviderUser is an account of a [Provider].
type ProviderUser struct {
	// Username is what the user types on the login page. Required.
	Username string `json:"username,omitempty"`

	// Subject is the user's stable identifier, the `sub` claim. Default:
	// derived from the username, the same on every start.
	Subject string `json:"subject,omitempty"`

	// PasswordHash is a bcrypt or argon2id hash of the password, as made by
	// `caddy hash-password`. Required.
	PasswordHash string `json:"password_hash,omitempty"`

	// Claims are released to clients by scope: name, given_name,
	// family_name, preferred_username and the like with profile; email and
	// email_verified with email. Default: none.
	Claims map[string]any `json:"claims,omitempty"`

	// Disabled keeps the user from signing in: a login fails as with a
	// wrong password, and the user's single sign-on session and refresh
	// tokens stop working. When the configuration loads (start or
	// reload), or the users file disables the user, every session of the
	// user is ended, and the clients with a back-channel logout URI are
	// told. Default: false.
	Disabled bool `json:"disabled,omitempty"`

	// TOTPSecret is a base32 TOTP secret (RFC 6238; at least 128 bits;
	// spaces, padding and either case allowed) that the user's
	// authenticator app holds: the login page then asks for a code after
	// the password, and the user cannot remove it. `{env.*}` and
	// `{file.*}` placeholders are replaced. Default: none (the user may
	// enrol their own at /account/totp).
	TOTPSecret string `json:"totp_secret,omitempty"`
	// Require is how the user must sign in, for every client: "passkey",
	// or "passkey_or_otp" (a passkey, or a password and a one-time code).
	// Default: any way, a password included.
	Require string `json:"require,omitempty"`
}

// ProviderAPIResource is an API that accepts a [Provider]'s access tokens.
type ProviderAPIResource struct {
	// Name is the API's audience, as it checks it in `aud`. Required.
	Name string `json:"name,omitempty"`

	// Scopes grant access to the API; each must be one of the provider's
	// API scopes.
	Scopes []string `json:"scopes,omitempty"`

	// Secret (plain text, placeholders resolved) or SecretHash lets the
	// API call the introspection endpoint with its name as client_id.
	Secret     string `json:"secret,omitempty"`
	SecretHash string `json:"secret_hash,omitempty"`

	// UserClaims are claims of the user (role, groups, ...) that access
	// tokens for this API carry, as IdentityServer's ApiResource.UserClaims:
	// tokens issued to a user (not client_credentials), with the claims the
	// user has. The token's own claims (sub, iss, aud, exp, scope,
	// client_id, ...) cannot be listed. Default: none.
	UserClaims []string `json:"user_claims,omitempty"`
}

// ProviderLoginThrottle limits failed logins, at the login page and in the
// password grant. Each attempt counts against three keys, and waits while
// any of them must: the username from its client IP, the client IP, and
// the username from every address — or, instead of the last, the
// browser's device cookie, which a successful login as that username
// sets (OWASP's device cookies), so that guesses from elsewhere cannot
// lock a user out of the browsers they use. An attempt is counted before
// its password is checked.
type ProviderLoginThrottle struct {
	// UserIP limits failures per username and client IP. Default: 5 free,
	// then 1s doubling up to 15m.
	UserIP *ProviderThrottleLimit `json:"user_ip,omitempty"`

	// User limits failures per username from every client IP together,
	// for browsers without its device cookie. Default: 20 free, then 1s
	// doubling up to 5m.
	User *ProviderThrottleLimit `json:"user,omitempty"`

	// IP limits failures per client IP, whatever the username. Default:
	// 30 free, then 1s doubling up to 1m.
	IP *ProviderThrottleLimit `json:"ip,omitempty"`

	// Device limits failures per device cookie, so that a stolen one buys
	// few guesses. Default: 5 free, then 1s doubling up to 15m.
	Device *ProviderThrottleLimit `json:"device,omitempty"`

	// DeviceCookieLifetime is how long a browser is remembered after a
	// successful login. Default: 720h (30 days).
	DeviceCookieLifetime caddy.Duration `json:"device_cookie_lifetime,omitempty"`
}

// ProviderThrottleLimit is one limit of a [ProviderLoginThrottle]: after
// Free failures, each further failure doubles the wait before the next
// attempt, from Base up to Max; each Max without a failure forgives one.
type ProviderThrottleLimit struct {
	// Free is the number of failures before any wait.
	Free int `json:"free,omitempty"`

	// Base is the first wait.
	Base caddy.Duration `json:"base,omitempty"`

	// Max caps the wait.
	Max caddy.Duration `json:"max,omitempty"`
}

// idpThrottle checks t and returns its idp form; nil fields are zero, the
// idp defaults.
func (t *ProviderLoginThrottle) idpThrottle() (idp.ThrottleConfig, error) {
	var cfg idp.ThrottleConfig
	if t == nil {
		return cfg, nil
	}
	for _, l := range []struct {
		name string
		src  *ProviderThrottleLimit
		dst  *idp.ThrottleLimit
	}{
		{"user_ip", t.UserIP, &cfg.UserIP},
		{"user", t.User, &cfg.User},
		{"ip", t.IP, &cfg.IP},
		{"device", t.Device, &cfg.Device},
	} {
		if l.src == nil {
			continue
		}
		if l.src.Free < 0 || l.src.Base < 0 || l.src.Max < 0 || l.src.Max != 0 && l.src.Max < l.src.Base {
			return cfg, fmt.Errorf("login_throttle %s {free: %d, base: %s, max: %s}: want non-negative values and max at least base",
				l.name, l.src.Free, time.Duration(l.src.Base), time.Duration(l.src.Max))
		}
		*l.dst = idp.ThrottleLimit{Free: l.src.Free, Base: time.Duration(l.src.Base), Max: time.Duration(l.src.Max)}
	}
	if t.DeviceCookieLifetime < 0 {
		return cfg, fmt.Errorf("login_throttle device_cookie_lifetime %s is negative", time.Duration(t.DeviceCookieLifetime))
	}
	cfg.DeviceCookieLifetime = time.Duration(t.DeviceCookieLifetime)
	return cfg, nil
}

// CaddyModule returns the Caddy module information.
func (Provider) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.oidc_provider",
		New: func() caddy.Module { return new(Provider) },
	}
}

// Provision checks the configuration, loads users, templates and keys
// (generating keys into storage on first start), and builds the provider.
// It makes no network request.
func (p *Provider) Provision(ctx caddy.Context) error {
	p.logger = ctx.Logger()

	cfg, err := p.idpConfig()
	if err != nil {
		return err
	}
	cfg.Logger = ctx.Slogger()
	cfg.ClientIP = clientIP
	if cfg.Events, err = providerEvents(ctx, p.Issuer, cfg.Clients); err != nil {
		return err
	}
	warnMixedCosts(p.logger, cfg.Users)

	state, err := p.openState(ctx)
	if err != nil {
		return err
	}
	p.state = state
	p.logger.Debug("provider state", zap.String("issuer", p.Issuer), zap.String("store", state.where))
	cfg.ThrottleStore = state.throttle
	if p.metrics, err = newProviderMetrics(ctx.GetMetricsRegistry(), p.Issuer); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	store := instrumentStore(state.store, storeKind(state.where))
	if err := p.startKeys(ctx, state.keys, store, cfg); err != nil {
		return err
	}
	// For the admin API (provider_admin.go), until Cleanup.
	registerProvider(p.Issuer, p.provider)
	p.watchUsersFile(p.usersSeen)
	return nil
}

// ServeHTTP serves the provider's endpoints and passes every other request
// on to next.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	pr := p.provider.Load()
	if pr == nil {
		if !p.isEndpoint(r) {
			return next.ServeHTTP(w, r)
		}
		// Keys from a remote store are loading: wait for the first
		// attempt, which the store's timeouts bound.
		select {
		case <-p.provider.ready:
		case <-r.Context().Done():
		}
		if pr = p.provider.Load(); pr == nil {
			servePending(w)
			return nil
		}
	}
	if !pr.Owns(r) {
		return next.ServeHTTP(w, r)
	}
	if p.metrics == nil {
		pr.ServeHTTP(w, r)
		return nil
	}
	start := time.Now()
	pr.ServeHTTP(w, r)
	p.metrics.observe(r.URL.Path, start)
	return nil
}

// Cleanup stops the rotation of the provider's keys and releases its
// store.
func (p *Provider) Cleanup() error {
	if p.provider != nil {
		unregisterProvider(p.Issuer, p.provider)
	}
	if p.stopUsersFile != nil {
		p.stopUsersFile()
		p.stopUsersFile = nil
	}
	if p.stopKeys != nil {
		p.stopKeys()
		p.stopKeys = nil
	}
	p.stopBackchannel()
	if p.state.release == nil {
		return nil
	}
	err := p.state.release()
	p.state = providerState{}
	return err
}

// idpConfig checks the module's configuration and turns it into the idp
// configuration, all but the keys from storage.
func (p *Provider) idpConfig() (idp.Config, error) {
	if p.Issuer == "" {
		return idp.Config{}, errors.New("issuer is required")
	}
	// idp.New checks the issuer too, but keys are stored by issuer: check
	// before anything is stored.
	if u, err := url.Parse(p.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return idp.Config{}, fmt.Errorf("issuer %q is not an absolute http(s) URL", p.Issuer)
	}
	for _, d := range []struct {
		option string
		value  caddy.Duration
	}{
		{"code_lifetime", p.CodeLifetime},
		{"session_lifetime", p.SessionLifetime},
		{"device_code_lifetime", p.DeviceCodeLifetime},
		{"device_poll_interval", p.DevicePollInterval},
		{"dpop_nonce", p.DPoPNonceLifetime},
	} {
		if d.value < 0 {
			return idp.Config{}, fmt.Errorf("%s %s is negative", d.option, time.Duration(d.value))
		}
	}
	if iv := time.Duration(p.DevicePollInterval); iv%time.Second != 0 {
		return idp.Config{}, fmt.Errorf("device_poll_interval %s is not whole seconds", iv)
	}
	throttle, err := p.LoginThrottle.idpThrottle()
	if err != nil {
		return idp.Config{}, err
	}

	backchannel, err := p.BackchannelLogout.idpBackchannel()
	if err != nil {
		return idp.Config{}, err
	}

	if id := p.PasskeyRPID; id != "" {
		// WebAuthn §5.1.4: the RP ID is the origin's host or a parent
		// domain of it. idp.New checks it too; here the error names the
		// option.
		iss, err := url.Parse(p.Issuer)
		if err != nil || iss.Hostname() != id && !strings.HasSuffix(iss.Hostname(), "."+id) {
			return idp.Config{}, fmt.Errorf("passkey_rp_id %q is neither the issuer's host nor a parent domain of it", id)
		}
	}
	cfg := idp.Config{
		Issuer:             p.Issuer,
		APIScopes:          p.APIScopes,
		StaticAudience:     p.StaticAudience,
		EmitStaticAudience: p.EmitStaticAudience,
		AccessTokenAlg:     p.AccessTokenAlg,
		CodeLifetime:       time.Duration(p.CodeLifetime),
		SessionLifetime:    time.Duration(p.SessionLifetime),
		SessionManagement:  p.SessionManagement,
		DeviceCodeLifetime: time.Duration(p.DeviceCodeLifetime),
		DevicePollInterval: time.Duration(p.DevicePollInterval),
		Throttle:           throttle,
		Backchannel:        backchannel,
		DPoPNonce:          p.DPoPNonce,
		DPoPNonceLifetime:  time.Duration(p.DPoPNonceLifetime),
		PasskeyRPID:        p.PasskeyRPID,
		PasskeyRPName:      p.PasskeyRPName,
	}
	cfg.RequirePushedAuthorizationRequests = p.RequirePushedAuthorizationRequests
	repl := caddy.NewReplacer()
	for _, r := range p.APIResources {
		res := idp.APIResource{Name: r.Name, Scopes: r.Scopes, Secret: repl.ReplaceAll(r.Secret, ""), UserClaims: r.UserClaims}
		if r.SecretHash != "" {
			res.SecretHash = repl.ReplaceAll(r.SecretHash, "")
			if err := checkPasswordHash(res.SecretHash); err != nil {
				return idp.Config{}, fmt.Errorf("api_resource %q: secret_hash: %w", r.Name, err)
			}
		}
		cfg.APIResources = append(cfg.APIResources, res)
	}

	var usersData []byte
	if p.UsersFile != "" {
		if _, err := p.usersFilePoll(); err != nil {
			return idp.Config{}, err
		}
		if usersData, p.usersSeen, err = readUsersFile(p.UsersFile); err != nil {
			return idp.Config{}, fmt.Errorf("users_file %q: %w", p.UsersFile, err)
		}
	}
	if cfg.Users, err = p.users(usersData); err != nil {
		var fe *usersFileError
		if errors.As(err, &fe) {
			return idp.Config{}, fmt.Errorf("users_file %q: %w", p.UsersFile, err)
		}
		return idp.Config{}, err
	}

	for _, c := range p.Clients {
		ic, err := c.idpClient(repl)
		if err != nil {
			return idp.Config{}, err
		}
		cfg.Clients = append(cfg.Clients, ic)
	}
	cfg.PasswordComparer = hashComparer{}

	if p.Templates != "" {
		info, err := os.Stat(p.Templates)
		if err != nil {
			return idp.Config{}, fmt.Errorf("templates: %w", err)
		}
		if !info.IsDir() {
			return idp.Config{}, fmt.Errorf("templates %q is not a directory", p.Templates)
		}
		cfg.Templates = os.DirFS(p.Templates)
	}

	for _, filename := range p.SigningKeys {
		k, err := readSigningKeyFile(filename)
		if err != nil {
			return idp.Config{}, fmt.Errorf("signing_key %q: %w", filename, err)
		}
		cfg.Keys = append(cfg.Keys, k)
	}
	return cfg, nil
}

// idpClient returns the idp form of c, its secrets' placeholders replaced.
func (c ProviderClient) idpClient(repl *caddy.Replacer) (idp.Client, error) {
	ic := idp.Client{
		ID:                     c.ID,
		RedirectURIs:           c.RedirectURIs,
		PostLogoutRedirectURIs: c.PostLogoutRedirectURIs,
		AllowedScopes:          c.Scopes,
		AccessTokenLifetime:    time.Duration(c.AccessTokenLifetime),
		IDTokenLifetime:        time.Duration(c.IDTokenLifetime),
		IDTokenAlg:             c.IDTokenAlg,
		InsecurePKCEOptional:   c.RequirePKCE != nil && !*c.RequirePKCE,
		AllowPlainPKCE:         c.AllowPlainPKCE,
		AllowOfflineAccess:     c.OfflineAccess,
		Public:                 c.Public,
		CORSOrigins:            c.CORSOrigins,
		RefreshTokenUsage:      c.RefreshTokenUsage,
		RefreshTokenExpiration: c.RefreshTokenExpiration,
		AllowClientCredentials: c.ClientCredentials,
		AllowPasswordGrant:     c.PasswordGrant,
		AllowDeviceFlow:        c.DeviceFlow,
		RequireConsent:         c.RequireConsent,
		RequireDPoP:            c.RequireDPoP,
		Claims:                 c.Claims,
		ClientClaimsPrefix:     c.ClientClaimsPrefix,

		BackchannelLogoutURI:             c.BackchannelLogoutURI,
		BackchannelLogoutSessionRequired: c.BackchannelLogoutSessionRequired,
		LogoutRevokesRefreshTokens:       c.LogoutRevokesRefreshTokens,
		Require:                          c.Require,

		RequirePushedAuthorizationRequests: c.RequirePushedAuthorizationRequests,
		FrontchannelLogoutURI:              c.FrontchannelLogoutURI,
		FrontchannelLogoutSessionRequired:  c.FrontchannelLogoutSessionRequired,

		AbsoluteRefreshTokenLifetime: time.Duration(c.AbsoluteRefreshTokenLifetime),
		SlidingRefreshTokenLifetime:  time.Duration(c.SlidingRefreshTokenLifetime),
		RefreshTokenReuseGrace:       time.Duration(c.RefreshTokenReuseGrace),
	}
	if c.AbsoluteRefreshTokenLifetime < 0 {
		ic.AbsoluteRefreshTokenLifetime = idp.NoAbsoluteLimit
	}
	if c.Secret != "" {
		// A placeholder of an unset variable or unreadable file leaves
		// nothing, and an empty secret must not be accepted.
		if ic.Secret = repl.ReplaceAll(c.Secret, ""); ic.Secret == "" {
			return idp.Client{}, fmt.Errorf("client %q: secret is empty once its placeholders are replaced", c.ID)
		}
	}
	if c.SecretHash != "" {
		ic.SecretHash = repl.ReplaceAll(c.SecretHash, "")
		if err := checkPasswordHash(ic.SecretHash); err != nil {
			return idp.Client{}, fmt.Errorf("client %q: secret_hash: %w", c.ID, err)
		}
	}
	if err := c.clientKeys(repl, &ic); err != nil {
		return idp.Client{}, err
	}
	return ic, nil
}

// clientIP is the address failed logins are throttled by: Caddy's client
// IP, which honours the server's trusted_proxies.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// storePool holds the stores of providers, by storage and prefix, so that
// a store and its sweep outlive a config reload that keeps them.
var storePool = caddy.NewUsagePool()

// storageIdentity names a storage for storePool. Storages say who they are
// with String, as certmagic's FileStorage does; any other storage value is
// known only by its address, so that a reload that changes its
// configuration gets a new store.
func storageIdentity(s certmagic.Storage) string {
	if str, ok := s.(fmt.Stringer); ok {
		return fmt.Sprintf("%T %s", s, str)
	}
	if reflect.ValueOf(s).Kind() == reflect.Pointer {
		return fmt.Sprintf("%T %p", s, s)
	}
	return fmt.Sprintf("%T %#v", s, s)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Provider)(nil)
	_ caddy.CleanerUpper          = (*Provider)(nil)
	_ caddyhttp.MiddlewareHandler = (*Provider)(nil)
	_ caddyfile.Unmarshaler       = (*Provider)(nil)
)
