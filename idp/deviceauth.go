package idp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The device authorization grant (RFC 8628), for command-line tools and
// TVs: the device asks for a pair of codes at PathDeviceAuthorization,
// shows the user_code, and polls the token endpoint with the device_code
// while the user, signed in at PathDevice in any browser, enters the
// user_code and approves.
//
// State, in the Store, under the hash of the device_code:
//   - device/<h>: the request (client, scopes, expiry), kept
//     deviceExpiredGrace past its expiry so that a late poll learns
//     expired_token rather than invalid_grant;
//   - devuser/<hash of the user_code>: <h>, taken when the user decides,
//     so that a user_code is bound once;
//   - devpoll/<h>: the last poll and the interval, for slow_down;
//   - devdone/<h>: the user's decision, taken by the one poll that gets
//     the tokens.

// GrantTypeDeviceCode is the grant_type of the device access token
// request (RFC 8628 §3.4).
const GrantTypeDeviceCode = "urn:ietf:params:oauth:grant-type:device_code"

// Error codes of the device access token response (RFC 8628 §3.5).
const (
	ErrAuthorizationPending = "authorization_pending"
	ErrSlowDown             = "slow_down"
	ErrExpiredToken         = "expired_token"
)

// userCodeAlphabet are the characters of a user_code: consonants only, so
// that no word is spelled and none is mistaken for a digit or another
// letter (no vowels, no Y; RFC 8628 §6.1). 8 of them are about 34.6 bits;
// the throttle on the user page keeps a guesser far from that.
const userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"

const userCodeLength = 8

// deviceExpiredGrace is how long an expired device_code is remembered.
const deviceExpiredGrace = 10 * time.Minute

// pollTolerance is how much earlier than its interval a poll may arrive
// without slow_down: the client's clock and the network are not exact.
const pollTolerance = 500 * time.Millisecond

// deviceRequest is a pending device authorization.
type deviceRequest struct {
	ClientID string   `json:"client_id"`
	Scopes   []string `json:"scopes"`
	UserCode string   `json:"user_code"` // normalized, for the hash of devuser/
	Expires  int64    `json:"exp"`
}

// devicePoll is the pacing of a device_code's polls.
type devicePoll struct {
	Last     int64 `json:"last"` // unix milliseconds
	Interval int64 `json:"interval"`
}

// deviceDecision is the user's answer for a device_code.
type deviceDecision struct {
	Approved bool     `json:"approved"`
	Subject  string   `json:"sub,omitempty"`
	AuthTime int64    `json:"auth_time,omitempty"`
	SID      string   `json:"sid,omitempty"`
	AMR      []string `json:"amr,omitempty"`
	ACR      string   `json:"acr,omitempty"`
}

// deviceAuthResponse is the device authorization response of RFC 8628
// §3.2.
type deviceAuthResponse struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int64  `json:"expires_in"`
	Interval                int64  `json:"interval"`
}

func deviceKey(h string) string     { return "device/" + h }
func devicePollKey(h string) string { return "devpoll/" + h }
func deviceDoneKey(h string) string { return "devdone/" + h }
func userCodeKey(code string) string {
	return "devuser/" + hashKey(code)
}

// normalizeUserCode returns what the user typed as a user_code: upper
// case, without dashes and spaces; or "" if it cannot be one.
func normalizeUserCode(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '-' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, strings.ToUpper(s))
	if len(s) != userCodeLength {
		return ""
	}
	for _, c := range []byte(s) {
		if strings.IndexByte(userCodeAlphabet, c) < 0 {
			return ""
		}
	}
	return s
}

// formatUserCode shows a normalized user_code as XXXX-XXXX.
func formatUserCode(s string) string { return s[:4] + "-" + s[4:] }

// newUserCode draws a user_code uniformly from the alphabet.
func (p *Provider) newUserCode() string {
	out := make([]byte, 0, userCodeLength)
	buf := make([]byte, 16)
	n := len(userCodeAlphabet)
	limit := 256 - 256%n // rejection sampling: no bias toward early letters
	for len(out) < userCodeLength {
		if _, err := io.ReadFull(p.random, buf); err != nil {
			panic("idp: reading randomness: " + err.Error())
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < userCodeLength {
				out = append(out, userCodeAlphabet[int(b)%n])
			}
		}
	}
	return string(out)
}

// serveDeviceAuthorization is the device authorization endpoint (RFC 8628
// §3.1): client authentication as at the token endpoint, scopes as at
// authorize.
func (p *Provider) serveDeviceAuthorization(w http.ResponseWriter, r *http.Request) {
	treq, oe := p.readBackChannel(w, r)
	if oe != nil {
		return
	}
	c, oe := p.authenticateClient(treq)
	if oe != nil {
		p.tokenError(w, r, oe)
		return
	}
	if !c.AllowDeviceFlow {
		p.tokenError(w, r, oauthErr(ErrUnauthorizedClient, "the client may not use the device authorization grant"))
		return
	}
	if len(treq.form["scope"]) > 1 {
		p.tokenError(w, r, oauthErr(ErrInvalidRequest, "parameter scope is given more than once"))
		return
	}
	scopes, err := p.checkScopes(c, treq.get("scope"))
	if err != nil {
		p.tokenError(w, r, err.(*Error))
		return
	}
	now := p.now()
	deviceCode := p.randomString(32)
	h := hashKey(deviceCode)
	userCode := p.newUserCode()
	dr := deviceRequest{ClientID: c.ID, Scopes: scopes, UserCode: userCode, Expires: now.Add(p.deviceTTL).Unix()}
	data, _ := json.Marshal(dr)
	err = putAll(r.Context(), p.store,
		Entry{Key: deviceKey(h), Value: data, TTL: p.deviceTTL + deviceExpiredGrace},
		Entry{Key: userCodeKey(userCode), Value: []byte(h), TTL: p.deviceTTL})
	if err != nil {
		p.tokenError(w, r, unavailable("the device authorization could not be stored", err))
		return
	}
	p.log.InfoContext(r.Context(), "device authorization started", "client_id", c.ID, "scope", strings.Join(scopes, " "))
	verify := p.url(PathDevice)
	writeJSON(w, http.StatusOK, deviceAuthResponse{
		DeviceCode:              deviceCode,
		UserCode:                formatUserCode(userCode),
		VerificationURI:         verify,
		VerificationURIComplete: verify + "?" + url.Values{"user_code": {formatUserCode(userCode)}}.Encode(),
		ExpiresIn:               int64(p.deviceTTL / time.Second),
		Interval:                int64(p.deviceInterval / time.Second),
	})
}

// deviceToken is the device access token request (RFC 8628 §3.4, §3.5).
func (p *Provider) deviceToken(r *http.Request, c *client, t *tokenRequest) (*tokenResponse, *Error) {
	if !c.AllowDeviceFlow {
		return nil, oauthErr(ErrUnauthorizedClient, "the client may not use the device authorization grant")
	}
	code := t.get("device_code")
	if code == "" {
		return nil, oauthErr(ErrInvalidRequest, "device_code is required")
	}
	ctx := r.Context()
	h := hashKey(code)
	data, err := p.store.Get(ctx, deviceKey(h))
	if errors.Is(err, ErrNotFound) {
		return nil, oauthErr(ErrInvalidGrant, "the device_code is invalid, expired or already used")
	}
	if err != nil {
		return nil, unavailable("the device_code could not be checked", err)
	}
	var dr deviceRequest
	if err := json.Unmarshal(data, &dr); err != nil {
		return nil, &Error{Code: ErrServerError, Description: "the device_code could not be read", Cause: err}
	}
	now := p.now()
	switch {
	case dr.ClientID != c.ID:
		return nil, &Error{Code: ErrInvalidGrant, Description: "the device_code was issued to another client", Cause: fmt.Errorf("client %q presented a device_code of client %q", c.ID, dr.ClientID)}
	case now.Unix() >= dr.Expires:
		return nil, oauthErr(ErrExpiredToken, "the device_code has expired; start over")
	}
	if oe := p.pacePoll(ctx, h, dr, now); oe != nil {
		return nil, oe
	}
	data, err = p.store.Get(ctx, deviceDoneKey(h))
	if errors.Is(err, ErrNotFound) {
		return nil, oauthErr(ErrAuthorizationPending, "the user has not answered yet")
	}
	if err != nil {
		return nil, unavailable("the device_code could not be checked", err)
	}
	var d deviceDecision
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, &Error{Code: ErrServerError, Description: "the device_code could not be read", Cause: err}
	}
	if !d.Approved {
		return nil, oauthErr(ErrAccessDenied, "the user denied the request")
	}
	// Only the poll that takes the decision gets tokens: of two at once,
	// the other finds nothing.
	if _, err := p.store.Take(ctx, deviceDoneKey(h)); errors.Is(err, ErrNotFound) {
		return nil, oauthErr(ErrInvalidGrant, "the device_code is invalid, expired or already used")
	} else if err != nil {
		return nil, unavailable("the device_code could not be checked", err)
	}
	putBack := func() {
		ttl := time.Unix(dr.Expires, 0).Add(deviceExpiredGrace).Sub(p.now())
		if ttl <= 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		if err := p.store.Put(ctx, deviceDoneKey(h), data, ttl); err != nil {
			p.log.ErrorContext(ctx, "putting back a device decision after a failed exchange: the device must start over", "client_id", c.ID, "error", err)
		}
	}
	user := p.activeUser(d.Subject)
	if user == nil {
		return nil, oauthErr(ErrInvalidGrant, "the user no longer exists or is disabled")
	}
	var family string
	if slices.Contains(dr.Scopes, scopeOfflineAccess) {
		family = p.randomString(16)
	}
	resp, _, ierr := p.issueTokens(c, user, dr.Scopes, "", d.signIn(), family)
	if ierr != nil {
		putBack()
		return nil, &Error{Code: ErrServerError, Description: "tokens could not be issued", Cause: ierr}
	}
	if family != "" {
		if resp.RefreshToken, ierr = p.startFamily(ctx, c, family, user.Subject, dr.Scopes, d.signIn()); ierr != nil {
			putBack()
			return nil, unavailable("the refresh token could not be stored", ierr)
		}
		p.recordFamily(ctx, c, d.SID, user.Subject, d.AuthTime, heldFamily{Family: family, End: now.Add(c.AbsoluteRefreshTokenLifetime).Unix()})
	}
	// The request is spent: later polls get invalid_grant.
	for _, k := range []string{deviceKey(h), devicePollKey(h)} {
		if err := p.store.Delete(ctx, k); err != nil {
			p.log.ErrorContext(ctx, "deleting a used device_code", "error", err)
		}
	}
	p.log.InfoContext(ctx, "token issued", "client_id", c.ID, "sub", user.Subject, "grant_type", GrantTypeDeviceCode, "scope", resp.Scope)
	p.emitRequest(r, Event{Type: EventTokenIssued, Subject: user.Subject, ClientID: c.ID, GrantType: GrantTypeDeviceCode, SID: d.SID})
	return resp, nil
}

// pacePoll records a poll and answers slow_down to one that comes sooner
// than the interval after the last, increasing the interval by 5 seconds
// for this and every later poll (RFC 8628 §3.5). Two polls at the same
// instant may both pass: pacing needs no atomicity, the one-time use of
// the decision has it.
func (p *Provider) pacePoll(ctx context.Context, h string, dr deviceRequest, now time.Time) *Error {
	st := devicePoll{Interval: int64(p.deviceInterval / time.Second)}
	data, err := p.store.Get(ctx, devicePollKey(h))
	switch {
	case err == nil:
		_ = json.Unmarshal(data, &st)
	case !errors.Is(err, ErrNotFound):
		return unavailable("the device_code could not be checked", err)
	}
	var oe *Error
	if st.Last != 0 && now.Sub(time.UnixMilli(st.Last)) < time.Duration(st.Interval)*time.Second-pollTolerance {
		st.Interval += 5
		oe = oauthErr(ErrSlowDown, "poll every "+strconv.FormatInt(st.Interval, 10)+" s")
	}
	st.Last = now.UnixMilli()
	data, _ = json.Marshal(st)
	ttl := time.Unix(dr.Expires, 0).Add(deviceExpiredGrace).Sub(now)
	if err := p.store.Put(ctx, devicePollKey(h), data, ttl); err != nil {
		return unavailable("the device_code could not be checked", err)
	}
	return oe
}
