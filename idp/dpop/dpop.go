// Package dpop checks DPoP proofs (RFC 9449): the JWTs a client signs
// with a key of its own and sends in the DPoP header, so that a token
// bound to that key is good only in the hands of whoever holds it. The
// provider checks them at its token and userinfo endpoints, the gateway
// at the APIs it guards; both use [Verify].
//
// [Verify] checks one proof against the request it came with (RFC 9449
// §4.3). What needs state is the caller's: that no proof is used twice
// (its [Proof.ReplayKey], remembered for [MaxReplayWindow]), and, for a
// server that hands out nonces, which nonces are current.
package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Names RFC 9449 defines.
const (
	// Header is the request header that carries a proof (§4.1).
	Header = "DPoP"
	// NonceHeader is the response header that carries a server's nonce
	// (§8).
	NonceHeader = "DPoP-Nonce"
	// Scheme is the Authorization scheme of a DPoP-bound access token
	// (§7.1), and the token_type of the token response (§5).
	Scheme = "DPoP"
	// JWTType is the typ of a proof (§4.2).
	JWTType = "dpop+jwt"

	// ErrCodeInvalidProof is the OAuth error of a bad proof (§5, §7.1).
	ErrCodeInvalidProof = "invalid_dpop_proof"
	// ErrCodeUseNonce is the OAuth error asking the client to sign
	// again with the nonce of the DPoP-Nonce header (§8, §9).
	ErrCodeUseNonce = "use_dpop_nonce"
)

// DefaultWindow is how far a proof's iat may lie from now, either way,
// when [Check.Window] is zero: proofs are made for one request and sent at
// once, and a minute allows for clocks that are a little off.
const DefaultWindow = time.Minute

// MaxReplayWindow is how long a proof's [Proof.ReplayKey] must be kept,
// for a window w: a proof is accepted while now is within w of its iat,
// which is 2w long.
func MaxReplayWindow(w time.Duration) time.Duration { return 2 * w }

// maxProofBytes bounds a proof before anything is parsed: a P-256 proof
// is some 600 bytes, an RSA 4096 one some 1600.
const maxProofBytes = 8 << 10

// maxJTI bounds the jti: ours are kept in stores and memory.
const maxJTI = 256

// RSA moduli outside this range are refused: smaller ones are weak, larger
// ones only cost the verifier time.
const minRSABits, maxRSABits = 2048, 8192

// Algorithms are the asymmetric signature algorithms proofs may use, the
// value of dpop_signing_alg_values_supported (§5.1). "none" and the MAC
// algorithms are not among them (§4.3 rule 5).
var Algorithms = []jose.SignatureAlgorithm{
	jose.ES256, jose.ES384, jose.ES512,
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.EdDSA,
}

// AlgorithmNames returns [Algorithms] as strings.
func AlgorithmNames() []string {
	out := make([]string, len(Algorithms))
	for i, a := range Algorithms {
		out[i] = string(a)
	}
	return out
}

// ErrInvalidProof is wrapped by every error of [Verify] and [FromHeader]
// but those wrapping [ErrUseNonce]: the client sent a bad proof, which
// the answer names invalid_dpop_proof.
var ErrInvalidProof = errors.New("dpop: invalid proof")

// ErrUseNonce is wrapped by the error of a proof without the nonce the
// server requires, or with one it no longer accepts: the answer names
// use_dpop_nonce and carries a fresh nonce.
var ErrUseNonce = errors.New("dpop: proof needs a fresh nonce")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidProof, fmt.Sprintf(format, args...))
}

// FromHeader returns the request's proof: "" if it has none, an error
// wrapping [ErrInvalidProof] if it has more than one (§4.3 rule 1) or an
// empty one.
func FromHeader(h http.Header) (string, error) {
	vals := h.Values(Header)
	switch {
	case len(vals) == 0:
		return "", nil
	case len(vals) > 1 || strings.Contains(vals[0], ","):
		return "", invalid("more than one DPoP header")
	case strings.TrimSpace(vals[0]) == "":
		return "", invalid("empty DPoP header")
	}
	return strings.TrimSpace(vals[0]), nil
}

// Check is the request a proof must match.
type Check struct {
	// Method is the request's method, which htm must equal.
	Method string
	// URL is the request's target URI as this server is addressed (its
	// query and fragment are ignored), which htu must equal after the
	// normalizations of RFC 3986 §6.2.2 and §6.2.3 (§4.3 rule 9).
	URL *url.URL
	// AccessToken, at a protected resource, is the token the proof came
	// with: ath must be its hash (§4.3 rule 12). Empty at the token
	// endpoint, where ath is not checked.
	AccessToken string
	// Now is the current time.
	Now time.Time
	// Window is how far iat may lie from Now, either way. Default:
	// [DefaultWindow].
	Window time.Duration
	// Nonce, if set, is the server's nonce check (§8, §9): a proof
	// whose nonce it refuses, or that has none, fails with
	// [ErrUseNonce]. Nil: nonces are not required (and one sent is
	// ignored).
	Nonce func(nonce string) bool
}

// Proof is what a valid proof says.
type Proof struct {
	// JKT is the JWK SHA-256 thumbprint of its key (RFC 7638),
	// base64url: the cnf.jkt of the tokens bound to it (§6.1).
	JKT string
	// ID is its jti.
	ID string
	// IssuedAt is its iat.
	IssuedAt time.Time
	// Key is its public key.
	Key *jose.JSONWebKey
}

// ReplayKey is what a server remembers to refuse the proof a second time
// (§11.1): its key and jti, hashed to a fixed length of hex digits, so it
// fits any store's keys.
func (p *Proof) ReplayKey() string {
	sum := sha256.Sum256([]byte(p.JKT + "\x00" + p.ID))
	return hex.EncodeToString(sum[:])
}

// claims are a proof's payload (§4.2).
type claims struct {
	JTI   string   `json:"jti"`
	HTM   string   `json:"htm"`
	HTU   string   `json:"htu"`
	IAT   *float64 `json:"iat"`
	ATH   string   `json:"ath"`
	Nonce *string  `json:"nonce"`
}

// Verify checks raw, a proof from the DPoP header, against c: the rules of
// RFC 9449 §4.3 but the replay of its jti, which needs the caller's
// memory. Every error wraps [ErrInvalidProof] or [ErrUseNonce].
func Verify(raw string, c Check) (*Proof, error) {
	if len(raw) > maxProofBytes {
		return nil, invalid("proof longer than %d bytes", maxProofBytes)
	}
	// §4.3 rule 2: one well-formed JWS in compact form; only the
	// algorithms we accept (rule 5) are parsed at all.
	jws, err := jose.ParseSignedCompact(raw, Algorithms)
	if err != nil {
		return nil, invalid("parsing proof: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, invalid("proof has %d signatures", len(jws.Signatures))
	}
	h := jws.Signatures[0].Protected
	// Rule 4: typ dpop+jwt (a media type, so without regard to case).
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, JWTType) {
		return nil, invalid("typ %q is not %s", typ, JWTType)
	}
	// Rule 7: the key is in the header, and public.
	jwk := h.JSONWebKey
	if jwk == nil {
		return nil, invalid("no jwk in the header")
	}
	if !jwk.IsPublic() || !jwk.Valid() {
		return nil, invalid("jwk is not a valid public key")
	}
	if err := checkKey(jwk.Key, jose.SignatureAlgorithm(h.Algorithm)); err != nil {
		return nil, err
	}
	// Rule 6: the signature, by that key.
	payload, err := jws.Verify(jwk)
	if err != nil {
		return nil, invalid("signature: %v", err)
	}
	var cl claims
	if err := json.Unmarshal(payload, &cl); err != nil {
		return nil, invalid("payload is not a JSON object of the proof's claims")
	}
	// Rule 3: the claims are there.
	switch {
	case cl.JTI == "" || cl.HTM == "" || cl.HTU == "" || cl.IAT == nil:
		return nil, invalid("jti, htm, htu and iat are required")
	case len(cl.JTI) > maxJTI:
		return nil, invalid("jti longer than %d bytes", maxJTI)
	case math.IsNaN(*cl.IAT) || math.IsInf(*cl.IAT, 0):
		return nil, invalid("iat is not a time")
	}
	// Rule 8: htm.
	if cl.HTM != c.Method {
		return nil, invalid("htm %q is not the request's method", cl.HTM)
	}
	// Rule 9: htu, normalized, against the request without its query.
	if !sameURI(cl.HTU, c.URL) {
		return nil, invalid("htu is not the request's URI")
	}
	// Rule 11: iat within the window.
	w := c.Window
	if w <= 0 {
		w = DefaultWindow
	}
	if *cl.IAT < 0 || *cl.IAT > float64(math.MaxInt64/int64(time.Second)) {
		return nil, invalid("iat is not a time")
	}
	iat := time.Unix(0, int64(*cl.IAT*float64(time.Second)))
	if iat.Before(c.Now.Add(-w)) || iat.After(c.Now.Add(w)) {
		return nil, invalid("iat is not within %v of now", w)
	}
	// Rule 12: at a resource, ath is the hash of the token it came with.
	if c.AccessToken != "" {
		sum := sha256.Sum256([]byte(c.AccessToken))
		want := base64.RawURLEncoding.EncodeToString(sum[:])
		if subtle.ConstantTimeCompare([]byte(cl.ATH), []byte(want)) != 1 {
			return nil, invalid("ath is not the hash of the access token")
		}
	}
	// Rule 10: the server's nonce, when it requires one. Last, so that a
	// client told to use a nonce has nothing else to fix.
	if c.Nonce != nil {
		if cl.Nonce == nil || *cl.Nonce == "" {
			return nil, fmt.Errorf("%w: the proof has no nonce", ErrUseNonce)
		}
		if !c.Nonce(*cl.Nonce) {
			return nil, fmt.Errorf("%w: the proof's nonce is not current", ErrUseNonce)
		}
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, invalid("thumbprint: %v", err)
	}
	pub := *jwk
	return &Proof{JKT: base64.RawURLEncoding.EncodeToString(tp), ID: cl.JTI, IssuedAt: iat, Key: &pub}, nil
}

// checkKey refuses keys that do not fit alg, and RSA keys of a size we do
// not verify.
func checkKey(key any, alg jose.SignatureAlgorithm) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if !strings.HasPrefix(string(alg), "RS") && !strings.HasPrefix(string(alg), "PS") {
			return invalid("an RSA key cannot sign %s", alg)
		}
		if n := k.N.BitLen(); n < minRSABits || n > maxRSABits {
			return invalid("RSA key of %d bits", n)
		}
	case *ecdsa.PublicKey:
		if !strings.HasPrefix(string(alg), "ES") {
			return invalid("an EC key cannot sign %s", alg)
		}
	case ed25519.PublicKey:
		if alg != jose.EdDSA {
			return invalid("an OKP key cannot sign %s", alg)
		}
	default:
		return invalid("unsupported key type %T", key)
	}
	return nil
}

// sameURI compares htu with the request's URI as RFC 9449 §4.3 rule 9
// says: without query and fragment, after syntax-based and scheme-based
// normalization (RFC 3986 §6.2.2, §6.2.3). An htu that is not an
// absolute http(s) URI, or that has a query or fragment (§4.2 says it has
// none), matches nothing.
func sameURI(htu string, req *url.URL) bool {
	if req == nil {
		return false
	}
	u, err := url.Parse(htu)
	if err != nil || u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(htu, "?#") {
		return false
	}
	a, ok := normalize(u)
	if !ok {
		return false
	}
	r := *req
	r.RawQuery, r.ForceQuery, r.Fragment, r.RawFragment, r.User = "", false, "", "", nil
	b, ok := normalize(&r)
	return ok && a == b
}

// normalize returns scheme://host[:port]/path of u normalized: scheme and
// host lower case, the scheme's default port dropped, an empty path "/",
// percent-encodings upper case and those of unreserved characters
// decoded, dot segments removed.
func normalize(u *url.URL) (string, bool) {
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" || u.Host == "" {
		return "", false
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	p, ok := normalizePath(u.EscapedPath())
	if !ok {
		return "", false
	}
	return scheme + "://" + host + removeDotSegments(p), true
}

// normalizePath upper-cases percent-encodings and decodes those of
// unreserved characters (RFC 3986 §6.2.2.1, §6.2.2.2).
func normalizePath(p string) (string, bool) {
	if p == "" {
		return "/", true
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			b.WriteByte(p[i])
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			return "", false
		}
		c := unhex(p[i+1])<<4 | unhex(p[i+2])
		if isUnreserved(c) {
			b.WriteByte(c)
		} else {
			b.WriteString(strings.ToUpper(p[i : i+3]))
		}
		i += 2
	}
	return b.String(), true
}

// removeDotSegments is RFC 3986 §5.2.4 for an absolute path.
func removeDotSegments(p string) string {
	var out []string
	segs := strings.Split(p, "/")[1:]
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// AccessTokenHash is the ath of a proof sent with token (§4.2).
func AccessTokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Challenge is the WWW-Authenticate value of a DPoP error at a protected
// resource (§7.1): the algorithms accepted, and the error if there is one
// (none when the request carried no token). description must be
// quoted-string safe.
func Challenge(realm, errCode, description string) string {
	s := "DPoP"
	sep := " "
	if realm != "" {
		s += sep + `realm="` + realm + `"`
		sep = ", "
	}
	if errCode != "" {
		s += sep + `error="` + errCode + `"`
		sep = ", "
		if description != "" {
			s += sep + `error_description="` + description + `"`
		}
	}
	return s + sep + `algs="` + strings.Join(AlgorithmNames(), " ") + `"`
}
