package idp

import (
	"net/http"
	"net/url"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// serveEndSession is RP-initiated logout (OpenID Connect RP-Initiated
// Logout 1.0 §2): it ends the provider session, then returns the browser to
// the client's post_logout_redirect_uri when that is registered for the
// client exactly, or shows a signed-out page.
func (p *Provider) serveEndSession(w http.ResponseWriter, r *http.Request) {
	q := p.readFrontChannel(w, r)
	if q == nil {
		return
	}
	clientID := q.Get("client_id")
	if hint := q.Get("id_token_hint"); hint != "" {
		aud, _, ok := p.idTokenHint(hint)
		if !ok {
			p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "The id_token_hint was not issued by this provider."})
			return
		}
		if clientID != "" && clientID != aud {
			p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "The client_id does not match the id_token_hint."})
			return
		}
		clientID = aud
	}

	if s := p.readSession(r); s != nil {
		if err := p.store.Put(r.Context(), endedKey(s.SID), []byte{1}, p.sessionTTL); err != nil {
			p.log.ErrorContext(r.Context(), "ending session", "error", err)
		}
		p.log.InfoContext(r.Context(), "logout", "sub", s.Subject, "client_id", clientID)
	}
	p.clearSession(w)

	target := q.Get("post_logout_redirect_uri")
	if c := p.clients[clientID]; target != "" && c != nil && c.postLogout[target] {
		v := url.Values{}
		if st := q.Get("state"); st != "" {
			v.Set("state", st)
		}
		redirectTo(w, target, v)
		return
	}
	p.renderMessage(w, r, http.StatusOK, "Signed out", "You are signed out.", false)
}

// idTokenHint returns the client and subject of an ID token of ours. The
// hint may have expired (OpenID Connect Core §3.1.2.1, RP-Initiated Logout
// §2): only the signature, issuer and kind are checked.
func (p *Provider) idTokenHint(raw string) (aud, sub string, ok bool) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil || len(tok.Headers) != 1 {
		return "", "", false
	}
	keys := p.verifyKey.Key(tok.Headers[0].KeyID)
	if len(keys) == 0 || keys[0].Algorithm != tok.Headers[0].Algorithm {
		return "", "", false
	}
	var c jwt.Claims
	if err := tok.Claims(keys[0].Key, &c); err != nil || c.Issuer != p.issuer || len(c.Audience) != 1 || c.Subject == "" {
		return "", "", false
	}
	if typ, _ := tok.Headers[0].ExtraHeaders[jose.HeaderType].(string); typ == accessTokenType {
		return "", "", false
	}
	if p.clients[c.Audience[0]] == nil {
		return "", "", false
	}
	return c.Audience[0], c.Subject, true
}
