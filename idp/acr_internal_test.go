package idp

import (
	"strings"
	"testing"

	"github.com/go-webauthn/webauthn/protocol"
)

func TestACRFor(t *testing.T) {
	for _, tc := range []struct {
		name string
		amr  []string
		want string
	}{
		{"password", []string{AMRPassword}, ""},
		{"password and code", []string{AMRPassword, AMROTP}, ACRMFA},
		{"device-bound passkey", []string{AMRHardware, AMRMFA}, ACRPhishingResistantHardware},
		// Without user verification a passkey is one factor, something
		// held: no acr above a password's, lest it pass for mfa.
		{"device-bound passkey without user verification", []string{AMRHardware}, ""},
		{"synced passkey", []string{AMRSoftware, AMRMFA}, ACRPhishingResistant},
		{"synced passkey without user verification", []string{AMRSoftware}, ""},
		{"none", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := acrFor(tc.amr); got != tc.want {
				t.Errorf("acrFor(%v) = %q, want %q", tc.amr, got, tc.want)
			}
		})
	}
}

func TestPasskeyAMR(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags protocol.AuthenticatorFlags
		want  string
	}{
		{"device-bound, verified", protocol.FlagUserPresent | protocol.FlagUserVerified, "[hwk mfa]"},
		{"device-bound, presence only", protocol.FlagUserPresent, "[hwk]"},
		{"synced, verified", protocol.FlagUserPresent | protocol.FlagUserVerified | protocol.FlagBackupEligible | protocol.FlagBackupState, "[swk mfa]"},
		{"backup eligible, not yet backed up", protocol.FlagUserPresent | protocol.FlagBackupEligible, "[swk]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fmtList(passkeyAMR(tc.flags)); got != tc.want {
				t.Errorf("passkeyAMR = %s, want %s", got, tc.want)
			}
		})
	}
}

func fmtList(l []string) string {
	s := "["
	for i, v := range l {
		if i > 0 {
			s += " "
		}
		s += v
	}
	return s + "]"
}

func TestRequestLevel(t *testing.T) {
	for _, tc := range []struct {
		values []string
		want   int
	}{
		{nil, 0},
		{[]string{"urn:example:unknown"}, 0},
		{[]string{"phrh"}, 3},
		{[]string{"phrh", "phr"}, 2}, // either will do: the lower
		{[]string{"urn:example:unknown", ACRMFA}, 1},
	} {
		if got := requestLevel(tc.values); got != tc.want {
			t.Errorf("requestLevel(%v) = %d, want %d", tc.values, got, tc.want)
		}
	}
}

func FuzzPasskeyName(f *testing.F) {
	for _, s := range []string{"laptop", "", " \t", "a\x00b", "ключ", string(make([]byte, 300))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, problem := passkeyName(s)
		if problem != "" {
			return
		}
		if name == "" || len([]rune(name)) > maxPasskeyName {
			t.Fatalf("passkeyName(%q) = %q accepted", s, name)
		}
		for _, r := range name {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("passkeyName(%q) = %q has a control character", s, name)
			}
		}
	})
}

// TestPolicyRefusalUnverifiedPasskey: a passkey without user
// verification meets no requirement of two factors, and the refusal
// says why.
func TestPolicyRefusalUnverifiedPasskey(t *testing.T) {
	p := &Provider{}
	u := &User{Subject: "s", Require: RequirePasskeyOrOTP}
	for _, amr := range [][]string{{AMRHardware}, {AMRSoftware}} {
		if msg := p.policyRefusal(t.Context(), u, nil, amr); msg == "" || !strings.Contains(msg, "PIN") {
			t.Errorf("amr %v for a passkey_or_otp user: refusal %q", amr, msg)
		}
	}
	if msg := p.policyRefusal(t.Context(), u, nil, []string{AMRHardware, AMRMFA}); msg != "" {
		t.Errorf("a verified passkey refused: %q", msg)
	}
}
