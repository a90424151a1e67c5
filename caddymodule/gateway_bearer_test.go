package caddymodule

import (
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/caddyserver/caddy/v2"

	"github.com/authgate/authgate/idp"
)

// issuedToken gets a real access token for alice from op with scope.
func issuedToken(t *testing.T, gw *gwServer, op *opServer, scope string) string {
	t.Helper()
	u := newUser(t, gw, op)
	verifier := strings.Repeat("v", 43)
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{
		"client_id": {"demo-app"}, "redirect_uri": {"http://gw.test/oauth2/callback"}, "response_type": {"code"},
		"scope": {scope}, "state": {"s"}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
	}
	resp, _ := u.get(op.URL+"/connect/authorize?"+q.Encode(), nil)
	_, body := u.get(op.URL+resp.Header.Get("Location"), nil)
	form := url.Values{"username": {"alice"}, "password": {gwPassword}}
	for _, m := range formField.FindAllStringSubmatch(body, -1) {
		form.Set(m[1], strings.ReplaceAll(m[2], "&#43;", "+"))
	}
	resp, err := u.c.PostForm(op.URL+"/account/login", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cb, _ := url.Parse(resp.Header.Get("Location"))
	tr, err := http.PostForm(op.URL+"/connect/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {cb.Query().Get("code")}, "redirect_uri": {"http://gw.test/oauth2/callback"},
		"code_verifier": {verifier}, "client_id": {"demo-app"}, "client_secret": {"demo-app-secret"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(tr.Body).Decode(&out)
	if out.AccessToken == "" {
		t.Fatalf("no access token (status %d)", tr.StatusCode)
	}
	return out.AccessToken
}

// bearerStatus sends GET /api to gw with a bearer token and returns the
// status.
func bearerStatus(t *testing.T, gw *gwServer, token string) int {
	t.Helper()
	return bearerResponse(t, gw, token).StatusCode
}

// bearerResponse sends GET /api to gw with a bearer token and returns the
// response, its body closed.
func bearerResponse(t *testing.T, gw *gwServer, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, gw.URL+"/api", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// forge signs claims with the provider's own RS256 key (as a compromised
// or confused issuer would), to test each check separately.
func forge(t *testing.T, claims map[string]any) string {
	t.Helper()
	return forgeTyped(t, "at+jwt", claims)
}

func forgeTyped(t *testing.T, typ string, claims map[string]any) string {
	t.Helper()
	k := gwKeys[0]
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k.Key, KeyID: k.ID}}, (&jose.SignerOptions{}).WithType(jose.ContentType(typ)))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestGatewayBearer(t *testing.T) {
	op := newOP(t, nil)
	skew := caddy.Duration(time.Second)
	gw := newGateway(t, op, func(g *Gateway) { g.Mode = "bearer"; g.Audience = []string{"demo-api"}; g.ClockSkew = &skew })
	helper := newGateway(t, op, nil)
	good := issuedToken(t, helper, op, "openid api")
	staticAud := issuedToken(t, helper, op, "openid profile")
	now := time.Now()
	base := func() map[string]any {
		return map[string]any{"iss": op.URL, "sub": "s1", "aud": "demo-api", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	}
	with := func(k string, v any) string {
		c := base()
		c[k] = v
		return forge(t, c)
	}
	// alg none: header and payload, no signature.
	payload, _ := json.Marshal(base())
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + base64.RawURLEncoding.EncodeToString(payload) + "."
	// HS256 keyed with the provider's public key, the classic confusion.
	pubDER, _ := x509.MarshalPKIXPublicKey(gwKeys[0].Key.Public().(*rsa.PublicKey))
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hsInput := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT","kid":"`+gwKeys[0].ID+`"}`)) + "." + base64.RawURLEncoding.EncodeToString(payload)
	mac := hmac.New(sha256.New, pubPEM)
	mac.Write([]byte(hsInput))
	hs256 := hsInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	tests := []struct {
		name  string
		token string
		want  int
	}{
		{"issued token", good, 200},
		{"forged but valid claims", forge(t, base()), 200},
		{"expired", with("exp", now.Add(-time.Minute).Unix()), 401},
		{"wrong audience", with("aud", "other-api"), 401},
		{"static audience", staticAud, 401},
		{"wrong issuer", with("iss", "https://evil.example"), 401},
		{"alg none", none, 401},
		{"HS256 with the public key", hs256, 401},
		{"garbage", "abc.def.ghi", 401},
		{"no token", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, gw.URL+"/api", nil)
			req.Header.Set("Accept", "text/html") // bearer mode never redirects
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want == 401 {
				h := resp.Header.Get("WWW-Authenticate")
				if !strings.HasPrefix(h, "Bearer") || (tt.token != "" && !strings.Contains(h, `error="invalid_token"`)) {
					t.Fatalf("WWW-Authenticate = %q", h)
				}
			}
		})
	}
	// A cached token stops working when it expires (and the second of
	// clock skew has passed).
	short := with("exp", time.Now().Add(1500*time.Millisecond).Unix())
	call := func() int { return bearerStatus(t, gw, short) }
	if st := call(); st != 200 {
		t.Fatalf("short-lived token: %d", st)
	}
	deadline := time.Now().Add(5 * time.Second)
	for call() == 200 {
		if time.Now().After(deadline) {
			t.Fatal("expired token still accepted from the cache")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestGatewayPassAccessToken(t *testing.T) {
	op := newOP(t, nil)
	t.Run("session", func(t *testing.T) {
		gw := newGateway(t, op, func(g *Gateway) { g.PassAccessToken = true })
		u := newUser(t, gw, op)
		u.signIn("/")
		echo := u.echo("/", map[string]string{"Authorization": "Bearer forged"})
		if got := echoHeader(echo, "Authorization"); !strings.HasPrefix(got, "Bearer ey") {
			t.Fatalf("Authorization upstream = %q, want the session's access token", got)
		}
	})
	t.Run("bearer", func(t *testing.T) {
		gw := newGateway(t, op, func(g *Gateway) { g.Mode = "bearer"; g.Audience = []string{"demo-api"}; g.PassAccessToken = true })
		tok := issuedToken(t, newGateway(t, op, nil), op, "openid api")
		req, _ := http.NewRequest(http.MethodGet, gw.URL+"/", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var echo map[string]any
		json.NewDecoder(resp.Body).Decode(&echo)
		if got := echoHeader(echo, "Authorization"); got != "Bearer "+tok {
			t.Fatalf("Authorization upstream = %q, want the caller's token", got)
		}
	})
}

func TestGatewayIntrospect(t *testing.T) {
	op := newOP(t, func(c *idp.Config) { c.APIResources[0].Secret = "api-secret" })
	local := newGateway(t, op, func(g *Gateway) { g.Mode = "bearer"; g.Audience = []string{"demo-api"} })
	checked := newGateway(t, op, func(g *Gateway) {
		g.Mode = "bearer"
		g.Audience = []string{"demo-api"}
		g.ClientID, g.ClientSecret = "demo-api", "api-secret"
		g.Introspect = true
		g.IntrospectCache = caddy.Duration(300 * time.Millisecond)
	})
	tok := issuedToken(t, newGateway(t, op, nil), op, "openid api")
	call := func(gw *gwServer) int { return bearerStatus(t, gw, tok) }
	if a, b := call(local), call(checked); a != 200 || b != 200 {
		t.Fatalf("before revocation: local %d, introspecting %d", a, b)
	}
	resp, err := http.PostForm(op.URL+"/connect/revocation", url.Values{"token": {tok}, "client_id": {"demo-app"}, "client_secret": {"demo-app-secret"}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("revocation: %v %v", err, resp)
	}
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for call(checked) != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("introspecting gateway still accepts the revoked token")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := call(local); st != 200 {
		t.Fatalf("local-only gateway: %d; it checks JWTs locally, so a revoked token passes until it expires", st)
	}
}

// TestGatewayBearerLetter: an ID token is no access token; a preflight
// from a listed origin is forwarded, when cors says so, without identity;
// another scheme gets the bare challenge.
func TestGatewayBearerLetter(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, func(g *Gateway) {
		g.Mode = "bearer"
		g.Audience = []string{"demo-app"}
		g.CORS = &GatewayCORS{Origins: []string{"http://spa.test"}, Preflight: "forward"}
	})
	now := time.Now()
	idToken := forgeTyped(t, "JWT", map[string]any{"iss": op.URL, "sub": "s1", "aud": "demo-app", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "nonce": "n", "at_hash": "x"})
	do := func(method string, h map[string]string) (*http.Response, map[string]any) {
		req, _ := http.NewRequest(method, gw.URL+"/api", nil)
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var echo map[string]any
		json.NewDecoder(resp.Body).Decode(&echo)
		return resp, echo
	}
	if resp, _ := do(http.MethodGet, map[string]string{"Authorization": "Bearer " + idToken}); resp.StatusCode != 401 {
		t.Errorf("an ID token as bearer token: %d, want 401", resp.StatusCode)
	}
	plainJWT := forgeTyped(t, "JWT", map[string]any{"iss": op.URL, "sub": "s1", "aud": "demo-app", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()})
	if resp, _ := do(http.MethodGet, map[string]string{"Authorization": "Bearer " + plainJWT}); resp.StatusCode != 200 {
		t.Errorf("an access token typed JWT, as many providers make them: %d, want 200", resp.StatusCode)
	}
	resp, _ := do(http.MethodGet, map[string]string{"Authorization": "Basic Zm9vOmJhcg=="})
	if h := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 401 || strings.Contains(h, "error=") || !strings.HasPrefix(h, "Bearer") {
		t.Errorf("Basic credentials: %d %q, want 401 with a bare Bearer challenge", resp.StatusCode, h)
	}
	resp, echo := do(http.MethodOptions, map[string]string{"Origin": "http://spa.test", "Access-Control-Request-Method": "GET", "X-Auth-Request-User": "attacker"})
	if resp.StatusCode != 200 || echoHeader(echo, "X-Auth-Request-User") != "" {
		t.Errorf("preflight: %d, upstream saw %v; want it passed on without identity", resp.StatusCode, echo["headers"])
	}
}

func TestGatewaySignOutRevokes(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, func(g *Gateway) { g.Scopes = []string{"openid", "profile", "email", "offline_access"} })
	u := newUser(t, gw, op)
	u.signIn("/")
	raw := ""
	gwURL, _ := url.Parse("http://gw.test/")
	for _, c := range u.jar.Cookies(gwURL) {
		if c.Name == "authgate" {
			raw = c.Value
		}
	}
	var s session
	if err := gw.gw.codec.decode("authgate", raw, &s); err != nil || s.RefreshToken == "" {
		t.Fatalf("session: %v, refresh token %q", err, s.RefreshToken)
	}
	u.signOut()
	resp, err := http.PostForm(op.URL+"/connect/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {s.RefreshToken},
		"client_id": {"demo-app"}, "client_secret": {"demo-app-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("refresh with the signed-out session's token: %d, want 400 (revoked at sign-out)", resp.StatusCode)
	}
}

// TestGatewayJWKSRefetchBounded: tokens with ever new unknown kids cost at
// most one key fetch per jwksRefetchGap, not one per request.
func TestGatewayJWKSRefetchBounded(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, func(g *Gateway) { g.Mode = "bearer"; g.Audience = []string{"demo-api"} })
	good := issuedToken(t, newGateway(t, op, nil), op, "openid api")
	call := func(tok string) int { return bearerStatus(t, gw, tok) }
	if st := call(good); st != 200 {
		t.Fatalf("good token: %d", st)
	}
	before := op.jwksFetches.Load()
	other, err := idp.GenerateKey(idp.RS256)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: other.Key, KeyID: fmt.Sprintf("kid-%d", i)}}, (&jose.SignerOptions{}).WithType("at+jwt"))
		tok, _ := jwt.Signed(s).Claims(map[string]any{"iss": op.URL, "sub": "x", "aud": "demo-api", "exp": time.Now().Add(time.Hour).Unix()}).Serialize()
		if st := call(tok); st != 401 {
			t.Fatalf("forged kid %d: %d", i, st)
		}
	}
	if n := op.jwksFetches.Load() - before; n > 1 {
		t.Fatalf("20 unknown kids caused %d key fetches, want at most 1", n)
	}
	if st := call(good); st != 200 {
		t.Fatalf("good token after the forged ones: %d", st)
	}
}

// TestGatewayBearerForbidden: a valid bearer token whose user the allow
// rules refuse gets 403 with the challenge RFC 6750 §3.1 defines for it,
// error="insufficient_scope"; a cookie session refused by the rules gets
// no bearer challenge.
func TestGatewayBearerForbidden(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, func(g *Gateway) {
		g.Mode = "api"
		g.Audience = []string{"demo-api"}
		g.Allow = []GatewayRule{{Group: "root"}}
	})
	token := issuedToken(t, newGateway(t, op, nil), op, "openid api")
	resp := bearerResponse(t, gw, token)
	if h := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusForbidden || !strings.HasPrefix(h, "Bearer ") || !strings.Contains(h, `error="insufficient_scope"`) {
		t.Errorf("status %d, WWW-Authenticate %q; want 403 with Bearer error=\"insufficient_scope\"", resp.StatusCode, h)
	}

	u := newUser(t, gw, op)
	resp, _ = u.get("http://gw.test/", map[string]string{"Accept": "application/json"})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no session: status %d, want 401", resp.StatusCode)
	}
	browser := newGateway(t, op, func(g *Gateway) { g.Allow = []GatewayRule{{Group: "root"}} })
	u = newUser(t, browser, op)
	resp, _ = u.get("http://gw.test/", nil)
	u.login(resp)
	resp, _ = u.get("http://gw.test/", map[string]string{"Accept": "application/json"})
	if h := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusForbidden || h != "" {
		t.Errorf("session refused by the rules: status %d, WWW-Authenticate %q; want 403 without a challenge", resp.StatusCode, h)
	}
}

// TestGatewayAllowScope: an allow scope rule admits a bearer token whose
// scope (a space-separated string) or scp (a list or a string) carries
// every scope of the rule; rules combine as any other allow rules (any
// one admits). A token short of them gets 403 with RFC 6750 §3.1's
// insufficient_scope and the scope a rule wants.
func TestGatewayAllowScope(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, func(g *Gateway) {
		g.Mode = "api"
		g.Audience = []string{"demo-api"}
		g.Allow = []GatewayRule{{Scope: []string{"api.read", "api.write"}}, {Scope: []string{"api.admin"}}}
	})
	now := time.Now()
	token := func(k string, v any) string {
		c := map[string]any{"iss": op.URL, "sub": "s1", "aud": "demo-api", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
		if k != "" {
			c[k] = v
		}
		return forge(t, c)
	}
	tests := []struct {
		name  string
		token string
		want  int
	}{
		{"scope string with both", token("scope", "openid api.write api.read"), 200},
		{"scp list with both", token("scp", []any{"api.read", "api.write"}), 200},
		{"scp string with both", token("scp", "api.read api.write"), 200},
		{"the other rule", token("scope", "api.admin"), 200},
		{"one of two", token("scope", "api.read"), 403},
		{"a longer scope is not it", token("scope", "api.readx api.write"), 403},
		{"a prefix is not it", token("scp", []any{"api.rea", "api.write"}), 403},
		{"scope as one list element", token("scp", []any{"api.read api.write"}), 403},
		{"no scope", token("", nil), 403},
		{"scope of another type", token("scope", 7), 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := bearerResponse(t, gw, tt.token)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			want := ""
			if tt.want == 403 {
				want = `Bearer realm="gw.test", error="insufficient_scope", scope="api.read api.write"`
			}
			if h := resp.Header.Get("WWW-Authenticate"); h != want {
				t.Fatalf("WWW-Authenticate %q, want %q", h, want)
			}
		})
	}

	// A token the provider issued, with its API scope.
	strict := newGateway(t, op, func(g *Gateway) {
		g.Mode = "bearer"
		g.Audience = []string{"demo-api"}
		g.Allow = []GatewayRule{{Scope: []string{"api"}}}
	})
	helper := newGateway(t, op, nil)
	if st := bearerStatus(t, strict, issuedToken(t, helper, op, "openid api")); st != 200 {
		t.Fatalf("issued token with scope api: status %d, want 200", st)
	}

	// A cookie session has no scope: in api mode it passes only by
	// another rule.
	u := newUser(t, gw, op)
	resp, _ := u.get("http://gw.test/oauth2/start?rd=/", nil)
	u.login(resp)
	resp, _ = u.get("http://gw.test/", map[string]string{"Accept": "application/json"})
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("WWW-Authenticate") != "" {
		t.Fatalf("cookie session against scope rules: status %d, WWW-Authenticate %q; want 403 without a challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

// TestGatewayAllowScopeValidate: a scope rule needs a mode with bearer
// tokens, and scopes that are scope-tokens.
func TestGatewayAllowScopeValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		mode string
		rule GatewayRule
	}{
		{"browser mode", "browser", GatewayRule{Scope: []string{"api"}}},
		{"no scope", "api", GatewayRule{Scope: []string{}}},
		{"quote", "api", GatewayRule{Scope: []string{`a"b`}}},
		{"space", "api", GatewayRule{Scope: []string{"a b"}}},
		{"scope and group", "api", GatewayRule{Scope: []string{"api"}, Group: "g"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := &Gateway{Issuer: "https://op.example", ClientID: "gw", ClientSecret: "s", Mode: tt.mode, Audience: []string{"api"},
				SessionKeys: []string{"a-test-session-key-of-enough-length"}, Allow: []GatewayRule{tt.rule}}
			if err := provisionErr(t, g); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestGatewayClockSkew: bearer tokens are checked with the clock skew
// leeway for exp, nbf and iat, 30s by default; clock_skew sets it, 0 too.
func TestGatewayClockSkew(t *testing.T) {
	op := newOP(t, nil)
	zero, minute := caddy.Duration(0), caddy.Duration(time.Minute)
	gateways := map[string]*gwServer{}
	for name, skew := range map[string]*caddy.Duration{"default": nil, "0": &zero, "1m": &minute} {
		gateways[name] = newGateway(t, op, func(g *Gateway) { g.Mode = "bearer"; g.Audience = []string{"demo-api"}; g.ClockSkew = skew })
	}
	now := time.Now()
	token := func(k string, d time.Duration) string {
		c := map[string]any{"iss": op.URL, "sub": "s1", "aud": "demo-api", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
		c[k] = now.Add(d).Unix()
		return forge(t, c)
	}
	tests := []struct {
		name    string
		gateway string
		token   string
		want    int
	}{
		{"expired 10s ago, default", "default", token("exp", -10*time.Second), 200},
		{"expired 45s ago, default", "default", token("exp", -45*time.Second), 401},
		{"expired 45s ago, 1m", "1m", token("exp", -45*time.Second), 200},
		{"expired 5s ago, 0", "0", token("exp", -5*time.Second), 401},
		{"nbf in 10s, default", "default", token("nbf", 10*time.Second), 200},
		{"nbf in 2m, default", "default", token("nbf", 2*time.Minute), 401},
		{"nbf in 5s, 0", "0", token("nbf", 5*time.Second), 401},
		{"nbf in 45s, 1m", "1m", token("nbf", 45*time.Second), 200},
		{"iat in 10s, default", "default", token("iat", 10*time.Second), 200},
		{"iat in 2m, default", "default", token("iat", 2*time.Minute), 401},
		{"iat in 5s, 0", "0", token("iat", 5*time.Second), 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if st := bearerStatus(t, gateways[tt.gateway], tt.token); st != tt.want {
				t.Fatalf("status %d, want %d", st, tt.want)
			}
		})
	}
	bad := caddy.Duration(6 * time.Minute)
	g := &Gateway{Issuer: op.URL, Mode: "bearer", Audience: []string{"demo-api"}, ClockSkew: &bad, SessionKeys: []string{"a-test-session-key-of-enough-length"}}
	if err := provisionErr(t, g); err == nil {
		t.Fatal("clock_skew 6m accepted")
	}
}

// TestGatewayIDTokenClockSkew: the ID token of a login is checked with
// the clock skew too: a provider whose clock runs 20s ahead (iat, nbf in
// our future) is accepted with the default 30s, refused with clock_skew
// 0 and when it runs 2 minutes ahead.
func TestGatewayIDTokenClockSkew(t *testing.T) {
	zero := caddy.Duration(0)
	tests := []struct {
		name  string
		ahead time.Duration
		skew  *caddy.Duration
		ok    bool
	}{
		{"20s ahead, default", 20 * time.Second, nil, true},
		{"20s ahead, 0", 20 * time.Second, &zero, false},
		{"2m ahead, default", 2 * time.Minute, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := newOP(t, func(c *idp.Config) { c.Now = func() time.Time { return time.Now().Add(tt.ahead) } })
			gw := newGateway(t, op, func(g *Gateway) { g.ClockSkew = tt.skew })
			u := newUser(t, gw, op)
			resp, _ := u.get("http://gw.test/", nil)
			resp = u.login(resp)
			if ok := resp.StatusCode == http.StatusFound; ok != tt.ok {
				t.Fatalf("callback status %d, want login %v", resp.StatusCode, tt.ok)
			}
		})
	}
}

// TestGatewayAllowScopeUserinfo: userinfo answers claims, not a token's
// scopes, so an allow scope rule beside bearer_check userinfo could never
// match; provisioning says so instead of refusing every token.
func TestGatewayAllowScopeUserinfo(t *testing.T) {
	g := &Gateway{Issuer: "https://op.example", ClientID: "gw", ClientSecret: "s", Mode: "bearer", BearerCheck: bearerCheckUserinfo,
		SessionKeys: []string{"a-test-session-key-of-enough-length"}, Allow: []GatewayRule{{Scope: []string{"api"}}}}
	err := provisionErr(t, g)
	if err == nil || !strings.Contains(err.Error(), "allow scope") || !strings.Contains(err.Error(), "userinfo") {
		t.Fatalf("provisioning: %v, want an error naming allow scope and bearer_check userinfo", err)
	}
}
