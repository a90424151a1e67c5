package idp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/securecookie"
)

// The second step of the login page. The right password of a user with
// TOTP makes no session: it stores a pending login (mfa/<id>, for
// mfaPendingTTL) and gives the browser a cookie sealing its id, then
// sends it to PathLoginTOTP, which asks for the code. Only the browser
// holding the cookie can finish the login, and only once: the right code
// takes the pending login from the store. Every code sent counts against
// the login throttle as a password does.

// pendingLogin is a login whose password was right, waiting for its code.
type pendingLogin struct {
	Subject  string `json:"sub"`
	Username string `json:"username"`
	Request  string `json:"request,omitempty"` // sealed authRequest
	ClientID string `json:"client_id,omitempty"`
}

// mfaTicket is what the mfa cookie seals.
type mfaTicket struct {
	ID     string `json:"id"`
	Issued int64  `json:"iat"`
}

func pendingKey(id string) string { return "mfa/" + id }

// errStoreUnavailable marks an error of the store itself (not a key not
// found): the answer is 503, to be retried, not a refusal.
var errStoreUnavailable = errors.New("idp: the store is unavailable")

// loginTOTPPage is what the login_totp template shows.
type loginTOTPPage struct {
	Action   string
	CSRF     string
	Username string
	ClientID string
	Error    string
}

// askSecondFactor is called with a user whose password was right, and
// the throttle's count of that attempt: for a user with TOTP it takes
// that count back (and nothing more: see postLogin), starts the code
// step and reports true, having answered; for others it reports false,
// the attempt untouched, and the login goes on.
func (p *Provider) askSecondFactor(w http.ResponseWriter, r *http.Request, u *User, page loginPage, attempt *loginAttempt) bool {
	st, err := p.totpFor(r.Context(), u)
	if err != nil {
		p.log.ErrorContext(r.Context(), "looking up the second factor", "sub", u.Subject, "error", err)
		w.Header().Set("Retry-After", unavailableRetryAfter)
		p.renderError(w, r, &pageError{status: http.StatusServiceUnavailable, msg: "The login could not be checked. Try again shortly."})
		return true
	}
	if !st.enabled() {
		return false
	}
	p.takeBack(r.Context(), attempt)
	id := p.randomString(24)
	data, _ := json.Marshal(pendingLogin{Subject: u.Subject, Username: u.Username, Request: page.Request, ClientID: page.ClientID})
	if err := p.store.Put(r.Context(), pendingKey(id), data, mfaPendingTTL); err != nil {
		p.log.ErrorContext(r.Context(), "storing the pending login", "error", err)
		w.Header().Set("Retry-After", unavailableRetryAfter)
		p.renderError(w, r, &pageError{status: http.StatusServiceUnavailable, msg: "The login could not be continued. Try again shortly."})
		return true
	}
	v, err := p.cookies.Encode(mfaCookie, mfaTicket{ID: id, Issued: p.now().Unix()})
	if err != nil {
		p.log.ErrorContext(r.Context(), "sealing the pending login", "error", err)
		p.renderError(w, r, &pageError{status: http.StatusInternalServerError, msg: "The login could not be continued."})
		return true
	}
	http.SetCookie(w, p.cookie(mfaCookie, v, int(mfaPendingTTL/time.Second)))
	p.log.InfoContext(r.Context(), "password accepted; asking for the second factor", "username", u.Username, "sub", u.Subject, "client_id", page.ClientID)
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, p.base+PathLoginTOTP, http.StatusSeeOther)
	return true
}

// pendingFor returns the id and the pending login of the browser's mfa
// cookie, or an error when it has none, or it expired or was used; an
// error that is errStoreUnavailable when the store did not answer.
func (p *Provider) pendingFor(r *http.Request) (string, *pendingLogin, error) {
	ck, err := r.Cookie(mfaCookie)
	if err != nil {
		return "", nil, errors.New("idp: no pending login")
	}
	var t mfaTicket
	if err := securecookie.DecodeMulti(mfaCookie, ck.Value, &t, p.cookieSet...); err != nil {
		return "", nil, fmt.Errorf("idp: pending login cookie: %w", err)
	}
	if t.ID == "" || !p.fresh(t.Issued, mfaPendingTTL) {
		return "", nil, errors.New("idp: pending login expired")
	}
	data, err := p.store.Get(r.Context(), pendingKey(t.ID))
	if errors.Is(err, ErrNotFound) {
		return "", nil, errors.New("idp: pending login expired or used")
	}
	if err != nil {
		return "", nil, fmt.Errorf("%w: %w", errStoreUnavailable, err)
	}
	var pl pendingLogin
	if err := json.Unmarshal(data, &pl); err != nil {
		return "", nil, err
	}
	return t.ID, &pl, nil
}

func (p *Provider) serveLoginTOTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		p.renderError(w, r, &pageError{status: http.StatusMethodNotAllowed, msg: "Use GET or POST."})
		return
	}
	id, pl, err := p.pendingFor(r)
	if errors.Is(err, errStoreUnavailable) {
		// The login may well still be pending: the cookie stays, for a
		// retry.
		p.log.ErrorContext(r.Context(), "reading the pending login", "error", err)
		w.Header().Set("Retry-After", unavailableRetryAfter)
		p.renderError(w, r, &pageError{status: http.StatusServiceUnavailable, msg: "The login could not be continued. Try again shortly."})
		return
	}
	var u *User
	if err == nil {
		if u = p.activeUser(pl.Subject); u == nil {
			err = errors.New("idp: the user is gone or disabled")
		}
	}
	if err != nil {
		p.log.InfoContext(r.Context(), "code step refused", "reason", err)
		http.SetCookie(w, p.cookie(mfaCookie, "", -1))
		p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "This sign-in has expired or was already completed. Go back and sign in again."})
		return
	}
	page := loginTOTPPage{Username: u.Username, ClientID: pl.ClientID}
	if r.Method != http.MethodPost {
		p.renderLoginTOTP(w, r, http.StatusOK, page)
		return
	}

	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "The form could not be read."})
		return
	}
	if err := p.checkCSRF(r, r.PostForm.Get("csrf_token")); err != nil {
		p.log.InfoContext(r.Context(), "code form refused", "reason", err)
		page.Error = "Your session expired. Please try again."
		p.renderLoginTOTP(w, r, http.StatusBadRequest, page)
		return
	}
	ip := p.clientIP(r)
	attempt := p.reservePageLogin(w, r, u.Username, func(msg string) {
		p.log.WarnContext(r.Context(), "second factor throttled", "username", u.Username, "client_ip", ip, "client_id", pl.ClientID)
		p.emitRequest(r, Event{Type: EventSecondFactor, Outcome: OutcomeThrottled, Username: u.Username, Subject: u.Subject, ClientID: pl.ClientID})
		page.Error = msg
		p.renderLoginTOTP(w, r, http.StatusTooManyRequests, page)
	})
	if attempt == nil {
		return
	}
	st, err := p.totpFor(r.Context(), u)
	var outcome, method string
	if err == nil {
		if !st.enabled() {
			// Removed meanwhile (by the operator or in another tab):
			// start over, and the password alone will do.
			http.SetCookie(w, p.cookie(mfaCookie, "", -1))
			p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "This sign-in has expired. Go back and sign in again."})
			return
		}
		outcome, method, err = p.verifySecondFactor(r.Context(), u, st, r.PostForm.Get("code"))
	}
	if err != nil {
		p.log.ErrorContext(r.Context(), "checking the second factor", "error", err)
		w.Header().Set("Retry-After", unavailableRetryAfter)
		p.renderError(w, r, &pageError{status: http.StatusServiceUnavailable, msg: "The code could not be checked. Try again shortly."})
		return
	}
	if outcome != OutcomeSuccess {
		p.log.InfoContext(r.Context(), "second factor failed", "username", u.Username, "method", method, "outcome", outcome, "client_ip", ip, "client_id", pl.ClientID)
		p.emitRequest(r, Event{Type: EventSecondFactor, Outcome: outcome, Reason: method, Username: u.Username, Subject: u.Subject, ClientID: pl.ClientID})
		page.Error = "Invalid code."
		if outcome == OutcomeReplayed {
			page.Error = "This code was already used. Wait for the next one."
		}
		p.renderLoginTOTP(w, r, http.StatusOK, page)
		return
	}
	// One login per password check: of two right codes sent at once (two
	// tabs), the one that takes the pending login finishes it.
	if _, err := p.store.Take(r.Context(), pendingKey(id)); err != nil {
		http.SetCookie(w, p.cookie(mfaCookie, "", -1))
		p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "This sign-in has expired or was already completed. Go back and sign in again."})
		return
	}
	p.succeeded(r.Context(), attempt)
	http.SetCookie(w, p.cookie(mfaCookie, "", -1))
	p.emitRequest(r, Event{Type: EventSecondFactor, Outcome: OutcomeSuccess, Reason: method, Username: u.Username, Subject: u.Subject, ClientID: pl.ClientID})
	var req *authRequest
	if pl.Request != "" {
		if req, err = p.decodeLoginRequest(pl.Request); err != nil {
			p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "This login link is invalid or has expired. Go back to the application and sign in again."})
			return
		}
	}
	p.completeLogin(w, r, u, req, pl.ClientID, []string{AMRPassword, AMROTP, AMRMFA}, func(msg string) {
		p.renderError(w, r, &pageError{status: http.StatusForbidden, msg: msg})
	})
}

func (p *Provider) renderLoginTOTP(w http.ResponseWriter, r *http.Request, status int, page loginTOTPPage) {
	page.Action = p.base + PathLoginTOTP
	page.CSRF = p.csrfToken(w, r)
	p.render(w, r, status, "login_totp.html", page)
}
