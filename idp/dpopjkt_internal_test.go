package idp

import (
	"crypto/sha256"
	"encoding/base64"
	"testing"
)

// FuzzValidJKT: validJKT accepts exactly the canonical unpadded base64url
// spellings of 32 bytes.
func FuzzValidJKT(f *testing.F) {
	sum := sha256.Sum256([]byte("key"))
	good := base64.RawURLEncoding.EncodeToString(sum[:])
	for _, s := range []string{good, good + "=", good[:42] + "B", good[:20] + "\n" + good[21:], "", "+/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := base64.RawURLEncoding.DecodeString(s)
		want := err == nil && len(b) == 32 && base64.RawURLEncoding.EncodeToString(b) == s
		if got := validJKT(s); got != want {
			t.Errorf("validJKT(%q) = %v, want %v", s, got, want)
		}
	})
}
