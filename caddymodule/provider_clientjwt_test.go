package caddymodule

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/authgate/authgate/idp"
)

// TestProviderPrivateKeyJWTStores: a private_key_jwt client whose keys
// are in a jwks file gets a token through the module on each kind of
// store Caddy builds (their wrappers keep idp.Adder), and a replay of its
// assertion is refused.
func TestProviderPrivateKeyJWTStores(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1"}}})
	for _, tc := range []struct {
		name  string
		store *StateStore
	}{
		{"bolt", nil},
		{"storage", &StateStore{Storage: &StorageStateStore{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "svc.json")
			if err := os.WriteFile(file, set, 0o600); err != nil {
				t.Fatal(err)
			}
			const issuer = "https://login.example.com"
			p := testProvider(issuer)
			p.Store = tc.store
			p.APIScopes = []string{"api"}
			p.Clients = append(p.Clients, ProviderClient{ID: "svc", JWKSFile: file, ClientCredentials: true, Scopes: []string{"api"}})
			provision(t, newTestContext(t, dir), p)

			signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
			now := time.Now()
			a, err := jwt.Signed(signer).Claims(jwt.Claims{
				Issuer: "svc", Subject: "svc", Audience: jwt.Audience{issuer + idp.PathToken},
				Expiry: jwt.NewNumericDate(now.Add(time.Minute)), ID: rand.Text(),
			}).Serialize()
			if err != nil {
				t.Fatal(err)
			}
			form := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {idp.ClientAssertionType}, "client_assertion": {a}}
			for i, want := range []int{http.StatusOK, http.StatusUnauthorized} {
				req := httptest.NewRequest(http.MethodPost, issuer+idp.PathToken, strings.NewReader(form.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				w := httptest.NewRecorder()
				if err := p.ServeHTTP(w, req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })); err != nil {
					t.Fatal(err)
				}
				if w.Code != want {
					t.Fatalf("request %d: status %d, want %d: %s", i+1, w.Code, want, w.Body)
				}
			}
		})
	}
}
