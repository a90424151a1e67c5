package idp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// devicePage is what the device template shows: the form for the
// user_code, or, with Scopes, the request to approve.
type devicePage struct {
	Action   string
	CSRF     string
	UserCode string // as typed, or formatted once found
	Error    string
	ClientID string
	Scopes   []scopeItem
	Username string
}

// serveDevice is the user page of the device flow (RFC 8628 §3.3): a
// signed-in user enters the user_code (GET shows the form, prefilled from
// verification_uri_complete), sees the client and its scopes, and approves
// or denies (POST).
func (p *Provider) serveDevice(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		p.renderError(w, r, &pageError{status: http.StatusMethodNotAllowed, msg: "Use GET or POST."})
		return
	}
	typed := r.URL.Query().Get("user_code")
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "The form could not be read."})
			return
		}
		typed = r.PostForm.Get("user_code")
	}
	typed = truncate(typed, 64)
	sess := p.readSession(r)
	if sess == nil {
		// Sign in first, then come back here with what was typed.
		p.redirectToLogin(w, r, &authRequest{Device: true, UserCode: typed, MaxAge: -1})
		return
	}
	page := devicePage{Action: p.base + PathDevice, UserCode: typed, Username: p.username(sess.Subject)}
	if r.Method != http.MethodPost {
		p.renderDevice(w, r, http.StatusOK, page)
		return
	}
	if err := p.checkCSRF(r, r.PostForm.Get("csrf_token")); err != nil {
		p.log.InfoContext(r.Context(), "device form refused", "reason", err)
		page.Error = "Your session expired. Please try again."
		p.renderDevice(w, r, http.StatusBadRequest, page)
		return
	}
	ctx := r.Context()
	ip := p.clientIP(r)
	// Every look-up counts as a failure until the code is found: by the
	// session and by the client IP, with the login throttle's limits.
	keys := []ThrottleKey{
		{Key: "device-code-sid:" + sess.SID, Limit: p.throttleCfg.UserIP},
		{Key: "device-code-ip:" + throttleAddr(ip), Limit: p.throttleCfg.IP},
	}
	at := p.now()
	wait, err := p.throttle.Reserve(ctx, at, keys)
	if err != nil {
		p.log.ErrorContext(ctx, "device code throttle", "error", err)
		w.Header().Set("Retry-After", unavailableRetryAfter)
		p.renderError(w, r, &pageError{status: http.StatusServiceUnavailable, msg: "The code could not be checked. Try again shortly."})
		return
	}
	if wait > 0 {
		p.log.WarnContext(ctx, "device code throttled", "sub", sess.Subject, "client_ip", ip)
		p.emitRequest(r, Event{Type: EventDeviceAuthorization, Outcome: OutcomeThrottled, Subject: sess.Subject, SID: sess.SID})
		page.Error = "Too many wrong codes. Try again in " + waitText(retryAfter(wait)) + "."
		w.Header().Set("Retry-After", fmt.Sprint(retryAfter(wait)))
		p.renderDevice(w, r, http.StatusTooManyRequests, page)
		return
	}
	code := normalizeUserCode(typed)
	var h string
	var dr deviceRequest
	if code != "" {
		h, dr, err = p.lookUpUserCode(r, code)
		if err != nil && !errors.Is(err, ErrNotFound) {
			p.log.ErrorContext(ctx, "looking up a user code", "error", err)
			w.Header().Set("Retry-After", unavailableRetryAfter)
			p.renderError(w, r, &pageError{status: http.StatusServiceUnavailable, msg: "The code could not be checked. Try again shortly."})
			return
		}
	}
	if h == "" {
		p.log.InfoContext(ctx, "device code not found", "sub", sess.Subject, "client_ip", ip)
		p.emitRequest(r, Event{Type: EventDeviceAuthorization, Outcome: OutcomeInvalid, Subject: sess.Subject, SID: sess.SID})
		page.Error = "That code is wrong, expired or already used. Check the code on your device."
		p.renderDevice(w, r, http.StatusOK, page)
		return
	}
	if err := p.throttle.Release(ctx, at, keys); err != nil {
		p.log.ErrorContext(ctx, "device code throttle", "error", err)
	}
	c := p.clients[dr.ClientID]
	page.UserCode, page.ClientID = formatUserCode(code), dr.ClientID
	decision := r.PostForm.Get("decision")
	if decision == "" {
		page.Scopes = describeScopes(dr.Scopes)
		p.renderDevice(w, r, http.StatusOK, page)
		return
	}
	if decision == "allow" && !p.satisfies(sess, &authRequest{ClientID: dr.ClientID}) {
		// The user or the client requires a passkey (acr.go), which this
		// session's sign-in was not: the code stays for a better one.
		page.Error = "This needs a sign-in with a passkey. Sign out, sign in with a passkey, and enter the code again."
		p.renderDevice(w, r, http.StatusForbidden, page)
		return
	}
	// The user_code binds once: whoever takes it decides.
	if _, err := p.store.Take(ctx, userCodeKey(code)); err != nil {
		if !errors.Is(err, ErrNotFound) {
			p.log.ErrorContext(ctx, "taking a user code", "error", err)
		}
		page.Error = "That code is wrong, expired or already used. Check the code on your device."
		page.ClientID = ""
		p.renderDevice(w, r, http.StatusOK, page)
		return
	}
	d := deviceDecision{Approved: decision == "allow"}
	if d.Approved {
		d.Subject, d.AuthTime, d.SID, d.AMR, d.ACR = sess.Subject, sess.AuthTime, sess.SID, sess.AMR, sess.ACR
	}
	data, _ := json.Marshal(d)
	ttl := time.Unix(dr.Expires, 0).Add(deviceExpiredGrace).Sub(p.now())
	if err := p.store.Put(ctx, deviceDoneKey(h), data, ttl); err != nil {
		p.log.ErrorContext(ctx, "storing a device decision", "error", err)
		p.renderError(w, r, &pageError{status: http.StatusServiceUnavailable, msg: "Your answer could not be saved. Start over on your device."})
		return
	}
	if !d.Approved {
		p.log.InfoContext(ctx, "device authorization denied", "sub", sess.Subject, "client_id", c.ID)
		p.emitRequest(r, Event{Type: EventDeviceAuthorization, Outcome: OutcomeDenied, Subject: sess.Subject, ClientID: c.ID, SID: sess.SID})
		p.renderMessage(w, r, http.StatusOK, "Access denied", fmt.Sprintf("You denied %s access. You can close this page.", c.ID), true)
		return
	}
	p.log.InfoContext(ctx, "device authorization approved", "sub", sess.Subject, "client_id", c.ID)
	p.emitRequest(r, Event{Type: EventDeviceAuthorization, Outcome: OutcomeGranted, Subject: sess.Subject, ClientID: c.ID, SID: sess.SID})
	p.renderMessage(w, r, http.StatusOK, "Device connected", fmt.Sprintf("%s is signed in as you. You can return to your device and close this page.", c.ID), true)
}

// lookUpUserCode returns the hash of the device_code of a normalized
// user_code and its pending request, or ErrNotFound.
func (p *Provider) lookUpUserCode(r *http.Request, code string) (string, deviceRequest, error) {
	var dr deviceRequest
	h, err := p.store.Get(r.Context(), userCodeKey(code))
	if err != nil {
		return "", dr, err
	}
	data, err := p.store.Get(r.Context(), deviceKey(string(h)))
	if err != nil {
		return "", dr, err
	}
	if json.Unmarshal(data, &dr) != nil || p.clients[dr.ClientID] == nil || p.now().Unix() >= dr.Expires {
		return "", dr, ErrNotFound
	}
	return string(h), dr, nil
}

// describeScopes is the consent pages' list of what scopes give away.
func describeScopes(scopes []string) []scopeItem {
	var out []scopeItem
	for _, s := range scopes {
		d := scopeDescriptions[s]
		if d == "" {
			d = "Access to the API scope " + s
		}
		out = append(out, scopeItem{Name: s, Description: d})
	}
	return out
}

func (p *Provider) renderDevice(w http.ResponseWriter, r *http.Request, status int, page devicePage) {
	page.CSRF = p.csrfToken(w, r)
	p.render(w, r, status, "device.html", page)
}

// deviceReturn is where the login page sends a user who came from the
// device page.
func (p *Provider) deviceReturn(req *authRequest) string {
	u := p.base + PathDevice
	if req.UserCode != "" {
		u += "?" + url.Values{"user_code": {req.UserCode}}.Encode()
	}
	return u
}
