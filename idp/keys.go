package idp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// Signing algorithms the provider supports.
const (
	RS256 = "RS256"
	ES256 = "ES256"
)

// GenerateKey makes a new signing key for alg (RS256: RSA 2048; ES256:
// P-256), with a kid derived from its public key (RFC 7638 thumbprint).
func GenerateKey(alg string) (SigningKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case RS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return SigningKey{}, fmt.Errorf("idp: generating key: unsupported algorithm %q", alg)
	}
	if err != nil {
		return SigningKey{}, fmt.Errorf("idp: generating %s key: %w", alg, err)
	}
	kid, err := thumbprint(priv.Public())
	if err != nil {
		return SigningKey{}, err
	}
	return SigningKey{ID: kid, Alg: alg, Key: priv}, nil
}

func thumbprint(pub crypto.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("idp: key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// MarshalKey encodes a signing key, private part included, as a JWK, for
// keeping in storage.
func MarshalKey(k SigningKey) ([]byte, error) {
	return json.Marshal(jose.JSONWebKey{Key: k.Key, KeyID: k.ID, Algorithm: k.Alg, Use: "sig"})
}

// ParseKey decodes a JWK written by [MarshalKey].
func ParseKey(data []byte) (SigningKey, error) {
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(data, &jwk); err != nil {
		return SigningKey{}, fmt.Errorf("idp: parsing key: %w", err)
	}
	signer, ok := jwk.Key.(crypto.Signer)
	if !ok || jwk.IsPublic() {
		return SigningKey{}, fmt.Errorf("idp: parsing key %q: not a private key", jwk.KeyID)
	}
	k := SigningKey{ID: jwk.KeyID, Alg: jwk.Algorithm, Key: signer}
	if err := k.check(); err != nil {
		return SigningKey{}, err
	}
	precompute(k.Key)
	return k, nil
}

// precompute has crypto/rsa check an RSA key and compute its CRT values
// once, now: go-jose's JWK decoding fills in the fields but leaves that
// undone, and crypto/rsa then does it again at every signature, about a
// tenth of an RS256 signature's cost. x509's parsers and rsa.GenerateKey
// have done it already; doing it twice costs a comparison.
func precompute(key crypto.Signer) {
	if rk, ok := key.(*rsa.PrivateKey); ok {
		rk.Precompute()
	}
}

// NewSigningKey wraps a private key read from elsewhere (a PEM file, say):
// alg follows from the key type, and the kid is its thumbprint.
func NewSigningKey(priv crypto.Signer) (SigningKey, error) {
	k := SigningKey{Key: priv}
	switch key := priv.(type) {
	case *rsa.PrivateKey:
		k.Alg = RS256
	case *ecdsa.PrivateKey:
		if key.Curve != elliptic.P256() {
			return SigningKey{}, fmt.Errorf("idp: ECDSA key on %s: only P-256 (ES256) is supported", key.Curve.Params().Name)
		}
		k.Alg = ES256
	default:
		return SigningKey{}, fmt.Errorf("idp: unsupported key type %T", priv)
	}
	kid, err := thumbprint(priv.Public())
	if err != nil {
		return SigningKey{}, err
	}
	k.ID = kid
	if err := k.check(); err != nil {
		return SigningKey{}, err
	}
	precompute(k.Key)
	return k, nil
}

func (k SigningKey) check() error {
	if k.ID == "" {
		return fmt.Errorf("idp: signing key without an id")
	}
	switch key := k.Key.(type) {
	case *rsa.PrivateKey:
		if k.Alg != RS256 {
			return fmt.Errorf("idp: key %q: RSA key with algorithm %q", k.ID, k.Alg)
		}
		if key.N.BitLen() < 2048 {
			return fmt.Errorf("idp: key %q: RSA key of %d bits, at least 2048 required", k.ID, key.N.BitLen())
		}
	case *ecdsa.PrivateKey:
		if k.Alg != ES256 || key.Curve != elliptic.P256() {
			return fmt.Errorf("idp: key %q: ECDSA key needs algorithm ES256 on P-256", k.ID)
		}
	default:
		return fmt.Errorf("idp: key %q: unsupported key type %T", k.ID, k.Key)
	}
	return nil
}

// leftHalfHash is the at_hash construction (OpenID Connect Core §3.1.3.6):
// the left half of the SHA-256 of the token, base64url. Both RS256 and ES256
// use SHA-256.
func leftHalfHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
}
