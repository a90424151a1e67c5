package idp

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"time"
)

// Defaults applied by [New] where a [Config] or [Client] field is zero.
const (
	DefaultCodeLifetime                 = 60 * time.Second
	DefaultAccessTokenLifetime          = time.Hour
	DefaultIDTokenLifetime              = 5 * time.Minute
	DefaultSessionLifetime              = 10 * time.Hour
	DefaultAbsoluteRefreshTokenLifetime = 30 * 24 * time.Hour
	DefaultSlidingRefreshTokenLifetime  = 15 * 24 * time.Hour
	DefaultJWKSMaxAge                   = 5 * time.Minute
	DefaultDeviceCodeLifetime           = 10 * time.Minute
	DefaultDevicePollInterval           = 5 * time.Second
)

// Config configures a [Provider]. Issuer, at least one signing key and, for
// anyone to log in, users and clients are required; everything else has a
// default.
type Config struct {
	// Issuer is the issuer identifier, exactly as it appears in tokens and
	// discovery (OpenID Connect Discovery 1.0 §4.3). Its path, if any, is the
	// prefix of every endpoint.
	Issuer string

	// Clients are the registered relying parties.
	Clients []Client

	// Users are the accounts that can log in.
	Users []User

	// APIScopes are scopes, beyond the OpenID Connect identity scopes, that
	// clients may request for APIs.
	APIScopes []string

	// APIResources are the APIs (audiences) protected by access tokens. An
	// access token's aud lists every resource one of whose scopes was granted.
	APIResources []APIResource

	// StaticAudience is the aud of access tokens that grant no API
	// resource's scope, so that every access token has one (RFC 9068
	// §2.2). Default: Issuer + "/resources", as IdentityServer names it.
	StaticAudience string

	// EmitStaticAudience puts StaticAudience into the aud of every access
	// token, beside the API resources granted, as IdentityServer's
	// EmitStaticAudienceClaim does. Default: off, only where no API
	// resource is granted.
	EmitStaticAudience bool

	// Keys sign tokens and are published at the JWKS endpoint. The first key
	// of each algorithm signs; the others are only published, so tokens
	// signed before a rotation keep verifying.
	Keys []SigningKey

	// JWKSMaxAge is how long verifiers may cache the JWKS document (its
	// Cache-Control max-age, in whole seconds). A key passed to
	// [Provider.SetKeys] should be published for longer than this before
	// it signs, so that a verifier that caches by HTTP's rules knows it
	// before it sees a token it signed. Default: [DefaultJWKSMaxAge].
	JWKSMaxAge time.Duration

	// AccessTokenAlg is the algorithm of access tokens: "RS256" (default) or
	// "ES256".
	AccessTokenAlg string

	// CookieKeys encrypt and authenticate the provider's session cookie: one
	// or more pairs of 32-byte hash key and 32-byte block key, the first pair
	// encodes and every pair decodes.
	CookieKeys [][2][]byte

	// CodeLifetime bounds how long an authorization code can be redeemed.
	// Default: [DefaultCodeLifetime].
	CodeLifetime time.Duration

	// DeviceCodeLifetime is how long a device_code and its user_code of
	// the device authorization grant (RFC 8628) stay good. Default:
	// [DefaultDeviceCodeLifetime].
	DeviceCodeLifetime time.Duration

	// DevicePollInterval is the interval, in whole seconds, a device
	// must wait between polls of the token endpoint (RFC 8628 §3.2);
	// a device that polls sooner gets slow_down and 5 s more. Default:
	// [DefaultDevicePollInterval].
	DevicePollInterval time.Duration

	// SessionLifetime is how long a login lasts for single sign-on.
	// Default: [DefaultSessionLifetime].
	SessionLifetime time.Duration

	// RequirePushedAuthorizationRequests holds every client to pushed
	// authorization requests (RFC 9126): the authorization endpoint
	// answers invalid_request to a request without a request_uri from
	// [PathPushedAuthorization], and discovery says so. Default: off; see
	// also [Client.RequirePushedAuthorizationRequests].
	RequirePushedAuthorizationRequests bool
	// SessionManagement turns on OpenID Connect Session Management 1.0:
	// discovery lists the check_session_iframe ([PathCheckSession]), every
	// authorization response carries session_state, and a login or
	// sign-out changes the OP browser state cookie ([BrowserStateCookie])
	// that the iframe's script reads. Default: off, because a client on
	// another site than the provider cannot see that cookie in its frame
	// and would take every check for a sign-out (see checksession.go).
	SessionManagement bool

	// Templates, if set, overrides the embedded page templates that it
	// holds by name (login.html, consent.html, error.html, message.html,
	// logout.html, device.html, account.html); the others stay. A form must keep its csrf_token and
	// request fields.
	Templates fs.FS

	// PasswordComparer checks user password hashes. Default: bcrypt.
	PasswordComparer PasswordComparer

	// Throttle limits failed logins. Zero values take the defaults of
	// [ThrottleConfig].
	Throttle ThrottleConfig

	// ThrottleStore keeps the throttle's counts. Default: the memory of
	// this process.
	ThrottleStore ThrottleStore

	// ClientIP returns the address failed logins are throttled by. Default:
	// the host of the request's RemoteAddr.
	ClientIP func(*http.Request) string

	// Logger receives one line per login and per token issued. Default:
	// discard.
	Logger *slog.Logger

	// Events, if set, is called at each security event (logins, consents,
	// tokens issued, refreshes, token errors, revocations, logouts, admin
	// actions, back-channel deliveries): synchronously, on the request's
	// goroutine, so it must be quick and safe for concurrent use. An
	// [Event] never holds a password, secret, code or token. Default:
	// none.
	Events func(context.Context, Event)

	// Now returns the current time. Default: time.Now.
	Now func() time.Time

	// Rand is the source of codes, token ids and CSRF tokens. Default:
	// crypto/rand.Reader.
	Rand io.Reader

	// DPoPNonce makes the token and PAR endpoints require a nonce of its own in
	// DPoP proofs (RFC 9449 §8): a proof without a current one gets
	// use_dpop_nonce and the nonce in the DPoP-Nonce header. Nonces are
	// stateless (a MAC of a time slot under a key derived from
	// CookieKeys, so nodes that share those share nonces) and change
	// every DPoPNonceLifetime. Default: off; iat and jti alone bound a
	// proof's use.
	DPoPNonce bool

	// DPoPNonceLifetime is how long each DPoP nonce is handed out; one
	// is accepted for up to twice as long. Default:
	// [DefaultDPoPNonceLifetime].
	DPoPNonceLifetime time.Duration

	// Backchannel tunes the delivery of back-channel logout tokens, which
	// [Provider.Start] starts.
	Backchannel BackchannelConfig

	// JWKSClient fetches the [Client.JWKSURI] of private_key_jwt clients.
	// Default: an http.Client with a 5 s timeout.
	JWKSClient *http.Client

	// PasskeyRPID is the WebAuthn relying party ID of passkeys (passkey.go):
	// the issuer's host name, or a parent domain of it so that one passkey
	// serves several providers of that domain. Default: the issuer's host
	// name. An issuer on an IP address has no RP ID (WebAuthn §5.1.4):
	// there, passkeys are off.
	PasskeyRPID string

	// PasskeyRPName is the name authenticators show beside a passkey.
	// Default: the RP ID.
	PasskeyRPName string
}

// NoAbsoluteLimit is the [Client.AbsoluteRefreshTokenLifetime] of a
// client whose sliding refresh tokens have no absolute end.
const NoAbsoluteLimit time.Duration = -1

// Client is a registered relying party.
type Client struct {
	// ID is the client_id.
	ID string

	// Secret is the client secret in plain text. A confidential client
	// needs Secret, SecretHash, JWKS or JWKSURI.
	Secret string

	// SecretHash is a password hash of the client secret, checked by the
	// [Config.PasswordComparer].
	SecretHash string

	// JWKS is a JWK Set (RFC 7517 §5, JSON) of the public keys the client
	// signs its client assertions with (private_key_jwt, RFC 7523 §2.2).
	// Exclusive with JWKSURI.
	JWKS []byte

	// JWKSURI is where the client publishes its JWK Set: fetched on first
	// use, kept an hour, fetched again for a kid it lacks (at most every
	// 15 s). Exclusive with JWKS.
	JWKSURI string

	// TokenEndpointAuthMethods are how the client may authenticate at the
	// token, revocation, introspection and device authorization
	// endpoints: client_secret_basic, client_secret_post,
	// private_key_jwt. Default: private_key_jwt for a client with JWKS or
	// JWKSURI, the two secret methods for one with a secret. A client
	// with both keys and a secret must list the methods it may use, so
	// that a secret left in its configuration is no way around its keys.
	TokenEndpointAuthMethods []string

	// RedirectURIs are the registered redirect URIs, matched exactly.
	RedirectURIs []string

	// PostLogoutRedirectURIs are the registered post-logout redirect URIs.
	PostLogoutRedirectURIs []string

	// AllowedScopes the client may request. Default: openid, profile, email.
	AllowedScopes []string

	// AccessTokenLifetime: default [DefaultAccessTokenLifetime].
	AccessTokenLifetime time.Duration

	// IDTokenLifetime: default [DefaultIDTokenLifetime].
	IDTokenLifetime time.Duration

	// IDTokenAlg is "RS256" (default, required by OpenID Connect) or "ES256".
	IDTokenAlg string

	// Public marks a client that cannot keep a secret, such as a
	// single-page app: it authenticates with its client_id alone
	// (token_endpoint_auth_method none) and must use PKCE with S256.
	Public bool

	// CORSOrigins are the browser origins (scheme://host[:port]) whose
	// scripts may call discovery, JWKS, token, userinfo and revocation.
	CORSOrigins []string

	// AllowOfflineAccess lets the client request the offline_access scope
	// and so get refresh tokens.
	AllowOfflineAccess bool

	// RefreshTokenUsage is "one_time" (default: every use returns a new
	// refresh token and retires the old one) or "reuse".
	RefreshTokenUsage string

	// RefreshTokenExpiration is "absolute" (default: a login's refresh
	// tokens end AbsoluteRefreshTokenLifetime after it) or "sliding" (each
	// use extends by SlidingRefreshTokenLifetime, never past the absolute
	// end).
	RefreshTokenExpiration string

	// AbsoluteRefreshTokenLifetime: default
	// [DefaultAbsoluteRefreshTokenLifetime]. [NoAbsoluteLimit], with
	// sliding expiration only, lets a login's refresh tokens live for as
	// long as each is used within SlidingRefreshTokenLifetime, as
	// IdentityServer's 0.
	AbsoluteRefreshTokenLifetime time.Duration

	// SlidingRefreshTokenLifetime: default
	// [DefaultSlidingRefreshTokenLifetime].
	SlidingRefreshTokenLifetime time.Duration

	// RefreshTokenReuseGrace is how long after a one-time refresh token was
	// used it may be presented again and get the same successor, for
	// clusters of clients that race; 0 (default) allows no replay at all.
	RefreshTokenReuseGrace time.Duration

	// AllowClientCredentials lets a confidential client use the
	// client_credentials grant for its API scopes.
	AllowClientCredentials bool

	// AllowPasswordGrant lets the client use the resource owner password
	// grant (RFC 6749 §4.3). Legacy: it hands the user's password to the
	// client; use only for trusted first-party clients that cannot
	// redirect.
	AllowPasswordGrant bool

	// AllowDeviceFlow lets the client use the device authorization grant
	// (RFC 8628): for command-line tools and TVs, which need no redirect
	// URI. The user always approves at the device page.
	AllowDeviceFlow bool

	// RequireDPoP refuses the client's token requests without a DPoP
	// proof (RFC 9449 §5.2, dpop_bound_access_tokens), so every token it
	// gets is bound to its key. It lets a public client use
	// RefreshTokenUsage "reuse": its refresh tokens are bound too.
	RequireDPoP bool

	// RequireConsent shows the user the requested scopes to allow or deny
	// before a code is issued; a remembered consent skips the page.
	RequireConsent bool

	// RequirePushedAuthorizationRequests holds the client to pushed
	// authorization requests (RFC 9126 §6): its authorization requests
	// must refer by request_uri to parameters it pushed to
	// [PathPushedAuthorization], or get invalid_request.
	RequirePushedAuthorizationRequests bool

	// Claims are added to tokens issued by client_credentials, each name
	// prefixed with ClientClaimsPrefix.
	Claims map[string]any

	// ClientClaimsPrefix prefixes the names of Claims. Nil: "client_", as
	// IdentityServer's ClientClaimsPrefix.
	ClientClaimsPrefix *string

	// InsecurePKCEOptional lets the client leave out PKCE. PKCE protects the
	// code from interception and injection (RFC 9700 §2.1.1); leave it off.
	InsecurePKCEOptional bool

	// AllowPlainPKCE accepts code_challenge_method=plain from this client.
	AllowPlainPKCE bool

	// BackchannelLogoutURI is where the client takes logout tokens
	// (OpenID Connect Back-Channel Logout 1.0 §2.2): an absolute http(s)
	// URI without a fragment. When a provider session in which the client
	// got a code ends, a logout token is posted there. Default: none.
	BackchannelLogoutURI string

	// BackchannelLogoutSessionRequired is the client's registration that
	// it needs sid in logout tokens (§2.2). Ours always carry sid and
	// sub, so it changes nothing but requires BackchannelLogoutURI.
	BackchannelLogoutSessionRequired bool

	// FrontchannelLogoutURI is the page the provider's signed-out page
	// loads in a hidden iframe when a provider session in which the
	// client got a code ends at the provider (OpenID Connect Front-Channel
	// Logout 1.0 §2): an absolute http(s) URI without a fragment, with
	// the scheme, host and port of one of RedirectURIs; https unless the
	// client is confidential or the host is loopback. Default: none.
	FrontchannelLogoutURI string

	// FrontchannelLogoutSessionRequired adds iss and sid (the sid claim
	// of the client's ID tokens) to the FrontchannelLogoutURI's query
	// (§2). Requires FrontchannelLogoutURI.
	FrontchannelLogoutSessionRequired bool

	// LogoutRevokesRefreshTokens revokes the refresh tokens the client got
	// in a provider session when the session ends. They are offline_access
	// tokens (the only refresh tokens issued), which §2.7 says normally
	// should not be revoked: hence a choice of the client's.
	LogoutRevokesRefreshTokens bool

	// Require is how the user must have signed in for this client:
	// [RequirePasskey], [RequirePasskeyOrOTP], or "" (default: any way).
	// A single sign-on session that falls short asks for a new sign-in,
	// and the password grant is refused.
	Require string
}

// User is an account that can log in.
type User struct {
	// Username is what the user types on the login page.
	Username string `json:"username"`

	// Subject is the stable sub claim. Default: derived from Username by
	// [DeriveSubject].
	Subject string `json:"subject,omitempty"`

	// PasswordHash is a bcrypt or argon2id hash, as made by
	// `caddy hash-password`.
	PasswordHash string `json:"password_hash"`

	// Claims are released by scope: name, given_name, email, ...
	Claims map[string]any `json:"claims,omitempty"`

	// Disabled keeps the user from signing in: a login fails as with a
	// wrong password, the user's single sign-on session and refresh
	// tokens stop working, and [Provider.Start] ends the user's sessions
	// as [Provider.EndUserSessions] does, back-channel logout included.
	Disabled bool `json:"disabled,omitempty"`

	// TOTPSecret, base32 (RFC 4648, at least 128 bits), makes the login
	// page ask for a time-based one-time code (RFC 6238) after the
	// password. The user cannot remove an operator's secret; without
	// one, a user may enrol their own at [PathTOTP].
	TOTPSecret string `json:"totp_secret,omitempty"`

	// Require is how the user must sign in, for every client:
	// [RequirePasskey], [RequirePasskeyOrOTP], or "" (default: any way,
	// a password included). The password grant is refused to such a user.
	Require string `json:"require,omitempty"`
}

// APIResource is an API that accepts access tokens: its Name is their
// audience, and Scopes are the scopes that grant access to it. With a
// Secret (plain text) or SecretHash it may call the introspection endpoint
// with its Name as client_id.
type APIResource struct {
	Name       string
	Scopes     []string
	Secret     string
	SecretHash string

	// UserClaims are claims of the user (role, groups, ...) that access
	// tokens granting this resource carry, as IdentityServer's
	// ApiResource.UserClaims: only tokens issued to a user, not
	// client_credentials, and only the claims the user has. Claims an
	// access token has of its own (sub, aud, scope, ...; see
	// [ReservedAccessTokenClaims]) cannot be listed.
	UserClaims []string
}

// ReservedAccessTokenClaims are the claims an access token sets itself
// (RFC 9068 §2.2, RFC 7519 §4.1, OpenID Connect Core §2), which an
// [APIResource] cannot take from a user.
var ReservedAccessTokenClaims = []string{
	"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "client_id", "scope", "scp",
	"auth_time", "sid", "grant_id", "acr", "amr", "azp", "nonce", "at_hash", "c_hash", "cnf", "typ",
}

// SigningKey is a private key that signs tokens.
type SigningKey struct {
	// ID is the JWK kid.
	ID string
	// Alg is "RS256" or "ES256".
	Alg string
	// Key is an *rsa.PrivateKey or *ecdsa.PrivateKey.
	Key crypto.Signer
}

// PasswordComparer checks a password against a hash, as the comparers of
// Caddy's basic_auth do.
type PasswordComparer interface {
	Compare(hashed, plaintext []byte) (bool, error)
}

// FakeHasher is implemented by a [PasswordComparer] that can tell what
// checking a hash costs and make a hash of equal cost. The provider checks
// the password of an unknown username against such a fake, one for each
// cost among its users, chosen by the username with a keyed hash and
// weighted by how many users have each cost: the answer then takes as
// long as for some real user, and the same name always takes the same.
// Without it, unknown usernames cost one bcrypt check of cost 10.
type FakeHasher interface {
	// HashCost names the algorithm and parameters of hashed: hashes of
	// the same HashCost cost the same to check.
	HashCost(hashed []byte) (string, error)

	// FakeHash returns the hash of a password that nobody knows, of the
	// same HashCost as hashed.
	FakeHash(hashed []byte) ([]byte, error)
}

// ThrottleConfig limits failed logins, at the login page and in the
// password grant. An attempt counts against its username from its client
// IP (UserIP), its client IP (IP), and its username from anywhere (User);
// a browser that has logged in as the username before, and shows the
// device cookie it got then, counts against that cookie (Device) instead
// of User, so that guesses from elsewhere cannot lock its user out. Zero
// fields take their defaults.
type ThrottleConfig struct {
	// UserIP limits failures per username and client IP. Default:
	// [DefaultThrottleUserIP].
	UserIP ThrottleLimit

	// User limits failures per username from every client IP together.
	// Default: [DefaultThrottleUser].
	User ThrottleLimit

	// IP limits failures per client IP, whatever the username. Default:
	// [DefaultThrottleIP].
	IP ThrottleLimit

	// Device limits failures per device cookie, so that a stolen one is no
	// free pass. Default: [DefaultThrottleDevice].
	Device ThrottleLimit

	// DeviceCookieLifetime is how long a browser keeps its device cookie
	// after each successful login. Default: [DefaultDeviceCookieLifetime].
	DeviceCookieLifetime time.Duration
}

// Defaults of [ThrottleConfig]. Each Max without a failure forgives one,
// so that, past the first burst, a key gets one guess per Max: 4 an hour
// per username and client IP, 12 an hour per username from every address,
// 60 an hour per client IP.
var (
	DefaultThrottleUserIP = ThrottleLimit{Free: 5, Base: time.Second, Max: 15 * time.Minute}
	DefaultThrottleUser   = ThrottleLimit{Free: 20, Base: time.Second, Max: 5 * time.Minute}
	DefaultThrottleIP     = ThrottleLimit{Free: 30, Base: time.Second, Max: time.Minute}
	DefaultThrottleDevice = ThrottleLimit{Free: 5, Base: time.Second, Max: 15 * time.Minute}
)

// DefaultDeviceCookieLifetime is the default of
// [ThrottleConfig.DeviceCookieLifetime].
const DefaultDeviceCookieLifetime = 30 * 24 * time.Hour

// DeriveSubject returns the stable subject of a user who has none
// configured: a UUID-shaped digest of the username, the same on every start
// and every node.
func DeriveSubject(username string) string {
	sum := sha256.Sum256([]byte("authgate subject\x00" + username))
	h := hex.EncodeToString(sum[:16])
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])
}
