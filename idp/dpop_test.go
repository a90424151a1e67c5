package idp_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/idp/dpop"
)

// dpopKey is a client's DPoP key, making proofs as a client would.
type dpopKey struct {
	priv *ecdsa.PrivateKey
	n    int
}

func newDPoPKey(t testing.TB) *dpopKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &dpopKey{priv: k}
}

// proof signs a proof for method and target at now; token, if set, gives
// ath; nonce, if set, the nonce claim.
func (k *dpopKey) proof(t testing.TB, now time.Time, method, target, token, nonce string) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.priv},
		(&jose.SignerOptions{}).WithType(dpop.JWTType).WithHeader("jwk", jose.JSONWebKey{Key: &k.priv.PublicKey}))
	if err != nil {
		t.Fatal(err)
	}
	k.n++
	c := map[string]any{"jti": k.jtiN(), "htm": method, "htu": target, "iat": now.Unix()}
	if token != "" {
		c["ath"] = dpop.AccessTokenHash(token)
	}
	if nonce != "" {
		c["nonce"] = nonce
	}
	b, _ := json.Marshal(c)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

func (k *dpopKey) jtiN() string {
	b := make([]byte, 12)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// dpopServer has the public client spa, which requires DPoP and reuses
// refresh tokens, beside demo-app.
func dpopServer(t *testing.T, edit func(*idp.Config)) *testServer {
	return newServer(t, func(c *idp.Config) {
		c.Clients[0].AllowOfflineAccess = true
		c.Clients = append(c.Clients, idp.Client{
			ID: "spa", Public: true, RedirectURIs: []string{testRedirect}, AllowOfflineAccess: true,
			RequireDPoP: true, RefreshTokenUsage: idp.RefreshReuse,
		})
		if edit != nil {
			edit(c)
		}
	})
}

// tokenReq posts form to the token endpoint with a DPoP header when
// proof is set, and Basic credentials when id is.
func tokenReq(t testing.TB, ts *testServer, id, secret, proof string, form url.Values) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, ts.URL+"/connect/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if id != "" {
		req.SetBasicAuth(id, secret)
	}
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

func userinfoReq(t testing.TB, ts *testServer, scheme, token, proof string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, ts.URL+"/connect/userinfo", nil)
	req.Header.Set("Authorization", scheme+" "+token)
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	return resp
}

// spaCode logs alice in through spa with offline_access.
func spaCode(t *testing.T, ts *testServer) url.Values {
	t.Helper()
	v, ch := pkce("w")
	q := authorizeParams(ch)
	q.Set("client_id", "spa")
	q.Set("scope", "openid profile offline_access")
	u := login(t, ts, browser(t), q, "alice", testPassword)
	form := exchangeForm(u.Query().Get("code"), v)
	form.Set("client_id", "spa")
	return form
}

func jktOf(t testing.TB, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct {
		Cnf struct {
			JKT string `json:"jkt"`
		} `json:"cnf"`
	}
	json.Unmarshal(b, &c)
	return c.Cnf.JKT
}

func TestDPoPPublicClient(t *testing.T) {
	ts := dpopServer(t, nil)
	key, thief := newDPoPKey(t), newDPoPKey(t)
	tokenURL, userinfoURL := ts.URL+"/connect/token", ts.URL+"/connect/userinfo"
	now := ts.clock.Now

	form := spaCode(t, ts)
	// RequireDPoP: no proof, no token (and the code stays unused).
	resp, body := tokenReq(t, ts, "", "", "", form)
	if resp.StatusCode != 400 || body["error"] != "invalid_dpop_proof" {
		t.Fatalf("without a proof: %d %v", resp.StatusCode, body)
	}
	proof := key.proof(t, now(), "POST", tokenURL, "", "")
	resp, body = tokenReq(t, ts, "", "", proof, form)
	if resp.StatusCode != 200 || body["token_type"] != "DPoP" {
		t.Fatalf("exchange: %d %v", resp.StatusCode, body)
	}
	at, rt := body["access_token"].(string), body["refresh_token"].(string)
	p, _ := dpop.Verify(proof, dpop.Check{Method: "POST", URL: mustURL(tokenURL), Now: now()})
	if jktOf(t, at) != p.JKT {
		t.Fatalf("cnf.jkt %q, want %q", jktOf(t, at), p.JKT)
	}

	t.Run("userinfo", func(t *testing.T) {
		good := key.proof(t, now(), "GET", userinfoURL, at, "")
		if resp := userinfoReq(t, ts, "DPoP", at, good); resp.StatusCode != 200 {
			t.Fatalf("DPoP userinfo: %d %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if resp := userinfoReq(t, ts, "DPoP", at, good); resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_dpop_proof"`) {
			t.Errorf("replayed proof: %d %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		cases := []struct{ name, scheme, proof, want string }{
			{"as Bearer", "Bearer", "", `DPoP realm=`},
			{"without a proof", "DPoP", "", `error="invalid_dpop_proof"`},
			{"thief's key", "DPoP", thief.proof(t, now(), "GET", userinfoURL, at, ""), `error="invalid_dpop_proof"`},
			{"no ath", "DPoP", key.proof(t, now(), "GET", userinfoURL, "", ""), `error="invalid_dpop_proof"`},
			{"wrong htm", "DPoP", key.proof(t, now(), "POST", userinfoURL, at, ""), `error="invalid_dpop_proof"`},
		}
		for _, c := range cases {
			resp := userinfoReq(t, ts, c.scheme, at, c.proof)
			if wa := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 401 || !strings.Contains(wa, c.want) || !strings.Contains(wa, `algs="`) {
				t.Errorf("%s: %d %s", c.name, resp.StatusCode, wa)
			}
		}
	})

	t.Run("refresh", func(t *testing.T) {
		rf := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"spa"}}
		resp, body := tokenReq(t, ts, "", "", "", rf)
		if resp.StatusCode != 400 || body["error"] != "invalid_dpop_proof" {
			t.Errorf("refresh without a proof: %d %v", resp.StatusCode, body)
		}
		resp, body = tokenReq(t, ts, "", "", thief.proof(t, now(), "POST", tokenURL, "", ""), rf)
		if resp.StatusCode != 400 || body["error"] != "invalid_dpop_proof" {
			t.Errorf("refresh with another key: %d %v", resp.StatusCode, body)
		}
		for i := range 2 {
			resp, body = tokenReq(t, ts, "", "", key.proof(t, now(), "POST", tokenURL, "", ""), rf)
			if resp.StatusCode != 200 || body["token_type"] != "DPoP" || body["refresh_token"] != rt {
				t.Fatalf("refresh %d with the key: %d %v", i, resp.StatusCode, body)
			}
		}
	})
}

func mustURL(s string) *url.URL {
	u, _ := url.Parse(s)
	return u
}

func TestDPoPConfidentialClient(t *testing.T) {
	ts := dpopServer(t, nil)
	key := newDPoPKey(t)
	tokenURL := ts.URL + "/connect/token"
	code, verifier := codeFor(t, ts)
	proof := key.proof(t, ts.clock.Now(), "POST", tokenURL, "", "")
	resp, body := tokenReq(t, ts, "demo-app", testSecret, proof, exchangeForm(code, verifier))
	if resp.StatusCode != 200 || body["token_type"] != "DPoP" {
		t.Fatalf("exchange: %d %v", resp.StatusCode, body)
	}
	at := body["access_token"].(string)

	// A proof is good once, whatever the request.
	code2, verifier2 := codeFor(t, ts)
	if resp, body := tokenReq(t, ts, "demo-app", testSecret, proof, exchangeForm(code2, verifier2)); resp.StatusCode != 400 || body["error"] != "invalid_dpop_proof" {
		t.Errorf("replayed proof: %d %v", resp.StatusCode, body)
	}
	// Without a proof demo-app still gets Bearer tokens.
	if resp, body := tokenReq(t, ts, "demo-app", testSecret, "", exchangeForm(code2, verifier2)); resp.StatusCode != 200 || body["token_type"] != "Bearer" || jktOf(t, body["access_token"].(string)) != "" {
		t.Errorf("without a proof: %d %v", resp.StatusCode, body)
	}

	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/connect/introspect", strings.NewReader(url.Values{"token": {at}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("demo-app", testSecret)
	iresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var intro struct {
		Active    bool   `json:"active"`
		TokenType string `json:"token_type"`
		Cnf       struct {
			JKT string `json:"jkt"`
		} `json:"cnf"`
	}
	json.Unmarshal([]byte(readBody(t, iresp)), &intro)
	if !intro.Active || intro.TokenType != "DPoP" || intro.Cnf.JKT != jktOf(t, at) {
		t.Errorf("introspection %+v", intro)
	}
}

func TestDPoPClientCredentials(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		c.Clients = append(c.Clients, idp.Client{ID: "svc", Secret: "svc-secret", AllowClientCredentials: true, AllowedScopes: []string{"api"}})
	})
	key := newDPoPKey(t)
	resp, body := tokenReq(t, ts, "svc", "svc-secret", key.proof(t, ts.clock.Now(), "POST", ts.URL+"/connect/token", "", ""), url.Values{"grant_type": {"client_credentials"}})
	if resp.StatusCode != 200 || body["token_type"] != "DPoP" || jktOf(t, body["access_token"].(string)) == "" {
		t.Fatalf("client_credentials: %d %v", resp.StatusCode, body)
	}
}

func TestDPoPNonce(t *testing.T) {
	ts := dpopServer(t, func(c *idp.Config) { c.DPoPNonce = true; c.DPoPNonceLifetime = time.Minute })
	key := newDPoPKey(t)
	tokenURL := ts.URL + "/connect/token"
	form := spaCode(t, ts)
	resp, body := tokenReq(t, ts, "", "", key.proof(t, ts.clock.Now(), "POST", tokenURL, "", ""), form)
	nonce := resp.Header.Get("DPoP-Nonce")
	if resp.StatusCode != 400 || body["error"] != "use_dpop_nonce" || nonce == "" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("without a nonce: %d %v nonce %q", resp.StatusCode, body, nonce)
	}
	resp, body = tokenReq(t, ts, "", "", key.proof(t, ts.clock.Now(), "POST", tokenURL, "", "made-up"), form)
	if resp.StatusCode != 400 || body["error"] != "use_dpop_nonce" {
		t.Fatalf("with a made-up nonce: %d %v", resp.StatusCode, body)
	}
	resp, body = tokenReq(t, ts, "", "", key.proof(t, ts.clock.Now(), "POST", tokenURL, "", nonce), form)
	if resp.StatusCode != 200 || resp.Header.Get("DPoP-Nonce") == "" {
		t.Fatalf("with the nonce: %d %v", resp.StatusCode, body)
	}
	rf := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {body["refresh_token"].(string)}, "client_id": {"spa"}}
	// Two slots on, the nonce is stale and a new one is handed out.
	ts.clock.Advance(2 * time.Minute)
	resp, body = tokenReq(t, ts, "", "", key.proof(t, ts.clock.Now(), "POST", tokenURL, "", nonce), rf)
	if resp.StatusCode != 400 || body["error"] != "use_dpop_nonce" || resp.Header.Get("DPoP-Nonce") == nonce {
		t.Fatalf("stale nonce: %d %v", resp.StatusCode, body)
	}
	resp, body = tokenReq(t, ts, "", "", key.proof(t, ts.clock.Now(), "POST", tokenURL, "", resp.Header.Get("DPoP-Nonce")), rf)
	if resp.StatusCode != 200 {
		t.Fatalf("fresh nonce: %d %v", resp.StatusCode, body)
	}
}

func TestDPoPDiscoveryAndConfig(t *testing.T) {
	ts := newServer(t, nil)
	resp, err := http.Get(ts.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Algs []string `json:"dpop_signing_alg_values_supported"`
	}
	json.Unmarshal([]byte(readBody(t, resp)), &doc)
	if !slices.Contains(doc.Algs, "ES256") || !slices.Contains(doc.Algs, "RS256") || slices.Contains(doc.Algs, "HS256") {
		t.Errorf("dpop_signing_alg_values_supported %v", doc.Algs)
	}
	cfg := testConfig(t)
	cfg.Issuer = "https://idp.example"
	cfg.Clients = append(cfg.Clients, idp.Client{ID: "spa", Public: true, RedirectURIs: []string{testRedirect}, RefreshTokenUsage: idp.RefreshReuse})
	if _, err := idp.New(cfg, idp.NewMemoryStore(nil)); err == nil || !strings.Contains(err.Error(), "DPoP") {
		t.Errorf("public reuse without DPoP: %v", err)
	}
	cfg.Clients[len(cfg.Clients)-1].RequireDPoP = true
	if _, err := idp.New(cfg, idp.NewMemoryStore(nil)); err != nil {
		t.Errorf("public reuse with DPoP: %v", err)
	}
}

// TestDPoPConfidentialRefreshUnbound: a confidential client's refresh
// token stays unbound (RFC 9449 §5: its authentication protects it); each
// refresh's access token is bound to that request's proof, if any.
func TestDPoPConfidentialRefreshUnbound(t *testing.T) {
	ts := dpopServer(t, nil)
	tokenURL := ts.URL + "/connect/token"
	first, second := newDPoPKey(t), newDPoPKey(t)
	v, ch := pkce("v")
	q := authorizeParams(ch)
	q.Set("scope", "openid offline_access")
	u := login(t, ts, browser(t), q, "alice", testPassword)
	resp, body := tokenReq(t, ts, "demo-app", testSecret, first.proof(t, ts.clock.Now(), "POST", tokenURL, "", ""), exchangeForm(u.Query().Get("code"), v))
	if resp.StatusCode != 200 || body["token_type"] != "DPoP" {
		t.Fatalf("exchange: %d %v", resp.StatusCode, body)
	}
	rf := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {body["refresh_token"].(string)}}
	resp, body = tokenReq(t, ts, "demo-app", testSecret, second.proof(t, ts.clock.Now(), "POST", tokenURL, "", ""), rf)
	if resp.StatusCode != 200 || body["token_type"] != "DPoP" || jktOf(t, body["access_token"].(string)) == "" {
		t.Fatalf("refresh with a new key: %d %v", resp.StatusCode, body)
	}
	rf.Set("refresh_token", body["refresh_token"].(string))
	resp, body = tokenReq(t, ts, "demo-app", testSecret, "", rf)
	if resp.StatusCode != 200 || body["token_type"] != "Bearer" {
		t.Fatalf("refresh without a proof: %d %v", resp.StatusCode, body)
	}
}
