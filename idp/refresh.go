package idp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// refreshGrant is what a refresh token stands for. Every token of one
// login shares a Family; they rotate on each use (RFC 9700 §4.14.2), and a
// rotated-out token presented again revokes the family.
type refreshGrant struct {
	ClientID string   `json:"client_id"`
	Subject  string   `json:"sub"`
	Scopes   []string `json:"scopes"`
	AuthTime int64    `json:"auth_time"`
	SID      string   `json:"sid,omitempty"`
	Family   string   `json:"family"`
	Expires  int64    `json:"exp"` // absolute end of the family
}

func refreshKey(token string) string        { return "rt/" + hashKey(token) }
func usedRefreshKey(token string) string    { return "rtused/" + hashKey(token) }
func revokedFamilyKey(family string) string { return "rtfamily/" + family }

// newRefreshToken stores a refresh token for g and returns it.
func (p *Provider) newRefreshToken(ctx context.Context, g refreshGrant) (string, error) {
	ttl := time.Unix(g.Expires, 0).Sub(p.now())
	if ttl <= 0 {
		return "", errors.New("refresh token family expired")
	}
	token := p.randomString(32)
	data, _ := json.Marshal(g)
	if err := p.store.Put(ctx, refreshKey(token), data, ttl); err != nil {
		return "", fmt.Errorf("storing refresh token: %w", err)
	}
	return token, nil
}

// refresh redeems a refresh token (RFC 6749 §6): one-time, so it returns a
// new refresh token with new access and ID tokens.
func (p *Provider) refresh(r *http.Request, c *client, t *tokenRequest) (*tokenResponse, *Error) {
	token := t.get("refresh_token")
	if token == "" {
		return nil, oauthErr(ErrInvalidRequest, "refresh_token is required")
	}
	ctx := r.Context()
	data, err := p.store.Take(ctx, refreshKey(token))
	if errors.Is(err, ErrNotFound) {
		p.detectRefreshReuse(ctx, token)
		return nil, oauthErr(ErrInvalidGrant, "the refresh token is invalid, expired or revoked")
	}
	if err != nil {
		return nil, &Error{Code: ErrServerError, Description: "the refresh token could not be checked", Cause: err}
	}
	var g refreshGrant
	if err := json.Unmarshal(data, &g); err != nil {
		return nil, &Error{Code: ErrServerError, Description: "the refresh token could not be read", Cause: err}
	}
	if g.ClientID != c.ID {
		// A token presented by the wrong client is burnt: it has leaked.
		p.revokeFamily(ctx, g)
		return nil, &Error{Code: ErrInvalidGrant, Description: "the refresh token was issued to another client", Cause: fmt.Errorf("client %q presented a refresh token of client %q", c.ID, g.ClientID)}
	}
	if _, err := p.store.Get(ctx, revokedFamilyKey(g.Family)); err == nil {
		return nil, oauthErr(ErrInvalidGrant, "the refresh token is invalid, expired or revoked")
	}
	// Remember the rotated-out token for as long as the family lives, so a
	// replay of it is recognised.
	used, _ := json.Marshal(g)
	if err := p.store.Put(ctx, usedRefreshKey(token), used, time.Unix(g.Expires, 0).Sub(p.now())); err != nil {
		return nil, &Error{Code: ErrServerError, Description: "the refresh token could not be rotated", Cause: err}
	}

	scopes := g.Scopes
	if raw := t.get("scope"); raw != "" {
		// RFC 6749 §6: a refresh may narrow the scope, never widen it.
		scopes = splitScope(raw)
		for _, s := range scopes {
			if !slices.Contains(g.Scopes, s) {
				return nil, oauthErr(ErrInvalidScope, fmt.Sprintf("scope %q was not granted", s))
			}
		}
	}
	user := p.subjects[g.Subject]
	if user == nil {
		return nil, oauthErr(ErrInvalidGrant, "the user no longer exists")
	}
	resp, _, err := p.issueTokens(c, user, scopes, "", g.AuthTime, g.SID)
	if err != nil {
		return nil, &Error{Code: ErrServerError, Description: "tokens could not be issued", Cause: err}
	}
	if resp.RefreshToken, err = p.newRefreshToken(ctx, g); err != nil {
		return nil, &Error{Code: ErrInvalidGrant, Description: "the refresh token expired", Cause: err}
	}
	p.log.InfoContext(ctx, "token issued", "client_id", c.ID, "sub", user.Subject, "grant_type", "refresh_token", "scope", resp.Scope)
	return resp, nil
}

// detectRefreshReuse revokes the family of a rotated-out refresh token that
// is presented again: either the client or an attacker holds a stolen copy.
func (p *Provider) detectRefreshReuse(ctx context.Context, token string) {
	data, err := p.store.Get(ctx, usedRefreshKey(token))
	if err != nil {
		return
	}
	var g refreshGrant
	if json.Unmarshal(data, &g) != nil {
		return
	}
	p.revokeFamily(ctx, g)
	p.log.WarnContext(ctx, "refresh token reused: its family is revoked", "client_id", g.ClientID, "sub", g.Subject)
}

func (p *Provider) revokeFamily(ctx context.Context, g refreshGrant) {
	ttl := time.Unix(g.Expires, 0).Sub(p.now())
	if ttl <= 0 {
		return
	}
	if err := p.store.Put(ctx, revokedFamilyKey(g.Family), []byte{1}, ttl); err != nil {
		p.log.ErrorContext(ctx, "revoking refresh token family", "client_id", g.ClientID, "error", err)
	}
}
