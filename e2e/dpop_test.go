package e2e_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/internal/caddytest"
)

// dpopTemplate is the Caddyfile of TestDPoP: a provider that requires its
// nonces in DPoP proofs, with the confidential client service
// (client_credentials) and the public client spa, which must use DPoP and
// so may reuse its refresh tokens; and an API behind a bearer-mode
// gateway.
var dpopTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
	servers {
		trusted_proxies static 127.0.0.1/32
	}
}

{{.Issuer}} {
	oidc_provider {{.Issuer}} {
		dpop_nonce 1m
		client service {
			secret {{.ServiceSecret}}
			client_credentials
			scopes api
		}
		client spa {
			public
			redirect_uri http://spa.test/callback
			offline_access
			scopes openid profile api offline_access
			require_dpop
			refresh_token_usage reuse
		}
		user alice {
			password_hash {{.Hash}}
		}
		api_scope api
		api_resource demo-api api
	}
}

{{.API}} {
	oidc_gateway {{.Issuer}} {
		mode bearer
		audience demo-api
	}
	respond "api {http.auth.user.id}"
}
`))

// dpopClient is a DPoP client as RFC 9449 describes one: it signs a proof
// with its own key for each request, and uses the nonce the server last
// handed it.
type dpopClient struct {
	key        *ecdsa.PrivateKey
	nonce      string
	challenges int // use_dpop_nonce answers it has had
}

func newDPoPClient(t testing.TB) *dpopClient {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &dpopClient{key: k}
}

// proof signs a proof for method and htu; token, if set, gives ath.
func (c *dpopClient) proof(t testing.TB, method, htu, token string) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: c.key},
		(&jose.SignerOptions{}).WithType("dpop+jwt").WithHeader("jwk", jose.JSONWebKey{Key: &c.key.PublicKey}))
	if err != nil {
		t.Fatal(err)
	}
	jti := make([]byte, 16)
	rand.Read(jti)
	claims := map[string]any{"jti": base64.RawURLEncoding.EncodeToString(jti), "htm": method, "htu": htu, "iat": time.Now().Unix()}
	if token != "" {
		sum := sha256.Sum256([]byte(token))
		claims["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	if c.nonce != "" {
		claims["nonce"] = c.nonce
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

// tokenResult is a token endpoint answer.
type tokenResult struct {
	status int
	body   map[string]any
}

func (r tokenResult) str(name string) string { s, _ := r.body[name].(string); return s }

// token posts form to the token endpoint with a fresh proof (none when
// withProof is false), as client id with secret (Basic) when secret is
// set; a use_dpop_nonce answer is retried once with the nonce it hands
// out, as §8 has clients do.
func (c *dpopClient) token(t testing.TB, issuer, id, secret string, form url.Values, withProof bool) tokenResult {
	t.Helper()
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, issuer+idp.PathToken, strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if secret != "" {
			req.SetBasicAuth(id, secret)
		}
		if withProof {
			req.Header.Set("DPoP", c.proof(t, http.MethodPost, issuer+idp.PathToken, ""))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res := tokenResult{status: resp.StatusCode}
		json.Unmarshal([]byte(caddytest.ReadBody(t, resp)), &res.body)
		if n := resp.Header.Get("DPoP-Nonce"); n != "" {
			c.nonce = n
		}
		if res.status == http.StatusBadRequest && res.str("error") == "use_dpop_nonce" && attempt == 0 {
			c.challenges++
			continue
		}
		return res
	}
}

// resource sends GET target with Authorization scheme token and, if
// proof is set, that DPoP header.
func resource(t testing.TB, target, scheme, token, proof string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", scheme+" "+token)
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, caddytest.ReadBody(t, resp)
}

// push posts form to the pushed authorization request endpoint as the
// public client spa, with a proof; a use_dpop_nonce answer is retried
// once with the nonce it hands out (RFC 9449 §8).
func (c *dpopClient) push(t testing.TB, issuer string, form url.Values) (int, map[string]any) {
	t.Helper()
	target := issuer + idp.PathPushedAuthorization
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, target, strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("DPoP", c.proof(t, http.MethodPost, target, ""))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		json.Unmarshal([]byte(caddytest.ReadBody(t, resp)), &body)
		if n := resp.Header.Get("DPoP-Nonce"); n != "" {
			c.nonce = n
		}
		if resp.StatusCode == http.StatusBadRequest && body["error"] == "use_dpop_nonce" && attempt == 0 {
			c.challenges++
			continue
		}
		return resp.StatusCode, body
	}
}

// jkt is the RFC 7638 SHA-256 thumbprint of c's key, base64url.
func (c *dpopClient) jkt(t testing.TB) string {
	t.Helper()
	sum, err := (&jose.JSONWebKey{Key: &c.key.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(sum)
}

// spaCode sends a fresh browser to the authorization endpoint with q,
// logs alice in, and returns the code the provider sends back.
func spaCode(t testing.TB, issuer string, q url.Values) string {
	t.Helper()
	browser := caddytest.NewBrowser(t)
	resp, err := browser.Get(issuer + idp.PathAuthorize + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	caddytest.ReadBody(t, resp)
	loginURL, err := resp.Location()
	if err != nil {
		t.Fatalf("authorize: status %d, no redirect", resp.StatusCode)
	}
	back := caddytest.Login(t, browser, loginURL, "alice", password)
	code := back.Query().Get("code")
	if code == "" {
		t.Fatalf("no code in %s", back)
	}
	return code
}

// wantRefused checks a 401 with a DPoP challenge carrying errCode and the
// algorithms (RFC 9449 §7.1).
func wantRefused(t testing.TB, what string, resp *http.Response, errCode string) {
	t.Helper()
	wa := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(wa, "DPoP ") || !strings.Contains(wa, `error="`+errCode+`"`) || !strings.Contains(wa, `algs="`) {
		t.Errorf("%s: status %d, WWW-Authenticate %q; want 401 and a DPoP challenge with %s", what, resp.StatusCode, wa, errCode)
	}
}

// TestDPoP runs RFC 9449 in the real binary with a Go client that makes
// real proofs: a service's client_credentials token and a public client's
// code + PKCE tokens are DPoP-bound (after the provider's nonce
// challenge), work with their key at userinfo and at the gateway, and are
// refused there when stolen (presented as Bearer, or with another key),
// and so is a replayed proof; the public client's refresh token works only
// with its key, and is reused; a code bound to the public client's key,
// by dpop_jkt or by a proof on a pushed request, is refused with another.
func TestDPoP(t *testing.T) {
	t.Parallel()
	s := newEmptySite(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t))
	s.WriteConfig(t, dpopTemplate, map[string]any{
		"Admin": s.AdminAddr, "Storage": s.Storage, "Issuer": s.issuer, "API": api,
		"ServiceSecret": serviceSecret, "Hash": passwordHash,
	})
	s.Start(t)
	thief := newDPoPClient(t)

	t.Run("discovery", func(t *testing.T) {
		resp, err := http.Get(s.issuer + "/.well-known/openid-configuration")
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Algs []string `json:"dpop_signing_alg_values_supported"`
		}
		json.Unmarshal([]byte(caddytest.ReadBody(t, resp)), &doc)
		if !slices.Contains(doc.Algs, "ES256") || slices.Contains(doc.Algs, "none") {
			t.Errorf("dpop_signing_alg_values_supported = %v", doc.Algs)
		}
	})

	t.Run("client_credentials at the gateway", func(t *testing.T) {
		svc := newDPoPClient(t)
		res := svc.token(t, s.issuer, "service", serviceSecret, url.Values{"grant_type": {"client_credentials"}}, true)
		if res.status != 200 || res.str("token_type") != "DPoP" || svc.challenges != 1 {
			t.Fatalf("client_credentials: %d %v after %d nonce challenges; want 200, token_type DPoP, 1 challenge", res.status, res.body, svc.challenges)
		}
		at := res.str("access_token")
		proof := svc.proof(t, http.MethodGet, api+"/things", at)
		if resp, body := resource(t, api+"/things", "DPoP", at, proof); resp.StatusCode != 200 || body != "api service" {
			t.Fatalf("with its key: %d %q", resp.StatusCode, body)
		}
		// The gateway's cache of the token does not spare the next
		// request its own proof.
		if resp, body := resource(t, api+"/things", "DPoP", at, svc.proof(t, http.MethodGet, api+"/things", at)); resp.StatusCode != 200 {
			t.Fatalf("second request: %d %q", resp.StatusCode, body)
		}
		resp, _ := resource(t, api+"/things", "DPoP", at, proof)
		wantRefused(t, "replayed proof", resp, "invalid_dpop_proof")
		resp, _ = resource(t, api+"/things", "Bearer", at, "")
		wantRefused(t, "stolen token as Bearer", resp, "invalid_token")
		resp, _ = resource(t, api+"/things", "DPoP", at, thief.proof(t, http.MethodGet, api+"/things", at))
		wantRefused(t, "stolen token with the thief's key", resp, "invalid_dpop_proof")
		resp, _ = resource(t, api+"/things", "DPoP", at, svc.proof(t, http.MethodGet, api+"/elsewhere", at))
		wantRefused(t, "proof for another URI", resp, "invalid_dpop_proof")

		// Behind a TLS-terminating proxy (Caddy trusts 127.0.0.1): the
		// client addressed https, which the proxy's X-Forwarded-Proto says.
		behind := func(htu string) *http.Response {
			req, _ := http.NewRequestWithContext(testContext(t), http.MethodGet, api+"/things", nil)
			req.Header.Set("Authorization", "DPoP "+at)
			req.Header.Set("DPoP", svc.proof(t, http.MethodGet, htu, at))
			req.Header.Set("X-Forwarded-Proto", "https")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			caddytest.ReadBody(t, resp)
			return resp
		}
		httpsURL := "https://" + strings.TrimPrefix(api, "http://") + "/things"
		if resp := behind(httpsURL); resp.StatusCode != 200 {
			t.Fatalf("behind a trusted TLS proxy: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		wantRefused(t, "http htu behind a trusted TLS proxy", behind(api+"/things"), "invalid_dpop_proof")
	})

	t.Run("public client code flow", func(t *testing.T) {
		spa := newDPoPClient(t)
		verifier := strings.Repeat("k", 50)
		sum := sha256.Sum256([]byte(verifier))
		q := url.Values{
			"client_id": {"spa"}, "redirect_uri": {"http://spa.test/callback"}, "response_type": {"code"},
			"scope": {"openid profile api offline_access"}, "state": {"st"},
			"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
		}
		browser := caddytest.NewBrowser(t)
		resp, err := browser.Get(s.issuer + idp.PathAuthorize + "?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		caddytest.ReadBody(t, resp)
		loginURL, err := resp.Location()
		if err != nil {
			t.Fatalf("authorize: status %d, no redirect", resp.StatusCode)
		}
		code := caddytest.Login(t, browser, loginURL, "alice", password).Query().Get("code")
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"http://spa.test/callback"},
			"code_verifier": {verifier}, "client_id": {"spa"}}
		// require_dpop: without a proof, no token (the code is not used up).
		if res := spa.token(t, s.issuer, "spa", "", form, false); res.status != 400 || res.str("error") != "invalid_dpop_proof" {
			t.Fatalf("exchange without a proof: %d %v", res.status, res.body)
		}
		res := spa.token(t, s.issuer, "spa", "", form, true)
		if res.status != 200 || res.str("token_type") != "DPoP" || res.str("refresh_token") == "" {
			t.Fatalf("exchange: %d %v", res.status, res.body)
		}
		at, rt := res.str("access_token"), res.str("refresh_token")

		userinfo := s.issuer + idp.PathUserinfo
		proof := spa.proof(t, http.MethodGet, userinfo, at)
		resp, body := resource(t, userinfo, "DPoP", at, proof)
		var claims map[string]any
		json.Unmarshal([]byte(body), &claims)
		if resp.StatusCode != 200 || claims["sub"] == nil {
			t.Fatalf("userinfo with the key: %d %s", resp.StatusCode, body)
		}
		resp, _ = resource(t, userinfo, "DPoP", at, proof)
		wantRefused(t, "userinfo, replayed proof", resp, "invalid_dpop_proof")
		resp, _ = resource(t, userinfo, "Bearer", at, "")
		wantRefused(t, "userinfo, stolen token as Bearer", resp, "invalid_token")
		resp, _ = resource(t, userinfo, "DPoP", at, thief.proof(t, http.MethodGet, userinfo, at))
		wantRefused(t, "userinfo, the thief's key", resp, "invalid_dpop_proof")

		if resp, body := resource(t, api+"/things", "DPoP", at, spa.proof(t, http.MethodGet, api+"/things", at)); resp.StatusCode != 200 || body != fmt.Sprintf("api %v", claims["sub"]) {
			t.Fatalf("gateway with the key: %d %q", resp.StatusCode, body)
		}

		refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"spa"}}
		if res := spa.token(t, s.issuer, "spa", "", refresh, false); res.status != 400 || res.str("error") != "invalid_dpop_proof" {
			t.Errorf("refresh without a proof: %d %v", res.status, res.body)
		}
		if res := thief.token(t, s.issuer, "spa", "", refresh, true); res.status != 400 || res.str("error") != "invalid_dpop_proof" {
			t.Errorf("refresh with the thief's key: %d %v", res.status, res.body)
		}
		for i := range 2 {
			res := spa.token(t, s.issuer, "spa", "", refresh, true)
			if res.status != 200 || res.str("token_type") != "DPoP" || res.str("refresh_token") != rt {
				t.Fatalf("refresh %d with the key: %d %v; want the same refresh token back (reuse)", i, res.status, res.body)
			}
		}
	})

	t.Run("code bound to a key", func(t *testing.T) {
		// RFC 9449 §10: dpop_jkt at the authorization endpoint binds the
		// code; §10.1: so does a proof on a pushed request.
		spa := newDPoPClient(t)
		verifier := strings.Repeat("b", 50)
		sum := sha256.Sum256([]byte(verifier))
		q := url.Values{
			"client_id": {"spa"}, "redirect_uri": {"http://spa.test/callback"}, "response_type": {"code"},
			"scope": {"openid api"}, "state": {"st"},
			"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
		}
		exchange := func(code string) url.Values {
			return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"http://spa.test/callback"},
				"code_verifier": {verifier}, "client_id": {"spa"}}
		}

		front := url.Values{"dpop_jkt": {spa.jkt(t)}}
		for k, v := range q {
			front[k] = v
		}
		res := thief.token(t, s.issuer, "spa", "", exchange(spaCode(t, s.issuer, front)), true)
		if res.status != 400 || res.str("error") != "invalid_grant" {
			t.Fatalf("code bound by dpop_jkt, the thief's key: %d %q; want 400 invalid_grant", res.status, res.str("error"))
		}

		status, body := spa.push(t, s.issuer, q)
		requestURI, _ := body["request_uri"].(string)
		if status != http.StatusCreated || requestURI == "" || spa.challenges != 1 {
			t.Fatalf("push with a proof: %d %v after %d nonce challenges; want 201 after 1", status, body, spa.challenges)
		}
		code := spaCode(t, s.issuer, url.Values{"client_id": {"spa"}, "request_uri": {requestURI}})
		if res := thief.token(t, s.issuer, "spa", "", exchange(code), true); res.status != 400 || res.str("error") != "invalid_grant" {
			t.Fatalf("code bound by the push's proof, the thief's key: %d %q; want 400 invalid_grant", res.status, res.str("error"))
		}
		status, body = spa.push(t, s.issuer, q)
		requestURI, _ = body["request_uri"].(string)
		if status != http.StatusCreated {
			t.Fatalf("second push: %d %v", status, body)
		}
		code = spaCode(t, s.issuer, url.Values{"client_id": {"spa"}, "request_uri": {requestURI}})
		res = spa.token(t, s.issuer, "spa", "", exchange(code), true)
		if res.status != 200 || res.str("token_type") != "DPoP" {
			t.Fatalf("code bound by the push's proof, its key: %d %v", res.status, res.body)
		}
		parts := strings.Split(res.str("access_token"), ".")
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var claims struct {
			Cnf struct {
				JKT string `json:"jkt"`
			} `json:"cnf"`
		}
		json.Unmarshal(payload, &claims)
		if claims.Cnf.JKT != spa.jkt(t) {
			t.Errorf("cnf.jkt %q, want the key's thumbprint %q", claims.Cnf.JKT, spa.jkt(t))
		}
	})
}
