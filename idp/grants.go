package idp

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// clientCredentials is the client_credentials grant (RFC 6749 §4.4): an
// access token for the client itself, for its API scopes only; no ID
// token, no refresh token.
func (p *Provider) clientCredentials(r *http.Request, c *client, t *tokenRequest) (*tokenResponse, *Error) {
	if !c.AllowClientCredentials || c.Public {
		return nil, oauthErr(ErrUnauthorizedClient, "the client may not use the client_credentials grant")
	}
	var scopes []string
	if raw := t.get("scope"); raw != "" {
		scopes = splitScope(raw)
		for _, s := range scopes {
			if !p.apiScopes[s] || !c.scopes[s] {
				return nil, oauthErr(ErrInvalidScope, fmt.Sprintf("scope %q is not an api scope of this client", s))
			}
		}
	} else {
		// RFC 6749 §3.3: no scope means the client's default, all of its
		// API scopes.
		for s := range c.scopes {
			if p.apiScopes[s] {
				scopes = append(scopes, s)
			}
		}
		slices.Sort(scopes)
		if len(scopes) == 0 {
			return nil, oauthErr(ErrInvalidScope, "the client has no api scopes")
		}
	}
	now := p.now()
	claims := map[string]any{
		"iss":       p.issuer,
		"sub":       c.ID,
		"aud":       p.audience(scopes),
		"client_id": c.ID,
		"scope":     strings.Join(scopes, " "),
		"exp":       now.Add(c.AccessTokenLifetime).Unix(),
		"iat":       now.Unix(),
		"jti":       p.randomString(16),
	}
	if c.dpopJKT != "" {
		claims["cnf"] = confirmation{JKT: c.dpopJKT}
	}
	for name, v := range c.Claims {
		if _, taken := claims[c.claimsPrefix+name]; !taken {
			claims[c.claimsPrefix+name] = v
		}
	}
	access, err := sign(p.keys.Load().atSigner, claims)
	if err != nil {
		return nil, &Error{Code: ErrServerError, Description: "the token could not be issued", Cause: err}
	}
	p.log.InfoContext(r.Context(), "token issued", "client_id", c.ID, "sub", c.ID, "grant_type", "client_credentials", "scope", claims["scope"])
	p.emitRequest(r, Event{Type: EventTokenIssued, Subject: c.ID, ClientID: c.ID, GrantType: "client_credentials"})
	return &tokenResponse{
		AccessToken: access,
		TokenType:   "Bearer",
		ExpiresIn:   int64(c.AccessTokenLifetime / time.Second),
		Scope:       claims["scope"].(string),
	}, nil
}

// passwordGrant is the resource owner password credentials grant (RFC 6749
// §4.3), for clients that enable it: the same password check and throttle
// as the login page.
func (p *Provider) passwordGrant(r *http.Request, c *client, t *tokenRequest) (*tokenResponse, *Error) {
	if !c.AllowPasswordGrant {
		return nil, oauthErr(ErrUnauthorizedClient, "the client may not use the password grant")
	}
	username, password := strings.TrimSpace(t.get("username")), t.get("password")
	if username == "" || password == "" {
		return nil, oauthErr(ErrInvalidRequest, "username and password are required")
	}
	scopes, err := p.checkScopes(c, t.get("scope"))
	if err != nil {
		return nil, err.(*Error)
	}
	ctx := r.Context()
	ip := p.clientIP(r)
	// No device cookie here: the client, not the user's browser, calls.
	attempt, wait, terr := p.reserveLogin(ctx, username, ip, "")
	if terr != nil {
		return nil, unavailable("the login could not be checked", terr)
	}
	if wait > 0 {
		p.log.WarnContext(ctx, "login throttled", "username", loggedName(username), "client_ip", ip, "client_id", c.ID)
		p.emitRequest(r, Event{Type: EventLogin, Outcome: OutcomeThrottled, Username: loggedName(username), ClientID: c.ID, GrantType: "password"})
		return nil, oauthErr(ErrInvalidGrant, fmt.Sprintf("too many failed attempts; try again in %d s", retryAfter(wait)))
	}
	user, failure := p.verifyPassword(username, password)
	if user == nil {
		p.log.InfoContext(ctx, "login failed", "username", loggedName(username), "client_ip", ip, "client_id", c.ID, "grant_type", "password")
		p.emitRequest(r, Event{Type: EventLogin, Outcome: failure, Username: loggedName(username), ClientID: c.ID, GrantType: "password"})
		return nil, oauthErr(ErrInvalidGrant, "invalid username or password")
	}
	p.succeeded(ctx, attempt)
	// A user with a second factor cannot sign in with the password alone,
	// and RFC 6749 §4.3 has no field for a code: the grant is refused
	// (totp.go), as a login page without the code step would be.
	if st, err := p.totpFor(ctx, user); err != nil {
		return nil, unavailable("the login could not be checked", err)
	} else if st.enabled() {
		p.log.InfoContext(ctx, "password grant refused: the user has a second factor", "username", user.Username, "client_id", c.ID)
		return nil, oauthErr(ErrInvalidGrant, "the user signs in with a second factor, which the password grant cannot carry; use the authorization code flow")
	}
	if p.neededLevel(user, &authRequest{ClientID: c.ID}) > acrLevel(acrFor([]string{AMRPassword})) {
		// The user or the client requires a passkey (acr.go), which a
		// password grant cannot show.
		p.log.InfoContext(ctx, "password grant refused: a passkey is required", "username", user.Username, "sub", user.Subject, "client_id", c.ID)
		return nil, oauthErr(ErrInvalidGrant, "this sign-in requires a passkey; the password grant cannot be used")
	}
	p.log.InfoContext(ctx, "login succeeded", "username", user.Username, "sub", user.Subject, "client_ip", ip, "client_id", c.ID, "grant_type", "password")
	p.emitRequest(r, Event{Type: EventLogin, Outcome: OutcomeSuccess, Username: user.Username, Subject: user.Subject, ClientID: c.ID, GrantType: "password"})
	in := signIn{Time: p.now().Unix(), AMR: []string{AMRPassword}, ACR: acrFor([]string{AMRPassword})}
	var family string
	if slices.Contains(scopes, scopeOfflineAccess) {
		family = p.randomString(16)
	}
	resp, _, ierr := p.issueTokens(c, user, scopes, "", in, family)
	if ierr != nil {
		return nil, &Error{Code: ErrServerError, Description: "tokens could not be issued", Cause: ierr}
	}
	if family != "" {
		if resp.RefreshToken, ierr = p.startFamily(ctx, c, family, user.Subject, scopes, in); ierr != nil {
			return nil, unavailable("the refresh token could not be stored", ierr)
		}
	}
	p.log.InfoContext(ctx, "token issued", "client_id", c.ID, "sub", user.Subject, "grant_type", "password", "scope", resp.Scope)
	p.emitRequest(r, Event{Type: EventTokenIssued, Subject: user.Subject, ClientID: c.ID, GrantType: "password"})
	return resp, nil
}
