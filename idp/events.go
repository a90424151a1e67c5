package idp

import (
	"context"
	"net/http"
)

// Event types: what an [Event] reports. Each names its outcomes.
const (
	// EventLogin is a password check at the login page or in the password
	// grant, or a passkey sign-in (Reason "passkey"). Outcome: [OutcomeSuccess], [OutcomeInvalid] (a wrong
	// password, or a username nobody has), [OutcomeDisabled] (the right
	// password of a disabled user) or [OutcomeThrottled] (not checked:
	// too many failures).
	EventLogin = "login"

	// EventSecondFactor is a code checked at the login page's second step
	// or to remove TOTP. Outcome: [OutcomeSuccess], [OutcomeInvalid],
	// [OutcomeReplayed] (a TOTP code already used) or [OutcomeThrottled];
	// Reason says which code: "totp" or "recovery_code".
	EventSecondFactor = "second_factor"

	// EventTOTP is a change of a user's self-enrolled TOTP: Outcome
	// [OutcomeEnrolled] or [OutcomeRemoved].
	EventTOTP = "totp"

	// EventConsent is the user's answer on the consent page. Outcome:
	// [OutcomeGranted] or [OutcomeDenied].
	EventConsent = "consent"

	// EventDeviceAuthorization is the user's answer on the device page
	// (RFC 8628 §3.3): [OutcomeGranted] or [OutcomeDenied], with the
	// client; or a user_code not found ([OutcomeInvalid]) or not checked
	// ([OutcomeThrottled]: too many wrong ones).
	EventDeviceAuthorization = "device_authorization"

	// EventTokenIssued is a successful token response. GrantType says
	// which grant.
	EventTokenIssued = "token_issued"

	// EventRefresh is the use of a refresh token. Outcome:
	// [OutcomeRotated], [OutcomeKept] (a client whose tokens are reused),
	// [OutcomeGrace] (a rotated-out token within the grace period),
	// [OutcomeReuseDetected] (a rotated-out token again: its family and
	// session are revoked), [OutcomeExpired], [OutcomeRevoked],
	// [OutcomeInvalid] (unknown), [OutcomeWrongClient] (presented by
	// another client: its family is revoked) or [OutcomeDisabled] (its
	// user is disabled or gone).
	EventRefresh = "refresh"

	// EventTokenError is an error answer of the token endpoint. Error is
	// its OAuth error code; ClientID the client_id the request named,
	// authenticated or not. A device flow's authorization_pending and
	// slow_down are no error events: they answer every poll.
	EventTokenError = "token_error"

	// EventCodeReplay is an authorization code presented again: the
	// tokens it issued are revoked (RFC 6749 §4.1.2).
	EventCodeReplay = "code_replay"

	// EventTokenRevoked is a token revoked at the revocation endpoint.
	// Reason is "refresh_token" or "access_token".
	EventTokenRevoked = "token_revoked"

	// EventLogout is a provider session ended. Reason: [ReasonRPInitiated]
	// (the end session endpoint), [ReasonAccount] (the provider's own
	// sign-out page) or [ReasonUserDisabled] (at start, for a disabled
	// user; Sessions and Families say how many).
	EventLogout = "logout"

	// EventAdmin is an action of the admin API. Outcome is the action:
	// [ActionEndUserSessions] or [ActionRevokeClientTokens]; Sessions and
	// Families say how many it ended and revoked, Reason the error, if
	// any.
	EventAdmin = "admin"

	// EventBackchannel is an attempt to deliver a back-channel logout
	// token. Outcome: [OutcomeDelivered], [OutcomeRefused] (the client
	// answered 4xx: not retried), [OutcomeRetrying] or [OutcomeGivenUp].
	// Attempt counts from 1; Reason holds the HTTP status or the error.
	EventBackchannel = "backchannel_logout"
)

// Outcomes, reasons and actions of [Event].
const (
	OutcomeSuccess       = "success"
	OutcomeInvalid       = "invalid"
	OutcomeDisabled      = "disabled"
	OutcomeThrottled     = "throttled"
	OutcomeReplayed      = "replayed"
	OutcomeEnrolled      = "enrolled"
	OutcomeRemoved       = "removed"
	OutcomeGranted       = "granted"
	OutcomeDenied        = "denied"
	OutcomeRotated       = "rotated"
	OutcomeKept          = "kept"
	OutcomeGrace         = "grace"
	OutcomeReuseDetected = "reuse_detected"
	OutcomeExpired       = "expired"
	OutcomeRevoked       = "revoked"
	OutcomeWrongClient   = "wrong_client"
	OutcomeDelivered     = "delivered"
	OutcomeRefused       = "refused"
	OutcomeRetrying      = "retrying"
	OutcomeGivenUp       = "given_up"

	ReasonRPInitiated  = "rp_initiated"
	ReasonAccount      = "account"
	ReasonUserDisabled = "user_disabled"

	ActionEndUserSessions    = "end_user_sessions"
	ActionRevokeClientTokens = "revoke_client_tokens"
)

// Event is a security event of the provider, for an audit log and for
// counters ([Config.Events]). It never holds a password, secret, code,
// token or cookie value: a field that a client sent (Username, ClientID,
// UserAgent) is cut to a bounded length, and it is the only part of the
// request an event repeats.
type Event struct {
	Type    string // one of the Event* constants
	Outcome string // by Type; empty where the type has none

	Username  string // as typed at login (not a secret)
	Subject   string // sub
	ClientID  string
	SID       string // the provider session's sid, as in ID and logout tokens
	GrantType string
	Error     string // OAuth error code
	Reason    string // by Type; never a secret

	RemoteIP  string // the client IP, as [Config.ClientIP] tells it
	UserAgent string

	Sessions int // sessions ended (EventAdmin, EventLogout)
	Families int // refresh token families revoked (EventAdmin, EventLogout)
	Attempt  int // back-channel delivery attempt, from 1
}

// emit hands e to the configured event hook, if any.
func (p *Provider) emit(ctx context.Context, e Event) {
	if p.events != nil {
		p.events(ctx, e)
	}
}

// emitRequest hands e to the event hook with the client IP and user agent
// of r.
func (p *Provider) emitRequest(r *http.Request, e Event) {
	if p.events == nil {
		return
	}
	e.RemoteIP = p.clientIP(r)
	e.UserAgent = truncate(r.UserAgent(), 256)
	p.events(r.Context(), e)
}
