package e2e_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/authgate/authgate/internal/caddytest"
)

// backchannelLogoutEvent is the event of a logout token (Back-Channel
// Logout 1.0 §2.4).
const backchannelLogoutEvent = "http://schemas.openid.net/event/backchannel-logout"

// providerSigningKey reads the RS256 key that the provider of issuer
// generated into its Caddy storage (file_system at storage), where the
// README says it is: authgate/provider/<digest of issuer>/signing_keys.json,
// a JWK Set of private keys.
func providerSigningKey(t testing.TB, storage, issuer string) jose.JSONWebKey {
	t.Helper()
	sum := sha256.Sum256([]byte(issuer))
	path := filepath.Join(storage, "authgate", "provider", hex.EncodeToString(sum[:])[:16], "signing_keys.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the provider's signing keys: %v", err)
	}
	var ring jose.JSONWebKeySet
	if err := json.Unmarshal(b, &ring); err != nil {
		t.Fatalf("decoding %s: %v", path, err)
	}
	for _, k := range ring.Keys {
		if _, ok := k.Key.(*rsa.PrivateKey); ok && k.KeyID != "" {
			return k
		}
	}
	t.Fatalf("%s holds no private RS256 key", path)
	return jose.JSONWebKey{}
}

// signJWT signs claims as a compact JWS with key, typ as its typ header
// ("" for none).
func signJWT(t testing.TB, key jose.JSONWebKey, alg jose.SignatureAlgorithm, typ string, claims map[string]any) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// jwtClaims decodes the payload of a JWT, unverified: the test's own view
// of a token the gateway passed to the upstream.
func jwtClaims(t testing.TB, raw string) map[string]any {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// gatewaySession is a gateway session of the test: its cookie, and the
// provider's sid and sub it carries.
type gatewaySession struct {
	cookie, sid, sub, accessToken string
}

// backchannelSession logs alice in through the gateway in a browser of
// its own, so with a provider session (sid) of its own, and reads the
// sid from the access token that the gateway passes to /echo.
func backchannelSession(t testing.TB, s *splitSites) gatewaySession {
	t.Helper()
	cookie := s.gatewayLogin(t, caddytest.NewBrowser(t))
	resp, body := apiGet(t, s.gwURL+"/echo", cookie, jsonAccept)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/echo: %d %s", resp.StatusCode, body)
	}
	at, ok := strings.CutPrefix(parseEcho(t, body).Headers.Get("Authorization"), "Bearer ")
	if !ok {
		t.Fatal("the upstream got no access token")
	}
	c := jwtClaims(t, at)
	sid, _ := c["sid"].(string)
	sub, _ := c["sub"].(string)
	if sid == "" || sub == "" {
		t.Fatalf("the access token has sid %q, sub %q", sid, sub)
	}
	return gatewaySession{cookie: cookie, sid: sid, sub: sub, accessToken: at}
}

// postLogout sends a back-channel logout request to the gateway: method,
// body and Content-Type as given. It returns the status, the answer's
// headers and body.
func postLogout(t testing.TB, gateway, method, contentType, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), method, gateway+"/oauth2/backchannel_logout", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := noRedirectClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b := caddytest.ReadBody(t, resp)
	return resp.StatusCode, resp.Header, b
}

// logoutForm is a back-channel logout request's body (§2.5).
func logoutForm(token string) string {
	return url.Values{"logout_token": {token}}.Encode()
}

// checkOAuthError checks an answer of §2.8 to a request that failed: a
// 4xx (status, unless 0) with a JSON OAuth error body whose error is
// invalid_request, and Cache-Control: no-store.
func checkOAuthError(t testing.TB, wantStatus, status int, header http.Header, body string) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("status %d, want %d (%s)", status, wantStatus, body)
	}
	if cc := header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	if mt, _, _ := mime.ParseMediaType(header.Get("Content-Type")); mt != "application/json" {
		t.Errorf("Content-Type %q, want application/json", header.Get("Content-Type"))
	}
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != "invalid_request" {
		t.Errorf("body %q: want a JSON OAuth error invalid_request (%v)", body, err)
	}
}

// TestGatewayBackchannelValidation: the gateway's back-channel logout
// endpoint, run by the real binary, refuses every logout token that
// breaks a rule of Back-Channel Logout 1.0 §2.6, each signed with the
// provider's real key unless the rule is the signature, and naming a
// live session: 400 with a JSON OAuth error and no-store (§2.8), and the
// session still passes. A valid token is accepted once (200) and its
// replay refused; a valid token for the session's sid ends it.
func TestGatewayBackchannelValidation(t *testing.T) {
	t.Parallel()
	s := newBackchannelSite(t)
	victim := backchannelSession(t, s)
	other := backchannelSession(t, s)
	if victim.sid == other.sid {
		t.Fatalf("two browsers share the provider session %q", victim.sid)
	}
	key := providerSigningKey(t, s.provider.Storage, s.issuer)

	stillIn := func(t *testing.T, sess gatewaySession) {
		t.Helper()
		if resp, body := apiGet(t, s.gwURL+"/", sess.cookie, jsonAccept); resp.StatusCode != http.StatusOK {
			t.Fatalf("the session was ended: %d %s", resp.StatusCode, body)
		}
	}
	// claims are those of a valid logout token for sess, a new jti each.
	claims := func(sess gatewaySession) map[string]any {
		now := time.Now()
		return map[string]any{
			"iss":    s.issuer,
			"aud":    "demo-app",
			"iat":    now.Unix(),
			"exp":    now.Add(2 * time.Minute).Unix(),
			"jti":    rand.Text(),
			"sid":    sess.sid,
			"sub":    sess.sub,
			"events": map[string]any{backchannelLogoutEvent: map[string]any{}},
		}
	}
	with := func(changes map[string]any, remove ...string) map[string]any {
		c := claims(victim)
		maps.Copy(c, changes)
		for _, name := range remove {
			delete(c, name)
		}
		return c
	}
	sign := func(c map[string]any) string { return signJWT(t, key, jose.RS256, "logout+jwt", c) }

	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tokens := []struct {
		name, token string
	}{
		{"bad signature (another key, the provider's kid)", signJWT(t, jose.JSONWebKey{Key: otherKey, KeyID: key.KeyID, Algorithm: string(jose.RS256)}, jose.RS256, "logout+jwt", claims(victim))},
		{"bad signature (another key, its own kid)", signJWT(t, jose.JSONWebKey{Key: otherKey, KeyID: "not-the-providers", Algorithm: string(jose.RS256)}, jose.RS256, "logout+jwt", claims(victim))},
		{"alg none", unsignedJWT(t, claims(victim))},
		{"HS256 keyed with the provider's public key", signJWT(t, jose.JSONWebKey{Key: publicKeyBytes(t, key), KeyID: key.KeyID}, jose.HS256, "logout+jwt", claims(victim))},
		{"not a JWT", "not-a-jwt"},
		{"wrong aud", sign(with(map[string]any{"aud": "other-app"}))},
		{"aud list without us", sign(with(map[string]any{"aud": []string{"other-app", "third-app"}}))},
		{"no aud", sign(with(nil, "aud"))},
		{"wrong iss", sign(with(map[string]any{"iss": s.issuer + "/other"}))},
		{"no iss", sign(with(nil, "iss"))},
		{"nonce present", sign(with(map[string]any{"nonce": "n-0S6_WzA2Mj"}))},
		{"missing events", sign(with(nil, "events"))},
		{"wrong event", sign(with(map[string]any{"events": map[string]any{"http://schemas.openid.net/event/other": map[string]any{}}}))},
		{"event not an object", sign(with(map[string]any{"events": map[string]any{backchannelLogoutEvent: "logout"}}))},
		{"neither sid nor sub", sign(with(nil, "sid", "sub"))},
		{"iat far in the future", sign(with(map[string]any{"iat": now.Add(time.Hour).Unix(), "exp": now.Add(time.Hour + 2*time.Minute).Unix()}))},
		{"iat too old", sign(with(map[string]any{"iat": now.Add(-time.Hour).Unix()}))},
		{"no iat", sign(with(nil, "iat"))},
		{"expired", sign(with(map[string]any{"iat": now.Add(-4 * time.Minute).Unix(), "exp": now.Add(-2 * time.Minute).Unix()}))},
		{"no exp", sign(with(nil, "exp"))},
		{"no jti", sign(with(nil, "jti"))},
		{"typ JWT", signJWT(t, key, jose.RS256, "JWT", claims(victim))},
		// The provider's own access token, signed with its key and
		// carrying the session's sid, typed at+jwt.
		{"an access token", victim.accessToken},
	}
	for _, tc := range tokens {
		t.Run(tc.name, func(t *testing.T) {
			status, header, body := postLogout(t, s.gwURL, http.MethodPost, "application/x-www-form-urlencoded", logoutForm(tc.token))
			checkOAuthError(t, http.StatusBadRequest, status, header, body)
			stillIn(t, victim)
		})
	}

	valid := logoutForm(sign(claims(victim)))
	requests := []struct {
		name, method, contentType, body string
		status                          int
	}{
		{"GET", http.MethodGet, "", "", http.StatusMethodNotAllowed},
		{"PUT", http.MethodPut, "application/x-www-form-urlencoded", valid, http.StatusMethodNotAllowed},
		{"JSON body", http.MethodPost, "application/json", `{"logout_token":"x"}`, http.StatusBadRequest},
		{"no Content-Type", http.MethodPost, "", valid, http.StatusBadRequest},
		{"no logout_token", http.MethodPost, "application/x-www-form-urlencoded", "token=x", http.StatusBadRequest},
		{"body over 64 KB", http.MethodPost, "application/x-www-form-urlencoded", valid + "&pad=" + strings.Repeat("a", 70<<10), http.StatusBadRequest},
		{"bad form encoding", http.MethodPost, "application/x-www-form-urlencoded", "logout_token=%zz", http.StatusBadRequest},
	}
	for _, tc := range requests {
		t.Run(tc.name, func(t *testing.T) {
			status, header, body := postLogout(t, s.gwURL, tc.method, tc.contentType, tc.body)
			checkOAuthError(t, tc.status, status, header, body)
			stillIn(t, victim)
		})
	}
	if t.Failed() {
		t.FailNow() // the session was ended, or the answers are wrong: what follows would not tell more
	}

	t.Run("replayed jti", func(t *testing.T) {
		// A valid token for the other session: accepted once, its
		// session ended; the same token again is a replay.
		token := logoutForm(sign(claims(other)))
		status, header, body := postLogout(t, s.gwURL, http.MethodPost, "application/x-www-form-urlencoded", token)
		if status != http.StatusOK || header.Get("Cache-Control") != "no-store" {
			t.Fatalf("valid logout token: %d, Cache-Control %q, %s; want 200, no-store", status, header.Get("Cache-Control"), body)
		}
		if resp, body := apiGet(t, s.gwURL+"/", other.cookie, jsonAccept); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("the other session after its logout: %d %s, want 401", resp.StatusCode, body)
		}
		status, header, body = postLogout(t, s.gwURL, http.MethodPost, "application/x-www-form-urlencoded", token)
		checkOAuthError(t, http.StatusBadRequest, status, header, body)
		stillIn(t, victim)
	})

	t.Run("valid token ends the session", func(t *testing.T) {
		status, header, body := postLogout(t, s.gwURL, http.MethodPost, "application/x-www-form-urlencoded", valid)
		if status != http.StatusOK || header.Get("Cache-Control") != "no-store" {
			t.Fatalf("valid logout token: %d, Cache-Control %q, %s; want 200, no-store", status, header.Get("Cache-Control"), body)
		}
		if resp, body := apiGet(t, s.gwURL+"/", victim.cookie, jsonAccept); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("API call after the logout: %d %s, want 401", resp.StatusCode, body)
		}
		resp, _ := apiGet(t, s.gwURL+"/", victim.cookie, http.Header{"Accept": {"text/html"}})
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, s.issuer) {
			t.Errorf("navigation after the logout: %d to %q, want a fresh login", resp.StatusCode, loc)
		}
	})
}

// unsignedJWT is claims as an unsecured JWT (RFC 7519 §6: alg none).
func unsignedJWT(t testing.TB, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"logout+jwt"}`)) + "." + enc(payload) + "."
}

// publicKeyBytes is the JSON of key's public half, which an attacker
// knows from the JWKS and could use as an HMAC key.
func publicKeyBytes(t testing.TB, key jose.JSONWebKey) []byte {
	t.Helper()
	b, err := key.Public().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
