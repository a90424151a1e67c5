package caddymodule

import (
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("oidc_gateway", parseGatewayCaddyfile)
	// With the other authentication, right after basic_auth: before
	// every directive that may answer or route a request (respond,
	// handle, route, file_server, reverse_proxy...), so that none of them
	// ever runs for a request the gateway has not let through; and after
	// oidc_provider, whose pages a site of both must serve to everyone.
	httpcaddyfile.RegisterDirectiveOrder("oidc_gateway", httpcaddyfile.After, "basic_auth")
}

func parseGatewayCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	g := new(Gateway)
	err := g.UnmarshalCaddyfile(h.Dispenser)
	return g, err
}

// UnmarshalCaddyfile sets up the gateway from Caddyfile tokens. Syntax:
//
//	oidc_gateway [<issuer>] {
//		issuer <url>
//		client_id <id>
//		client_secret <secret>
//		public_client
//		token_auth_method basic|post
//		scopes <scope...>
//		redirect_path <path>
//		sign_in_path <path>
//		sign_out_path <path>
//		backchannel_logout_path <path>
//		post_logout_redirect <url or path>
//		sign_out_id_token_hint
//		cookie {
//			name <name>
//			domain <domain>
//			path <path>
//			lifetime <duration>
//			same_site lax|strict|none
//			secure auto|always|never
//		}
//		session_key <secret>
//		store redis { ... }   (as oidc_provider's)
//		header <Header-Name> <claim>
//		pass_access_token
//		allow email <address or *@domain>
//		allow group <group>
//		allow claim <name> <value>
//		allow scope <scope...>
//		allow_unverified_email
//		mode browser|api|bearer
//		audience <aud...>
//		refresh_before <duration>
//		clock_skew <duration>
//		introspect [<cache duration>]
//		bearer_check jwt|userinfo [<cache duration>]
//		accept_id_tokens <client_id...>
//		allow_dot_segments
//		metrics off
//		cors [<origin...>] {
//			origin <origin...>
//			methods <method...>
//			headers <header...>
//			max_age <duration>
//			credentials
//			preflight answer|forward
//		}
//		identity_assertion {
//			header <name>          (default X-Authgate-Assertion)
//			issuer <url>           (default: the site's origin)
//			audience <aud>         (default: the issuer)
//			lifetime <duration>    (default 60s, at most 10m)
//			alg ES256|RS256        (default ES256)
//		}
//	}
//
// session_key, header and allow may be repeated, and so may cors origin.
// identity_assertion without a block takes every default.
func (g *Gateway) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		g.Issuer = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	seenMetrics := false
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "issuer", "client_id", "client_secret", "redirect_path", "sign_in_path", "sign_out_path", "backchannel_logout_path", "post_logout_redirect", "mode", "token_auth_method":
			dst := map[string]*string{
				"issuer": &g.Issuer, "client_id": &g.ClientID, "client_secret": &g.ClientSecret,
				"redirect_path": &g.RedirectPath, "sign_in_path": &g.SignInPath, "sign_out_path": &g.SignOutPath,
				"backchannel_logout_path": &g.BackchannelLogoutPath,
				"post_logout_redirect":    &g.PostLogoutRedirect, "mode": &g.Mode,
				"token_auth_method": &g.TokenAuthMethod,
			}[opt]
			if err := parseOnce(d, dst); err != nil {
				return err
			}
			if opt == "mode" {
				switch g.Mode {
				case "browser", "api", "bearer":
				default:
					return d.Errf("mode %q is not browser, api or bearer", g.Mode)
				}
			}
			if opt == "token_auth_method" && g.TokenAuthMethod != "basic" && g.TokenAuthMethod != "post" {
				return d.Errf("token_auth_method %q is not basic or post", g.TokenAuthMethod)
			}
			if strings.HasSuffix(opt, "_path") && !strings.HasPrefix(*dst, "/") {
				return d.Errf("%s %q must start with /", opt, *dst)
			}
		case "scopes":
			if g.Scopes != nil {
				return d.Errf("cannot re-declare scopes")
			}
			g.Scopes = d.RemainingArgs()
			if len(g.Scopes) == 0 {
				return d.ArgErr()
			}
		case "audience":
			if g.Audience != nil {
				return d.Err("audience is declared twice")
			}
			g.Audience = d.RemainingArgs()
			if len(g.Audience) == 0 {
				return d.ArgErr()
			}
		case "session_key":
			if !d.NextArg() {
				return d.ArgErr()
			}
			g.SessionKeys = append(g.SessionKeys, d.Val())
			if d.NextArg() {
				return d.ArgErr()
			}
		case "store":
			if g.Store != nil {
				return d.Err("store is declared twice")
			}
			st, err := parseStore(d)
			if err != nil {
				return err
			}
			g.Store = st
		case "header":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("header takes a header name and a claim name")
			}
			if g.Headers == nil {
				g.Headers = make(map[string]string)
			}
			if _, dup := g.Headers[args[0]]; dup {
				return d.Errf("header %q is declared twice", args[0])
			}
			g.Headers[args[0]] = args[1]
		case "introspect":
			if g.Introspect {
				return d.Err("introspect is declared twice")
			}
			g.Introspect = true
			if d.NextArg() {
				dur, err := caddy.ParseDuration(d.Val())
				if err != nil || dur <= 0 {
					return d.Errf("introspect %q: want a positive cache duration", d.Val())
				}
				g.IntrospectCache = caddy.Duration(dur)
				if d.NextArg() {
					return d.ArgErr()
				}
			}
		case "bearer_check":
			if err := g.parseBearerCheck(d); err != nil {
				return err
			}
		case "accept_id_tokens":
			if g.AcceptIDTokens != nil {
				return d.Err("accept_id_tokens is declared twice")
			}
			if g.AcceptIDTokens = d.RemainingArgs(); len(g.AcceptIDTokens) == 0 {
				return d.ArgErr()
			}
		case "sign_out_id_token_hint", "pass_access_token", "allow_unverified_email", "public_client", "allow_dot_segments":
			flag := map[string]*bool{
				"sign_out_id_token_hint": &g.SignOutIDTokenHint, "pass_access_token": &g.PassAccessToken,
				"allow_unverified_email": &g.AllowUnverifiedEmail, "public_client": &g.PublicClient,
				"allow_dot_segments": &g.AllowDotSegments,
			}[opt]
			if *flag {
				return d.Errf("%s is declared twice", opt)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			*flag = true
		case "metrics":
			if seenMetrics {
				return d.Err("metrics is declared twice")
			}
			seenMetrics = true
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch d.Val() {
			case "on":
			case "off":
				g.DisableMetrics = true
			default:
				return d.Errf("metrics %q: want on or off", d.Val())
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "allow":
			args := d.RemainingArgs()
			var rule GatewayRule
			switch {
			case len(args) == 2 && args[0] == "email":
				rule.Email = args[1]
			case len(args) == 2 && args[0] == "group":
				rule.Group = args[1]
			case len(args) == 3 && args[0] == "claim":
				rule.Claim, rule.Value = args[1], args[2]
			case len(args) >= 2 && args[0] == "scope":
				rule.Scope = args[1:]
				if err := checkScopeTokens(rule.Scope); err != nil {
					return d.Errf("allow scope: %v", err)
				}
			default:
				return d.Errf("allow takes: email <address>, group <group>, claim <name> <value> or scope <scope...>")
			}
			g.Allow = append(g.Allow, rule)
		case "clock_skew":
			if g.ClockSkew != nil {
				return d.Err("clock_skew is declared twice")
			}
			var s string
			if err := parseOnce(d, &s); err != nil {
				return err
			}
			v, err := caddy.ParseDuration(s)
			if err != nil || v < 0 || v > maxClockSkew {
				return d.Errf("clock_skew %q: want a duration from 0 to %s", s, maxClockSkew)
			}
			skew := caddy.Duration(v)
			g.ClockSkew = &skew
		case "refresh_before":
			if err := parseDuration(d, &g.RefreshBefore); err != nil {
				return err
			}
		case "cookie":
			if d.NextArg() {
				return d.ArgErr()
			}
			if err := g.parseCookie(d); err != nil {
				return err
			}
		case "cors":
			if g.CORS != nil {
				return d.Err("cors is declared twice")
			}
			if err := g.parseCORS(d); err != nil {
				return err
			}
		case "identity_assertion":
			if g.IdentityAssertion != nil {
				return d.Err("identity_assertion is declared twice")
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			if err := g.parseAssertion(d); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized oidc_gateway option %q", opt)
		}
	}
	return nil
}

// parseBearerCheck reads bearer_check jwt|userinfo [<cache duration>].
func (g *Gateway) parseBearerCheck(d *caddyfile.Dispenser) error {
	if g.BearerCheck != "" {
		return d.Err("bearer_check is declared twice")
	}
	if !d.NextArg() {
		return d.ArgErr()
	}
	switch g.BearerCheck = d.Val(); g.BearerCheck {
	case bearerCheckJWT, bearerCheckUserinfo:
	default:
		return d.Errf("bearer_check %q is not jwt or userinfo", g.BearerCheck)
	}
	if !d.NextArg() {
		return nil
	}
	if g.BearerCheck != bearerCheckUserinfo {
		return d.Errf("bearer_check %s takes no cache duration", g.BearerCheck)
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil || dur <= 0 {
		return d.Errf("bearer_check userinfo %q: want a positive cache duration", d.Val())
	}
	g.UserinfoCache = caddy.Duration(dur)
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

func (g *Gateway) parseCookie(d *caddyfile.Dispenser) error {
	c := &g.Cookie
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "name":
			if err := parseOnce(d, &c.Name); err != nil {
				return err
			}
		case "domain":
			if err := parseOnce(d, &c.Domain); err != nil {
				return err
			}
		case "path":
			if err := parseOnce(d, &c.Path); err != nil {
				return err
			}
		case "lifetime":
			if err := parseDuration(d, &c.Lifetime); err != nil {
				return err
			}
		case "same_site":
			if err := parseOnce(d, &c.SameSite); err != nil {
				return err
			}
			switch c.SameSite {
			case "lax", "strict", "none":
			default:
				return d.Errf("cookie same_site %q is not lax, strict or none", c.SameSite)
			}
		case "secure":
			if err := parseOnce(d, &c.Secure); err != nil {
				return err
			}
			switch c.Secure {
			case "auto", "always", "never":
			default:
				return d.Errf("cookie secure %q is not auto, always or never", c.Secure)
			}
		default:
			return d.Errf("unrecognized oidc_gateway cookie option %q", opt)
		}
	}
	return nil
}

func (g *Gateway) parseAssertion(d *caddyfile.Dispenser) error {
	a := new(GatewayAssertion)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "header", "issuer", "audience", "alg":
			dst := map[string]*string{"header": &a.Header, "issuer": &a.Issuer, "audience": &a.Audience, "alg": &a.Alg}[opt]
			if *dst != "" {
				return d.Errf("identity_assertion %s is declared twice", opt)
			}
			if err := parseOnce(d, dst); err != nil {
				return err
			}
		case "lifetime":
			if a.Lifetime != 0 {
				return d.Err("identity_assertion lifetime is declared twice")
			}
			if err := parseDuration(d, &a.Lifetime); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized oidc_gateway identity_assertion option %q", opt)
		}
		// Checked as each option is read, so that the error has its line.
		if err := a.validate(); err != nil {
			return d.Err(err.Error())
		}
	}
	g.IdentityAssertion = a
	return nil
}

func (g *Gateway) parseCORS(d *caddyfile.Dispenser) error {
	c := &GatewayCORS{Origins: d.RemainingArgs()}
	line := d.Line()
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "origin":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			c.Origins = append(c.Origins, args...)
		case "methods", "headers":
			dst := map[string]*[]string{"methods": &c.Methods, "headers": &c.Headers}[opt]
			if *dst != nil {
				return d.Errf("cors %s is declared twice", opt)
			}
			if *dst = d.RemainingArgs(); len(*dst) == 0 {
				return d.ArgErr()
			}
		case "max_age":
			if err := parseDuration(d, &c.MaxAge); err != nil {
				return err
			}
		case "credentials":
			if c.Credentials {
				return d.Err("cors credentials is declared twice")
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			c.Credentials = true
		case "preflight":
			if err := parseOnce(d, &c.Preflight); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized oidc_gateway cors option %q", opt)
		}
	}
	if err := c.validate(); err != nil {
		return d.Errf("%v (cors at line %d)", err, line)
	}
	g.CORS = c
	return nil
}
