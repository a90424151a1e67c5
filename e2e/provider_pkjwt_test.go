package e2e_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/internal/caddytest"
	"github.com/authgate/authgate/internal/redistest"
)

// keyClient is a private_key_jwt client as a service would be: its own
// EC key, of which the provider knows only the public half.
type keyClient struct {
	id  string
	kid string
	key *ecdsa.PrivateKey
}

func newKeyClient(t testing.TB, id string) *keyClient {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &keyClient{id: id, kid: id + "-1", key: key}
}

// jwks is the client's public JWK Set.
func (k *keyClient) jwks(t testing.TB) []byte {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k.key.Public(), KeyID: k.kid, Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertion signs a client assertion for the issuer, as the README shows.
func (k *keyClient) assertion(t testing.TB, issuer string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.key},
		(&jose.SignerOptions{}).WithType("client-authentication+jwt").WithHeader("kid", k.kid))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer:   k.id,
		Subject:  k.id,
		Audience: jwt.Audience{issuer},
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(time.Minute)),
		ID:       rand.Text(),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// assertionParams are the form parameters of private_key_jwt.
func assertionParams(a string) url.Values {
	return url.Values{"client_assertion_type": {idp.ClientAssertionType}, "client_assertion": {a}}
}

// ccToken gets a client_credentials token with x/oauth2, authenticated by
// the assertion.
func ccToken(ctx context.Context, issuer, clientID, assertion string) (string, error) {
	cfg := clientcredentials.Config{
		ClientID:       clientID,
		TokenURL:       issuer + idp.PathToken,
		Scopes:         []string{"api"},
		EndpointParams: assertionParams(assertion),
	}
	cfg.AuthStyle = oauth2.AuthStyleInParams // no Basic header, client_id in the form
	tok, err := cfg.Token(ctx)
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

// postBackChannel posts form to path and returns the status, header and
// body.
func postBackChannel(t testing.TB, issuer, path string, form url.Values) (int, http.Header, string) {
	t.Helper()
	resp, err := http.PostForm(issuer+path, form)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, caddytest.ReadBody(t, resp)
}

// TestProviderPrivateKeyJWT: a service signs client assertions with its
// key (go-jose) and gets client_credentials tokens from the real binary;
// a replayed assertion is refused; it introspects and revokes its token
// with assertions; a second client's keys come from a jwks_uri served on
// 127.0.0.1, fetched on first use.
func TestProviderPrivateKeyJWT(t *testing.T) {
	t.Parallel()
	svc, remote := newKeyClient(t, "svc"), newKeyClient(t, "remote")
	dir := t.TempDir()
	jwksFile := filepath.Join(dir, "svc.jwks.json")
	if err := os.WriteFile(jwksFile, svc.jwks(t), 0o600); err != nil {
		t.Fatal(err)
	}
	var fetches atomic.Int32
	keys := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(remote.jwks(t))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go keys.Serve(ln)
	t.Cleanup(func() { keys.Close() })

	s := newSite(t, fmt.Sprintf(`
		api_scope api
		client svc {
			jwks %s
			client_credentials
			scopes api
		}
		client remote {
			jwks_uri http://%s/jwks.json
			client_credentials
			scopes api
		}`, jwksFile, ln.Addr()))
	s.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var disc map[string]any
	resp, err := http.Get(s.issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(caddytest.ReadBody(t, resp)), &disc); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"token_endpoint_auth_methods_supported", "revocation_endpoint_auth_methods_supported", "introspection_endpoint_auth_methods_supported"} {
		if b, _ := json.Marshal(disc[m]); !strings.Contains(string(b), `"private_key_jwt"`) {
			t.Errorf("discovery %s = %s, want private_key_jwt", m, b)
		}
	}
	if b, _ := json.Marshal(disc["token_endpoint_auth_signing_alg_values_supported"]); !strings.Contains(string(b), `"ES256"`) || strings.Contains(string(b), "none") {
		t.Errorf("discovery token_endpoint_auth_signing_alg_values_supported = %s", b)
	}

	first := svc.assertion(t, s.issuer)
	at, err := ccToken(ctx, s.issuer, "svc", first)
	if err != nil {
		t.Fatalf("client_credentials with an assertion: %v", err)
	}

	// The same assertion again: one-time.
	status, hdr, body := postBackChannel(t, s.issuer, idp.PathToken, merge(url.Values{"grant_type": {"client_credentials"}}, assertionParams(first)))
	if status != http.StatusUnauthorized || !strings.Contains(body, `"invalid_client"`) || hdr.Get("WWW-Authenticate") == "" || hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("replayed assertion: %d %v %s", status, hdr, body)
	}
	if strings.Contains(body, first) {
		t.Fatal("the error echoes the assertion")
	}

	// A secret is no way in for a client with keys.
	status, _, body = postBackChannel(t, s.issuer, idp.PathToken, url.Values{"grant_type": {"client_credentials"}, "client_id": {"svc"}, "client_secret": {clientSecret}})
	if status != http.StatusUnauthorized {
		t.Fatalf("key client with a secret: %d %s", status, body)
	}
	// Nor is an assertion for demo-app, which has only a secret.
	if _, err := ccToken(ctx, s.issuer, "demo-app", (&keyClient{id: "demo-app", kid: svc.kid, key: svc.key}).assertion(t, s.issuer)); err == nil {
		t.Fatal("a secret client authenticated with an assertion")
	}

	introspect := func() string {
		t.Helper()
		status, _, body := postBackChannel(t, s.issuer, idp.PathIntrospect, merge(url.Values{"token": {at}}, assertionParams(svc.assertion(t, s.issuer))))
		if status != http.StatusOK {
			t.Fatalf("introspection: %d %s", status, body)
		}
		return body
	}
	if b := introspect(); !strings.Contains(b, `"active":true`) || !strings.Contains(b, `"client_id":"svc"`) {
		t.Fatalf("introspection of a live token: %s", b)
	}
	if status, _, body := postBackChannel(t, s.issuer, idp.PathRevocation, merge(url.Values{"token": {at}}, assertionParams(svc.assertion(t, s.issuer)))); status != http.StatusOK {
		t.Fatalf("revocation: %d %s", status, body)
	}
	if b := introspect(); !strings.Contains(b, `"active":false`) {
		t.Fatalf("introspection of a revoked token: %s", b)
	}
	// A wrong key at introspection: invalid_client.
	forged := (&keyClient{id: "svc", kid: svc.kid, key: remote.key}).assertion(t, s.issuer)
	if status, _, body := postBackChannel(t, s.issuer, idp.PathIntrospect, merge(url.Values{"token": {at}}, assertionParams(forged))); status != http.StatusUnauthorized {
		t.Fatalf("introspection with a forged assertion: %d %s", status, body)
	}

	// jwks_uri: nothing fetched before first use, then once.
	if n := fetches.Load(); n != 0 {
		t.Fatalf("jwks_uri fetched %d times before first use", n)
	}
	for range 2 {
		if _, err := ccToken(ctx, s.issuer, "remote", remote.assertion(t, s.issuer)); err != nil {
			t.Fatalf("client_credentials with keys from jwks_uri: %v", err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("jwks_uri fetched %d times for two requests, want 1 (cached)", n)
	}
}

func merge(a, b url.Values) url.Values {
	for k, v := range b {
		a[k] = v
	}
	return a
}

// pkjwtClusterTemplate is two nodes of one issuer that share a Redis
// store, with the private_key_jwt client svc.
var pkjwtClusterTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

http://127.0.0.1:{{.Port}} {
	oidc_provider {{.Issuer}} {
		signing_key {{.SigningKey}}
		store redis {
			address {{.Redis}}
		}
		api_scope api
		client svc {
			jwks {{.JWKS}}
			client_credentials
			scopes api
		}
	}
}
`))

// TestProviderPrivateKeyJWTCluster: an assertion used at one node is
// refused at the other, which shares the Redis store.
func TestProviderPrivateKeyJWTCluster(t *testing.T) {
	t.Parallel()
	redis := redistest.Start(t)
	svc := newKeyClient(t, "svc")
	dir := t.TempDir()
	jwksFile := filepath.Join(dir, "svc.jwks.json")
	if err := os.WriteFile(jwksFile, svc.jwks(t), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "signing.pem")
	sk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(sk)
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	var nodes [2]string
	for i := range nodes {
		nodes[i] = fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t))
	}
	issuer := nodes[0]
	for i := range nodes {
		node := caddytest.New(t)
		port := strings.TrimPrefix(nodes[i], "http://127.0.0.1:")
		node.WriteConfig(t, pkjwtClusterTemplate, map[string]any{
			"Admin": node.AdminAddr, "Storage": node.Storage, "Port": port, "Issuer": issuer,
			"SigningKey": keyFile, "Redis": redis.Addr, "JWKS": jwksFile,
		})
		node.Ready = []string{nodes[i] + "/.well-known/openid-configuration"}
		node.Start(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := svc.assertion(t, issuer)
	if _, err := ccToken(ctx, nodes[0], "svc", a); err != nil {
		t.Fatalf("node 1: %v", err)
	}
	status, _, body := postBackChannel(t, nodes[1], idp.PathToken, merge(url.Values{"grant_type": {"client_credentials"}}, assertionParams(a)))
	if status != http.StatusUnauthorized || !strings.Contains(body, "invalid_client") {
		t.Fatalf("the assertion replayed at node 2: %d %s", status, body)
	}
	if _, err := ccToken(ctx, nodes[1], "svc", svc.assertion(t, issuer)); err != nil {
		t.Fatalf("node 2 with a fresh assertion: %v", err)
	}
}

// TestValidatePrivateKeyJWT: `caddy validate` refuses bad client keys,
// naming the client, and fetches no jwks_uri.
func TestValidatePrivateKeyJWT(t *testing.T) {
	t.Parallel()
	svc := newKeyClient(t, "svc")
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	os.WriteFile(good, svc.jwks(t), 0o600)
	private := filepath.Join(dir, "private.json")
	pb, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: svc.key, KeyID: "k"}}})
	os.WriteFile(private, pb, 0o600)
	tests := []struct {
		name    string
		client  string
		wantErr []string
	}{
		{"jwks file", "jwks " + good, nil},
		{"jwks_uri, not fetched", "jwks_uri http://127.0.0.1:9/jwks.json", nil},
		{"inline", "jwks `" + string(svc.jwks(t)) + "`", nil},
		{"private key", "jwks " + private, []string{`client \"svc\"`, "public key only"}},
		{"missing file", "jwks " + filepath.Join(dir, "nope.json"), []string{`client \"svc\"`, "nope.json"}},
		{"unknown kty", "jwks `{\"keys\":[{\"kty\":\"XYZ\",\"kid\":\"a\"}]}`", []string{`client \"svc\"`, "jwks"}},
		{"keys and secret unlisted", "jwks " + good + "\n\t\t\tsecret abc", []string{`client \"svc\"`, "token_endpoint_auth_method"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := t.TempDir()
			out, err := caddyValidate(t, d, fmt.Sprintf(`{
	admin off
	storage file_system %s
	persist_config off
}

http://127.0.0.1:9 {
	oidc_provider http://127.0.0.1:9 {
		api_scope api
		client svc {
			%s
			client_credentials
			scopes api
		}
	}
}
`, filepath.Join(d, "storage"), tt.client))
			if (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("caddy validate: %v, want error %v:\n%s", err, tt.wantErr != nil, out)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(out, w) {
					t.Errorf("output does not name %q:\n%s", w, out)
				}
			}
		})
	}
}
