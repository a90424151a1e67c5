package idp_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/authgate/authgate/idp"
)

var (
	clientKeysOnce sync.Once
	clientRSA      *rsa.PrivateKey
	clientEC       *ecdsa.PrivateKey
	clientEd       ed25519.PrivateKey
	otherEC        *ecdsa.PrivateKey
)

func clientSigners(t testing.TB) {
	t.Helper()
	clientKeysOnce.Do(func() {
		var err error
		if clientRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		clientEC, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		otherEC, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, clientEd, _ = ed25519.GenerateKey(rand.Reader)
	})
}

// clientJWKS is the public JWK Set of the client's three keys.
func clientJWKS(t testing.TB) []byte {
	t.Helper()
	clientSigners(t)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: clientRSA.Public(), KeyID: "rsa", Use: "sig"},
		{Key: clientEC.Public(), KeyID: "ec", Algorithm: "ES256"},
		{Key: clientEd.Public(), KeyID: "ed"},
	}}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signAssertion signs claims with key under alg and the given header
// fields.
func signAssertion(t testing.TB, key crypto.Signer, alg jose.SignatureAlgorithm, kid string, claims map[string]any, extra map[jose.HeaderKey]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), kid)
	}
	for k, v := range extra {
		opts = opts.WithHeader(k, v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
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

func assertionClaims(ts *testServer, clientID string) map[string]any {
	now := ts.clock.Now()
	return map[string]any{
		"iss": clientID, "sub": clientID, "aud": ts.URL,
		"iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
		"jti": rand.Text(),
	}
}

func keyClient(edit func(*idp.Client)) func(*idp.Config) {
	return func(cfg *idp.Config) {
		c := idp.Client{ID: "svc", AllowClientCredentials: true, AllowedScopes: []string{"api"}}
		if edit != nil {
			edit(&c)
		}
		cfg.Clients = append(cfg.Clients, c)
	}
}

func postAssertion(t testing.TB, ts *testServer, path string, form url.Values, assertion string) (*http.Response, string) {
	t.Helper()
	form.Set("client_assertion_type", idp.ClientAssertionType)
	form.Set("client_assertion", assertion)
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, ts.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readBody(t, resp)
}

func ccForm() url.Values { return url.Values{"grant_type": {"client_credentials"}, "scope": {"api"}} }

func TestPrivateKeyJWT(t *testing.T) {
	clientSigners(t)
	jwks := clientJWKS(t)
	ts := newServer(t, keyClient(func(c *idp.Client) { c.JWKS = jwks }))
	ok := func(ts *testServer) map[string]any { return assertionClaims(ts, "svc") }
	with := func(name string, v any) func(map[string]any) {
		return func(c map[string]any) {
			if v == nil {
				delete(c, name)
			} else {
				c[name] = v
			}
		}
	}
	now := ts.clock.Now()
	tests := []struct {
		name   string
		key    crypto.Signer
		alg    jose.SignatureAlgorithm
		kid    string
		edit   func(map[string]any)
		header map[jose.HeaderKey]any
		want   int
	}{
		{name: "RS256", key: clientRSA, alg: jose.RS256, kid: "rsa", want: 200},
		{name: "PS256", key: clientRSA, alg: jose.PS256, kid: "rsa", want: 200},
		{name: "ES256", key: clientEC, alg: jose.ES256, kid: "ec", want: 200},
		{name: "EdDSA", key: clientEd, alg: jose.EdDSA, kid: "ed", want: 200},
		{name: "no kid", key: clientEC, alg: jose.ES256, want: 200},
		{name: "aud token endpoint", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("aud", ts.URL+"/connect/token"), want: 200},
		{name: "aud one-element array", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("aud", []string{ts.URL}), want: 200},
		{name: "explicit typ", key: clientEC, alg: jose.ES256, kid: "ec", header: map[jose.HeaderKey]any{"typ": "client-authentication+jwt"}, want: 200},
		{name: "exp at the limit", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("exp", now.Add(10*time.Minute).Unix()), want: 200},

		{name: "bad signature", key: otherEC, alg: jose.ES256, kid: "ec", want: 401},
		{name: "bad signature, no kid", key: otherEC, alg: jose.ES256, want: 401},
		{name: "unknown kid", key: clientEC, alg: jose.ES256, kid: "nope", want: 401},
		{name: "alg not the key's", key: clientRSA, alg: jose.RS384, kid: "ec", want: 401},
		{name: "wrong iss", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("iss", "demo-app"), want: 401},
		{name: "wrong sub", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("sub", "demo-app"), want: 401},
		{name: "no iss", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("iss", nil), want: 401},
		{name: "wrong aud", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("aud", "https://other.example"), want: 401},
		{name: "revocation endpoint aud", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("aud", ts.URL+"/connect/revocation"), want: 401},
		{name: "two auds", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("aud", []string{ts.URL, "https://other.example"}), want: 401},
		{name: "no aud", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("aud", nil), want: 401},
		{name: "no exp", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("exp", nil), want: 401},
		{name: "expired", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("exp", now.Add(-time.Minute).Unix()), want: 401},
		{name: "exp too far", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("exp", now.Add(11*time.Minute).Unix()), want: 401},
		{name: "nbf ahead", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("nbf", now.Add(time.Minute).Unix()), want: 401},
		{name: "iat ahead", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("iat", now.Add(time.Minute).Unix()), want: 401},
		{name: "no jti", key: clientEC, alg: jose.ES256, kid: "ec", edit: with("jti", nil), want: 401},
		{name: "typ of an access token", key: clientEC, alg: jose.ES256, kid: "ec", header: map[jose.HeaderKey]any{"typ": "at+jwt"}, want: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims := ok(ts)
			if tt.edit != nil {
				tt.edit(claims)
			}
			a := signAssertion(t, tt.key, tt.alg, tt.kid, claims, tt.header)
			resp, body := postAssertion(t, ts, "/connect/token", ccForm(), a)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			if tt.want == 401 {
				if !strings.Contains(body, `"invalid_client"`) || resp.Header.Get("WWW-Authenticate") == "" || resp.Header.Get("Cache-Control") != "no-store" {
					t.Fatalf("want invalid_client with WWW-Authenticate and no-store, got %v %s", resp.Header, body)
				}
			}
		})
	}
}

// TestPrivateKeyJWTForged covers assertions no signer makes: alg none,
// HS256 keyed with the public key, a key in the header.
func TestPrivateKeyJWTForged(t *testing.T) {
	clientSigners(t)
	ts := newServer(t, keyClient(func(c *idp.Client) { c.JWKS = clientJWKS(t) }))
	claims, _ := json.Marshal(assertionClaims(ts, "svc"))
	enc := base64.RawURLEncoding.EncodeToString
	none := enc([]byte(`{"alg":"none","kid":"ec"}`)) + "." + enc(claims) + "."
	pubDER, _ := json.Marshal(jose.JSONWebKey{Key: clientEC.Public()})
	hs, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pubDER}, (&jose.SignerOptions{}).WithHeader("kid", "ec"))
	if err != nil {
		t.Fatal(err)
	}
	obj, _ := hs.Sign(claims)
	hmac, _ := obj.CompactSerialize()
	embedded := signAssertion(t, otherEC, jose.ES256, "", assertionClaims(ts, "svc"), map[jose.HeaderKey]any{"jwk": jose.JSONWebKey{Key: otherEC.Public()}})
	for name, a := range map[string]string{"alg none": none, "HS256": hmac, "embedded jwk": embedded, "garbage": "a.b.c", "too long": strings.Repeat("a", 20000)} {
		t.Run(name, func(t *testing.T) {
			resp, body := postAssertion(t, ts, "/connect/token", ccForm(), a)
			if resp.StatusCode != 401 || !strings.Contains(body, "invalid_client") {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
		})
	}
}

func TestPrivateKeyJWTReplay(t *testing.T) {
	clientSigners(t)
	ts := newServer(t, keyClient(func(c *idp.Client) { c.JWKS = clientJWKS(t) }))
	a := signAssertion(t, clientEC, jose.ES256, "ec", assertionClaims(ts, "svc"), nil)
	if resp, body := postAssertion(t, ts, "/connect/token", ccForm(), a); resp.StatusCode != 200 {
		t.Fatalf("first use: %d %s", resp.StatusCode, body)
	}
	if resp, body := postAssertion(t, ts, "/connect/token", ccForm(), a); resp.StatusCode != 401 || !strings.Contains(body, "invalid_client") {
		t.Fatalf("replay: %d %s", resp.StatusCode, body)
	}
	// Concurrent uses of a fresh assertion: exactly one wins.
	b := signAssertion(t, clientEC, jose.ES256, "ec", assertionClaims(ts, "svc"), nil)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if resp, _ := postAssertion(t, ts, "/connect/token", ccForm(), b); resp.StatusCode == 200 {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent uses won, want 1", wins.Load())
	}
}

// TestPrivateKeyJWTMethods: a key client cannot use a secret it was not
// allowed, a secret client cannot use an assertion, and a request may not
// mix methods.
func TestPrivateKeyJWTMethods(t *testing.T) {
	clientSigners(t)
	jwks := clientJWKS(t)
	ts := newServer(t, func(cfg *idp.Config) {
		keyClient(func(c *idp.Client) { c.JWKS = jwks })(cfg)
		keyClient(func(c *idp.Client) {
			c.ID, c.JWKS, c.Secret = "both", jwks, "both-secret"
			c.TokenEndpointAuthMethods = []string{idp.AuthPrivateKeyJWT, idp.AuthClientSecretBasic}
		})(cfg)
		keyClient(func(c *idp.Client) { c.ID, c.Secret = "secretonly", "s3cret" })(cfg)
	})
	t.Run("secret client sends an assertion", func(t *testing.T) {
		a := signAssertion(t, clientEC, jose.ES256, "ec", assertionClaims(ts, "secretonly"), nil)
		if resp, body := postAssertion(t, ts, "/connect/token", ccForm(), a); resp.StatusCode != 401 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("both: assertion", func(t *testing.T) {
		a := signAssertion(t, clientEC, jose.ES256, "ec", assertionClaims(ts, "both"), nil)
		if resp, body := postAssertion(t, ts, "/connect/token", ccForm(), a); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("both: basic", func(t *testing.T) {
		if resp, body := postToken(t, ts, "both", "both-secret", ccForm()); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("both: post is not listed", func(t *testing.T) {
		f := ccForm()
		f.Set("client_id", "both")
		f.Set("client_secret", "both-secret")
		if resp, body := postToken(t, ts, "", "", f); resp.StatusCode != 401 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("assertion and basic", func(t *testing.T) {
		a := signAssertion(t, clientEC, jose.ES256, "ec", assertionClaims(ts, "both"), nil)
		f := ccForm()
		f.Set("client_assertion_type", idp.ClientAssertionType)
		f.Set("client_assertion", a)
		if resp, body := postToken(t, ts, "both", "both-secret", f); resp.StatusCode != 400 || !strings.Contains(body, "invalid_request") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("client_id not the assertion's", func(t *testing.T) {
		a := signAssertion(t, clientEC, jose.ES256, "ec", assertionClaims(ts, "svc"), nil)
		if resp, body := postAssertion(t, ts, "/connect/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"both"}}, a); resp.StatusCode != 401 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("wrong assertion type", func(t *testing.T) {
		a := signAssertion(t, clientEC, jose.ES256, "ec", assertionClaims(ts, "svc"), nil)
		f := ccForm()
		f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
		f.Set("client_assertion", a)
		if resp, body := postToken(t, ts, "", "", f); resp.StatusCode != 401 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("key client sends its (absent) secret", func(t *testing.T) {
		if resp, body := postToken(t, ts, "svc", "", ccForm()); resp.StatusCode != 401 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
}

func TestPrivateKeyJWTConfig(t *testing.T) {
	clientSigners(t)
	priv, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: clientEC, KeyID: "ec"}}})
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	weak, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: small.Public(), KeyID: "r"}}})
	enc, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: clientEC.Public(), KeyID: "e", Use: "enc"}}})
	tests := []struct {
		name string
		edit func(*idp.Client)
		want string
	}{
		{"private key", func(c *idp.Client) { c.JWKS = priv }, "public key only"},
		{"short RSA", func(c *idp.Client) { c.JWKS = weak }, "2048"},
		{"encryption key", func(c *idp.Client) { c.JWKS = enc }, "use"},
		{"not JSON", func(c *idp.Client) { c.JWKS = []byte("{") }, "JWK Set"},
		{"empty set", func(c *idp.Client) { c.JWKS = []byte(`{"keys":[]}`) }, "no public signing key"},
		{"both jwks and uri", func(c *idp.Client) { c.JWKS, c.JWKSURI = clientJWKS(t), "https://keys.example/jwks" }, "exclusive"},
		{"bad uri", func(c *idp.Client) { c.JWKSURI = "keys.json" }, "jwks_uri"},
		{"keys and secret unlisted", func(c *idp.Client) { c.JWKS, c.Secret = clientJWKS(t), "s" }, "token_endpoint_auth_method"},
		{"private_key_jwt without keys", func(c *idp.Client) {
			c.Secret, c.TokenEndpointAuthMethods = "s", []string{"private_key_jwt", "client_secret_basic"}
		}, "needs jwks"},
		{"unknown method", func(c *idp.Client) {
			c.JWKS, c.TokenEndpointAuthMethods = clientJWKS(t), []string{"private_key_jwt", "tls_client_auth"}
		}, "tls_client_auth"},
		{"public with keys", func(c *idp.Client) {
			c.Public, c.JWKS, c.AllowClientCredentials, c.RedirectURIs = true, clientJWKS(t), false, []string{testRedirect}
		}, "public"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Issuer = "https://id.example"
			keyClient(tt.edit)(&cfg)
			store := idp.NewMemoryStore(nil)
			defer store.Close()
			_, err := idp.New(cfg, store)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `"svc"`) {
				t.Fatalf("error %v, want one naming the client and %q", err, tt.want)
			}
		})
	}
}

func TestPrivateKeyJWTDiscovery(t *testing.T) {
	clientSigners(t)
	for _, keyed := range []bool{false, true} {
		ts := newServer(t, func(cfg *idp.Config) {
			if keyed {
				keyClient(func(c *idp.Client) { c.JWKS = clientJWKS(t) })(cfg)
			}
		})
		resp, err := http.Get(ts.URL + "/.well-known/openid-configuration")
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal([]byte(readBody(t, resp)), &doc); err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"token_endpoint_auth_methods_supported", "revocation_endpoint_auth_methods_supported", "introspection_endpoint_auth_methods_supported"} {
			got := strings.Contains(jsonString(doc[m]), `"private_key_jwt"`)
			if got != keyed {
				t.Errorf("keyed %v: %s = %v", keyed, m, doc[m])
			}
		}
		for _, m := range []string{"token_endpoint_auth_signing_alg_values_supported", "revocation_endpoint_auth_signing_alg_values_supported", "introspection_endpoint_auth_signing_alg_values_supported"} {
			s := jsonString(doc[m])
			if keyed != strings.Contains(s, `"ES256"`) || strings.Contains(s, "none") || strings.Contains(s, "HS") {
				t.Errorf("keyed %v: %s = %s", keyed, m, s)
			}
		}
	}
}

func jsonString(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestPrivateKeyJWTRevokeIntrospect authenticates at revocation and
// introspection with assertions.
func TestPrivateKeyJWTRevokeIntrospect(t *testing.T) {
	clientSigners(t)
	ts := newServer(t, keyClient(func(c *idp.Client) { c.JWKS = clientJWKS(t) }))
	assert := func() string { return signAssertion(t, clientEC, jose.ES256, "ec", assertionClaims(ts, "svc"), nil) }
	resp, body := postAssertion(t, ts, "/connect/token", ccForm(), assert())
	if resp.StatusCode != 200 {
		t.Fatalf("token: %d %s", resp.StatusCode, body)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.Unmarshal([]byte(body), &tok)
	introspect := func() string {
		t.Helper()
		resp, body := postAssertion(t, ts, "/connect/introspect", url.Values{"token": {tok.AccessToken}}, assert())
		if resp.StatusCode != 200 {
			t.Fatalf("introspect: %d %s", resp.StatusCode, body)
		}
		return body
	}
	if b := introspect(); !strings.Contains(b, `"active":true`) {
		t.Fatalf("introspection before revocation: %s", b)
	}
	if resp, body := postAssertion(t, ts, "/connect/revocation", url.Values{"token": {tok.AccessToken}}, assert()); resp.StatusCode != 200 {
		t.Fatalf("revocation: %d %s", resp.StatusCode, body)
	}
	if b := introspect(); !strings.Contains(b, `"active":false`) {
		t.Fatalf("introspection after revocation: %s", b)
	}
	bad := signAssertion(t, otherEC, jose.ES256, "ec", assertionClaims(ts, "svc"), nil)
	for _, path := range []string{"/connect/introspect", "/connect/revocation"} {
		if resp, body := postAssertion(t, ts, path, url.Values{"token": {tok.AccessToken}}, bad); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("%s with a bad assertion: %d %s", path, resp.StatusCode, body)
		}
	}
}

// TestPrivateKeyJWTURI fetches keys from a jwks_uri once, again for an
// unknown kid, but not more often than the refetch interval.
func TestPrivateKeyJWTURI(t *testing.T) {
	clientSigners(t)
	var mu sync.Mutex
	keys := []jose.JSONWebKey{{Key: clientEC.Public(), KeyID: "ec"}}
	var fetches atomic.Int32
	keySrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: keys})
	}))
	defer keySrv.Close()
	ts := newServer(t, keyClient(func(c *idp.Client) { c.JWKSURI = keySrv.URL }))
	if fetches.Load() != 0 {
		t.Fatal("jwks_uri fetched before first use")
	}
	try := func(key crypto.Signer, kid string) int {
		resp, _ := postAssertion(t, ts, "/connect/token", ccForm(), signAssertion(t, key, jose.ES256, kid, assertionClaims(ts, "svc"), nil))
		return resp.StatusCode
	}
	if s := try(clientEC, "ec"); s != 200 || fetches.Load() != 1 {
		t.Fatalf("first use: %d after %d fetches", s, fetches.Load())
	}
	if s := try(clientEC, "ec"); s != 200 || fetches.Load() != 1 {
		t.Fatalf("second use: %d after %d fetches, want the cache", s, fetches.Load())
	}
	// The client rotates to a new key: the unknown kid fetches again,
	// once per interval.
	mu.Lock()
	keys = append(keys, jose.JSONWebKey{Key: otherEC.Public(), KeyID: "new"})
	mu.Unlock()
	ts.clock.Advance(20 * time.Second)
	if s := try(otherEC, "new"); s != 200 || fetches.Load() != 2 {
		t.Fatalf("new kid: %d after %d fetches", s, fetches.Load())
	}
	// Unknown kids right after a fetch wait for the interval.
	for range 3 {
		if s := try(otherEC, "unknown"); s != 401 {
			t.Fatalf("unknown kid: %d", s)
		}
	}
	if fetches.Load() != 2 {
		t.Fatalf("%d fetches after unknown kids within the interval, want 2", fetches.Load())
	}
	ts.clock.Advance(20 * time.Second)
	for range 3 {
		if s := try(otherEC, "unknown"); s != 401 {
			t.Fatalf("unknown kid: %d", s)
		}
	}
	if fetches.Load() != 3 {
		t.Fatalf("%d fetches after unknown kids past the interval, want 3", fetches.Load())
	}
}

// TestPrivateKeyJWTURIFailure: a jwks_uri that fails or sends too much is
// invalid_client, never a 5xx.
func TestPrivateKeyJWTURIFailure(t *testing.T) {
	clientSigners(t)
	for name, h := range map[string]http.HandlerFunc{
		"500": func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) },
		"too big": func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"keys":[` + strings.Repeat(" ", 600<<10) + `]}`))
		},
		"not JSON": func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`<html>`)) },
	} {
		t.Run(name, func(t *testing.T) {
			keySrv := httptest.NewServer(h)
			defer keySrv.Close()
			ts := newServer(t, keyClient(func(c *idp.Client) { c.JWKSURI = keySrv.URL }))
			resp, body := postAssertion(t, ts, "/connect/token", ccForm(), signAssertion(t, clientEC, jose.ES256, "ec", assertionClaims(ts, "svc"), nil))
			if resp.StatusCode != 401 || !strings.Contains(body, "invalid_client") {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
		})
	}
}

// TestPrivateKeyJWTDeviceAuthorization: a confidential device client
// authenticates at the device authorization endpoint with an assertion.
func TestPrivateKeyJWTDeviceAuthorization(t *testing.T) {
	clientSigners(t)
	ts := newServer(t, keyClient(func(c *idp.Client) {
		c.JWKS, c.AllowClientCredentials, c.AllowDeviceFlow, c.AllowedScopes = clientJWKS(t), false, true, []string{"openid"}
	}))
	good := signAssertion(t, clientEd, jose.EdDSA, "ed", assertionClaims(ts, "svc"), nil)
	if resp, body := postAssertion(t, ts, idp.PathDeviceAuthorization, url.Values{"scope": {"openid"}}, good); resp.StatusCode != 200 || !strings.Contains(body, "device_code") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	bad := signAssertion(t, otherEC, jose.ES256, "ec", assertionClaims(ts, "svc"), nil)
	if resp, body := postAssertion(t, ts, idp.PathDeviceAuthorization, url.Values{"scope": {"openid"}}, bad); resp.StatusCode != 401 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

// TestPrivateKeyJWTNotLogged: failures are logged with their cause, never
// with the assertion or a part of it.
func TestPrivateKeyJWTNotLogged(t *testing.T) {
	clientSigners(t)
	var buf syncBuffer
	ts := newServer(t, func(cfg *idp.Config) {
		keyClient(func(c *idp.Client) { c.JWKS = clientJWKS(t) })(cfg)
		cfg.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	a := signAssertion(t, clientEC, jose.ES256, "ec", assertionClaims(ts, "svc"), nil)
	expired := assertionClaims(ts, "svc")
	expired["exp"] = ts.clock.Now().Add(-time.Hour).Unix()
	b := signAssertion(t, clientEC, jose.ES256, "ec", expired, nil)
	for _, x := range []string{a, a, b, a + "x"} {
		postAssertion(t, ts, "/connect/token", ccForm(), x)
	}
	log := buf.String()
	if !strings.Contains(log, "replayed") || !strings.Contains(log, "expired") {
		t.Fatalf("the log does not say why:\n%s", log)
	}
	for _, x := range []string{a, b} {
		for _, part := range strings.Split(x, ".") {
			if strings.Contains(log, part) {
				t.Fatalf("the log holds part of an assertion:\n%s", log)
			}
		}
	}
}
