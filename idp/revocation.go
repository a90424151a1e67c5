package idp

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

// serveRevocation is token revocation (RFC 7009): a client revokes one of
// its refresh tokens (and with it every token of that login's family) or
// access tokens (by jti, until they expire). Unknown or foreign tokens get
// 200 too, as §2.2 requires, so the answer tells nothing.
func (p *Provider) serveRevocation(w http.ResponseWriter, r *http.Request) {
	t, oe := p.readBackChannel(w, r)
	if oe != nil {
		return
	}
	c, oe := p.authenticateClient(t)
	if oe != nil {
		p.tokenError(w, r, oe)
		return
	}
	token := t.get("token")
	if token == "" {
		p.tokenError(w, r, oauthErr(ErrInvalidRequest, "token is required"))
		return
	}
	ctx := r.Context()
	// token_type_hint only orders the look-ups (§2.1); both kinds are tried.
	data, err := p.store.Get(ctx, refreshKey(token))
	if err != nil && !errors.Is(err, ErrNotFound) {
		// 200 would say the token is revoked (§2.2); 503 has the client
		// retry (§2.2.1).
		p.tokenError(w, r, unavailable("the token could not be revoked", err))
		return
	}
	if err == nil {
		var g refreshGrant
		if json.Unmarshal(data, &g) == nil && g.ClientID == c.ID {
			if err := p.revokeFamily(ctx, g); err != nil {
				p.tokenError(w, r, unavailable("the token could not be revoked", err))
				return
			}
			// The family's revocation already refuses the token; deleting
			// it only tidies.
			p.store.Delete(ctx, refreshKey(token))
			p.log.InfoContext(ctx, "token revoked", "client_id", c.ID, "sub", g.Subject, "token_type", "refresh_token")
			p.emitRequest(r, Event{Type: EventTokenRevoked, Subject: g.Subject, ClientID: c.ID, SID: g.SID, Reason: "refresh_token"})
		}
	} else if claims, err := p.verifyAccessToken(token); err == nil && claims.ClientID == c.ID {
		ttl := time.Unix(claims.Expiry, 0).Sub(p.now())
		if err := p.store.Put(ctx, revokedKey(claims.ID), []byte{1}, ttl); err != nil {
			p.tokenError(w, r, unavailable("the token could not be revoked", err))
			return
		}
		p.log.InfoContext(ctx, "token revoked", "client_id", c.ID, "sub", claims.Subject, "token_type", "access_token")
		p.emitRequest(r, Event{Type: EventTokenRevoked, Subject: claims.Subject, ClientID: c.ID, SID: claims.SID, Reason: "access_token"})
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}
