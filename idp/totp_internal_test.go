package idp

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
)

// FuzzSecondFactorCode: whatever is typed at the code step, it signs in
// only when it is the current code (digits, spaces around or within
// ignored) or one of the enrolment's recovery codes (any case, dashes and
// spaces ignored), and it never panics.
func FuzzSecondFactorCode(f *testing.F) {
	const secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	now := time.Unix(1_800_000_000, 0)
	rs, err := rsaKey()
	if err != nil {
		f.Fatal(err)
	}
	p, err := New(Config{
		Issuer:     "https://login.example.com",
		Keys:       []SigningKey{rs},
		CookieKeys: [][2][]byte{{bytes.Repeat([]byte("h"), 32), bytes.Repeat([]byte("b"), 32)}},
		Now:        func() time.Time { return now },
	}, NewMemoryStore(func() time.Time { return now }))
	if err != nil {
		f.Fatal(err)
	}
	u := &User{Username: "alice", Subject: "sub-alice"}
	codes, err := p.enrolTOTP(context.Background(), u, secret)
	if err != nil {
		f.Fatal(err)
	}
	st, err := p.totpFor(context.Background(), u)
	if err != nil || st.rec == nil || st.secret != secret {
		f.Fatalf("enrolment not read back: %v", err)
	}
	current, _ := totp.GenerateCode(secret, now)
	valid := map[string]bool{}
	for _, d := range []time.Duration{-totpPeriod * time.Second, 0, totpPeriod * time.Second} {
		c, _ := totp.GenerateCode(secret, now.Add(d))
		valid[c] = true
	}
	for _, s := range []string{current, " " + current[:3] + " " + current[3:] + " ", codes[0], strings.ToUpper(codes[1]), "000000", "", "----", "１２３４５６"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, code string) {
		outcome, _, err := p.verifySecondFactor(context.Background(), u, st, code)
		if err != nil {
			t.Fatalf("verifySecondFactor(%q): %v", code, err)
		}
		if outcome != OutcomeSuccess {
			return
		}
		digits := strings.ReplaceAll(strings.TrimSpace(code), " ", "")
		recovery := false
		for _, c := range codes {
			recovery = recovery || normalizeRecovery(strings.TrimSpace(code)) == normalizeRecovery(c)
		}
		if !valid[digits] && !recovery {
			t.Fatalf("%q signed in", code)
		}
	})
}
