package idp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"

	"github.com/gorilla/securecookie"
	"github.com/pquerna/otp/totp"
	qrcode "github.com/skip2/go-qrcode"
)

// The TOTP page (PathTOTP) of a signed-in user. Without TOTP it offers a
// fresh secret, as a QR code (a PNG made here, inline as a data: URL,
// which the pages' CSP allows) and as text; the secret travels in the
// form sealed with the cookie keys, and is stored only once the user
// sends a code it yields, which proves the app has it. The answer shows
// the recovery codes, once: the store keeps only their digests. With a
// self-enrolled TOTP the page removes it, for a code (or a recovery
// code), so that a session left open is not enough. An operator's secret
// cannot be removed here.

// totpEnrolment is what the enrolment form seals: the secret offered, to
// whom, when.
type totpEnrolment struct {
	Subject string `json:"sub"`
	Secret  string `json:"secret"`
	Issued  int64  `json:"iat"`
}

// totpPage is what the totp template shows. State is one of signed_out,
// operator, enrolled, enrol, done.
type totpPage struct {
	State    string
	Action   string
	LoginURL string
	CSRF     string
	Username string
	Error    string
	Message  string

	// Enrolment
	QR        template.URL // data:image/png;base64,...
	Secret    string
	Enrolment string // sealed totpEnrolment
	Issuer    string

	// done
	RecoveryCodes []string
}

func (p *Provider) serveTOTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		p.renderError(w, r, &pageError{status: http.StatusMethodNotAllowed, msg: "Use GET or POST."})
		return
	}
	page := totpPage{}
	s := p.readSession(r)
	var u *User
	if s != nil {
		u = p.activeUser(s.Subject)
	}
	if u == nil {
		page.State = "signed_out"
		status := http.StatusOK
		if r.Method == http.MethodPost {
			status = http.StatusUnauthorized
		}
		p.renderTOTP(w, r, status, page)
		return
	}
	page.Username = u.Username
	st, err := p.totpFor(r.Context(), u)
	if err != nil {
		p.totpUnavailable(w, r, "reading the TOTP enrolment", err)
		return
	}
	if r.Method == http.MethodPost {
		p.postTOTP(w, r, u, st, page)
		return
	}
	switch {
	case st.operator():
		page.State = "operator"
	case st.enabled():
		page.State = "enrolled"
	default:
		if err := p.offerTOTP(u, &page, ""); err != nil {
			p.totpUnavailable(w, r, "making a TOTP secret", err)
			return
		}
	}
	p.renderTOTP(w, r, http.StatusOK, page)
}

// offerTOTP fills page with the enrolment of secret, or of a new one
// when secret is "".
func (p *Provider) offerTOTP(u *User, page *totpPage, secret string) error {
	issuer := p.totpIssuer()
	opts := totp.GenerateOpts{Issuer: issuer, AccountName: u.Username, SecretSize: totpSecretSize, Rand: p.random}
	if secret != "" {
		raw, err := b32.DecodeString(secret)
		if err != nil {
			return err
		}
		opts.Secret = raw
	}
	key, err := totp.Generate(opts)
	if err != nil {
		return err
	}
	png, err := qrcode.Encode(key.URL(), qrcode.Medium, 256)
	if err != nil {
		return err
	}
	sealed, err := p.cookies.Encode(totpEnrolName, totpEnrolment{Subject: u.Subject, Secret: key.Secret(), Issued: p.now().Unix()})
	if err != nil {
		return err
	}
	page.State = "enrol"
	page.Issuer = issuer
	page.Secret = key.Secret()
	page.Enrolment = sealed
	// A data: URL of a PNG we made: nothing of the user's in it.
	page.QR = template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png))
	return nil
}

// totpIssuer names the provider in authenticator apps: the issuer's host.
func (p *Provider) totpIssuer() string {
	if u, err := url.Parse(p.issuer); err == nil && u.Host != "" {
		return u.Host
	}
	return p.issuer
}

func (p *Provider) postTOTP(w http.ResponseWriter, r *http.Request, u *User, st totpState, page totpPage) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "The form could not be read."})
		return
	}
	f := r.PostForm
	if err := p.checkCSRF(r, f.Get("csrf_token")); err != nil {
		p.log.InfoContext(r.Context(), "TOTP form refused", "reason", err)
		p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "Your session expired. Open the page again."})
		return
	}
	switch f.Get("action") {
	case "enrol":
		p.confirmTOTP(w, r, u, st, page, f.Get("enrolment"), f.Get("password"), f.Get("code"))
	case "remove":
		p.removeTOTP(w, r, u, st, page, f.Get("code"))
	default:
		p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "Unknown action."})
	}
}

// confirmTOTP stores the sealed enrolment once code proves that the
// user's app has its secret, and shows the recovery codes. The password
// is asked again, so that whoever holds a session cookie alone cannot
// put a second factor of their own on the account and lock its owner
// out; it is checked and throttled as at the login page.
func (p *Provider) confirmTOTP(w http.ResponseWriter, r *http.Request, u *User, st totpState, page totpPage, sealed, password, code string) {
	if st.enabled() {
		page.State = "enrolled"
		if st.operator() {
			page.State = "operator"
		}
		page.Error = "TOTP is already set up."
		p.renderTOTP(w, r, http.StatusConflict, page)
		return
	}
	var e totpEnrolment
	if err := securecookie.DecodeMulti(totpEnrolName, sealed, &e, p.cookieSet...); err != nil || e.Subject != u.Subject || !p.fresh(e.Issued, csrfTokenTTL) {
		p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "This enrolment has expired. Open the page again."})
		return
	}
	ctx := r.Context()
	again := func(status int, msg string) {
		if err := p.offerTOTP(u, &page, e.Secret); err != nil {
			p.totpUnavailable(w, r, "showing the TOTP secret", err)
			return
		}
		page.Error = msg
		p.renderTOTP(w, r, status, page)
	}
	ip := p.clientIP(r)
	attempt, wait, err := p.reserveLogin(ctx, u.Username, ip, p.deviceFor(r, u.Username))
	if err != nil {
		p.totpUnavailable(w, r, "login throttle", err)
		return
	}
	if wait > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(retryAfter(wait)))
		again(http.StatusTooManyRequests, "Too many failed attempts. Try again in "+waitText(retryAfter(wait))+".")
		return
	}
	if ok, _ := p.verifyPassword(u.Username, password); ok == nil {
		p.log.InfoContext(ctx, "TOTP enrolment refused: wrong password", "username", u.Username, "client_ip", ip)
		p.emitRequest(r, Event{Type: EventLogin, Outcome: OutcomeInvalid, Username: u.Username})
		again(http.StatusOK, "Your password is not right.")
		return
	}
	p.succeeded(ctx, attempt)
	step := p.matchTOTP(e.Secret, code)
	if step < 0 {
		again(http.StatusOK, "That code is not right. Check the time on your device, and try the next code.")
		return
	}
	// The code that confirmed the secret is spent: it cannot sign in.
	if _, err := p.claimStep(ctx, u.Subject, step); err != nil {
		p.totpUnavailable(w, r, "claiming the TOTP step", err)
		return
	}
	codes, err := p.enrolTOTP(ctx, u, e.Secret)
	if err != nil {
		p.totpUnavailable(w, r, "storing the TOTP enrolment", err)
		return
	}
	p.log.InfoContext(ctx, "TOTP enrolled", "username", u.Username, "sub", u.Subject)
	p.emitRequest(r, Event{Type: EventTOTP, Outcome: OutcomeEnrolled, Username: u.Username, Subject: u.Subject})
	page.State = "done"
	page.RecoveryCodes = codes
	p.renderTOTP(w, r, http.StatusOK, page)
}

// enrolTOTP stores secret as u's TOTP with fresh recovery codes, which it
// returns.
func (p *Provider) enrolTOTP(ctx context.Context, u *User, secret string) ([]string, error) {
	sealed, err := securecookie.EncodeMulti(totpSecretName, secret, p.totpSet[0])
	if err != nil {
		return nil, err
	}
	rec := totpRecord{ID: p.randomString(16), Secret: sealed, Created: p.now().Unix()}
	codes := p.newRecoveryCodes(recoveryCodes)
	var entries []Entry
	for _, c := range codes {
		key := recoveryKey(u.Subject, normalizeRecovery(c))
		rec.Recovery = append(rec.Recovery, key)
		entries = append(entries, Entry{Key: key, Value: []byte(rec.ID), TTL: totpRecordTTL})
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	// The record last: until it is there the codes serve nothing.
	entries = append(entries, Entry{Key: totpKey(u.Subject), Value: data, TTL: totpRecordTTL})
	if err := putAll(ctx, p.store, entries...); err != nil {
		return nil, err
	}
	return codes, nil
}

// removeTOTP deletes u's self-enrolled TOTP, for a fresh code.
func (p *Provider) removeTOTP(w http.ResponseWriter, r *http.Request, u *User, st totpState, page totpPage, code string) {
	switch {
	case st.operator():
		page.State = "operator"
		page.Error = "Your administrator set up this TOTP; it cannot be removed here."
		p.renderTOTP(w, r, http.StatusForbidden, page)
		return
	case !st.enabled():
		page.State = "signed_out"
		p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "TOTP is not set up."})
		return
	}
	page.State = "enrolled"
	ctx := r.Context()
	ip := p.clientIP(r)
	attempt, wait, err := p.reserveLogin(ctx, u.Username, ip, p.deviceFor(r, u.Username))
	if err != nil {
		p.totpUnavailable(w, r, "login throttle", err)
		return
	}
	if wait > 0 {
		p.emitRequest(r, Event{Type: EventSecondFactor, Outcome: OutcomeThrottled, Username: u.Username, Subject: u.Subject})
		page.Error = "Too many failed attempts. Try again in " + waitText(retryAfter(wait)) + "."
		w.Header().Set("Retry-After", fmt.Sprint(retryAfter(wait)))
		p.renderTOTP(w, r, http.StatusTooManyRequests, page)
		return
	}
	outcome, method, err := p.verifySecondFactor(ctx, u, st, code)
	if err != nil {
		p.totpUnavailable(w, r, "checking the second factor", err)
		return
	}
	if outcome != OutcomeSuccess {
		p.log.InfoContext(ctx, "TOTP removal refused", "username", u.Username, "method", method, "outcome", outcome, "client_ip", ip)
		p.emitRequest(r, Event{Type: EventSecondFactor, Outcome: outcome, Reason: method, Username: u.Username, Subject: u.Subject})
		page.Error = "Invalid code."
		if outcome == OutcomeReplayed {
			page.Error = "This code was already used. Wait for the next one."
		}
		p.renderTOTP(w, r, http.StatusOK, page)
		return
	}
	p.succeeded(ctx, attempt)
	for _, key := range append(st.rec.Recovery, totpKey(u.Subject)) {
		if err := p.store.Delete(ctx, key); err != nil {
			p.totpUnavailable(w, r, "deleting the TOTP enrolment", err)
			return
		}
	}
	p.log.InfoContext(ctx, "TOTP removed", "username", u.Username, "sub", u.Subject)
	p.emitRequest(r, Event{Type: EventTOTP, Outcome: OutcomeRemoved, Username: u.Username, Subject: u.Subject})
	if err := p.offerTOTP(u, &page, ""); err != nil {
		p.totpUnavailable(w, r, "making a TOTP secret", err)
		return
	}
	page.Message = "TOTP is removed: your password alone signs you in. You can set it up again below."
	p.renderTOTP(w, r, http.StatusOK, page)
}

func (p *Provider) totpUnavailable(w http.ResponseWriter, r *http.Request, doing string, err error) {
	p.log.ErrorContext(r.Context(), doing, "error", err)
	w.Header().Set("Retry-After", unavailableRetryAfter)
	p.renderError(w, r, &pageError{status: http.StatusServiceUnavailable, msg: "This could not be done now. Try again shortly."})
}

func (p *Provider) renderTOTP(w http.ResponseWriter, r *http.Request, status int, page totpPage) {
	page.Action = p.base + PathTOTP
	page.LoginURL = p.base + PathLogin
	page.CSRF = p.csrfToken(w, r)
	p.render(w, r, status, "totp.html", page)
}
