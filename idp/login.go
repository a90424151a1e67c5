package idp

import (
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// loginPage is what the login template shows.
type loginPage struct {
	Action    string
	Request   string // sealed authRequest, empty for a direct visit
	CSRF      string
	Username  string
	Error     string
	ClientID  string
	LogoutURL string
	Notice    string // what the sign-in needs, if more than a password (acr.go)
	// Passkey sign-in (passkey.go); empty when passkeys are off.
	PasskeyAction  string
	PasskeyOptions string
	PasskeyScript  template.JS
}

func (p *Provider) redirectToLogin(w http.ResponseWriter, r *http.Request, req *authRequest) {
	sealed, err := p.encodeAuthRequest(req)
	if err != nil {
		p.log.ErrorContext(r.Context(), "sealing login request", "error", err)
		p.renderError(w, r, &pageError{status: http.StatusInternalServerError, msg: "The login could not be started."})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, p.base+PathLogin+"?"+url.Values{"request": {sealed}}.Encode(), redirectStatus(r))
}

func (p *Provider) serveLogin(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		p.showLogin(w, r)
	case http.MethodPost:
		p.postLogin(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		p.renderError(w, r, &pageError{status: http.StatusMethodNotAllowed, msg: "Use GET or POST."})
	}
}

func (p *Provider) showLogin(w http.ResponseWriter, r *http.Request) {
	page := loginPage{Request: r.URL.Query().Get("request")}
	if page.Request != "" {
		req, err := p.decodeLoginRequest(page.Request)
		if err != nil {
			p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "This login link is invalid or has expired. Go back to the application and sign in again."})
			return
		}
		page.Username = req.LoginHint
		page.ClientID = req.ClientID
		page.Notice = p.policyNotice(req)
		if req.Account == PathPasskeys && page.Notice == "" && p.readSession(r) != nil {
			page.Notice = "To see or change your passkeys, confirm it is you: sign in again."
		}
	} else if s := p.readSession(r); s != nil {
		p.renderMessage(w, r, http.StatusOK, "Signed in", fmt.Sprintf("You are signed in as %s.", p.username(s.Subject)), true)
		return
	}
	p.renderLogin(w, r, http.StatusOK, page)
}

func (p *Provider) postLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "The form could not be read."})
		return
	}
	f := r.PostForm
	page := loginPage{Request: f.Get("request"), Username: strings.TrimSpace(f.Get("username"))}
	var req *authRequest
	if page.Request != "" {
		var err error
		if req, err = p.decodeLoginRequest(page.Request); err != nil {
			p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "This login link is invalid or has expired. Go back to the application and sign in again."})
			return
		}
		page.ClientID = req.ClientID
	}
	if err := p.checkCSRF(r, f.Get("csrf_token")); err != nil {
		p.log.InfoContext(r.Context(), "login form refused", "reason", err)
		page.Error = "Your session expired. Please try again."
		p.renderLogin(w, r, http.StatusBadRequest, page)
		return
	}

	ip := p.clientIP(r)
	attempt := p.reservePageLogin(w, r, page.Username, func(msg string) {
		p.log.WarnContext(r.Context(), "login throttled", "username", loggedName(page.Username), "client_ip", ip, "client_id", page.ClientID)
		p.emitRequest(r, Event{Type: EventLogin, Outcome: OutcomeThrottled, Username: loggedName(page.Username), ClientID: page.ClientID})
		page.Error = msg
		p.renderLogin(w, r, http.StatusTooManyRequests, page)
	})
	if attempt == nil {
		return
	}
	user, failure := p.verifyPassword(page.Username, f.Get("password"))
	if user == nil {
		p.log.InfoContext(r.Context(), "login failed", "username", loggedName(page.Username), "client_ip", ip, "client_id", page.ClientID)
		p.emitRequest(r, Event{Type: EventLogin, Outcome: failure, Username: loggedName(page.Username), ClientID: page.ClientID})
		page.Error = "Invalid username or password."
		p.renderLogin(w, r, http.StatusOK, page)
		return
	}
	// For a user with a second factor the right password only takes its
	// own count back (askSecondFactor): it forgets no failure before it,
	// else password, wrong codes, password... would guess codes
	// unthrottled. The right code settles the sign-in (totp_login.go).
	if p.askSecondFactor(w, r, user, page, attempt) {
		return
	}
	p.succeeded(r.Context(), attempt)
	p.completeLogin(w, r, user, req, page.ClientID, []string{AMRPassword}, func(msg string) {
		page.Error = msg // a passkey is required (acr.go)
		p.renderLogin(w, r, http.StatusForbidden, page)
	})
}

// reservePageLogin is reserveLogin for a form a browser posted as
// username. When the attempt may not be made it has answered, and returns
// nil: 503 when the throttle cannot be asked; Retry-After and throttled,
// with the page's message, when the user must wait.
func (p *Provider) reservePageLogin(w http.ResponseWriter, r *http.Request, username string, throttled func(msg string)) *loginAttempt {
	attempt, wait, err := p.reserveLogin(r.Context(), username, p.clientIP(r), p.deviceFor(r, username))
	if err != nil {
		p.log.ErrorContext(r.Context(), "login throttle", "error", err)
		w.Header().Set("Retry-After", unavailableRetryAfter)
		p.renderError(w, r, &pageError{status: http.StatusServiceUnavailable, msg: "The login could not be checked. Try again shortly."})
		return nil
	}
	if wait > 0 {
		secs := retryAfter(wait)
		w.Header().Set("Retry-After", fmt.Sprint(secs))
		throttled("Too many failed attempts. Try again in " + waitText(secs) + ".")
		return nil
	}
	return attempt
}

// completeLogin signs user in with the methods amr, if they are enough for
// req (acr.go): the session cookie, then on to where the login was for
// (req nil: a direct visit of the login page). If they are not, refused
// answers with the reason.
func (p *Provider) completeLogin(w http.ResponseWriter, r *http.Request, user *User, req *authRequest, clientID string, amr []string, refused func(msg string)) {
	if msg := p.policyRefusal(r.Context(), user, req, amr); msg != "" {
		refused(msg)
		return
	}
	sess := p.newSession(user.Subject, amr)
	if err := p.writeSession(w, sess); err != nil {
		p.log.ErrorContext(r.Context(), "writing session cookie", "error", err)
		p.renderError(w, r, &pageError{status: http.StatusInternalServerError, msg: "The login could not be completed."})
		return
	}
	p.indexSession(r.Context(), sess)
	if err := p.writeDevice(w, user.Username); err != nil {
		p.log.ErrorContext(r.Context(), "writing device cookie", "error", err)
	}
	p.log.InfoContext(r.Context(), "login succeeded", "username", user.Username, "sub", user.Subject, "amr", strings.Join(amr, " "), "client_ip", p.clientIP(r), "client_id", clientID)
	p.emitRequest(r, Event{Type: EventLogin, Outcome: OutcomeSuccess, Username: user.Username, Subject: user.Subject, ClientID: clientID, SID: sess.SID})
	p.continueAfterLogin(w, r, req, sess, user)
}

// checkPassword returns the user whose password this is, or nil. An unknown
// username costs the same hash comparison as a known one, and a disabled
// user's right password fails as a wrong one does, after the same
// comparison: neither the answer nor its time tells who exists or who is
// disabled.
func (p *Provider) checkPassword(username, password string) *User {
	u, _ := p.verifyPassword(username, password)
	return u
}

// verifyPassword is checkPassword that also tells, for the audit log only,
// why a login failed: [OutcomeDisabled] for the right password of a
// disabled user, else [OutcomeInvalid], an unknown username included.
func (p *Provider) verifyPassword(username, password string) (*User, string) {
	us := p.users()
	u := us.byName[username]
	hash := p.fakeHashFor(us, username)
	if u != nil {
		hash = []byte(u.PasswordHash)
	}
	ok, err := p.comparer.Compare(hash, []byte(password))
	switch {
	case u == nil || err != nil || !ok:
		return nil, OutcomeInvalid
	case u.Disabled:
		return nil, OutcomeDisabled
	}
	return u, OutcomeSuccess
}

// disabled says whether sub is the subject of a disabled user (not of an
// enabled one, nor of a client's own client_credentials token).
func (p *Provider) disabled(sub string) bool {
	u := p.users().bySubject[sub]
	return u != nil && u.Disabled
}

// activeUser returns the user of subject sub, or nil if there is none or
// the user is disabled: what was issued to a user no longer serves once
// the user is disabled.
func (p *Provider) activeUser(sub string) *User {
	if u := p.users().bySubject[sub]; u != nil && !u.Disabled {
		return u
	}
	return nil
}

func (p *Provider) serveLogout(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		// A link, or a cross-site page, must not sign anyone out: GET only
		// asks, and only the answer posted from our own page (checkCSRF)
		// signs out.
		if s := p.readSession(r); s != nil {
			p.renderLogout(w, r, http.StatusOK, s, nil, "")
			return
		}
		p.renderMessage(w, r, http.StatusOK, "Signed out", "You are signed out.", false)
	case http.MethodPost:
		p.confirmLogout(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		p.renderError(w, r, &pageError{status: http.StatusMethodNotAllowed, msg: "Use GET or POST."})
	}
}

// loggedName is the part of a username a client sent that a log line
// holds: a name may be tens of kilobytes, once per guess.
func loggedName(username string) string { return truncate(username, 256) }

func (p *Provider) clientIP(r *http.Request) string {
	if p.clientIPFunc != nil {
		return p.clientIPFunc(r)
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
