package idp

import (
	"context"
	"crypto/subtle"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/securecookie"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// Time-based one-time passwords (RFC 6238) as a second factor.
//
// A user has TOTP when the operator gave them a secret ([User.TOTPSecret])
// or when they enrolled one themselves at PathTOTP. Self-enrolled state
// lives in the store under totp/<hash sub>: the secret sealed with the
// provider's cookie keys (encrypted and MAC'd, so that a copy of the store
// alone yields no secret), and the id of the enrolment that its recovery
// codes belong to. Each recovery code is an entry of its own, under the
// digest of the subject and the code, taken once ([Store.Take]).
//
// Codes are RFC 6238's defaults, which every authenticator app reads from
// the otpauth URI: HMAC-SHA1, 6 digits, a 30-second step. A code is
// accepted one step early or late (§5.2 recommends at most one step of
// network delay), and each (user, step) only once: §5.2 forbids accepting
// an OTP a second time once it was accepted. The claim of a step is an
// entry in the store (totpused/<digest of sub and step>), added only if
// absent ([Adder]), so every node sharing the store refuses a code that
// another accepted.

// PathTOTP is the page where a signed-in user enrols TOTP or removes it,
// and PathLoginTOTP the second step of the login page, asking for the
// code.
const (
	PathTOTP      = "/account/totp"
	PathLoginTOTP = "/account/login/totp"
)

const (
	totpPeriod     = 30
	totpSkew       = 1
	totpSecretSize = 20 // bytes: RFC 4226 §4 R6 recommends 160 bits
	totpMinSecret  = 16 // bytes: RFC 4226 §4 R6 requires at least 128 bits

	// totpRecordTTL is how long an enrolment is kept: the store wants a
	// time to live for every entry.
	totpRecordTTL = 10 * 365 * 24 * time.Hour

	// mfaPendingTTL bounds the time between the right password and the
	// code.
	mfaPendingTTL = 5 * time.Minute

	// recoveryCodes is how many recovery codes an enrolment gets.
	recoveryCodes = 10

	mfaCookie      = "authgate_provider_mfa" // binds the pending code step to the browser
	totpSecretName = "authgate_totp_secret"  // securecookie name of a sealed secret at rest
	totpEnrolName  = "authgate_totp_enrol"   // securecookie name of a secret being enrolled
)

// b32 is the base32 of secrets: RFC 4648 without padding, as otpauth URIs
// carry it.
var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// totpOpts are the code parameters: RFC 6238's defaults.
var totpOpts = totp.ValidateOpts{Period: totpPeriod, Skew: totpSkew, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// NormalizeTOTPSecret checks a base32 TOTP secret as an operator or an
// authenticator app writes it (either case, spaces and padding allowed)
// and returns it in canonical form: upper case, no spaces, no padding.
// The error never holds the secret.
func NormalizeTOTPSecret(s string) (string, error) {
	s = strings.ToUpper(strings.TrimRight(strings.Join(strings.Fields(s), ""), "="))
	b, err := b32.DecodeString(s)
	switch {
	case s == "":
		return "", errors.New("is empty")
	case err != nil:
		return "", errors.New("is not base32 (RFC 4648: letters A-Z and digits 2-7)")
	case len(b) < totpMinSecret:
		return "", fmt.Errorf("is %d bits long; RFC 4226 §4 requires at least 128 bits (26 base32 characters)", len(b)*8)
	}
	return s, nil
}

// totpRecord is a self-enrolled TOTP, as the store keeps it.
type totpRecord struct {
	ID      string `json:"id"`     // of this enrolment: its recovery codes name it
	Secret  string `json:"secret"` // sealed with totpSet
	Created int64  `json:"created"`
	// Recovery are the store keys of the recovery codes, for deleting
	// them with the enrolment.
	Recovery []string `json:"recovery"`
}

func totpKey(sub string) string { return "totp/" + hashKey(sub) }

// recoveryKey is the store key of a recovery code of sub: a digest, so
// that the store holds no code.
func recoveryKey(sub, code string) string {
	return "totp-rc/" + hashKey("authgate recovery code\x00"+sub+"\x00"+code)
}

// totpCodecs seals secrets at rest with the cookie keys: the first seals,
// all open. Unlike cookies, a sealed secret does not expire.
func totpCodecs(pairs [][2][]byte) []securecookie.Codec {
	var set []securecookie.Codec
	for _, pair := range pairs {
		sc := securecookie.New(pair[0], pair[1])
		sc.MaxAge(0)
		sc.SetSerializer(securecookie.JSONEncoder{})
		set = append(set, sc)
	}
	return set
}

// totpState is how a user signs in with TOTP: no TOTP (secret ""), an
// operator's secret (rec nil), or a self-enrolled one.
type totpState struct {
	secret string
	rec    *totpRecord
}

func (s totpState) enabled() bool { return s.secret != "" }

// operator says whether the secret is the operator's, which the user
// cannot remove.
func (s totpState) operator() bool { return s.secret != "" && s.rec == nil }

// totpFor returns u's TOTP state. A store error is returned: a user whose
// second factor cannot be looked up must not sign in with one factor.
func (p *Provider) totpFor(ctx context.Context, u *User) (totpState, error) {
	if u.TOTPSecret != "" {
		return totpState{secret: u.TOTPSecret}, nil
	}
	data, err := p.store.Get(ctx, totpKey(u.Subject))
	if errors.Is(err, ErrNotFound) {
		return totpState{}, nil
	}
	if err != nil {
		return totpState{}, fmt.Errorf("idp: reading the TOTP enrolment: %w", err)
	}
	var rec totpRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return totpState{}, fmt.Errorf("idp: reading the TOTP enrolment: %w", err)
	}
	var secret string
	if err := securecookie.DecodeMulti(totpSecretName, rec.Secret, &secret, p.totpSet...); err != nil || secret == "" {
		// The cookie keys that sealed it are gone: the user cannot
		// sign in until an operator deletes the enrolment.
		return totpState{}, errors.New("idp: the TOTP enrolment's secret cannot be opened with the current cookie keys")
	}
	return totpState{secret: secret, rec: &rec}, nil
}

// matchTOTP returns the time step whose code is code, or -1 when code is
// none of the steps around now.
func (p *Provider) matchTOTP(secret, code string) int64 {
	if len(code) != int(totpOpts.Digits) {
		return -1
	}
	now := p.now().Unix() / totpPeriod
	found := int64(-1)
	for step := now - totpSkew; step <= now+totpSkew; step++ {
		want, err := totp.GenerateCodeCustom(secret, time.Unix(step*totpPeriod, 0), totpOpts)
		// Every step is compared, in constant time, whatever matched.
		if err == nil && subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			found = step
		}
	}
	return found
}

// totpUsedTTL is how long the record of a used code is kept: the code of
// step s is accepted until step s+totpSkew ends, at most
// (2*totpSkew+1) periods after it was first accepted, and one period more
// covers nodes whose clocks differ.
const totpUsedTTL = time.Duration(2*totpSkew+2) * totpPeriod * time.Second

// totpUsedKey is the store key recording that sub's code of step was
// accepted: a digest, so that the store holds neither subject nor step.
func totpUsedKey(sub string, step int64) string {
	return "totpused/" + hashKey("authgate totp step\x00"+sub+"\x00"+strconv.FormatInt(step, 10))
}

// claimStep marks the code of sub's time step as used, and reports
// false if it already was (RFC 6238 §5.2). With an [Adder] store, the
// claim is an entry added to the store: of the nodes that share it, one
// alone accepts the code. A store without Adder leaves it to the login
// throttle's atomic check-and-count (a key with no free attempt, whose
// first count makes every later one wait until the code has left the
// accepted window), which is one-time only as far as the throttle store
// is shared.
func (p *Provider) claimStep(ctx context.Context, sub string, step int64) (bool, error) {
	if a, ok := p.store.(Adder); ok {
		return a.Add(ctx, totpUsedKey(sub, step), []byte{1}, totpUsedTTL)
	}
	key := ThrottleKey{Key: "totp-step:" + hashKey(sub) + ":" + strconv.FormatInt(step, 10), Limit: ThrottleLimit{Free: 0, Base: totpUsedTTL, Max: totpUsedTTL}}
	wait, err := p.throttle.Reserve(ctx, p.now(), []ThrottleKey{key})
	if err != nil {
		return false, err
	}
	return wait <= 0, nil
}

// normalizeRecovery is a recovery code as typed, in the form it was
// hashed in: lower case, without dashes and spaces.
func normalizeRecovery(code string) string {
	code = strings.ToLower(code)
	return strings.Map(func(r rune) rune {
		if r == '-' || r == ' ' {
			return -1
		}
		return r
	}, code)
}

// takeRecovery spends a recovery code of the enrolment rec, and reports
// whether it was one.
func (p *Provider) takeRecovery(ctx context.Context, sub string, rec *totpRecord, code string) (bool, error) {
	code = normalizeRecovery(code)
	if rec == nil || len(code) != 12 {
		return false, nil
	}
	v, err := p.store.Take(ctx, recoveryKey(sub, code))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return string(v) == rec.ID, nil
}

// newRecoveryCodes returns n fresh recovery codes, as shown (xxxx-xxxx-xxxx,
// 60 bits each).
func (p *Provider) newRecoveryCodes(n int) []string {
	codes := make([]string, n)
	for i := range codes {
		b := make([]byte, 8)
		if _, err := p.random.Read(b); err != nil {
			panic("idp: reading randomness: " + err.Error())
		}
		s := strings.ToLower(b32.EncodeToString(b))[:12]
		codes[i] = s[:4] + "-" + s[4:8] + "-" + s[8:]
	}
	return codes
}

// verifySecondFactor checks a code sent for user u of state st: a TOTP
// code (spent: its step is claimed) or a recovery code (spent: taken).
// It returns the outcome, for the audit log, and the method.
func (p *Provider) verifySecondFactor(ctx context.Context, u *User, st totpState, code string) (outcome, method string, err error) {
	code = strings.TrimSpace(code)
	if digits := strings.ReplaceAll(code, " ", ""); len(digits) == int(totpOpts.Digits) && strings.Trim(digits, "0123456789") == "" {
		step := p.matchTOTP(st.secret, digits)
		if step < 0 {
			return OutcomeInvalid, "totp", nil
		}
		ok, err := p.claimStep(ctx, u.Subject, step)
		switch {
		case err != nil:
			return "", "totp", err
		case !ok:
			return OutcomeReplayed, "totp", nil
		}
		return OutcomeSuccess, "totp", nil
	}
	ok, err := p.takeRecovery(ctx, u.Subject, st.rec, code)
	switch {
	case err != nil:
		return "", "recovery_code", err
	case !ok:
		return OutcomeInvalid, "recovery_code", nil
	}
	return OutcomeSuccess, "recovery_code", nil
}
