package idp_test

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/authgate/authgate/idp"
)

// TestParsedRSAKeySignsAsCheaply: a key read back from its stored JWK
// signs with no more work than the key as generated. crypto/rsa checks a
// key and precomputes its CRT values once, in Precompute; a key that was
// not precomputed (go-jose's JWK decoding sets only the big.Int fields)
// is checked and precomputed again at every signature, about a tenth of
// an RS256 signature's cost. Allocations show the difference without a
// clock.
func TestParsedRSAKeySignsAsCheaply(t *testing.T) {
	generated, err := idp.GenerateKey(idp.RS256)
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := idp.MarshalKey(generated)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := idp.ParseKey(jwk)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("claims"))
	allocs := func(k idp.SigningKey) float64 {
		return testing.AllocsPerRun(20, func() {
			if _, err := k.Key.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
				t.Fatal(err)
			}
		})
	}
	want, got := allocs(generated), allocs(parsed)
	if got > want {
		t.Fatalf("a parsed key's signature allocates %v times, the generated key's %v: the parsed key is precomputed at every signature", got, want)
	}
}
