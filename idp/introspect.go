package idp

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
)

// introspection is the response of RFC 7662 §2.2.
type introspection struct {
	Active    bool     `json:"active"`
	Scope     string   `json:"scope,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	Subject   string   `json:"sub,omitempty"`
	Audience  []string `json:"aud,omitempty"`
	Issuer    string   `json:"iss,omitempty"`
	Expiry    int64    `json:"exp,omitempty"`
	IssuedAt  int64    `json:"iat,omitempty"`
	ID        string   `json:"jti,omitempty"`
	TokenType string   `json:"token_type,omitempty"`

	Confirmation *confirmation `json:"cnf,omitempty"` // RFC 9449 §6.2

	// Extra are the access token's other claims (RFC 7662 §2.2 allows
	// them): the user claims its API resources carry, so that an API
	// that introspects sees what one that verifies the JWT sees.
	Extra map[string]any `json:"-"`
}

// MarshalJSON writes the response's members and then those of Extra that
// do not collide with them.
func (i introspection) MarshalJSON() ([]byte, error) {
	type plain introspection
	b, err := json.Marshal(plain(i))
	if err != nil || len(i.Extra) == 0 {
		return b, err
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	for name, v := range i.Extra {
		if _, taken := out[name]; !taken && name != "active" && name != "token_type" && name != "cnf" && name != "username" {
			out[name] = v
		}
	}
	return json.Marshal(out)
}

// serveIntrospect is token introspection (RFC 7662) for authenticated
// clients, which may inspect their own tokens, and API resources with a
// secret, which may inspect access tokens meant for them.
func (p *Provider) serveIntrospect(w http.ResponseWriter, r *http.Request) {
	t, oe := p.readBackChannel(w, r)
	if oe != nil {
		return
	}
	id, secret, oe := t.credentials()
	if oe != nil {
		p.tokenError(w, r, oe)
		return
	}
	resource := p.authenticateResource(id, secret)
	var c *client
	if resource == nil {
		if c, oe = p.authenticateClient(t); oe != nil {
			p.tokenError(w, r, oe)
			return
		}
		if c.Public {
			// RFC 7662 §2.1: the caller must be authenticated; a public
			// client has nothing to authenticate with.
			p.tokenError(w, r, &Error{Code: ErrInvalidClient, Description: "a public client may not introspect"})
			return
		}
	}
	token := t.get("token")
	if token == "" {
		p.tokenError(w, r, oauthErr(ErrInvalidRequest, "token is required"))
		return
	}
	resp := introspection{}
	ctx := r.Context()
	if claims, err := p.verifyAccessToken(token); err == nil {
		revoked, rerr := p.isRevoked(r, claims)
		mine := c != nil && claims.ClientID == c.ID || resource != nil && slices.Contains(claims.Audience, resource.Name)
		if rerr == nil && !revoked && mine && !p.disabled(claims.Subject) {
			resp = introspection{
				Active: true, Scope: claims.Scope, ClientID: claims.ClientID, Subject: claims.Subject,
				Audience: claims.Audience, Issuer: claims.Issuer, Expiry: claims.Expiry, IssuedAt: claims.IssuedAt,
				ID: claims.ID, TokenType: "Bearer", Extra: claims.Extra,
			}
			if claims.Confirmation != nil {
				resp.TokenType, resp.Confirmation = "DPoP", claims.Confirmation
			}
		}
	} else if c != nil {
		if data, err := p.store.Get(ctx, refreshKey(token)); err == nil {
			var g refreshGrant
			if json.Unmarshal(data, &g) == nil && g.ClientID == c.ID && p.familyLive(ctx, g.Family) && !p.disabled(g.Subject) {
				resp = introspection{
					Active: true, Scope: strings.Join(g.Scopes, " "), ClientID: g.ClientID, Subject: g.Subject,
					Issuer: p.issuer, Expiry: g.Expires, TokenType: "refresh_token",
				}
			}
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// authenticateResource returns the API resource these credentials belong
// to, or nil.
func (p *Provider) authenticateResource(id, secret string) *APIResource {
	for i := range p.resources {
		res := &p.resources[i]
		if res.Name != id || secret == "" {
			continue
		}
		if res.SecretHash != "" {
			ok, err := p.comparer.Compare([]byte(res.SecretHash), []byte(secret))
			if err == nil && ok {
				return res
			}
			return nil
		}
		if res.Secret == "" {
			return nil
		}
		a, b := sha256.Sum256([]byte(secret)), sha256.Sum256([]byte(res.Secret))
		if subtle.ConstantTimeCompare(a[:], b[:]) == 1 {
			return res
		}
		return nil
	}
	return nil
}
