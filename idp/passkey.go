package idp

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
)

// Passkeys (WebAuthn Level 3) at the provider.
//
// The relying party ID is the issuer's host name unless
// [Config.PasskeyRPID] names a parent domain of it, and the one origin
// accepted is the issuer's: a passkey made here answers only to this
// provider's pages. A user registers passkeys on the account page
// (PathPasskeys) and signs in with one on the login page, without a
// username (discoverable credentials): the passkey says whose it is by
// its user handle, a digest of the user's subject.
//
// Each ceremony's challenge is stored under a digest of itself and of the
// browser's passkey cookie (a random value the provider set), for five
// minutes, and taken once when the answer comes back: an answer is good
// only once, only in the browser that asked, and only soon.
//
// A user's passkeys are one store entry, under their user handle: each
// passkey's public key, sign counter, backup flags, name, and when it was
// made and last used.
const (
	passkeyCookie       = "authgate_provider_passkey"
	passkeyChallengeTTL = 5 * time.Minute
	// passkeyRecordTTL is the store lifetime of a user's passkeys,
	// renewed by every change and sign-in: a store entry always has one.
	passkeyRecordTTL = 10 * 365 * 24 * time.Hour
	maxPasskeys      = 20 // per user
	maxPasskeyName   = 64 // characters of a passkey's name
	maxCredentialLen = 16 << 10
)

// passkeyOptionsLimit throttles the passkey options per client IP: 30 at
// once, then one per 2 seconds (30 a minute), every call counted. Each
// stores a challenge for passkeyChallengeTTL, so an address holds a few
// hundred at most; a login page asks once per view.
var passkeyOptionsLimit = ThrottleLimit{Free: 30, Base: 2 * time.Second, Max: 2 * time.Second}

// Paths of the account pages and of the passkey ceremonies.
const (
	PathAccount         = "/account"
	PathPasskeys        = "/account/passkeys"
	PathPasskeyOptions  = "/account/passkeys/options"
	PathPasskeyLogin    = "/account/login/passkey"
	passkeyPurposeLogin = "login"
	passkeyPurposeNew   = "register"
)

// passkeyScript is the script of the login and passkeys pages: it asks
// the browser for a passkey and posts the answer in the page's form. The
// pages' CSP allows it, and no other script, by its hash.
//
//go:embed passkey.js
var passkeyScript string

var passkeyScriptHash = scriptHash(passkeyScript)

// passkeyCSP is pageCSP with the passkey script and its fetches of
// ceremony options from the provider itself.
var passkeyCSP = pageCSP + "; script-src " + passkeyScriptHash + "; connect-src 'self'"

// passkey is one registered passkey.
type passkey struct {
	Name       string              `json:"name"`
	Created    int64               `json:"created"`
	LastUsed   int64               `json:"last_used,omitempty"`
	Credential webauthn.Credential `json:"credential"`
}

// passkeyList is what the store holds of one user.
type passkeyList struct {
	Subject  string    `json:"sub"`
	Passkeys []passkey `json:"passkeys"`
}

// passkeyUser is a user as the WebAuthn library sees one.
type passkeyUser struct {
	handle      []byte
	name        string
	displayName string
	creds       []webauthn.Credential
}

func (u *passkeyUser) WebAuthnID() []byte                         { return u.handle }
func (u *passkeyUser) WebAuthnName() string                       { return u.name }
func (u *passkeyUser) WebAuthnDisplayName() string                { return u.displayName }
func (u *passkeyUser) WebAuthnCredentials() []webauthn.Credential { return u.creds }

// setPasskeys configures WebAuthn from the issuer; an issuer whose host
// is an IP address leaves passkeys off.
func (p *Provider) setPasskeys(cfg Config, host string) error {
	rpID := cfg.PasskeyRPID
	if rpID == "" {
		if net.ParseIP(host) != nil {
			p.log.Info("passkeys are off: the issuer's host is an IP address, which cannot be a WebAuthn RP ID", "host", host)
			return nil
		}
		rpID = host
	} else if rpID != host && !strings.HasSuffix(host, "."+rpID) {
		// WebAuthn §5.1.4: the RP ID is the origin's domain or a
		// registrable suffix of it.
		return fmt.Errorf("idp: passkey RP ID %q is neither the issuer's host %q nor a parent domain of it", rpID, host)
	}
	name := cfg.PasskeyRPName
	if name == "" {
		name = rpID
	}
	uvPreferred := protocol.VerificationPreferred
	w, err := webauthn.New(&webauthn.Config{
		RPID:          rpID,
		RPDisplayName: name,
		RPOrigins:     []string{p.origin},
		// No attestation: which authenticator it is does not change
		// what a passkey proves here, and asking for it costs privacy.
		AttestationPreference: protocol.PreferNoAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:        protocol.ResidentKeyRequirementRequired,
			RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification:   uvPreferred,
		},
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Enforce: true, Timeout: passkeyChallengeTTL, TimeoutUVD: passkeyChallengeTTL},
			Registration: webauthn.TimeoutConfig{Enforce: true, Timeout: passkeyChallengeTTL, TimeoutUVD: passkeyChallengeTTL},
		},
	})
	if err != nil {
		return fmt.Errorf("idp: passkey RP ID %q: %w", rpID, err)
	}
	p.webauthn = w
	return nil
}

// routePasskeys adds the account pages and the passkey endpoints.
func (p *Provider) routePasskeys() {
	p.mux.HandleFunc(p.base+PathAccount, p.serveAccount)
	p.mux.HandleFunc(p.base+PathPasskeys, p.servePasskeys)
	p.mux.HandleFunc(p.base+PathPasskeyOptions, p.servePasskeyOptions)
	p.mux.HandleFunc(p.base+PathPasskeyLogin, p.servePasskeyLogin)
}

// passkeyHandle is the WebAuthn user handle of a subject: a digest, so
// that authenticators hold nothing that names the user (WebAuthn §14.6.1).
func passkeyHandle(subject string) []byte {
	sum := sha256.Sum256([]byte("authgate passkey user\x00" + subject))
	return sum[:]
}

func passkeysKey(handle []byte) string { return "passkeys/" + base64RawURL(handle) }

// loadPasskeys returns the passkeys of the user with handle, an empty list
// when there are none.
func (p *Provider) loadPasskeys(ctx context.Context, handle []byte) (*passkeyList, []byte, error) {
	data, err := p.store.Get(ctx, passkeysKey(handle))
	if errors.Is(err, ErrNotFound) {
		return &passkeyList{}, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var l passkeyList
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, nil, fmt.Errorf("idp: decoding passkeys: %w", err)
	}
	return &l, data, nil
}

// errPasskeyConflict is a change of a user's passkeys that lost a race
// three times over.
var errPasskeyConflict = errors.New("idp: the passkeys changed meanwhile")

// updatePasskeys applies change to the passkeys of subject and stores the
// result: with a Swap where the store has one, so that two changes at
// once (a sign-in, a removal) do not undo each other.
func (p *Provider) updatePasskeys(ctx context.Context, subject string, change func(*passkeyList) error) error {
	handle := passkeyHandle(subject)
	key := passkeysKey(handle)
	for range 3 {
		l, old, err := p.loadPasskeys(ctx, handle)
		if err != nil {
			return err
		}
		l.Subject = subject
		if err := change(l); err != nil {
			return err
		}
		data, err := json.Marshal(l)
		if err != nil {
			return err
		}
		sw, ok := p.store.(Swapper)
		if !ok || old == nil {
			return p.store.Put(ctx, key, data, passkeyRecordTTL)
		}
		done, err := sw.Swap(ctx, key, old, []Entry{{Key: key, Value: data, TTL: passkeyRecordTTL}})
		if err != nil || done {
			return err
		}
	}
	return errPasskeyConflict
}

// passkeyUserOf returns the WebAuthn user of u with its passkeys.
func (p *Provider) passkeyUserOf(u *User, l *passkeyList) *passkeyUser {
	pu := &passkeyUser{handle: passkeyHandle(u.Subject), name: u.Username, displayName: u.Username}
	if n, ok := u.Claims["name"].(string); ok && n != "" {
		pu.displayName = n
	}
	for _, k := range l.Passkeys {
		pu.creds = append(pu.creds, k.Credential)
	}
	return pu
}

// passkeyChallengeKey is the store key of a ceremony's session data: the
// browser's passkey cookie and the challenge, hashed.
func passkeyChallengeKey(purpose, cookie, challenge string) string {
	return "passkeychallenge/" + purpose + "/" + hashKey(cookie+"\x00"+challenge)
}

// passkeyBrowser returns the browser's passkey cookie, setting one if it
// has none.
func (p *Provider) passkeyBrowser(w http.ResponseWriter, r *http.Request) string {
	if ck, err := r.Cookie(passkeyCookie); err == nil && len(ck.Value) >= 32 {
		return ck.Value
	}
	v := p.randomString(24)
	http.SetCookie(w, p.cookie(passkeyCookie, v, 0))
	return v
}

// servePasskeyOptions starts a ceremony: POST purpose=login (anyone) or
// purpose=register (a signed-in user), with the page's csrf_token. It
// answers the options for navigator.credentials as JSON.
func (p *Provider) servePasskeyOptions(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, &Error{Code: ErrInvalidRequest, Description: "use POST"})
		return
	}
	if p.webauthn == nil {
		writeError(w, http.StatusNotFound, &Error{Code: ErrInvalidRequest, Description: "passkeys are off at this provider"})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, &Error{Code: ErrInvalidRequest, Description: "the form could not be read"})
		return
	}
	if err := p.checkCSRF(r, r.PostForm.Get("csrf_token")); err != nil {
		p.log.InfoContext(r.Context(), "passkey options refused", "reason", err)
		writeError(w, http.StatusForbidden, &Error{Code: ErrInvalidRequest, Description: "the page has expired; reload it"})
		return
	}
	ctx := r.Context()
	// Each call stores a challenge for passkeyChallengeTTL, the login's
	// for anyone: counted per client IP, so that no one fills the store.
	ip := throttleAddr(p.clientIP(r))
	wait, terr := p.throttle.Reserve(ctx, p.now(), []ThrottleKey{{Key: "passkey-options:" + ip, Limit: passkeyOptionsLimit}})
	if terr != nil {
		p.log.ErrorContext(ctx, "passkey options throttle", "error", terr)
		w.Header().Set("Retry-After", unavailableRetryAfter)
		writeError(w, http.StatusServiceUnavailable, &Error{Code: ErrTemporarilyUnavailable, Description: "try again shortly"})
		return
	}
	if wait > 0 {
		p.log.WarnContext(ctx, "passkey options throttled", "client_ip", ip)
		w.Header().Set("Retry-After", fmt.Sprint(retryAfter(wait)))
		writeError(w, http.StatusTooManyRequests, &Error{Code: ErrInvalidRequest, Description: "too many passkey requests; try again later"})
		return
	}
	var (
		options any
		sd      *webauthn.SessionData
		err     error
	)
	purpose := r.PostForm.Get("purpose")
	switch purpose {
	case passkeyPurposeLogin:
		var a *protocol.CredentialAssertion
		a, sd, err = p.webauthn.BeginDiscoverableLogin()
		options = a
	case passkeyPurposeNew:
		s := p.readSession(r)
		var u *User
		if s != nil {
			u = p.activeUser(s.Subject)
		}
		if u == nil || !p.recentSignIn(s) {
			// The page reloads, and sends the browser to sign in
			// (again: passkeysSession).
			writeError(w, http.StatusUnauthorized, &Error{Code: ErrLoginRequired, Description: "sign in again to add a passkey"})
			return
		}
		l, _, lerr := p.loadPasskeys(ctx, passkeyHandle(u.Subject))
		if lerr != nil {
			p.log.ErrorContext(ctx, "loading passkeys", "error", lerr)
			writeError(w, http.StatusServiceUnavailable, &Error{Code: ErrTemporarilyUnavailable, Description: "try again shortly"})
			return
		}
		pu := p.passkeyUserOf(u, l)
		var c *protocol.CredentialCreation
		// excludeCredentials: an authenticator that holds one of the
		// user's passkeys does not make a second one.
		c, sd, err = p.webauthn.BeginRegistration(pu, webauthn.WithExclusions(webauthn.Credentials(pu.creds).CredentialDescriptors()))
		options = c
	default:
		writeError(w, http.StatusBadRequest, &Error{Code: ErrInvalidRequest, Description: "purpose must be login or register"})
		return
	}
	if err != nil {
		p.log.ErrorContext(ctx, "starting a passkey ceremony", "purpose", purpose, "error", err)
		writeError(w, http.StatusInternalServerError, &Error{Code: ErrServerError, Description: "the passkey ceremony could not be started"})
		return
	}
	data, _ := json.Marshal(sd)
	key := passkeyChallengeKey(purpose, p.passkeyBrowser(w, r), sd.Challenge)
	if err := p.store.Put(ctx, key, data, passkeyChallengeTTL); err != nil {
		p.log.ErrorContext(ctx, "storing a passkey challenge", "error", err)
		writeError(w, http.StatusServiceUnavailable, &Error{Code: ErrTemporarilyUnavailable, Description: "try again shortly"})
		return
	}
	body, _ := json.Marshal(options)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.Write(body)
}

// takePasskeyChallenge returns, once, the session data of the ceremony
// whose challenge the answer signed, if this browser started it.
func (p *Provider) takePasskeyChallenge(ctx context.Context, r *http.Request, purpose string, cd protocol.CollectedClientData) (*webauthn.SessionData, error) {
	ck, err := r.Cookie(passkeyCookie)
	if err != nil || cd.Challenge == "" {
		return nil, errors.New("idp: passkey answer without its browser's cookie")
	}
	data, err := p.store.Take(ctx, passkeyChallengeKey(purpose, ck.Value, cd.Challenge))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: passkey challenge: %w", errStoreUnavailable, err)
	}
	if err != nil {
		return nil, fmt.Errorf("idp: passkey challenge: %w", err)
	}
	var sd webauthn.SessionData
	if err := json.Unmarshal(data, &sd); err != nil {
		return nil, fmt.Errorf("idp: decoding passkey challenge: %w", err)
	}
	// The stored challenge is the one the key was made of; compared
	// again all the same, in constant time.
	if subtle.ConstantTimeCompare([]byte(sd.Challenge), []byte(cd.Challenge)) != 1 {
		return nil, errors.New("idp: passkey challenge mismatch")
	}
	return &sd, nil
}

// passkeyAMR is the amr of a sign-in with a passkey whose assertion
// carried flags (RFC 8176 §2): swk for a passkey that may be synced
// (backup eligible), whose private key lives in software beyond this
// authenticator; hwk for one bound to its authenticator's hardware. With
// user verification (a PIN or biometric the authenticator checked), the
// passkey is two factors in one, something held and something known or
// been: mfa too.
func passkeyAMR(flags protocol.AuthenticatorFlags) []string {
	amr := []string{AMRHardware}
	if flags.HasBackupEligible() {
		amr = []string{AMRSoftware}
	}
	if flags.HasUserVerified() {
		amr = append(amr, AMRMFA)
	}
	return amr
}

// servePasskeyLogin takes the login page's passkey form: the assertion,
// the page's csrf_token and sealed request. A good assertion signs the
// user in as a password does.
func (p *Provider) servePasskeyLogin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		p.renderError(w, r, &pageError{status: http.StatusMethodNotAllowed, msg: "Use POST."})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "The form could not be read."})
		return
	}
	f := r.PostForm
	page := loginPage{Request: f.Get("request")}
	var req *authRequest
	if page.Request != "" {
		var err error
		if req, err = p.decodeLoginRequest(page.Request); err != nil {
			p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "This login link is invalid or has expired. Go back to the application and sign in again."})
			return
		}
		page.ClientID = req.ClientID
	}
	if p.webauthn == nil {
		page.Error = "Passkeys are off at this provider."
		p.renderLogin(w, r, http.StatusNotFound, page)
		return
	}
	if err := p.checkCSRF(r, f.Get("csrf_token")); err != nil {
		p.log.InfoContext(r.Context(), "passkey login refused", "reason", err)
		page.Error = "Your session expired. Please try again."
		p.renderLogin(w, r, http.StatusBadRequest, page)
		return
	}
	ctx := r.Context()
	fail := func(status int, reason error, outcome string) {
		p.log.InfoContext(ctx, "passkey login failed", "reason", reason, "client_ip", p.clientIP(r), "client_id", page.ClientID)
		p.emitRequest(r, Event{Type: EventLogin, Outcome: outcome, ClientID: page.ClientID, Reason: "passkey"})
		page.Error = "That passkey could not sign you in. Try again, or use another passkey or your password."
		p.renderLogin(w, r, status, page)
	}
	raw := f.Get("credential")
	if len(raw) > maxCredentialLen {
		fail(http.StatusBadRequest, errors.New("idp: passkey answer too long"), OutcomeInvalid)
		return
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes([]byte(raw))
	if err != nil {
		fail(http.StatusBadRequest, fmt.Errorf("idp: parsing passkey answer: %w", err), OutcomeInvalid)
		return
	}
	sd, err := p.takePasskeyChallenge(ctx, r, passkeyPurposeLogin, parsed.Response.CollectedClientData)
	if errors.Is(err, errStoreUnavailable) {
		p.log.ErrorContext(ctx, "taking a passkey challenge", "error", err)
		w.Header().Set("Retry-After", unavailableRetryAfter)
		p.renderError(w, r, &pageError{status: http.StatusServiceUnavailable, msg: "The login could not be checked. Try again shortly."})
		return
	}
	if err != nil {
		fail(http.StatusBadRequest, err, OutcomeInvalid)
		return
	}
	var (
		user     *User
		list     *passkeyList
		storeErr error // the store failed the lookup: 503, not a refusal
	)
	handler := func(rawID, userHandle []byte) (webauthn.User, error) {
		l, _, err := p.loadPasskeys(ctx, userHandle)
		if err != nil {
			storeErr = err
			return nil, err
		}
		u := p.activeUser(l.Subject)
		if u == nil || subtle.ConstantTimeCompare(passkeyHandle(u.Subject), userHandle) != 1 {
			return nil, errors.New("idp: no active user has this passkey")
		}
		user, list = u, l
		return p.passkeyUserOf(u, l), nil
	}
	_, cred, err := p.webauthn.ValidatePasskeyLogin(handler, *sd, parsed)
	if storeErr != nil {
		p.log.ErrorContext(ctx, "loading passkeys", "error", storeErr)
		w.Header().Set("Retry-After", unavailableRetryAfter)
		p.renderError(w, r, &pageError{status: http.StatusServiceUnavailable, msg: "The login could not be checked. Try again shortly."})
		return
	}
	if err != nil {
		fail(http.StatusUnauthorized, fmt.Errorf("idp: passkey assertion: %w", passkeyErr(err)), OutcomeInvalid)
		return
	}
	name := ""
	for _, k := range list.Passkeys {
		if subtle.ConstantTimeCompare(k.Credential.ID, cred.ID) == 1 {
			name = k.Name
		}
	}
	if cred.Authenticator.CloneWarning {
		// WebAuthn §6.1.1: a sign counter that did not grow means that
		// another copy of this passkey has signed since: a cloned
		// authenticator. Refused; the stored counter stays.
		p.log.WarnContext(ctx, "passkey sign counter went back: refused, the authenticator may be cloned",
			"username", user.Username, "sub", user.Subject, "passkey", name,
			"stored_count", storedCount(list, cred.ID), "count", parsed.Response.AuthenticatorData.Counter, "client_ip", p.clientIP(r))
		fail(http.StatusUnauthorized, errors.New("idp: passkey sign counter regression"), OutcomeInvalid)
		return
	}
	now := p.now().Unix()
	err = p.updatePasskeys(ctx, user.Subject, func(l *passkeyList) error {
		for i := range l.Passkeys {
			k := &l.Passkeys[i]
			if subtle.ConstantTimeCompare(k.Credential.ID, cred.ID) != 1 {
				continue
			}
			if cred.Authenticator.SignCount != 0 && cred.Authenticator.SignCount <= k.Credential.Authenticator.SignCount {
				// Another sign-in with a copy got here first.
				return errors.New("idp: passkey sign counter regression")
			}
			k.Credential.Authenticator.SignCount = cred.Authenticator.SignCount
			k.Credential.Flags = cred.Flags
			k.LastUsed = now
			return nil
		}
		return errors.New("idp: the passkey was removed meanwhile")
	})
	if err != nil {
		p.log.WarnContext(ctx, "recording a passkey sign-in", "sub", user.Subject, "error", err)
		fail(http.StatusUnauthorized, err, OutcomeInvalid)
		return
	}
	amr := passkeyAMR(parsed.Response.AuthenticatorData.Flags)
	if msg := p.policyRefusal(ctx, user, req, amr); msg != "" {
		page.Error = msg
		p.renderLogin(w, r, http.StatusForbidden, page)
		return
	}
	sess := p.newSession(user.Subject, amr)
	if err := p.writeSession(w, sess); err != nil {
		p.log.ErrorContext(ctx, "writing session cookie", "error", err)
		p.renderError(w, r, &pageError{status: http.StatusInternalServerError, msg: "The login could not be completed."})
		return
	}
	p.indexSession(ctx, sess)
	p.log.InfoContext(ctx, "login succeeded", "username", user.Username, "sub", user.Subject, "method", "passkey", "passkey", name,
		"amr", strings.Join(amr, " "), "sign_count", cred.Authenticator.SignCount, "client_ip", p.clientIP(r), "client_id", page.ClientID)
	p.emitRequest(r, Event{Type: EventLogin, Outcome: OutcomeSuccess, Username: user.Username, Subject: user.Subject, ClientID: page.ClientID, SID: sess.SID, Reason: "passkey"})
	p.continueAfterLogin(w, r, req, sess, user)
}

// storedCount is the stored sign counter of the passkey id, for the log.
func storedCount(l *passkeyList, id []byte) uint32 {
	for _, k := range l.Passkeys {
		if subtle.ConstantTimeCompare(k.Credential.ID, id) == 1 {
			return k.Credential.Authenticator.SignCount
		}
	}
	return 0
}

// passkeyErr adds the library's details to its error, for the log.
func passkeyErr(err error) error {
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.Details != "" {
		return fmt.Errorf("%w: %s", err, pe.Details)
	}
	return err
}

// continueAfterLogin sends a browser whose user just signed in on its way: back
// to the client, the device page or the account page, or, for a direct
// visit, to a page that says so.
func (p *Provider) continueAfterLogin(w http.ResponseWriter, r *http.Request, req *authRequest, sess *session, user *User) {
	switch {
	case req == nil:
		p.renderMessage(w, r, http.StatusOK, "Signed in", fmt.Sprintf("You are signed in as %s.", user.Username), true)
	case req.Device:
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, p.deviceReturn(req), http.StatusSeeOther)
	case req.Account != "":
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, p.base+req.Account, http.StatusSeeOther)
	default:
		p.afterLogin(w, r, req, p.clients[req.ClientID], sess)
	}
}

// Event types of passkeys, beside [EventLogin] (whose Reason is
// "passkey" for a sign-in with one).
const (
	// EventPasskeyAdded is a passkey registered on the passkeys page.
	EventPasskeyAdded = "passkey_added"
	// EventPasskeyRemoved is a passkey removed there.
	EventPasskeyRemoved = "passkey_removed"
)
