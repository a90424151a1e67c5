package idp

import (
	"context"
	"slices"
	"strings"
)

// Authentication context class references (OpenID Connect Core §2, acr)
// that the provider puts in ID tokens, one per sign-in, computed from its
// amr by [acrFor]. They form a ladder, each satisfying what the ones below
// it ask for (a client's acr_values, a passkey requirement):
//
//	ACRMFA < ACRPhishingResistant < ACRPhishingResistantHardware
//
// phr and phrh are those of OpenID Enhanced Authentication Profile (EAP)
// ACR Values 1.0 §2: a passkey is bound to the provider's origin, so that
// no other site can relay it (phishing-resistant), and one that cannot be
// synced has its key in the authenticator's hardware. A password and a
// one-time code have no registered value: a URN of ours. A password alone
// has no acr (the claim is optional, OpenID Connect Core §2): it is the
// floor, below anything acr_values can ask for.
const (
	ACRMFA                       = "urn:authgate:acr:mfa" // a password and a one-time code
	ACRPhishingResistant         = "phr"                  // a passkey that may be synced
	ACRPhishingResistantHardware = "phrh"                 // a device-bound passkey
)

// acrValuesSupported lists the ACR values in discovery
// (acr_values_supported), lowest first.
var acrValuesSupported = []string{ACRMFA, ACRPhishingResistant, ACRPhishingResistantHardware}

// acrFor returns the acr of a sign-in whose methods are amr: every place
// that writes a login session calls it (newSession), so each sign-in
// method gets the acr its strongest method earns.
//
// A passkey earns phr or phrh only with user verification (amr mfa: the
// authenticator checked a PIN or biometric). Without it, a bare touch,
// it is one factor, something held: ranked above urn:authgate:acr:mfa,
// it would meet a request for two factors with one, so it gets no acr,
// as a password alone.
func acrFor(amr []string) string {
	verified := slices.Contains(amr, AMRMFA)
	switch {
	case verified && slices.Contains(amr, AMRHardware):
		return ACRPhishingResistantHardware
	case verified && slices.Contains(amr, AMRSoftware):
		return ACRPhishingResistant
	case slices.Contains(amr, AMROTP):
		return ACRMFA
	}
	return ""
}

// acrLevel is the rung of an acr on the ladder, 0 for none or unknown.
func acrLevel(acr string) int {
	return slices.Index(acrValuesSupported, acr) + 1
}

// Values of [User.Require] and [Client.Require]: how the user must have
// signed in.
const (
	// RequirePasskey: a passkey (amr hwk or swk), acr phr or above.
	RequirePasskey = "passkey"
	// RequirePasskeyOrOTP: a passkey, or a password and a one-time code
	// (amr otp), acr urn:authgate:acr:mfa or above.
	RequirePasskeyOrOTP = "passkey_or_otp"
)

// requireLevel is the least acr level a [User.Require] or
// [Client.Require] value asks for.
func requireLevel(require string) int {
	switch require {
	case RequirePasskey:
		return acrLevel(ACRPhishingResistant)
	case RequirePasskeyOrOTP:
		return acrLevel(ACRMFA)
	}
	return 0
}

// checkRequire checks a [User.Require] or [Client.Require] value.
func checkRequire(require string) bool {
	return require == "" || require == RequirePasskey || require == RequirePasskeyOrOTP
}

// requestLevel is the least acr level a request asks for with acr_values
// (OpenID Connect Core §3.1.2.1): any one of the values will do, so the
// lowest we know; values we do not know ask for nothing, as acr_values
// is a voluntary claim request.
func requestLevel(acrValues []string) int {
	level := 0
	for _, v := range acrValues {
		if l := acrLevel(v); l > 0 && (level == 0 || l < level) {
			level = l
		}
	}
	return level
}

// neededLevel is the least acr level a sign-in of user for req must
// reach: the most that the user, the client and the request's acr_values
// ask for. user and req may be nil.
func (p *Provider) neededLevel(user *User, req *authRequest) int {
	level := 0
	if user != nil {
		level = requireLevel(user.Require)
	}
	if req != nil {
		if c := p.clients[req.ClientID]; c != nil {
			level = max(level, requireLevel(c.Require))
		}
		level = max(level, requestLevel(req.ACRValues))
	}
	return level
}

// satisfies reports whether session s is good enough for req: else the
// authorization request asks the user to sign in again (step-up).
func (p *Provider) satisfies(s *session, req *authRequest) bool {
	return acrLevel(acrFor(s.AMR)) >= p.neededLevel(p.activeUser(s.Subject), req)
}

// policyRefusal returns what the login page tells a user who signed in
// with amr where more is needed, or "" when the sign-in will do.
//
// One exception: a user who must use a passkey and has none yet may sign
// in with a password on the account pages, to add one; such a session
// still gets no code for any client (satisfies) and approves no device.
// Whoever knows the password first can do that: set require_passkey once
// the user has a passkey, or give them a first sign-in soon.
func (p *Provider) policyRefusal(ctx context.Context, user *User, req *authRequest, amr []string) string {
	need := p.neededLevel(user, req)
	if acrLevel(acrFor(amr)) >= need {
		return ""
	}
	if req != nil && req.Account != "" && p.webauthn != nil {
		if l, _, err := p.loadPasskeys(ctx, passkeyHandle(user.Subject)); err == nil && len(l.Passkeys) == 0 {
			return ""
		}
	}
	if (slices.Contains(amr, AMRHardware) || slices.Contains(amr, AMRSoftware)) && !slices.Contains(amr, AMRMFA) {
		return "This sign-in needs a passkey that checks your PIN, fingerprint or face; this one did not."
	}
	if need <= acrLevel(ACRMFA) {
		return "This sign-in needs a passkey or a one-time code. Use \u201cSign in with a passkey\u201d."
	}
	return "This sign-in needs a passkey. Use \u201cSign in with a passkey\u201d."
}

// policyNotice is what the login page says before a sign-in for req
// that needs more than a password, or "".
func (p *Provider) policyNotice(req *authRequest) string {
	switch need := p.neededLevel(nil, req); {
	case need > acrLevel(ACRMFA):
		return "This application asks you to sign in with a passkey."
	case need > 0:
		return "This application asks you to sign in with a passkey or a one-time code."
	}
	return ""
}

// newSession starts a login session of subject, signed in by amr, with
// the acr that amr earns: every sign-in method writes its session with it.
func (p *Provider) newSession(subject string, amr []string) *session {
	return &session{SID: p.randomString(16), Subject: subject, AuthTime: p.now().Unix(), AMR: amr, ACR: acrFor(amr)}
}

// splitACRValues parses acr_values: space-separated, in order of
// preference (OpenID Connect Core §3.1.2.1).
func splitACRValues(s string) []string {
	return strings.Fields(s)
}
