package idp

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// benchProvider is a provider with one user and one client whose tokens are
// signed with alg.
func benchProvider(b *testing.B, alg string) *Provider {
	b.Helper()
	rs, err := GenerateKey(RS256)
	if err != nil {
		b.Fatal(err)
	}
	es, err := GenerateKey(ES256)
	if err != nil {
		b.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	p, err := New(Config{
		Issuer:         "https://op.example",
		Clients:        []Client{{ID: "app", Secret: "app-secret", RedirectURIs: []string{"https://app.example/cb"}, IDTokenAlg: alg}},
		Users:          []User{{Username: "alice", PasswordHash: string(hash), Claims: map[string]any{"name": "Alice Smith", "email": "alice@example.com"}}},
		Keys:           []SigningKey{rs, es},
		AccessTokenAlg: alg,
		CookieKeys:     [][2][]byte{{make([]byte, 32), make([]byte, 32)}},
	}, NewMemoryStore(nil))
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkCodeExchange measures the token endpoint redeeming a code, end
// to end through ServeHTTP, and reports it against its own signing floor
// (signing the same access and ID token alone) measured in the same run:
// x-signing is exchange time / signing time.
func BenchmarkCodeExchange(b *testing.B) {
	for _, alg := range []string{RS256, ES256} {
		b.Run(alg, func(b *testing.B) {
			p := benchProvider(b, alg)
			verifier := strings.Repeat("v", 43)
			sum := sha256.Sum256([]byte(verifier))
			grant := codeGrant{
				ClientID: "app", RedirectURI: "https://app.example/cb", Scopes: []string{"openid", "profile", "email"},
				Nonce: "n", Challenge: base64RawURL(sum[:]), Method: "S256",
				Subject: DeriveSubject("alice"), AuthTime: time.Now().Unix(), SID: "sid",
				Expires: time.Now().Add(time.Hour).Unix(),
			}
			data, _ := json.Marshal(grant)
			codes := make([]string, b.N)
			for i := range codes {
				codes[i] = p.randomString(32)
				p.store.Put(context.Background(), codeKey(codes[i]), data, time.Hour)
			}
			bodies := make([]string, b.N)
			for i, code := range codes {
				bodies[i] = url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"https://app.example/cb"}, "code_verifier": {verifier}}.Encode()
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				r := httptest.NewRequest(http.MethodPost, "/connect/token", strings.NewReader(bodies[i]))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r.SetBasicAuth("app", "app-secret")
				w := httptest.NewRecorder()
				p.ServeHTTP(w, r)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
			exchange := time.Since(start)
			b.StopTimer()
			c, u := p.clients["app"], p.users().bySubject[DeriveSubject("alice")]
			start = time.Now()
			for range b.N {
				if _, _, err := p.issueTokens(c, u, grant.Scopes, grant.Nonce, grant.signIn(), ""); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(exchange)/float64(time.Since(start)), "x-signing")
		})
	}
}

// BenchmarkSign measures signing one ID token: the floor under every token
// response.
func BenchmarkSign(b *testing.B) {
	for _, alg := range []string{RS256, ES256} {
		b.Run(alg, func(b *testing.B) {
			p := benchProvider(b, alg)
			claims := map[string]any{"iss": p.issuer, "sub": "s", "aud": "app", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := sign(p.keys.Load().signers[alg], claims); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
