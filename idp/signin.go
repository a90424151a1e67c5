package idp

// Authentication method references (RFC 8176) that the provider puts in
// ID tokens' amr claim.
const (
	AMRPassword = "pwd" // a password
	AMROTP      = "otp" // a one-time code (TOTP, recovery code)
	AMRHardware = "hwk" // a hardware-bound key (a passkey that is not synced)
	AMRSoftware = "swk" // a software key (a synced passkey)
	AMRMFA      = "mfa" // more than one factor
)

// signIn is how and when a user signed in: what a login session passes to
// the codes, refresh token families and device grants made from it, and
// they to every token they yield (auth_time, sid, amr, acr).
type signIn struct {
	Time int64
	SID  string
	AMR  []string
	ACR  string
}

func (g *codeGrant) signIn() signIn {
	return signIn{Time: g.AuthTime, SID: g.SID, AMR: g.AMR, ACR: g.ACR}
}

func (g *refreshGrant) signIn() signIn {
	return signIn{Time: g.AuthTime, SID: g.SID, AMR: g.AMR, ACR: g.ACR}
}

func (d *deviceDecision) signIn() signIn {
	return signIn{Time: d.AuthTime, SID: d.SID, AMR: d.AMR, ACR: d.ACR}
}
