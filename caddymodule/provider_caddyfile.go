package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/authgate/authgate/idp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("oidc_provider", parseProviderCaddyfile)
	// Before any authentication: the login page and the token endpoint
	// must be reachable by those not yet logged in.
	httpcaddyfile.RegisterDirectiveOrder("oidc_provider", httpcaddyfile.Before, "basic_auth")
}

func parseProviderCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	p := new(Provider)
	if err := p.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return p, nil
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens. Syntax:
//
//	oidc_provider [<matcher>] [<issuer>] {
//		issuer <url>
//		client <id> {
//			secret <plaintext or {env.X}>
//			secret_hash <hash>
//			jwks <file or inline JWK Set JSON>
//			jwks_uri <url>
//			token_endpoint_auth_method <private_key_jwt|client_secret_basic|client_secret_post...>
//			redirect_uri <uri...>
//			post_logout_redirect_uri <uri...>
//			scopes <scope...>
//			access_token_lifetime <duration>
//			id_token_lifetime <duration>
//			id_token_alg RS256|ES256
//			require_pkce true|false
//			allow_plain_pkce
//			public
//			cors_origin <origin...>
//			offline_access
//			refresh_token_usage one_time|reuse
//			refresh_token_expiration absolute|sliding
//			absolute_refresh_token_lifetime <duration>
//			sliding_refresh_token_lifetime <duration>
//			refresh_token_reuse_grace <duration>
//			client_credentials
//			password_grant
//			device_flow
//			require_consent
//			require_dpop
//			backchannel_logout_uri <uri>
//			backchannel_logout_session_required
//			logout_revokes_refresh_tokens
//			require_pushed_authorization_requests
//			frontchannel_logout_uri <uri>
//			frontchannel_logout_session_required
//			claim <name> <value>
//			client_claims_prefix <prefix>
//			require_passkey [or_otp]
//		}
//		user <username> {
//			password_hash <hash>
//			subject <id>
//			claim <name> <value>
//			disabled
//			totp_secret <base32 or {env.X}>
//			require_passkey [or_otp]
//		}
//		users_file <path> {
//			poll <interval>|off
//		}
//		api_scope <scope...>
//		api_resource <name> <scope...> {
//			secret <plaintext or {env.X}>
//			secret_hash <hash>
//			user_claims <claim...>
//		}
//		static_audience [<aud>]
//		access_token_alg RS256|ES256
//		code_lifetime <duration>
//		device_code_lifetime <duration>
//		device_poll_interval <duration>
//		session_lifetime <duration>
//		session_management
//		passkey_rp_id <domain>
//		passkey_rp_name <name>
//		templates <dir>
//		signing_key <pem file>
//		key_rotation [off] {
//			period <duration>
//			publish_ahead <duration>
//		}
//		login_throttle [<free> <base> <max>] {
//			user_ip <free> <base> <max>
//			user <free> <base> <max>
//			ip <free> <base> <max>
//			device <free> <base> <max>
//			device_cookie_lifetime <duration>
//		}
//		backchannel_logout {
//			retry_for <duration>
//			backoff <duration>
//			max_backoff <duration>
//			poll <duration>
//			timeout <duration>
//		}
//		require_pushed_authorization_requests
//		dpop_nonce [<lifetime>]
//		store bolt [<path>]
//		store storage
//		store redis {
//			address <host:port...>
//			username <name>
//			password <password or {env.X}>
//			db <n>
//			key_prefix <prefix>
//			tls
//			master_name <sentinel master>
//			cluster
//			dial_timeout <duration>
//			read_timeout <duration>
//			write_timeout <duration>
//		}
//	}
//
// The issuer is required, as the argument or in the block. client, user,
// api_scope, api_resource and signing_key may be repeated, and so may a
// client's redirect_uri, post_logout_redirect_uri and scopes, and a user's
// claim; any other option may appear once. A claim value of true or false
// (unquoted) is a boolean, as email_verified needs; any other is a string.
// Hashes come from `caddy hash-password`.
func (p *Provider) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name

	if d.NextArg() {
		p.Issuer = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}

	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "issuer":
			if err := parseOnce(d, &p.Issuer); err != nil {
				return err
			}

		case "client":
			c, err := parseClient(d)
			if err != nil {
				return err
			}
			if slices.ContainsFunc(p.Clients, func(o ProviderClient) bool { return o.ID == c.ID }) {
				return d.Errf("client %q is declared twice", c.ID)
			}
			p.Clients = append(p.Clients, c)

		case "user":
			u, err := parseUser(d)
			if err != nil {
				return err
			}
			if slices.ContainsFunc(p.Users, func(o ProviderUser) bool { return o.Username == u.Username }) {
				return d.Errf("user %q is declared twice", u.Username)
			}
			p.Users = append(p.Users, u)

		case "users_file":
			if err := parseOnce(d, &p.UsersFile); err != nil {
				return err
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "poll":
					if p.UsersFilePoll != 0 {
						return d.Err("users_file poll is declared twice")
					}
					args := d.RemainingArgs()
					if len(args) != 1 {
						return d.ArgErr()
					}
					if args[0] == "off" {
						p.UsersFilePoll = -1
						continue
					}
					v, err := parseLifetime(args[0])
					if err != nil || v <= 0 {
						return d.Errf("users_file poll %q: want a positive duration or off", args[0])
					}
					p.UsersFilePoll = caddy.Duration(v)
				default:
					return d.Errf("unrecognized users_file option %q", d.Val())
				}
			}

		case "api_scope":
			scopes := d.RemainingArgs()
			if len(scopes) == 0 {
				return d.ArgErr()
			}
			p.APIScopes = append(p.APIScopes, scopes...)

		case "api_resource":
			if !d.NextArg() {
				return d.ArgErr()
			}
			r := ProviderAPIResource{Name: d.Val(), Scopes: d.RemainingArgs()}
			if len(r.Scopes) == 0 {
				return d.ArgErr()
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "secret":
					if err := parseOnce(d, &r.Secret); err != nil {
						return err
					}
				case "secret_hash":
					if err := parseOnce(d, &r.SecretHash); err != nil {
						return err
					}
				case "user_claims":
					claims := d.RemainingArgs()
					if len(claims) == 0 {
						return d.ArgErr()
					}
					for _, c := range claims {
						if slices.Contains(idp.ReservedAccessTokenClaims, c) {
							return d.Errf("api_resource %q: user_claims %q: the access token sets this claim itself", r.Name, c)
						}
						if slices.Contains(r.UserClaims, c) {
							return d.Errf("api_resource %q: user_claims %q is listed twice", r.Name, c)
						}
						r.UserClaims = append(r.UserClaims, c)
					}
				default:
					return d.Errf("unrecognized api_resource option %q", d.Val())
				}
			}
			if slices.ContainsFunc(p.APIResources, func(o ProviderAPIResource) bool { return o.Name == r.Name }) {
				return d.Errf("api_resource %q is declared twice", r.Name)
			}
			p.APIResources = append(p.APIResources, r)

		case "static_audience":
			// On, as IdentityServer's EmitStaticAudienceClaim, with an
			// optional name other than {issuer}/resources.
			if p.EmitStaticAudience {
				return d.Err("static_audience is declared twice")
			}
			args := d.RemainingArgs()
			if len(args) > 1 {
				return d.ArgErr()
			}
			if len(args) == 1 {
				p.StaticAudience = args[0]
			}
			p.EmitStaticAudience = true

		case "access_token_alg":
			if err := parseAlg(d, &p.AccessTokenAlg); err != nil {
				return err
			}

		case "code_lifetime":
			if err := parseDuration(d, &p.CodeLifetime); err != nil {
				return err
			}

		case "device_code_lifetime":
			if err := parseDuration(d, &p.DeviceCodeLifetime); err != nil {
				return err
			}

		case "device_poll_interval":
			if err := parseDuration(d, &p.DevicePollInterval); err != nil {
				return err
			}

		case "passkey_rp_id":
			if err := parseOnce(d, &p.PasskeyRPID); err != nil {
				return err
			}

		case "passkey_rp_name":
			if err := parseOnce(d, &p.PasskeyRPName); err != nil {
				return err
			}

		case "session_lifetime":
			if err := parseDuration(d, &p.SessionLifetime); err != nil {
				return err
			}

		case "session_management":
			if p.SessionManagement {
				return d.Err("session_management is declared twice")
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			p.SessionManagement = true

		case "templates":
			if err := parseOnce(d, &p.Templates); err != nil {
				return err
			}

		case "signing_key":
			var filename string
			if err := parseOnce(d, &filename); err != nil {
				return err
			}
			p.SigningKeys = append(p.SigningKeys, filename)

		case "login_throttle":
			if p.LoginThrottle != nil {
				return d.Err("login_throttle is declared twice")
			}
			t, err := parseThrottle(d)
			if err != nil {
				return err
			}
			p.LoginThrottle = t

		case "key_rotation":
			if p.KeyRotation != nil {
				return d.Err("key_rotation is declared twice")
			}
			r, err := parseKeyRotation(d)
			if err != nil {
				return err
			}
			p.KeyRotation = r

		case "backchannel_logout":
			if p.BackchannelLogout != nil {
				return d.Err("backchannel_logout is declared twice")
			}
			b, err := parseBackchannelLogout(d)
			if err != nil {
				return err
			}
			p.BackchannelLogout = b

		case "require_pushed_authorization_requests":
			if p.RequirePushedAuthorizationRequests {
				return d.Err("require_pushed_authorization_requests is declared twice")
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			p.RequirePushedAuthorizationRequests = true

		case "dpop_nonce":
			if p.DPoPNonce {
				return d.Err("dpop_nonce is declared twice")
			}
			p.DPoPNonce = true
			if d.NextArg() {
				dur, err := caddy.ParseDuration(d.Val())
				if err != nil || dur <= 0 {
					return d.Errf("dpop_nonce %q: want a positive duration", d.Val())
				}
				p.DPoPNonceLifetime = caddy.Duration(dur)
			}
			if d.NextArg() {
				return d.ArgErr()
			}

		case "store":
			if p.Store != nil {
				return d.Err("store is declared twice")
			}
			st, err := parseStore(d)
			if err != nil {
				return err
			}
			p.Store = st

		default:
			return d.Errf("unrecognized oidc_provider option %q", d.Val())
		}
	}

	if p.Issuer == "" {
		// Point the error at the directive rather than at its closing brace.
		d.Reset()
		d.Next()
		return d.Err("issuer is required")
	}
	return nil
}

// parseClient parses `client <id> { ... }`, the dispenser on "client".
func parseClient(d *caddyfile.Dispenser) (ProviderClient, error) {
	var c ProviderClient
	if !d.NextArg() {
		return c, d.ArgErr()
	}
	c.ID = d.Val()
	if d.NextArg() {
		return c, d.ArgErr()
	}

	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "secret":
			if err := parseOnce(d, &c.Secret); err != nil {
				return c, err
			}
			if c.SecretHash != "" {
				return c, d.Errf("client %q: secret and secret_hash are exclusive", c.ID)
			}

		case "secret_hash":
			if err := parseOnce(d, &c.SecretHash); err != nil {
				return c, err
			}
			if c.Secret != "" {
				return c, d.Errf("client %q: secret and secret_hash are exclusive", c.ID)
			}

		case "jwks":
			if c.JWKS != nil || c.JWKSFile != "" {
				return c, d.Err("jwks is declared twice")
			}
			if !d.NextArg() {
				return c, d.ArgErr()
			}
			if v := strings.TrimSpace(d.Val()); inlineJSON(v) {
				if !json.Valid([]byte(v)) {
					return c, d.Errf("client %q: jwks is not valid JSON", c.ID)
				}
				c.JWKS = json.RawMessage(v)
			} else {
				c.JWKSFile = d.Val()
			}
			if d.NextArg() {
				return c, d.ArgErr()
			}

		case "jwks_uri":
			if err := parseOnce(d, &c.JWKSURI); err != nil {
				return c, err
			}
			if u, err := url.Parse(c.JWKSURI); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Fragment != "" {
				return c, d.Errf("client %q: jwks_uri %q is not an absolute http(s) URL", c.ID, c.JWKSURI)
			}

		case "token_endpoint_auth_method":
			if c.TokenEndpointAuthMethods != nil {
				return c, d.Err("token_endpoint_auth_method is declared twice")
			}
			methods := d.RemainingArgs()
			if len(methods) == 0 {
				return c, d.ArgErr()
			}
			for _, m := range methods {
				switch m {
				case idp.AuthPrivateKeyJWT, idp.AuthClientSecretBasic, idp.AuthClientSecretPost:
				default:
					return c, d.Errf("client %q: token_endpoint_auth_method %q: want private_key_jwt, client_secret_basic or client_secret_post", c.ID, m)
				}
			}
			c.TokenEndpointAuthMethods = methods

		case "redirect_uri", "post_logout_redirect_uri":
			option := d.Val()
			uris := d.RemainingArgs()
			if len(uris) == 0 {
				return c, d.ArgErr()
			}
			for _, u := range uris {
				if err := checkRedirectURI(u); err != nil {
					return c, d.Errf("client %q: %s %q %v", c.ID, option, u, err)
				}
			}
			if option == "redirect_uri" {
				c.RedirectURIs = append(c.RedirectURIs, uris...)
			} else {
				c.PostLogoutRedirectURIs = append(c.PostLogoutRedirectURIs, uris...)
			}

		case "scopes":
			scopes := d.RemainingArgs()
			if len(scopes) == 0 {
				return c, d.ArgErr()
			}
			c.Scopes = append(c.Scopes, scopes...)

		case "access_token_lifetime":
			if err := parseDuration(d, &c.AccessTokenLifetime); err != nil {
				return c, err
			}

		case "id_token_lifetime":
			if err := parseDuration(d, &c.IDTokenLifetime); err != nil {
				return c, err
			}

		case "id_token_alg":
			if err := parseAlg(d, &c.IDTokenAlg); err != nil {
				return c, err
			}

		case "require_pkce":
			if c.RequirePKCE != nil {
				return c, d.Err("require_pkce is declared twice")
			}
			var v string
			if err := parseOnce(d, &v); err != nil {
				return c, err
			}
			if v != "true" && v != "false" {
				return c, d.Errf("require_pkce %q: want true or false", v)
			}
			require := v == "true"
			c.RequirePKCE = &require

		case "offline_access", "public", "client_credentials", "password_grant", "device_flow", "require_consent",
			"backchannel_logout_session_required", "logout_revokes_refresh_tokens", "require_pushed_authorization_requests",
			"frontchannel_logout_session_required", "require_dpop":
			flag := map[string]*bool{
				"offline_access": &c.OfflineAccess, "public": &c.Public, "client_credentials": &c.ClientCredentials,
				"password_grant": &c.PasswordGrant, "device_flow": &c.DeviceFlow, "require_consent": &c.RequireConsent,
				"backchannel_logout_session_required":  &c.BackchannelLogoutSessionRequired,
				"logout_revokes_refresh_tokens":        &c.LogoutRevokesRefreshTokens,
				"frontchannel_logout_session_required": &c.FrontchannelLogoutSessionRequired,
				"require_dpop":                         &c.RequireDPoP,

				"require_pushed_authorization_requests": &c.RequirePushedAuthorizationRequests,
			}[d.Val()]
			if *flag {
				return c, d.Errf("%s is declared twice", d.Val())
			}
			if d.NextArg() {
				return c, d.ArgErr()
			}
			*flag = true

		case "require_passkey":
			if err := parseRequire(d, &c.Require); err != nil {
				return c, err
			}

		case "backchannel_logout_uri":
			if err := parseOnce(d, &c.BackchannelLogoutURI); err != nil {
				return c, err
			}
			if err := checkBackchannelLogoutURI(c.BackchannelLogoutURI); err != nil {
				return c, d.Errf("client %q: backchannel_logout_uri %q %v", c.ID, c.BackchannelLogoutURI, err)
			}

		case "frontchannel_logout_uri":
			if err := parseOnce(d, &c.FrontchannelLogoutURI); err != nil {
				return c, err
			}
			// The same form as a back-channel URI; whether it is on a
			// redirect URI's origin is for Provision, which has them all.
			if err := checkBackchannelLogoutURI(c.FrontchannelLogoutURI); err != nil {
				return c, d.Errf("client %q: frontchannel_logout_uri %q %v", c.ID, c.FrontchannelLogoutURI, err)
			}

		case "cors_origin":
			origins := d.RemainingArgs()
			if len(origins) == 0 {
				return c, d.ArgErr()
			}
			for _, o := range origins {
				if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
					return c, d.Errf("client %q: cors_origin %q is not scheme://host[:port]", c.ID, o)
				}
			}
			c.CORSOrigins = append(c.CORSOrigins, origins...)

		case "refresh_token_usage":
			if err := parseOnce(d, &c.RefreshTokenUsage); err != nil {
				return c, err
			}
			if c.RefreshTokenUsage != "one_time" && c.RefreshTokenUsage != "reuse" {
				return c, d.Errf("refresh_token_usage %q: want one_time or reuse", c.RefreshTokenUsage)
			}

		case "refresh_token_expiration":
			if err := parseOnce(d, &c.RefreshTokenExpiration); err != nil {
				return c, err
			}
			if c.RefreshTokenExpiration != "absolute" && c.RefreshTokenExpiration != "sliding" {
				return c, d.Errf("refresh_token_expiration %q: want absolute or sliding", c.RefreshTokenExpiration)
			}

		case "absolute_refresh_token_lifetime":
			if d.NextArg() {
				// IdentityServer's 0: no absolute limit, with sliding
				// expiration (checked once the block is read).
				if v, err := parseLifetime(d.Val()); err == nil && v == 0 {
					if c.AbsoluteRefreshTokenLifetime != 0 {
						return c, d.Err("absolute_refresh_token_lifetime is declared twice")
					}
					if d.NextArg() {
						return c, d.ArgErr()
					}
					c.AbsoluteRefreshTokenLifetime = -1
					continue
				}
				d.Prev()
			}
			if err := parseDuration(d, &c.AbsoluteRefreshTokenLifetime); err != nil {
				return c, err
			}

		case "sliding_refresh_token_lifetime":
			if err := parseDuration(d, &c.SlidingRefreshTokenLifetime); err != nil {
				return c, err
			}

		case "refresh_token_reuse_grace":
			if err := parseDuration(d, &c.RefreshTokenReuseGrace); err != nil {
				return c, err
			}

		case "claim":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return c, d.ArgErr()
			}
			if c.Claims == nil {
				c.Claims = make(map[string]any)
			}
			if _, dup := c.Claims[args[0]]; dup {
				return c, d.Errf("client %q: claim %q is declared twice", c.ID, args[0])
			}
			c.Claims[args[0]] = args[1]

		case "client_claims_prefix":
			if c.ClientClaimsPrefix != nil {
				return c, d.Err("client_claims_prefix is declared twice")
			}
			args := d.RemainingArgs()
			if len(args) != 1 {
				return c, d.ArgErr()
			}
			c.ClientClaimsPrefix = &args[0]

		case "allow_plain_pkce":
			if c.AllowPlainPKCE {
				return c, d.Err("allow_plain_pkce is declared twice")
			}
			if d.NextArg() {
				return c, d.ArgErr()
			}
			c.AllowPlainPKCE = true

		default:
			return c, d.Errf("unrecognized client option %q", d.Val())
		}
	}
	if c.Public && c.RefreshTokenUsage == "reuse" && !c.RequireDPoP {
		return c, publicReuseErr(d, c.ID)
	}
	if c.AbsoluteRefreshTokenLifetime < 0 && c.RefreshTokenExpiration != "sliding" {
		return c, d.Errf("client %q: absolute_refresh_token_lifetime 0 (no absolute limit) needs refresh_token_expiration sliding: absolute refresh tokens would never expire", c.ID)
	}
	return c, nil
}

// publicReuseErr refuses refresh_token_usage reuse on a public client
// that does not require DPoP, which IdentityServer accepts: RFC 9700
// §4.14.2 requires a public client's refresh tokens to be rotated or
// sender-constrained, and only require_dpop binds them all to a key.
func publicReuseErr(d *caddyfile.Dispenser, id string) error {
	return d.Errf("client %q: refresh_token_usage reuse is refused for a public client without require_dpop: "+
		"RFC 9700 §4.14.2 requires a public client's refresh tokens to be rotated or sender-constrained; "+
		"write refresh_token_usage one_time (the default), or add require_dpop so that they are bound to the client's DPoP key", id)
}

// parseUser parses `user <username> { ... }`, the dispenser on "user".
func parseUser(d *caddyfile.Dispenser) (ProviderUser, error) {
	var u ProviderUser
	if !d.NextArg() {
		return u, d.ArgErr()
	}
	u.Username = d.Val()
	if d.NextArg() {
		return u, d.ArgErr()
	}

	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "password_hash":
			if err := parseOnce(d, &u.PasswordHash); err != nil {
				return u, err
			}

		case "subject":
			if err := parseOnce(d, &u.Subject); err != nil {
				return u, err
			}

		case "claim":
			var name string
			if !d.Args(&name) || !d.NextArg() {
				return u, d.ArgErr()
			}
			var value any = d.Val()
			if quoted := d.ValRaw() != d.Val(); !quoted && (d.Val() == "true" || d.Val() == "false") {
				value = d.Val() == "true"
			}
			if d.NextArg() {
				return u, d.ArgErr()
			}
			if name == "sub" {
				return u, d.Errf("user %q: the sub claim is the subject: use subject", u.Username)
			}
			if _, dup := u.Claims[name]; dup {
				return u, d.Errf("user %q: claim %q is declared twice", u.Username, name)
			}
			if u.Claims == nil {
				u.Claims = make(map[string]any)
			}
			u.Claims[name] = value

		case "require_passkey":
			if err := parseRequire(d, &u.Require); err != nil {
				return u, err
			}

		case "disabled":
			if d.NextArg() {
				return u, d.ArgErr()
			}
			if u.Disabled {
				return u, d.Errf("user %q: disabled is declared twice", u.Username)
			}
			u.Disabled = true

		case "totp_secret":
			if err := parseOnce(d, &u.TOTPSecret); err != nil {
				return u, err
			}

		default:
			return u, d.Errf("unrecognized user option %q", d.Val())
		}
	}
	if u.PasswordHash == "" {
		return u, d.Errf("user %q: password_hash is required", u.Username)
	}
	return u, nil
}

// parseRequire parses `require_passkey [or_otp]` of a user or client:
// a passkey, or with or_otp a passkey or a password and a one-time code.
func parseRequire(d *caddyfile.Dispenser, dst *string) error {
	if *dst != "" {
		return d.Err("require_passkey is declared twice")
	}
	*dst = idp.RequirePasskey
	if d.NextArg() {
		if d.Val() != "or_otp" {
			return d.Errf("require_passkey %q: want nothing or or_otp", d.Val())
		}
		*dst = idp.RequirePasskeyOrOTP
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// parseThrottle parses
//
//	login_throttle [<free> <base> <max>] {
//		user_ip <free> <base> <max>
//		user <free> <base> <max>
//		ip <free> <base> <max>
//		device <free> <base> <max>
//		device_cookie_lifetime <duration>
//	}
//
// where the arguments on the first line are the user_ip limit.
func parseThrottle(d *caddyfile.Dispenser) (*ProviderLoginThrottle, error) {
	t := new(ProviderLoginThrottle)
	if d.CountRemainingArgs() > 0 {
		l, err := parseThrottleLimit(d, "user_ip")
		if err != nil {
			return nil, err
		}
		t.UserIP = l
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var dst **ProviderThrottleLimit
		switch option := d.Val(); option {
		case "user_ip":
			dst = &t.UserIP
		case "user":
			dst = &t.User
		case "ip":
			dst = &t.IP
		case "device":
			dst = &t.Device
		case "device_cookie_lifetime":
			if err := parseDuration(d, &t.DeviceCookieLifetime); err != nil {
				return nil, err
			}
			continue
		default:
			return nil, d.Errf("unrecognized login_throttle option %q", option)
		}
		if *dst != nil {
			return nil, d.Errf("login_throttle %s is declared twice", d.Val())
		}
		l, err := parseThrottleLimit(d, d.Val())
		if err != nil {
			return nil, err
		}
		*dst = l
	}
	return t, nil
}

// parseKeyRotation parses
//
//	key_rotation [off] {
//		period <duration>
//		publish_ahead <duration>
//	}
//
// the dispenser on "key_rotation": off, or a block, not both.
func parseKeyRotation(d *caddyfile.Dispenser) (*KeyRotation, error) {
	r := new(KeyRotation)
	if d.NextArg() {
		if d.Val() != "off" {
			return nil, d.Errf("key_rotation %q: want off or a block", d.Val())
		}
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		r.Off = true
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if r.Off {
			return nil, d.Err("key_rotation off takes no block")
		}
		var dst *caddy.Duration
		switch option := d.Val(); option {
		case "period":
			dst = &r.Period
		case "publish_ahead":
			dst = &r.PublishAhead
		default:
			return nil, d.Errf("unrecognized key_rotation option %q", option)
		}
		option := d.Val()
		if *dst != 0 {
			return nil, d.Errf("key_rotation %s is declared twice", option)
		}
		var s string
		if !d.Args(&s) || d.NextArg() {
			return nil, d.ArgErr()
		}
		v, err := parseLifetime(s)
		if err != nil || v <= 0 {
			return nil, d.Errf("key_rotation %s %q: want a positive duration", option, s)
		}
		*dst = caddy.Duration(v)
	}
	if r.Period != 0 && r.PublishAhead != 0 && r.PublishAhead >= r.Period {
		return nil, d.Errf("key_rotation: publish_ahead %s must be shorter than period %s", time.Duration(r.PublishAhead), time.Duration(r.Period))
	}
	return r, nil
}

// parseBackchannelLogout parses
//
//	backchannel_logout {
//		retry_for <duration>
//		backoff <duration>
//		max_backoff <duration>
//		poll <duration>
//		timeout <duration>
//	}
//
// the dispenser on "backchannel_logout".
func parseBackchannelLogout(d *caddyfile.Dispenser) (*ProviderBackchannelLogout, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	b := new(ProviderBackchannelLogout)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var dst *caddy.Duration
		switch option := d.Val(); option {
		case "retry_for":
			dst = &b.RetryFor
		case "backoff":
			dst = &b.Backoff
		case "max_backoff":
			dst = &b.MaxBackoff
		case "poll":
			dst = &b.Poll
		case "timeout":
			dst = &b.Timeout
		default:
			return nil, d.Errf("unrecognized backchannel_logout option %q", option)
		}
		if err := parseDuration(d, dst); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// parseThrottleLimit parses the arguments `<free> <base> <max>` of the
// login_throttle limit name.
func parseThrottleLimit(d *caddyfile.Dispenser, name string) (*ProviderThrottleLimit, error) {
	var free, base, maxWait string
	if !d.Args(&free, &base, &maxWait) || d.NextArg() {
		return nil, d.ArgErr()
	}
	var l ProviderThrottleLimit
	var err error
	if l.Free, err = strconv.Atoi(free); err != nil || l.Free < 0 {
		return nil, d.Errf("login_throttle %s free %q: want a number of failures", name, free)
	}
	b, err := parseLifetime(base)
	if err != nil || b <= 0 {
		return nil, d.Errf("login_throttle %s base %q: want a positive duration", name, base)
	}
	m, err := parseLifetime(maxWait)
	if err != nil || m <= 0 {
		return nil, d.Errf("login_throttle %s max %q: want a positive duration", name, maxWait)
	}
	if m < b {
		return nil, d.Errf("login_throttle %s max %s is less than base %s", name, m, b)
	}
	l.Base, l.Max = caddy.Duration(b), caddy.Duration(m)
	return &l, nil
}

// parseOnce reads the single argument of the option under the cursor into
// dst, which must still be empty: an option given twice is an error.
func parseOnce(d *caddyfile.Dispenser, dst *string) error {
	option := d.Val()
	if *dst != "" {
		return d.Errf("%s is declared twice", option)
	}
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// parseLifetime parses a duration as caddy.ParseDuration does (1h30m,
// 2d) or, as IdentityServer's configuration has them, a bare integer of
// seconds (3600).
func parseLifetime(s string) (time.Duration, error) {
	if s != "" && strings.Trim(s, "0123456789") == "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n > int64(math.MaxInt64/time.Second) {
			return 0, fmt.Errorf("%q seconds is out of range", s)
		}
		return time.Duration(n) * time.Second, nil
	}
	return caddy.ParseDuration(s)
}

// parseDuration reads the positive duration argument of the option under
// the cursor into dst, once: a duration or a bare integer of seconds.
func parseDuration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	option := d.Val()
	if *dst != 0 {
		return d.Errf("%s is declared twice", option)
	}
	var s string
	if err := parseOnce(d, &s); err != nil {
		return err
	}
	v, err := parseLifetime(s)
	if err != nil || v <= 0 {
		return d.Errf("%s %q: want a positive duration or number of seconds", option, s)
	}
	*dst = caddy.Duration(v)
	return nil
}

// parseAlg reads the signing algorithm argument of the option under the
// cursor into dst, once.
func parseAlg(d *caddyfile.Dispenser, dst *string) error {
	option := d.Val()
	if err := parseOnce(d, dst); err != nil {
		return err
	}
	if *dst != idp.RS256 && *dst != idp.ES256 {
		return d.Errf("%s %q: want RS256 or ES256", option, *dst)
	}
	return nil
}

// checkRedirectURI applies RFC 6749 §3.1.2: a redirection endpoint URI is
// absolute and has no fragment.
func checkRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("is not a URI")
	case !u.IsAbs() || (u.Scheme == "http" || u.Scheme == "https") && u.Host == "":
		return errors.New("is not absolute")
	case strings.Contains(raw, "#"):
		return errors.New("has a fragment")
	}
	return nil
}
