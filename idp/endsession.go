package idp

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/gorilla/securecookie"
)

// logoutReqName is the securecookie name of a sealed logoutRequest.
const logoutReqName = "authgate_logoutreq"

// logoutRequest is an end-session request waiting for the user's answer,
// sealed into the question's form so that its post_logout_redirect_uri and
// state are honoured once the user has answered.
type logoutRequest struct {
	ClientID    string `json:"client_id,omitempty"`
	RedirectURI string `json:"post_logout_redirect_uri,omitempty"` // registered for ClientID
	State       string `json:"state,omitempty"`
	Issued      int64  `json:"iat"`
}

// serveEndSession is RP-initiated logout (OpenID Connect RP-Initiated
// Logout 1.0 §2). It ends the provider session at once only for an
// id_token_hint of that very session, and otherwise asks the user first,
// so that a third-party page cannot sign anyone out. Then it returns the
// browser to the client's post_logout_redirect_uri when that is registered
// for the client exactly (§3), or shows a signed-out page.
func (p *Provider) serveEndSession(w http.ResponseWriter, r *http.Request) {
	q := p.readFrontChannel(w, r)
	if q == nil {
		return
	}
	lr := logoutRequest{ClientID: q.Get("client_id"), State: q.Get("state")}
	var hint *hintClaims
	if raw := q.Get("id_token_hint"); raw != "" {
		var ok bool
		if hint, ok = p.idTokenHint(raw); !ok {
			p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "The id_token_hint was not issued by this provider."})
			return
		}
		if lr.ClientID != "" && lr.ClientID != hint.aud {
			p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "The client_id does not match the id_token_hint."})
			return
		}
		lr.ClientID = hint.aud
	}
	if target := q.Get("post_logout_redirect_uri"); target != "" {
		if c := p.clients[lr.ClientID]; c != nil && c.postLogout[target] {
			lr.RedirectURI = target
		}
	}

	s := p.readSession(r)
	switch {
	case s == nil && r.Method == http.MethodPost && r.Header.Get("Sec-Fetch-Site") == "cross-site":
		// A cross-site POST comes without the session cookie
		// (SameSite=Lax): whether there is a session, and whose, cannot
		// be told. The answer is posted from our own page, with it.
		p.renderLogout(w, r, http.StatusOK, nil, &lr, "")
	case s == nil:
		// Nothing to end. A cookie the request may carry is left alone:
		// it is of no use, and clearing what a cross-site POST withheld
		// would sign the user out for the third party.
		p.finishLogout(w, r, &lr, nil)
	case hint != nil && hint.sub == s.Subject && hint.sid == s.SID:
		frames := p.endSession(w, r, s, lr.ClientID)
		p.finishLogout(w, r, &lr, frames)
	default:
		// §2: the OP MUST ask the End-User when no id_token_hint was
		// given, or the ID token does not belong to the current session:
		// another sub or sid, or no sid (a password grant's, which no
		// session issued).
		p.renderLogout(w, r, http.StatusOK, s, &lr, "")
	}
}

// confirmLogout takes the answer to the sign-out question, and the
// provider's own sign-out form (POST /account/logout): only a form of ours
// (checkCSRF) signs out, and "cancel" does not.
func (p *Provider) confirmLogout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "The form could not be read."})
		return
	}
	f := r.PostForm
	var lr logoutRequest
	if raw := f.Get("request"); raw != "" {
		if err := p.decodeLogoutRequest(raw, &lr); err != nil {
			p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "This sign-out link is invalid or has expired. Go back to the application and sign out again."})
			return
		}
	}
	s := p.readSession(r)
	if err := p.checkCSRF(r, f.Get("csrf_token")); err != nil {
		p.log.InfoContext(r.Context(), "sign-out form refused", "reason", err)
		p.renderLogout(w, r, http.StatusBadRequest, s, &lr, "This page has expired. Do you still want to sign out?")
		return
	}
	if f.Get("decision") == "cancel" {
		switch {
		case lr.RedirectURI != "":
			// Back to the application that asked, whose own sign-out is
			// done: only the provider's session stays.
			p.redirectAfterLogout(w, r, &lr)
		case s != nil:
			p.renderMessage(w, r, http.StatusOK, "Signed in", "You are still signed in as "+p.username(s.Subject)+".", true)
		default:
			p.renderMessage(w, r, http.StatusOK, "Signed out", "You are signed out.", false)
		}
		return
	}
	var frames []frontchannelFrame
	if s != nil {
		frames = p.endSession(w, r, s, lr.ClientID)
	}
	p.finishLogout(w, r, &lr, frames)
}

// endSession ends s, on every copy of its cookie: the sid is marked ended
// for as long as the cookie could live, and its clients are told by the
// back channel ([Provider.EndSession]). It returns the front-channel
// logout iframes of its clients.
func (p *Provider) endSession(w http.ResponseWriter, r *http.Request, s *session, clientID string) []frontchannelFrame {
	frames := p.frontchannelFrames(r.Context(), s.SID)
	if err := p.EndSession(r.Context(), s.SID); err != nil {
		p.log.ErrorContext(r.Context(), "ending session", "error", err)
	}
	p.log.InfoContext(r.Context(), "logout", "sub", s.Subject, "client_id", clientID)
	via := ReasonAccount
	if clientID != "" {
		via = ReasonRPInitiated
	}
	p.emitRequest(r, Event{Type: EventLogout, Reason: via, Subject: s.Subject, ClientID: clientID, SID: s.SID})
	p.clearSession(w)
	return frames
}

// finishLogout sends the browser where lr asks, or shows the signed-out
// page; with front-channel logout frames, the page loads them first.
func (p *Provider) finishLogout(w http.ResponseWriter, r *http.Request, lr *logoutRequest, frames []frontchannelFrame) {
	if len(frames) > 0 {
		p.renderFrontchannel(w, r, frames, afterLogoutURL(lr))
		return
	}
	if lr.RedirectURI != "" {
		p.redirectAfterLogout(w, r, lr)
		return
	}
	p.renderMessage(w, r, http.StatusOK, "Signed out", "You are signed out.", false)
}

func (p *Provider) redirectAfterLogout(w http.ResponseWriter, r *http.Request, lr *logoutRequest) {
	v := url.Values{}
	if lr.State != "" {
		v.Set("state", lr.State)
	}
	redirectTo(w, r, lr.RedirectURI, v)
}

func (p *Provider) decodeLogoutRequest(raw string, lr *logoutRequest) error {
	if err := securecookie.DecodeMulti(logoutReqName, raw, lr, p.cookieSet...); err != nil {
		return err
	}
	if !p.fresh(lr.Issued, authRequestTTL) {
		return errors.New("idp: sign-out request expired")
	}
	return nil
}

// hintClaims is what an id_token_hint says.
type hintClaims struct {
	aud, sub, sid string
}

// idTokenHint returns the claims of an ID token of ours. The hint may
// have expired (OpenID Connect Core §3.1.2.1, RP-Initiated Logout §2):
// only the signature, issuer and kind are checked.
func (p *Provider) idTokenHint(raw string) (*hintClaims, bool) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil || len(tok.Headers) != 1 {
		return nil, false
	}
	keys := p.keys.Load().verifyKey.Key(tok.Headers[0].KeyID)
	if len(keys) == 0 || keys[0].Algorithm != tok.Headers[0].Algorithm {
		return nil, false
	}
	var c struct {
		jwt.Claims
		SID string `json:"sid"`
	}
	if err := tok.Claims(keys[0].Key, &c); err != nil || c.Issuer != p.issuer || len(c.Audience) != 1 || c.Subject == "" {
		return nil, false
	}
	if typ, _ := tok.Headers[0].ExtraHeaders[jose.HeaderType].(string); typ == accessTokenType {
		return nil, false
	}
	if p.clients[c.Audience[0]] == nil {
		return nil, false
	}
	return &hintClaims{aud: c.Audience[0], sub: c.Subject, sid: c.SID}, true
}
