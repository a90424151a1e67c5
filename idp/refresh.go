package idp

import (
	"bytes"
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
	AMR      []string `json:"amr,omitempty"`
	ACR      string   `json:"acr,omitempty"`
	Family   string   `json:"family"`
	End      int64    `json:"end"` // absolute end of the family
	// Used is when the user index last recorded a use of the family
	// (unix seconds): it is updated when this is LastUsedGranularity old.
	Used    int64 `json:"used,omitempty"`
	Expires int64 `json:"exp"` // end of this token: End, or sooner when sliding
	// JKT is the DPoP key a public client's tokens are bound to.
	JKT string `json:"jkt,omitempty"`
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
func (p *Provider) startFamily(ctx context.Context, c *client, family, subject string, scopes []string, in signIn) (string, error) {
	g := p.familyGrant(c, family, subject, scopes, in)
	token, err := p.storeRefreshToken(ctx, c, g, "")
	if err == nil {
		p.indexFamily(ctx, g, g.Used)
	}
	return token, err
}

// familyGrant is the grant of the first refresh token of a family.
func (p *Provider) familyGrant(c *client, family, subject string, scopes []string, in signIn) refreshGrant {
	now := p.now()
	return refreshGrant{
		ClientID: c.ID, Subject: subject, Scopes: scopes, AuthTime: in.Time, SID: in.SID, AMR: in.AMR, ACR: in.ACR,
		Family: family, End: now.Add(c.familyLifetime()).Unix(), Used: now.Unix(), JKT: c.refreshJKT(),
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
	if c.unlimited() {
		// No absolute end: the family ends with its last token.
		g.End = max(g.End, now.Add(c.SlidingRefreshTokenLifetime).Unix())
	}
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
	refused := func(g refreshGrant, outcome string) {
		p.emitRequest(r, Event{Type: EventRefresh, Outcome: outcome, Subject: g.Subject, ClientID: c.ID, SID: g.SID})
	}
	var g refreshGrant
	if err := json.Unmarshal(data, &g); err != nil {
		return nil, &Error{Code: ErrServerError, Description: "the refresh token could not be read", Cause: err}
	}
	if g.ClientID != c.ID {
		// A token presented by the wrong client has leaked: its family is
		// revoked.
		if err := p.revokeFamily(ctx, g); err != nil {
			p.log.ErrorContext(ctx, "revoking the family of a refresh token presented by another client", "client_id", g.ClientID, "error", err)
		}
		refused(g, OutcomeWrongClient)
		return nil, &Error{Code: ErrInvalidGrant, Description: "the refresh token was issued to another client", Cause: fmt.Errorf("client %q presented a refresh token of client %q", c.ID, g.ClientID)}
	}
	if oe := refreshBinding(g, c); oe != nil {
		return nil, oe // only its key's holder may use it; it stays good for them
	}
	switch revoked, err := p.familyRevoked(ctx, g.Family); {
	case err != nil:
		// Fail closed: a revocation that cannot be read may be there.
		return nil, unavailable("the refresh token could not be checked", err)
	case revoked:
		refused(g, OutcomeRevoked)
		return nil, oauthErr(ErrInvalidGrant, "the refresh token is invalid, expired or revoked")
	}
	scopes, oe := narrowScopes(g.Scopes, t.get("scope"))
	if oe != nil {
		return nil, oe // a bad scope does not burn the token
	}

	// The family's last use goes to the user index when the recorded one
	// is LastUsedGranularity old: the token's successor (or the token
	// itself, stored again) carries when, so most refreshes skip it.
	now := p.now().Unix()
	touch := now-g.Used >= int64(LastUsedGranularity/time.Second)
	if touch {
		g.Used = now
	}
	var next string
	outcome := OutcomeRotated
	if c.RefreshTokenUsage == RefreshReuse {
		next, outcome = token, OutcomeKept
		if c.RefreshTokenExpiration == RefreshSliding || touch {
			if _, err := p.storeRefreshToken(ctx, c, g, token); err != nil {
				if errors.Is(err, errFamilyExpired) {
					refused(g, OutcomeExpired)
				}
				return nil, refreshStoreErr(err)
			}
		}
	} else {
		e, tok, err := p.refreshEntry(c, g, "")
		if err != nil {
			if errors.Is(err, errFamilyExpired) {
				refused(g, OutcomeExpired)
			}
			return nil, refreshStoreErr(err)
		}
		next = tok
		// The successor, and the rotated-out token remembered for as long
		// as the family lives, so that a replay of it is recognised: its
		// record is the grant as it was stored.
		rot := &rotation{
			token: token, data: data, g: g, next: e,
			used: Entry{Key: usedRefreshKey(token), Value: data, TTL: time.Unix(g.End, 0).Sub(p.now())},
		}
		if c.RefreshTokenReuseGrace > 0 {
			// The only place a usable token is kept in the store, and only
			// for the grace period.
			gr, _ := json.Marshal(graceRecord{Successor: next})
			rot.grace = &Entry{Key: graceRefreshKey(token), Value: gr, TTL: c.RefreshTokenReuseGrace}
		}
		// One write (RFC 9700 §4.14.2 rotation): of concurrent uses of the
		// token one swaps it, and the others find the record of its use,
		// written with the swap, and so are a reuse.
		swapped, err := p.rotate(ctx, rot)
		if err != nil {
			return nil, unavailable("the refresh token could not be rotated", err)
		}
		if !swapped {
			return p.refreshReplay(r, c, t, token)
		}
	}
	if touch {
		p.indexFamily(ctx, g, now)
	}
	return p.refreshResponse(r, c, g, scopes, next, outcome)
}

// rotate replaces rot's token by its successor and the record of its use
// (and its grace record, if any): in one atomic write on a store that can
// swap. On other stores these are several writes, and a concurrent use of
// the token may run between any two of them; they are ordered so that it
// is still told what a swap would tell it:
//
//   - without a grace period, the record of the use is written before the
//     token is taken, so a use that finds the token gone finds the record
//     too and revokes the family. While the token is there the record is
//     harmless: a replay check reads it only for a token that is gone.
//   - with one, the token is taken, then the successor and the grace
//     record are written before the record of the use, so a use that finds
//     the record finds the grace record too and gets the same successor,
//     rather than revoking the family that grace is there to keep. (A use
//     between the take and the grace record gets invalid_grant.) Grace
//     records cannot be written before the take: of two uses that both
//     wrote one, the loser could find its own.
//
// Should the store fail after the take, the client is told to retry (503):
// the token must then be there again, so undoRotation puts it back.
func (p *Provider) rotate(ctx context.Context, rot *rotation) (bool, error) {
	key := refreshKey(rot.token)
	if sw, ok := p.store.(Swapper); ok {
		entries := []Entry{rot.next, rot.used}
		if rot.grace != nil {
			entries = append(entries, *rot.grace)
		}
		return sw.Swap(ctx, key, rot.data, entries)
	}
	after := []Entry{rot.next}
	if rot.grace == nil {
		if err := p.store.Put(ctx, rot.used.Key, rot.used.Value, rot.used.TTL); err != nil {
			return false, err
		}
	} else {
		after = append(after, *rot.grace, rot.used)
	}
	v, err := p.store.Take(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !bytes.Equal(v, rot.data) {
		// Refresh tokens of rotating clients never change value: this is
		// not one that was read. Gone all the same; its user signs in.
		return false, nil
	}
	for _, e := range after {
		rot.written = append(rot.written, e.Key)
	}
	if err := putAll(ctx, p.store, after...); err != nil {
		p.undoRotation(ctx, rot)
		return false, err
	}
	return true, nil
}

// rotation is a one-time refresh token being rotated: what replaces it,
// and what undoRotation needs to put it back.
type rotation struct {
	token   string
	data    []byte // its record, as stored
	g       refreshGrant
	next    Entry    // its successor
	used    Entry    // the record of its use
	grace   *Entry   // its grace record, if the client has a grace period
	written []string // keys this rotation has tried to write after taking it
}

// undoTimeout bounds undoRotation. It has a deadline of its own, not the
// request's: the request's may be what ended the call that failed, or its
// client may have hung up, and the token is the client's all the same.
const undoTimeout = 2 * time.Second

// undoRotation puts back a one-time refresh token taken for a rotation
// that failed (a nil rot is a token that was not taken), with its record
// and end as they were. What the rotation wrote after the take is deleted
// first, while the token is still gone: once it is back, another use may
// rotate it and write records of its own under the same keys, which must
// stay. Those deletions are tidiness (with the token back, a successor no
// one was given and records that a replay check never reads while the
// token is there are harmless), so their failures are only logged. If the
// store fails the put too, the token is lost and its client must sign in
// again: the log says so, as it is the one loss a store outage causes a
// client that retries.
func (p *Provider) undoRotation(ctx context.Context, rot *rotation) {
	if rot == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	tidy, cancel := context.WithTimeout(ctx, undoTimeout)
	for _, key := range rot.written {
		if err := p.store.Delete(tidy, key); err != nil {
			p.log.WarnContext(ctx, "cleaning up after a failed refresh token rotation", "client_id", rot.g.ClientID, "error", err)
			break
		}
	}
	cancel()
	ttl := time.Unix(rot.g.Expires, 0).Sub(p.now())
	if ttl <= 0 {
		return // it has expired meanwhile: nothing to put back
	}
	ctx, cancel = context.WithTimeout(ctx, undoTimeout)
	defer cancel()
	if err := p.store.Put(ctx, refreshKey(rot.token), rot.data, ttl); err != nil {
		p.log.ErrorContext(ctx, "putting back a refresh token after a failed rotation: its client must sign in again", "client_id", rot.g.ClientID, "sub", rot.g.Subject, "error", err)
	}
}

// refreshReplay handles a refresh token that is not (or no longer) valid:
// within the grace period after its rotation it gets the same successor;
// otherwise a rotated-out token revokes its family. A store that fails
// any of these checks gets 503, never invalid_grant: the token may be
// good, and a client drops a token that gets invalid_grant.
func (p *Provider) refreshReplay(r *http.Request, c *client, t *tokenRequest, token string) (*tokenResponse, *Error) {
	ctx := r.Context()
	invalid := oauthErr(ErrInvalidGrant, "the refresh token is invalid, expired or revoked")
	if c.RefreshTokenReuseGrace > 0 {
		resp, oe, done := p.refreshGrace(r, c, t, token)
		if done {
			return resp, oe
		}
	}
	data, err := p.store.Get(ctx, usedRefreshKey(token))
	switch {
	case errors.Is(err, ErrNotFound):
		p.emitRequest(r, Event{Type: EventRefresh, Outcome: OutcomeInvalid, ClientID: c.ID})
		return nil, invalid
	case err != nil:
		return nil, unavailable("the refresh token could not be checked", err)
	}
	var g refreshGrant
	if json.Unmarshal(data, &g) != nil {
		p.emitRequest(r, Event{Type: EventRefresh, Outcome: OutcomeInvalid, ClientID: c.ID})
		return nil, invalid
	}
	if err := p.revokeFamily(ctx, g); err != nil {
		// Told to retry, the client (or the thief) presents the token
		// again, and its family is revoked then.
		return nil, unavailable("the refresh token could not be checked", err)
	}
	if g.SID != "" {
		// A stolen token may mean a stolen session: the login it came
		// from ends too, and its clients are told by the back channel.
		// Should the store fail, the retry ends it.
		if err := p.EndSession(ctx, g.SID); err != nil {
			return nil, unavailable("the refresh token could not be checked", err)
		}
	}
	p.log.WarnContext(ctx, "refresh token reused: its family and its session are revoked", "client_id", g.ClientID, "sub", g.Subject)
	p.emitRequest(r, Event{Type: EventRefresh, Outcome: OutcomeReuseDetected, Subject: g.Subject, ClientID: c.ID, SID: g.SID})
	return nil, invalid
}

// refreshGrace answers a token rotated out less than the client's grace
// period ago with its successor; done is false when it is not such a
// token, or its successor is no longer valid.
func (p *Provider) refreshGrace(r *http.Request, c *client, t *tokenRequest, token string) (resp *tokenResponse, oe *Error, done bool) {
	ctx := r.Context()
	data, err := p.store.Get(ctx, graceRefreshKey(token))
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, nil, false
	case err != nil:
		return nil, unavailable("the refresh token could not be checked", err), true
	}
	var gr graceRecord
	if json.Unmarshal(data, &gr) != nil {
		return nil, nil, false
	}
	data, err = p.store.Get(ctx, refreshKey(gr.Successor))
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, nil, false // rotated in turn, or revoked
	case err != nil:
		return nil, unavailable("the refresh token could not be checked", err), true
	}
	var g refreshGrant
	if json.Unmarshal(data, &g) != nil || g.ClientID != c.ID {
		return nil, nil, false
	}
	if oe := refreshBinding(g, c); oe != nil {
		return nil, oe, true
	}
	switch revoked, err := p.familyRevoked(ctx, g.Family); {
	case err != nil:
		return nil, unavailable("the refresh token could not be checked", err), true
	case revoked:
		return nil, nil, false
	}
	scopes, oe := narrowScopes(g.Scopes, t.get("scope"))
	if oe != nil {
		return nil, oe, true
	}
	resp, oe = p.refreshResponse(r, c, g, scopes, gr.Successor, OutcomeGrace)
	return resp, oe, true
}

// refreshResponse issues new access and ID tokens for a refresh, with the
// login's auth_time and sid.
func (p *Provider) refreshResponse(r *http.Request, c *client, g refreshGrant, scopes []string, next, outcome string) (*tokenResponse, *Error) {
	user := p.activeUser(g.Subject)
	if user == nil {
		p.emitRequest(r, Event{Type: EventRefresh, Outcome: OutcomeDisabled, Subject: g.Subject, ClientID: c.ID, SID: g.SID})
		return nil, oauthErr(ErrInvalidGrant, "the user no longer exists or is disabled")
	}
	resp, _, err := p.issueTokens(c, user, scopes, "", g.signIn(), g.Family)
	if err != nil {
		return nil, &Error{Code: ErrServerError, Description: "tokens could not be issued", Cause: err}
	}
	resp.RefreshToken = next
	p.log.InfoContext(r.Context(), "token issued", "client_id", c.ID, "sub", user.Subject, "grant_type", "refresh_token", "scope", resp.Scope)
	p.emitRequest(r, Event{Type: EventRefresh, Outcome: outcome, Subject: user.Subject, ClientID: c.ID, SID: g.SID})
	p.emitRequest(r, Event{Type: EventTokenIssued, Subject: user.Subject, ClientID: c.ID, GrantType: "refresh_token", SID: g.SID})
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

// revokeFamily revokes every refresh token of g's family until its end.
func (p *Provider) revokeFamily(ctx context.Context, g refreshGrant) error {
	ttl := time.Unix(g.End, 0).Sub(p.now())
	if ttl <= 0 && p.revokeFloor == 0 {
		return nil
	}
	// g.End may be an end recorded before the family was used again, for
	// a client without an absolute limit: such a family's tokens end
	// within a sliding lifetime from now.
	ttl = max(ttl, p.revokeFloor)
	if err := p.store.Put(ctx, revokedFamilyKey(g.Family), []byte{1}, ttl); err != nil {
		return fmt.Errorf("revoking refresh token family: %w", err)
	}
	return nil
}
