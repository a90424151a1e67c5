package idp

import (
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/protocol"
)

// accountLink is an entry of the account page: a page where signed-in
// users manage how they sign in.
type accountLink struct {
	URL   string
	Title string
	Text  string
}

// accountPage is what the account template shows.
type accountPage struct {
	Username  string
	Links     []accountLink
	LogoutURL string
	CSRF      string
}

// passkeysPage is what the passkeys template shows.
type passkeysPage struct {
	Action   string
	Options  string
	Account  string
	CSRF     string
	Username string
	Passkeys []passkeyRow
	Message  string
	Error    string
	Enabled  bool
	Script   template.JS
}

type passkeyRow struct {
	ID       string // base64url credential ID
	Name     string
	Created  string
	LastUsed string
	Synced   bool
}

// accountSession returns the session of a signed-in user for an account
// page, or sends the browser to sign in first and returns nil.
func (p *Provider) accountSession(w http.ResponseWriter, r *http.Request) (*session, *User) {
	if s := p.readSession(r); s != nil {
		if u := p.activeUser(s.Subject); u != nil {
			return s, u
		}
	}
	// Back to this page after the login; a form posted without a session
	// comes back to the page, not to its action.
	p.redirectToLogin(w, r, &authRequest{Account: strings.TrimPrefix(r.URL.Path, p.base), MaxAge: -1})
	return nil, nil
}

// passkeyReauthAge is how recent a sign-in must be to see and change
// one's passkeys (PathPasskeys and the registration options): a session
// cookie alone, stolen or left open in a browser, adds no passkey (which
// would outlast the session and outrank a password and a code) and
// removes none.
const passkeyReauthAge = 5 * time.Minute

// recentSignIn reports whether s signed in at most passkeyReauthAge ago.
func (p *Provider) recentSignIn(s *session) bool {
	return p.fresh(s.AuthTime, passkeyReauthAge)
}

// passkeysSession is accountSession for the passkeys page: a session
// whose sign-in is older than passkeyReauthAge sends the browser to sign
// in again too, then back to the page.
func (p *Provider) passkeysSession(w http.ResponseWriter, r *http.Request) (*session, *User) {
	s, u := p.accountSession(w, r)
	if u == nil || p.recentSignIn(s) {
		return s, u
	}
	p.log.InfoContext(r.Context(), "passkeys page: signing in again", "sub", u.Subject)
	p.redirectToLogin(w, r, &authRequest{Account: PathPasskeys, MaxAge: -1})
	return nil, nil
}

// serveAccount shows the signed-in user's account page: links to the
// pages that manage how they sign in, and sign-out.
func (p *Provider) serveAccount(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		p.renderError(w, r, &pageError{status: http.StatusMethodNotAllowed, msg: "Use GET."})
		return
	}
	_, u := p.accountSession(w, r)
	if u == nil {
		return
	}
	page := accountPage{Username: u.Username, LogoutURL: p.base + PathLogout, CSRF: p.csrfToken(w, r)}
	if p.webauthn != nil {
		page.Links = append(page.Links, accountLink{URL: p.base + PathPasskeys, Title: "Passkeys", Text: "Sign in without a password, with your device's screen lock or a security key."})
	}
	page.Links = append(page.Links, accountLink{URL: p.base + PathTOTP, Title: "Authenticator app", Text: "A one-time code from an app on your phone after your password (TOTP)."})
	p.render(w, r, http.StatusOK, "account.html", page)
}

// servePasskeys lists the user's passkeys (GET) and registers or removes
// one (POST action=register with name and credential, or action=remove
// with id), then shows the list again (303).
func (p *Provider) servePasskeys(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPost:
		p.postPasskeys(w, r)
		return
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		p.renderError(w, r, &pageError{status: http.StatusMethodNotAllowed, msg: "Use GET or POST."})
		return
	}
	_, u := p.passkeysSession(w, r)
	if u == nil {
		return
	}
	msg := ""
	switch r.URL.Query().Get("done") {
	case "added":
		msg = "Your passkey was added."
	case "removed":
		msg = "The passkey was removed."
	}
	p.renderPasskeys(w, r, http.StatusOK, u, msg, "")
}

func (p *Provider) renderPasskeys(w http.ResponseWriter, r *http.Request, status int, u *User, msg, errMsg string) {
	page := passkeysPage{
		Action: p.base + PathPasskeys, Options: p.base + PathPasskeyOptions, Account: p.base + PathAccount,
		CSRF: p.csrfToken(w, r), Username: u.Username, Message: msg, Error: errMsg,
		Enabled: p.webauthn != nil, Script: template.JS(passkeyScript),
	}
	if p.webauthn == nil {
		page.Error = "Passkeys are off at this provider."
		p.render(w, r, status, "passkeys.html", page)
		return
	}
	l, _, err := p.loadPasskeys(r.Context(), passkeyHandle(u.Subject))
	if err != nil {
		p.log.ErrorContext(r.Context(), "loading passkeys", "error", err)
		p.renderError(w, r, &pageError{status: http.StatusServiceUnavailable, msg: "Your passkeys could not be read. Try again shortly."})
		return
	}
	for _, k := range l.Passkeys {
		row := passkeyRow{ID: base64RawURL(k.Credential.ID), Name: k.Name, Created: shownTime(k.Created), LastUsed: "never", Synced: k.Credential.Flags.BackupEligible}
		if k.LastUsed != 0 {
			row.LastUsed = shownTime(k.LastUsed)
		}
		page.Passkeys = append(page.Passkeys, row)
	}
	p.renderCSP(w, r, status, "passkeys.html", page, passkeyCSP)
}

func shownTime(unix int64) string {
	return time.Unix(unix, 0).UTC().Format("2006-01-02 15:04 UTC")
}

func (p *Provider) postPasskeys(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "The form could not be read."})
		return
	}
	s, u := p.passkeysSession(w, r)
	if u == nil {
		return
	}
	f := r.PostForm
	if err := p.checkCSRF(r, f.Get("csrf_token")); err != nil {
		p.log.InfoContext(r.Context(), "passkeys form refused", "reason", err)
		p.renderPasskeys(w, r, http.StatusBadRequest, u, "", "Your session expired. Please try again.")
		return
	}
	if p.webauthn == nil {
		p.renderPasskeys(w, r, http.StatusNotFound, u, "", "")
		return
	}
	switch f.Get("action") {
	case "register":
		p.registerPasskey(w, r, s, u)
	case "remove":
		p.removePasskey(w, r, s, u)
	default:
		p.renderPasskeys(w, r, http.StatusBadRequest, u, "", "Unknown action.")
	}
}

// passkeyName checks the name a user gave a passkey: the name, or what
// the page tells the user about it.
func passkeyName(s string) (name, problem string) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", "Give the passkey a name, so that you know it again."
	case !utf8.ValidString(s) || utf8.RuneCountInString(s) > maxPasskeyName:
		return "", "The name is too long: 64 characters at most."
	case strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return "", "The name has a control character."
	}
	return s, ""
}

func (p *Provider) registerPasskey(w http.ResponseWriter, r *http.Request, s *session, u *User) {
	ctx := r.Context()
	name, problem := passkeyName(r.PostForm.Get("name"))
	if problem != "" {
		p.renderPasskeys(w, r, http.StatusBadRequest, u, "", problem)
		return
	}
	fail := func(reason error) {
		p.log.InfoContext(ctx, "passkey registration failed", "sub", u.Subject, "reason", reason)
		p.renderPasskeys(w, r, http.StatusBadRequest, u, "", "The passkey could not be added. Try again.")
	}
	raw := r.PostForm.Get("credential")
	if len(raw) > maxCredentialLen {
		fail(errors.New("idp: passkey answer too long"))
		return
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes([]byte(raw))
	if err != nil {
		fail(passkeyErr(err))
		return
	}
	sd, err := p.takePasskeyChallenge(ctx, r, passkeyPurposeNew, parsed.Response.CollectedClientData)
	if err != nil {
		fail(err)
		return
	}
	l, _, err := p.loadPasskeys(ctx, passkeyHandle(u.Subject))
	if err != nil {
		p.log.ErrorContext(ctx, "loading passkeys", "error", err)
		p.renderError(w, r, &pageError{status: http.StatusServiceUnavailable, msg: "Your passkeys could not be read. Try again shortly."})
		return
	}
	cred, err := p.webauthn.CreateCredential(p.passkeyUserOf(u, l), *sd, parsed)
	if err != nil {
		fail(passkeyErr(err))
		return
	}
	now := p.now().Unix()
	err = p.updatePasskeys(ctx, u.Subject, func(l *passkeyList) error {
		if len(l.Passkeys) >= maxPasskeys {
			return errTooManyPasskeys
		}
		for _, k := range l.Passkeys {
			if string(k.Credential.ID) == string(cred.ID) {
				return errors.New("idp: passkey registered twice")
			}
		}
		l.Passkeys = append(l.Passkeys, passkey{Name: name, Created: now, Credential: *cred})
		return nil
	})
	if errors.Is(err, errTooManyPasskeys) {
		p.renderPasskeys(w, r, http.StatusBadRequest, u, "", "You have as many passkeys as you can have: remove one first.")
		return
	}
	if err != nil {
		p.log.ErrorContext(ctx, "storing a passkey", "sub", u.Subject, "error", err)
		p.renderPasskeys(w, r, http.StatusServiceUnavailable, u, "", "The passkey could not be saved. Try again shortly.")
		return
	}
	p.log.InfoContext(ctx, "passkey added", "username", u.Username, "sub", u.Subject, "passkey", name, "synced", cred.Flags.BackupEligible)
	p.emitRequest(r, Event{Type: EventPasskeyAdded, Outcome: OutcomeSuccess, Username: u.Username, Subject: u.Subject, SID: s.SID})
	redirectTo(w, r, p.base+PathPasskeys, url.Values{"done": {"added"}})
}

var errTooManyPasskeys = errors.New("idp: too many passkeys")

func (p *Provider) removePasskey(w http.ResponseWriter, r *http.Request, s *session, u *User) {
	ctx := r.Context()
	id, err := base64.RawURLEncoding.DecodeString(r.PostForm.Get("id"))
	if err != nil || len(id) == 0 {
		p.renderPasskeys(w, r, http.StatusBadRequest, u, "", "No such passkey.")
		return
	}
	name := ""
	err = p.updatePasskeys(ctx, u.Subject, func(l *passkeyList) error {
		for i, k := range l.Passkeys {
			if string(k.Credential.ID) == string(id) {
				name = k.Name
				l.Passkeys = append(l.Passkeys[:i], l.Passkeys[i+1:]...)
				return nil
			}
		}
		return ErrNotFound
	})
	if errors.Is(err, ErrNotFound) {
		p.renderPasskeys(w, r, http.StatusNotFound, u, "", "No such passkey.")
		return
	}
	if err != nil {
		p.log.ErrorContext(ctx, "removing a passkey", "sub", u.Subject, "error", err)
		p.renderPasskeys(w, r, http.StatusServiceUnavailable, u, "", "The passkey could not be removed. Try again shortly.")
		return
	}
	p.log.InfoContext(ctx, "passkey removed", "username", u.Username, "sub", u.Subject, "passkey", name)
	p.emitRequest(r, Event{Type: EventPasskeyRemoved, Outcome: OutcomeSuccess, Username: u.Username, Subject: u.Subject, SID: s.SID})
	redirectTo(w, r, p.base+PathPasskeys, url.Values{"done": {"removed"}})
}
