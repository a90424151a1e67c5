package caddymodule

// Bearer tokens that are not RFC 9068 access tokens: opaque ones, checked
// at the provider's userinfo endpoint (bearer_check userinfo), and ID
// tokens, or access tokens shaped like them, taken for the listed client
// ids (accept_id_tokens). Both are the user's explicit choice: each is
// weaker than a JWT access token whose aud names this API (see the
// README's "Bearer tokens by provider").

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/sync/singleflight"
)

// Values of [Gateway.BearerCheck].
const (
	bearerCheckJWT      = "jwt"
	bearerCheckUserinfo = "userinfo"
)

const (
	defaultUserinfoCache = 10 * time.Second
	// maxUserinfoBody caps a userinfo answer: a user's claims, not a
	// document. A larger one is the provider misbehaving.
	maxUserinfoBody = 64 << 10
)

// provisionUserinfo applies the defaults of the bearer checks.
func (g *Gateway) provisionUserinfo() {
	g.userinfoCheck = g.BearerCheck == bearerCheckUserinfo
	g.userinfoCache = time.Duration(g.UserinfoCache)
	if g.userinfoCache == 0 {
		g.userinfoCache = defaultUserinfoCache
	}
	g.userinfoCalls = new(singleflight.Group)
}

// validateBearerCheck checks bearer_check and accept_id_tokens against
// the mode and each other.
func (g *Gateway) validateBearerCheck() error {
	switch g.BearerCheck {
	case "", bearerCheckJWT, bearerCheckUserinfo:
	default:
		return fmt.Errorf("oidc_gateway: bearer_check %q is not jwt or userinfo", g.BearerCheck)
	}
	bearerOnly := g.Mode == "api" || g.Mode == "bearer"
	switch {
	case g.BearerCheck != "" && !bearerOnly:
		return errors.New("oidc_gateway: bearer_check needs mode api or bearer")
	case len(g.AcceptIDTokens) != 0 && !bearerOnly:
		return errors.New("oidc_gateway: accept_id_tokens needs mode api or bearer")
	case g.UserinfoCache < 0:
		return errors.New("oidc_gateway: userinfo_cache must not be negative")
	case g.UserinfoCache != 0 && g.BearerCheck != bearerCheckUserinfo:
		return errors.New("oidc_gateway: userinfo_cache needs bearer_check userinfo")
	}
	if g.BearerCheck != bearerCheckUserinfo {
		return nil
	}
	// Userinfo says who the user is, not whom the token was issued
	// for: a configured audience or client id list would look checked
	// and never be.
	switch {
	case len(g.Audience) != 0:
		return errors.New("oidc_gateway: bearer_check userinfo cannot check an audience (the userinfo endpoint does not say whom a token is for); remove audience, and restrict users with allow rules")
	case len(g.AcceptIDTokens) != 0:
		return errors.New("oidc_gateway: bearer_check userinfo and accept_id_tokens exclude each other: accept_id_tokens is for JWTs checked here")
	case g.Introspect:
		return errors.New("oidc_gateway: bearer_check userinfo and introspect exclude each other: the userinfo endpoint already asks the provider about each token")
	}
	return nil
}

// userinfoResult is the outcome of one userinfo call: an identity, a
// refusal of the token by the provider, or an error reaching it or
// reading its answer.
type userinfoResult struct {
	id      *identity
	refused string // why the token was refused, for the log
	err     error
}

// userinfoIdentity checks an opaque bearer token at the provider's
// userinfo endpoint (OpenID Connect Core §5.3). A burst of requests with
// one token makes one call: the others wait for it and share its answer,
// which the bearer cache then keeps for userinfo_cache. Answers of 400,
// 401 or 403 refuse the token (401 invalid_token); any other answer, or
// none, is the provider's failure (502, as for introspection).
func (g *Gateway) userinfoIdentity(w http.ResponseWriter, r *http.Request, d *discovered, token string) (*identity, outcome) {
	// The key is a hash: the singleflight map never holds the token.
	v, _, _ := g.userinfoCalls.Do(hashID(token), func() (any, error) {
		// A call that ended between this request's cache miss and
		// now has left its answer in the cache.
		if id := g.bearerCache.get(token, time.Now()); id != nil {
			return userinfoResult{id: id}, nil
		}
		res := g.userinfo(d, token)
		if res.id != nil {
			g.bearerCache.put(res.id)
		}
		return res, nil
	})
	res := v.(userinfoResult)
	switch {
	case res.id != nil:
		return res.id, outcomeNone
	case res.refused != "":
		if ce := g.logger.Check(zap.InfoLevel, "bearer token refused"); ce != nil {
			ce.Write(zap.String("reason", res.refused))
		}
		return nil, g.unauthenticated(w, r, "invalid_token")
	default:
		return nil, g.providerDown(w, r, res.err)
	}
}

// userinfo asks the provider's userinfo endpoint who token belongs to.
func (g *Gateway) userinfo(d *discovered, token string) userinfoResult {
	endpoint := d.provider.UserInfoEndpoint()
	if endpoint == "" {
		return userinfoResult{err: errors.New("the provider advertises no userinfo_endpoint")}
	}
	req, err := http.NewRequestWithContext(withProviderOp(g.oidc.ctx, opUserinfo), http.MethodGet, endpoint, nil)
	if err != nil {
		return userinfoResult{err: fmt.Errorf("asking userinfo: %w", err)}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	resp, err := g.oidc.http.Do(req)
	if err != nil {
		return userinfoResult{err: fmt.Errorf("asking userinfo: %w", err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUserinfoBody+1))
	switch {
	case resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusForbidden:
		// RFC 6750 §3.1: invalid_request, invalid_token,
		// insufficient_scope (a token without openid): about the token
		// the client sent, so the client's fault, not an outage.
		return userinfoResult{refused: fmt.Sprintf("userinfo endpoint answered %d", resp.StatusCode)}
	case resp.StatusCode != http.StatusOK:
		return userinfoResult{err: fmt.Errorf("userinfo endpoint answered %d", resp.StatusCode)}
	case err != nil:
		return userinfoResult{err: fmt.Errorf("reading userinfo answer: %w", err)}
	case len(body) > maxUserinfoBody:
		return userinfoResult{err: fmt.Errorf("userinfo answer is larger than %d bytes", maxUserinfoBody)}
	}
	claims, err := userinfoClaims(body)
	if err != nil {
		return userinfoResult{err: err}
	}
	sub, _ := claims["sub"].(string)
	switch {
	case sub == "":
		// OpenID Connect Core §5.3.2: sub is always in the answer;
		// without it the token names no user to let through.
		return userinfoResult{refused: "userinfo answer has no sub"}
	case !httpguts.ValidHeaderFieldValue(sub):
		return userinfoResult{refused: errBadSubject.Error()}
	}
	// An opaque token tells no expiry: the identity lasts as long as the
	// answer is reused, and so does a connection opened with it.
	expires := time.Now().Add(g.userinfoCache)
	return userinfoResult{id: g.bearerIdentityOf(token, sub, claims, expires)}
}

// userinfoClaims reads a userinfo answer, which must be one JSON object
// (a signed answer, application/jwt, is not supported).
func userinfoClaims(body []byte) (map[string]any, error) {
	if b := bytes.TrimLeft(body, " \t\r\n"); len(b) == 0 || b[0] != '{' {
		return nil, errors.New("userinfo answer is not a JSON object")
	}
	var claims map[string]any
	if err := json.Unmarshal(body, &claims); err != nil {
		return nil, fmt.Errorf("reading userinfo answer: %w", err)
	}
	return claims, nil
}

var (
	errIDTokenAudience = errors.New("token audience is neither one of the configured audiences nor of accept_id_tokens")
	errIDTokenAzp      = errors.New("token azp is not one of accept_id_tokens")
)

// checkBearerJWT decides whether a JWT the issuer signed may pass as a
// bearer token: an access token whose aud holds one of Audience, or,
// with AcceptIDTokens, any token whose aud holds one of those client ids.
// For the latter, OpenID Connect Core §3.1.3.7 rules 4 and 5: a token for
// several audiences must name the one it was issued to in azp, and an azp
// must be one of the listed ids.
func (g *Gateway) checkBearerJWT(idt *oidc.IDToken, token string) error {
	if hasAnyOf(idt.Audience, g.Audience) && isAccessToken(token) {
		return nil
	}
	if len(g.AcceptIDTokens) == 0 {
		if !isAccessToken(token) {
			return errNotAccessToken
		}
		return errWrongAudience
	}
	if !hasAnyOf(idt.Audience, g.AcceptIDTokens) {
		return errIDTokenAudience
	}
	var c struct {
		Azp string `json:"azp"`
	}
	if err := idt.Claims(&c); err != nil {
		return err
	}
	if (c.Azp != "" || len(idt.Audience) > 1) && !slices.Contains(g.AcceptIDTokens, c.Azp) {
		return errIDTokenAzp
	}
	return nil
}

// hasAnyOf reports whether aud holds one of want.
func hasAnyOf(aud, want []string) bool {
	return slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(want, a) })
}
