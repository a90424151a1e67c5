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
// login shares a Family; one-time tokens rotate on each use (RFC 9700
// §4.14.2), and a rotated-out token presented again revokes the family.
type refreshGrant struct {
	ClientID string   `json:"client_id"`
	Subject  string   `json:"sub"`
	Scopes   []string `json:"scopes"`
	AuthTime int64    `json:"auth_time"`
	SID      string   `json:"sid,omitempty"`
	Family   string   `json:"family"`
	End      int64    `json:"end"` // absolute end of the family
	Expires  int64    `json:"exp"` // end of this token: End, or sooner when sliding
}

// graceRecord lets the token just rotated out be presented again within
// the client's grace period and get the same successor.
type graceRecord struct {
	Successor string `json:"successor"`
}

func refreshKey(token string) string        { return "rt/" + hashKey(token) }
func usedRefreshKey(token string) string    { return "rtused/" + hashKey(token) }
func graceRefreshKey(token string) string   { return "rtgrace/" + hashKey(token) }
func revokedFamilyKey(family string) string { return "rtfamily/" + family }

// startFamily issues the first refresh token of a login's family, whose
// access tokens carry the family as grant_id.
func (p *Provider) startFamily(ctx context.Context, c *client, family, subject string, scopes []string, authTime int64, sid string) (string, error) {
	return p.storeRefreshToken(ctx, c, p.familyGrant(c, family, subject, scopes, authTime, sid), "")
}

// familyGrant is the grant of the first refresh token of a family.
func (p *Provider) familyGrant(c *client, family, subject string, scopes []string, authTime int64, sid string) refreshGrant {
	return refreshGrant{
		ClientID: c.ID, Subject: subject, Scopes: scopes, AuthTime: authTime, SID: sid,
		Family: family, End: p.now().Add(c.AbsoluteRefreshTokenLifetime).Unix(),
	}
}

// errFamilyExpired is refreshEntry's error for a family past its end.
var errFamilyExpired = errors.New("refresh token family expired")

// storeRefreshToken stores g under token (a new one when token is empty),
// its expiry set by the client's expiration policy, and returns the token.
func (p *Provider) storeRefreshToken(ctx context.Context, c *client, g refreshGrant, token string) (string, error) {
	e, token, err := p.refreshEntry(c, g, token)
	if err != nil {
		return "", err
	}
	if err := p.store.Put(ctx, e.Key, e.Value, e.TTL); err != nil {
		return "", fmt.Errorf("storing refresh token: %w", err)
	}
	return token, nil
}

// refreshEntry returns the store entry of g under token (a new one when
// token is empty), its expiry set by the client's expiration policy, and
// the token.
func (p *Provider) refreshEntry(c *client, g refreshGrant, token string) (Entry, string, error) {
	now := p.now()
	g.Expires = g.End
	if c.RefreshTokenExpiration == RefreshSliding {
		g.Expires = min(g.End, now.Add(c.SlidingRefreshTokenLifetime).Unix())
	}
	ttl := time.Unix(g.Expires, 0).Sub(now)
	if ttl <= 0 {
		return Entry{}, "", errFamilyExpired
	}
	if token == "" {
		token = p.randomString(32)
	}
	data, _ := json.Marshal(g)
	return Entry{Key: refreshKey(token), Value: data, TTL: ttl}, token, nil
}

// refresh redeems a refresh token (RFC 6749 §6).
func (p *Provider) refresh(r *http.Request, c *client, t *tokenRequest) (*tokenResponse, *Error) {
	token := t.get("refresh_token")
	if token == "" {
		return nil, oauthErr(ErrInvalidRequest, "refresh_token is required")
	}
	ctx := r.Context()
	// Read, not taken: a one-time token is replaced below, in one write,
	// once it has passed every check.
	data, err := p.store.Get(ctx, refreshKey(token))
	if errors.Is(err, ErrNotFound) {
		return p.refreshReplay(r, c, t, token)
	}
	if err != nil {
		return nil, unavailable("the refresh token could not be checked", err)
	}
	var g refreshGrant
	if err := json.Unmarshal(data, &g); err != nil {
		return nil, &Error{Code: ErrServerError, Description: "the refresh token could not be read", Cause: err}
	}
	if g.ClientID != c.ID {
		// A token presented by the wrong client has leaked: its family is
		// revoked.
		p.revokeFamily(ctx, g)
		return nil, &Error{Code: ErrInvalidGrant, Description: "the refresh token was issued to another client", Cause: fmt.Errorf("client %q presented a refresh token of client %q", c.ID, g.ClientID)}
	}
	switch revoked, err := p.familyRevoked(ctx, g.Family); {
	case err != nil:
		// Fail closed: a revocation that cannot be read may be there.
		return nil, unavailable("the refresh token could not be checked", err)
	case revoked:
		return nil, oauthErr(ErrInvalidGrant, "the refresh token is invalid, expired or revoked")
	}
	scopes, oe := narrowScopes(g.Scopes, t.get("scope"))
	if oe != nil {
		return nil, oe // a bad scope does not burn the token
	}

	var next string
	if c.RefreshTokenUsage == RefreshReuse {
		next = token
		if c.RefreshTokenExpiration == RefreshSliding {
			if _, err := p.storeRefreshToken(ctx, c, g, token); err != nil {
				return nil, refreshStoreErr(err)
			}
		}
	} else {
		e, tok, err := p.refreshEntry(c, g, "")
		if err != nil {
			return nil, refreshStoreErr(err)
		}
		next = tok
		// The successor, and the rotated-out token remembered for as long
		// as the family lives, so that a replay of it is recognised: its
		// record is the grant as it was stored.
		entries := []Entry{e, {Key: usedRefreshKey(token), Value: data, TTL: time.Unix(g.End, 0).Sub(p.now())}}
		if c.RefreshTokenReuseGrace > 0 {
			// The only place a usable token is kept in the store, and only
			// for the grace period.
			gr, _ := json.Marshal(graceRecord{Successor: next})
			entries = append(entries, Entry{Key: graceRefreshKey(token), Value: gr, TTL: c.RefreshTokenReuseGrace})
		}
		// One write (RFC 9700 §4.14.2 rotation): of concurrent uses of the
		// token one swaps it, and the others find the record of its use,
		// written with the swap, and so are a reuse.
		swapped, err := swap(ctx, p.store, refreshKey(token), data, entries...)
		if err != nil {
			return nil, unavailable("the refresh token could not be rotated", err)
		}
		if !swapped {
			return p.refreshReplay(r, c, t, token)
		}
	}
	return p.refreshResponse(r, c, g, scopes, next)
}

// refreshReplay handles a refresh token that is not (or no longer) valid:
// within the grace period after its rotation it gets the same successor;
// otherwise a rotated-out token revokes its family.
func (p *Provider) refreshReplay(r *http.Request, c *client, t *tokenRequest, token string) (*tokenResponse, *Error) {
	ctx := r.Context()
	invalid := oauthErr(ErrInvalidGrant, "the refresh token is invalid, expired or revoked")
	if c.RefreshTokenReuseGrace > 0 {
		if data, err := p.store.Get(ctx, graceRefreshKey(token)); err == nil {
			var gr graceRecord
			if json.Unmarshal(data, &gr) == nil {
				if data, err := p.store.Get(ctx, refreshKey(gr.Successor)); err == nil {
					var g refreshGrant
					if json.Unmarshal(data, &g) == nil && g.ClientID == c.ID && p.familyLive(ctx, g.Family) {
						scopes, oe := narrowScopes(g.Scopes, t.get("scope"))
						if oe != nil {
							return nil, oe
						}
						return p.refreshResponse(r, c, g, scopes, gr.Successor)
					}
				}
			}
		}
	}
	data, err := p.store.Get(ctx, usedRefreshKey(token))
	if err != nil {
		return nil, invalid
	}
	var g refreshGrant
	if json.Unmarshal(data, &g) != nil {
		return nil, invalid
	}
	p.revokeFamily(ctx, g)
	p.log.WarnContext(ctx, "refresh token reused: its family is revoked", "client_id", g.ClientID, "sub", g.Subject)
	return nil, invalid
}

// refreshResponse issues new access and ID tokens for a refresh, with the
// login's auth_time and sid.
func (p *Provider) refreshResponse(r *http.Request, c *client, g refreshGrant, scopes []string, next string) (*tokenResponse, *Error) {
	user := p.subjects[g.Subject]
	if user == nil {
		return nil, oauthErr(ErrInvalidGrant, "the user no longer exists")
	}
	resp, _, err := p.issueTokens(c, user, scopes, "", g.AuthTime, g.SID, g.Family)
	if err != nil {
		return nil, &Error{Code: ErrServerError, Description: "tokens could not be issued", Cause: err}
	}
	resp.RefreshToken = next
	p.log.InfoContext(r.Context(), "token issued", "client_id", c.ID, "sub", user.Subject, "grant_type", "refresh_token", "scope", resp.Scope)
	return resp, nil
}

// narrowScopes applies a refresh's scope parameter: it may narrow the
// granted scopes, never widen them (RFC 6749 §6).
func narrowScopes(granted []string, raw string) ([]string, *Error) {
	if raw == "" {
		return granted, nil
	}
	scopes := splitScope(raw)
	for _, s := range scopes {
		if !slices.Contains(granted, s) {
			return nil, oauthErr(ErrInvalidScope, fmt.Sprintf("scope %q was not granted", s))
		}
	}
	return scopes, nil
}

// familyRevoked says whether family was revoked, or the store's failure.
func (p *Provider) familyRevoked(ctx context.Context, family string) (bool, error) {
	_, err := p.store.Get(ctx, revokedFamilyKey(family))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// familyLive says whether family is known not to be revoked: a store that
// fails answers no.
func (p *Provider) familyLive(ctx context.Context, family string) bool {
	revoked, err := p.familyRevoked(ctx, family)
	return !revoked && err == nil
}

// refreshStoreErr is the error of a refresh whose next token could not be
// stored: an expired family, or a store that failed.
func refreshStoreErr(err error) *Error {
	if errors.Is(err, errFamilyExpired) {
		return &Error{Code: ErrInvalidGrant, Description: "the refresh token expired", Cause: err}
	}
	return unavailable("the refresh token could not be stored", err)
}

func (p *Provider) revokeFamily(ctx context.Context, g refreshGrant) {
	ttl := time.Unix(g.End, 0).Sub(p.now())
	if ttl <= 0 {
		return
	}
	if err := p.store.Put(ctx, revokedFamilyKey(g.Family), []byte{1}, ttl); err != nil {
		p.log.ErrorContext(ctx, "revoking refresh token family", "client_id", g.ClientID, "error", err)
	}
}
