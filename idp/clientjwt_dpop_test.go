package idp_test

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/authgate/authgate/idp"
)

// postAssertionDPoP posts form with the client assertion a and, when set,
// the DPoP proof to path.
func postAssertionDPoP(t testing.TB, ts *testServer, path string, form url.Values, a, proof string) (*http.Response, map[string]any) {
	t.Helper()
	f := url.Values{}
	for k, v := range form {
		f[k] = v
	}
	f.Set("client_assertion_type", idp.ClientAssertionType)
	f.Set("client_assertion", a)
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, ts.URL+path, strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	json.Unmarshal([]byte(readBody(t, resp)), &out)
	return resp, out
}

// TestPrivateKeyJWTDPoPNonceRetry: with DPoP nonces on, a private_key_jwt
// client retries with the same body and a proof with the nonce (RFC 9449
// §8); its assertion is not spent by the request that got use_dpop_nonce,
// nor by one with a bad proof, and is still used once.
func TestPrivateKeyJWTDPoPNonceRetry(t *testing.T) {
	clientSigners(t)
	ts := newServer(t, func(c *idp.Config) {
		keyClient(func(c *idp.Client) {
			c.JWKS = clientJWKS(t)
			c.RedirectURIs = []string{testRedirect}
			c.AllowedScopes = append(c.AllowedScopes, "openid", "profile", "email")
		})(c)
		c.DPoPNonce = true
	})
	key := newDPoPKey(t)
	_, challenge := pkce("a")
	par := authorizeParams(challenge)
	par.Set("client_id", "svc")
	for _, tc := range []struct {
		path string
		form url.Values
		ok   int
	}{
		{"/connect/token", ccForm(), http.StatusOK},
		{"/connect/par", par, http.StatusCreated},
	} {
		t.Run(tc.path, func(t *testing.T) {
			target := ts.URL + tc.path
			a := signAssertion(t, clientEC, jose.ES256, "ec", assertionClaims(ts, "svc"), nil)
			resp, body := postAssertionDPoP(t, ts, tc.path, tc.form, a, key.proof(t, ts.clock.Now(), "POST", target, "", ""))
			nonce := resp.Header.Get("DPoP-Nonce")
			if resp.StatusCode != 400 || body["error"] != "use_dpop_nonce" || nonce == "" {
				t.Fatalf("without a nonce: %d %v", resp.StatusCode, body)
			}
			resp, body = postAssertionDPoP(t, ts, tc.path, tc.form, a, key.proof(t, ts.clock.Now(), "POST", ts.URL+"/elsewhere", "", nonce))
			if resp.StatusCode != 400 || body["error"] != "invalid_dpop_proof" {
				t.Fatalf("bad proof: %d %v", resp.StatusCode, body)
			}
			resp, body = postAssertionDPoP(t, ts, tc.path, tc.form, a, key.proof(t, ts.clock.Now(), "POST", target, "", nonce))
			if resp.StatusCode != tc.ok {
				t.Fatalf("retry with the nonce: %d %v", resp.StatusCode, body)
			}
			if tc.ok == http.StatusOK && body["token_type"] != "DPoP" {
				t.Fatalf("token_type %v", body["token_type"])
			}
			resp, body = postAssertionDPoP(t, ts, tc.path, tc.form, a, key.proof(t, ts.clock.Now(), "POST", target, "", nonce))
			if resp.StatusCode != 401 || body["error"] != "invalid_client" {
				t.Fatalf("replayed assertion: %d %v", resp.StatusCode, body)
			}
		})
	}
}

// TestPrivateKeyJWTKidlessKey: an assertion whose header names a kid is
// checked with the client's keys that have none when no key has that kid;
// never with a key in the header.
func TestPrivateKeyJWTKidlessKey(t *testing.T) {
	clientSigners(t)
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: clientRSA.Public(), KeyID: "rsa"},
		{Key: clientEC.Public()},
	}})
	ts := newServer(t, keyClient(func(c *idp.Client) { c.JWKS = set }))
	for _, tc := range []struct {
		name   string
		kid    string
		header map[jose.HeaderKey]any
		key    *ecdsa.PrivateKey
		want   int
	}{
		{"kid not registered", "ec-2026", nil, clientEC, 200},
		{"no kid", "", nil, clientEC, 200},
		{"kid of another key", "rsa", nil, clientEC, 401},
		{"other key", "ec-2026", nil, otherEC, 401},
		{"embedded jwk", "ec-2026", map[jose.HeaderKey]any{"jwk": jose.JSONWebKey{Key: otherEC.Public()}}, otherEC, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := signAssertion(t, tc.key, jose.ES256, tc.kid, assertionClaims(ts, "svc"), tc.header)
			if resp, body := postAssertion(t, ts, "/connect/token", ccForm(), a); resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, body)
			}
		})
	}
}
