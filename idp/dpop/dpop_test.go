package dpop_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/authgate/authgate/idp/dpop"
)

var now = time.Unix(1_800_000_000, 0)

type proofOpts struct {
	alg     jose.SignatureAlgorithm
	key     any // private key
	typ     string
	noJWK   bool
	jwk     *jose.JSONWebKey // a header jwk other than the signing key's public one
	claims  map[string]any
	drop    string // a claim to leave out
	payload []byte // raw payload instead of claims
}

func makeProof(t testing.TB, o proofOpts) string {
	t.Helper()
	if o.key == nil {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		o.key, o.alg = k, jose.ES256
	}
	if o.typ == "" {
		o.typ = dpop.JWTType
	}
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(o.typ))
	if !o.noJWK {
		jwk := o.jwk
		if jwk == nil {
			jwk = &jose.JSONWebKey{Key: publicOf(o.key)}
		}
		opts = opts.WithHeader("jwk", jwk)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: o.alg, Key: o.key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload := o.payload
	if payload == nil {
		c := map[string]any{"jti": "j1", "htm": "POST", "htu": "https://idp.example/connect/token", "iat": now.Unix()}
		for k, v := range o.claims {
			c[k] = v
		}
		delete(c, o.drop)
		payload, _ = json.Marshal(c)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func publicOf(k any) any {
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return &k.PublicKey
	case *rsa.PrivateKey:
		return &k.PublicKey
	case ed25519.PrivateKey:
		return k.Public()
	}
	return k
}

func tokenCheck() dpop.Check {
	u, _ := url.Parse("https://idp.example/connect/token")
	return dpop.Check{Method: "POST", URL: u, Now: now}
}

func TestVerify(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	smallRSA, _ := rsa.GenerateKey(rand.Reader, 1024)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const token = "the.access.token"
	resource := func(c *dpop.Check) {
		c.Method = "GET"
		c.URL, _ = url.Parse("https://api.example/items?page=2")
		c.AccessToken = token
	}
	resourceClaims := map[string]any{"htm": "GET", "htu": "https://api.example/items", "ath": dpop.AccessTokenHash(token)}
	tests := []struct {
		name    string
		opts    proofOpts
		raw     string // instead of opts
		check   func(*dpop.Check)
		wantErr error
	}{
		{name: "valid ES256", opts: proofOpts{key: ec, alg: jose.ES256}},
		{name: "valid RS256", opts: proofOpts{key: rsaKey, alg: jose.RS256}},
		{name: "valid PS256", opts: proofOpts{key: rsaKey, alg: jose.PS256}},
		{name: "valid EdDSA", opts: proofOpts{key: edKey, alg: jose.EdDSA}},
		{name: "valid at a resource, query ignored", opts: proofOpts{claims: resourceClaims}, check: resource},
		{name: "htu normalized: case, default port, dot segments, encoding", opts: proofOpts{claims: map[string]any{"htu": "HTTPS://IDP.example:443/connect/./x/../%74oken"}}},
		{name: "iat at the window's edge", opts: proofOpts{claims: map[string]any{"iat": now.Add(-time.Minute).Unix()}}},
		{name: "nonce accepted", opts: proofOpts{claims: map[string]any{"nonce": "n1"}}, check: func(c *dpop.Check) { c.Nonce = func(n string) bool { return n == "n1" } }},

		// §4.3 rule 2: one well-formed JWT.
		{name: "not a JWT", raw: "abc", wantErr: dpop.ErrInvalidProof},
		{name: "JSON serialization", raw: `{"payload":"e30","signatures":[]}`, wantErr: dpop.ErrInvalidProof},
		{name: "too long", raw: strings.Repeat("a", 9000), wantErr: dpop.ErrInvalidProof},
		{name: "payload not JSON", opts: proofOpts{payload: []byte("nope")}, wantErr: dpop.ErrInvalidProof},
		// Rule 3: required claims.
		{name: "no jti", opts: proofOpts{drop: "jti"}, wantErr: dpop.ErrInvalidProof},
		{name: "no htm", opts: proofOpts{drop: "htm"}, wantErr: dpop.ErrInvalidProof},
		{name: "no htu", opts: proofOpts{drop: "htu"}, wantErr: dpop.ErrInvalidProof},
		{name: "no iat", opts: proofOpts{drop: "iat"}, wantErr: dpop.ErrInvalidProof},
		{name: "iat a string", opts: proofOpts{claims: map[string]any{"iat": "1800000000"}}, wantErr: dpop.ErrInvalidProof},
		{name: "jti too long", opts: proofOpts{claims: map[string]any{"jti": strings.Repeat("j", 300)}}, wantErr: dpop.ErrInvalidProof},
		// Rule 4: typ.
		{name: "typ JWT", opts: proofOpts{typ: "JWT"}, wantErr: dpop.ErrInvalidProof},
		{name: "typ at+jwt", opts: proofOpts{typ: "at+jwt"}, wantErr: dpop.ErrInvalidProof},
		// Rule 5: asymmetric, supported algorithms only.
		{name: "HS256", opts: proofOpts{key: []byte("0123456789abcdef0123456789abcdef"), alg: jose.HS256, noJWK: true}, wantErr: dpop.ErrInvalidProof},
		{name: "alg none", raw: "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6Im5vbmUifQ.eyJqdGkiOiJqMSJ9.", wantErr: dpop.ErrInvalidProof},
		{name: "RSA key too small", opts: proofOpts{key: smallRSA, alg: jose.RS256}, wantErr: dpop.ErrInvalidProof},
		// Rule 6: signature by the header's key.
		{name: "signed by another key", opts: proofOpts{key: ec, alg: jose.ES256, jwk: &jose.JSONWebKey{Key: &other.PublicKey}}, wantErr: dpop.ErrInvalidProof},
		{name: "signature altered", raw: alter(makeProof(t, proofOpts{key: ec, alg: jose.ES256})), wantErr: dpop.ErrInvalidProof},
		// Rule 7: a public jwk in the header.
		{name: "no jwk", opts: proofOpts{noJWK: true}, wantErr: dpop.ErrInvalidProof},
		{name: "private jwk", opts: proofOpts{key: ec, alg: jose.ES256, jwk: &jose.JSONWebKey{Key: ec}}, wantErr: dpop.ErrInvalidProof},
		// Rule 8: htm.
		{name: "htm GET for POST", opts: proofOpts{claims: map[string]any{"htm": "GET"}}, wantErr: dpop.ErrInvalidProof},
		{name: "htm lower case", opts: proofOpts{claims: map[string]any{"htm": "post"}}, wantErr: dpop.ErrInvalidProof},
		// Rule 9: htu.
		{name: "htu another path", opts: proofOpts{claims: map[string]any{"htu": "https://idp.example/connect/userinfo"}}, wantErr: dpop.ErrInvalidProof},
		{name: "htu another host", opts: proofOpts{claims: map[string]any{"htu": "https://evil.example/connect/token"}}, wantErr: dpop.ErrInvalidProof},
		{name: "htu http for https", opts: proofOpts{claims: map[string]any{"htu": "http://idp.example/connect/token"}}, wantErr: dpop.ErrInvalidProof},
		{name: "htu another port", opts: proofOpts{claims: map[string]any{"htu": "https://idp.example:8443/connect/token"}}, wantErr: dpop.ErrInvalidProof},
		{name: "htu with a query", opts: proofOpts{claims: map[string]any{"htu": "https://idp.example/connect/token?x=1"}}, wantErr: dpop.ErrInvalidProof},
		{name: "htu with a fragment", opts: proofOpts{claims: map[string]any{"htu": "https://idp.example/connect/token#x"}}, wantErr: dpop.ErrInvalidProof},
		{name: "htu relative", opts: proofOpts{claims: map[string]any{"htu": "/connect/token"}}, wantErr: dpop.ErrInvalidProof},
		{name: "htu encoded slash", opts: proofOpts{claims: map[string]any{"htu": "https://idp.example/connect%2Ftoken"}}, wantErr: dpop.ErrInvalidProof},
		// Rule 10: nonce.
		{name: "nonce required, none", check: func(c *dpop.Check) { c.Nonce = func(string) bool { return true } }, wantErr: dpop.ErrUseNonce},
		{name: "nonce stale", opts: proofOpts{claims: map[string]any{"nonce": "old"}}, check: func(c *dpop.Check) { c.Nonce = func(n string) bool { return n == "n1" } }, wantErr: dpop.ErrUseNonce},
		// Rule 11: iat.
		{name: "iat too old", opts: proofOpts{claims: map[string]any{"iat": now.Add(-61 * time.Second).Unix()}}, wantErr: dpop.ErrInvalidProof},
		{name: "iat in the future", opts: proofOpts{claims: map[string]any{"iat": now.Add(61 * time.Second).Unix()}}, wantErr: dpop.ErrInvalidProof},
		{name: "iat negative", opts: proofOpts{claims: map[string]any{"iat": -5}}, wantErr: dpop.ErrInvalidProof},
		{name: "iat huge", opts: proofOpts{claims: map[string]any{"iat": 1e300}}, wantErr: dpop.ErrInvalidProof},
		// Rule 12: ath at a resource.
		{name: "no ath at a resource", opts: proofOpts{claims: map[string]any{"htm": "GET", "htu": "https://api.example/items"}}, check: resource, wantErr: dpop.ErrInvalidProof},
		{name: "ath of another token", opts: proofOpts{claims: map[string]any{"htm": "GET", "htu": "https://api.example/items", "ath": dpop.AccessTokenHash("other")}}, check: resource, wantErr: dpop.ErrInvalidProof},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.raw
			if raw == "" {
				raw = makeProof(t, tt.opts)
			}
			c := tokenCheck()
			if tt.check != nil {
				tt.check(&c)
			}
			p, err := dpop.Verify(raw, c)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if len(p.JKT) != 43 || p.ID == "" || len(p.ReplayKey()) != 64 {
					t.Errorf("proof %+v", p)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == dpop.ErrUseNonce && errors.Is(err, dpop.ErrInvalidProof) {
				t.Error("a nonce error is also an invalid proof")
			}
		})
	}
}

// alter flips a character of the signature.
func alter(jws string) string {
	b := []byte(jws)
	i := len(b) - 5
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestThumbprint(t *testing.T) {
	// RFC 7638 §3.1's example key and thumbprint.
	var jwk jose.JSONWebKey
	if err := json.Unmarshal([]byte(`{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}`), &jwk); err != nil {
		t.Fatal(err)
	}
	tp, err := jwk.Thumbprint(cryptoSHA256)
	if err != nil || b64(tp) != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" {
		t.Fatalf("thumbprint %s, %v", b64(tp), err)
	}
	// Verify computes the thumbprint of the proof's key the same way.
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p, err := dpop.Verify(makeProof(t, proofOpts{key: k, alg: jose.ES256}), tokenCheck())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := (&jose.JSONWebKey{Key: &k.PublicKey}).Thumbprint(cryptoSHA256)
	if p.JKT != b64(want) {
		t.Errorf("JKT %s, want %s", p.JKT, b64(want))
	}
}

func TestFromHeader(t *testing.T) {
	tests := []struct {
		name    string
		vals    []string
		want    string
		wantErr bool
	}{
		{name: "none"},
		{name: "one", vals: []string{"a.b.c"}, want: "a.b.c"},
		{name: "two headers", vals: []string{"a.b.c", "d.e.f"}, wantErr: true},
		{name: "two in one", vals: []string{"a.b.c, d.e.f"}, wantErr: true},
		{name: "empty", vals: []string{" "}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.vals {
				h.Add("DPoP", v)
			}
			got, err := dpop.FromHeader(h)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("FromHeader = %q, %v", got, err)
			}
			if err != nil && !errors.Is(err, dpop.ErrInvalidProof) {
				t.Errorf("error %v does not wrap ErrInvalidProof", err)
			}
		})
	}
}

func TestChallenge(t *testing.T) {
	got := dpop.Challenge("api.example", "invalid_token", "bad")
	if !strings.HasPrefix(got, `DPoP realm="api.example", error="invalid_token", error_description="bad", algs="ES256 `) {
		t.Errorf("Challenge = %s", got)
	}
	if got := dpop.Challenge("", "", ""); !strings.HasPrefix(got, `DPoP algs="`) {
		t.Errorf("bare Challenge = %s", got)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add(makeProof(f, proofOpts{}))
	f.Add(makeProof(f, proofOpts{claims: map[string]any{"nonce": "n1", "ath": "x"}}))
	f.Add("eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6Im5vbmUifQ.eyJqdGkiOiJqMSJ9.")
	f.Fuzz(func(t *testing.T, raw string) {
		c := tokenCheck()
		c.Nonce = func(n string) bool { return n == "n1" }
		p, err := dpop.Verify(raw, c)
		if err == nil && (p.JKT == "" || p.ID == "") {
			t.Fatalf("accepted without a key or jti: %+v", p)
		}
		if err != nil && !errors.Is(err, dpop.ErrInvalidProof) && !errors.Is(err, dpop.ErrUseNonce) {
			t.Fatalf("error of no kind: %v", err)
		}
	})
}

func BenchmarkVerifyES256(b *testing.B) {
	raw := makeProof(b, proofOpts{})
	c := tokenCheck()
	for b.Loop() {
		if _, err := dpop.Verify(raw, c); err != nil {
			b.Fatal(err)
		}
	}
}
