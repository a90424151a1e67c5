package idp

import (
	"errors"
	"net/http"
	"time"

	"github.com/gorilla/securecookie"
)

// Cookie names. The session cookie is the provider's own login (single
// sign-on); the CSRF cookies, this name followed by "_" and an id, hold
// the double-submit values of the forms' tokens, for browsers that do not
// say where a form comes from (csrf.go).
const (
	SessionCookie = "authgate_provider_session"
	csrfCookie    = "authgate_provider_csrf"
	authReqName   = "authgate_authreq" // securecookie name of an encoded authRequest
)

// authRequestTTL bounds how long a login page may stay open.
const authRequestTTL = 30 * time.Minute

// session is a provider login, kept in an encrypted cookie.
type session struct {
	SID      string `json:"sid"`
	Subject  string `json:"sub"`
	AuthTime int64  `json:"at"`
	// AMR and ACR say how the user signed in (signin.go); a cookie
	// written before they existed has neither, and its tokens no amr.
	AMR []string `json:"amr,omitempty"`
	ACR string   `json:"acr,omitempty"`
}

// readSession returns the request's valid, unexpired, not logged-out
// session, or nil.
func (p *Provider) readSession(r *http.Request) *session {
	ck, err := r.Cookie(SessionCookie)
	if err != nil {
		return nil
	}
	var s session
	if err := securecookie.DecodeMulti(SessionCookie, ck.Value, &s, p.cookieSet...); err != nil {
		return nil
	}
	if s.SID == "" || p.activeUser(s.Subject) == nil {
		return nil // the user is gone from the configuration, or disabled
	}
	if p.now().Sub(time.Unix(s.AuthTime, 0)) > p.sessionTTL {
		return nil
	}
	if _, err := p.store.Get(r.Context(), endedKey(s.SID)); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		p.log.ErrorContext(r.Context(), "checking session", "error", err)
		return nil
	}
	return &s
}

func (p *Provider) writeSession(w http.ResponseWriter, s *session) error {
	v, err := p.cookies.Encode(SessionCookie, s)
	if err != nil {
		return err
	}
	http.SetCookie(w, p.cookie(SessionCookie, v, int(p.sessionTTL/time.Second)))
	p.newBrowserState(w)
	return nil
}

func (p *Provider) clearSession(w http.ResponseWriter) {
	http.SetCookie(w, p.cookie(SessionCookie, "", -1))
	p.clearBrowserState(w)
}

func (p *Provider) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     p.base + "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   p.secure,
		SameSite: http.SameSiteLaxMode,
	}
}

func endedKey(sid string) string { return "ended/" + sid }

// encodeAuthRequest seals a validated request for the trip through the
// login page, so it comes back exactly as it was checked.
func (p *Provider) encodeAuthRequest(req *authRequest) (string, error) {
	sealed := *req
	sealed.Issued = p.now().Unix()
	return p.cookies.Encode(authReqName, &sealed)
}

func (p *Provider) decodeAuthRequest(s string) (*authRequest, error) {
	req, err := p.decodeLoginRequest(s)
	if err == nil && (req.Device || req.Account != "") {
		return nil, errors.New("idp: a device or account page login is no authorization request")
	}
	return req, err
}

// decodeLoginRequest is decodeAuthRequest for the login page, which also
// takes a login for the device page.
func (p *Provider) decodeLoginRequest(s string) (*authRequest, error) {
	var req authRequest
	if err := securecookie.DecodeMulti(authReqName, s, &req, p.cookieSet...); err != nil {
		return nil, err
	}
	if !p.fresh(req.Issued, authRequestTTL) {
		return nil, errors.New("idp: login request expired")
	}
	if _, ok := p.clients[req.ClientID]; !ok && !((req.Device || req.Account != "") && req.ClientID == "") {
		return nil, errors.New("idp: login request for an unknown client")
	}
	return &req, nil
}

// fresh reports whether something sealed at issued (unix seconds) is still
// good for ttl: not older, and not from more than a minute ahead, which
// only clock skew between nodes explains.
func (p *Provider) fresh(issued int64, ttl time.Duration) bool {
	age := p.now().Sub(time.Unix(issued, 0))
	return age <= ttl && age >= -time.Minute
}
