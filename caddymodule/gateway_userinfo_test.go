package caddymodule

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/caddyserver/caddy/v2"
)

// fakeOP is a provider of its own keys that is not ours: discovery, JWKS
// and a userinfo endpoint whose answers the test sets per token, as Dex
// or Google would give them.
type fakeOP struct {
	*httptest.Server
	key   *rsa.PrivateKey
	calls atomic.Int32 // userinfo requests

	mu       sync.Mutex
	answers  map[string]fakeAnswer // by token; none: 401
	userinfo string                // the advertised userinfo_endpoint; default: ours
	hold     chan struct{}         // when set, userinfo waits for it to close
	arrived  chan struct{}         // gets a value as each userinfo request arrives
}

type fakeAnswer struct {
	status int
	body   string
}

func newFakeOP(t testing.TB) *fakeOP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	op := &fakeOP{key: key, answers: map[string]fakeAnswer{}, arrived: make(chan struct{}, 64)}
	op.Server = httptest.NewServer(http.HandlerFunc(op.serve))
	t.Cleanup(op.Close)
	return op
}

func (op *fakeOP) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		op.mu.Lock()
		userinfo := op.userinfo
		op.mu.Unlock()
		if userinfo == "" {
			userinfo = op.URL + "/userinfo"
		}
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": op.URL, "authorization_endpoint": op.URL + "/auth", "token_endpoint": op.URL + "/token",
			"jwks_uri": op.URL + "/keys", "userinfo_endpoint": userinfo,
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	case "/keys":
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &op.key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	case "/userinfo":
		op.calls.Add(1)
		op.arrived <- struct{}{}
		op.mu.Lock()
		hold := op.hold
		a, ok := op.answers[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		op.mu.Unlock()
		if hold != nil {
			<-hold
		}
		if !ok {
			a = fakeAnswer{http.StatusUnauthorized, `{"error":"invalid_token"}`}
		}
		w.WriteHeader(a.status)
		w.Write([]byte(a.body))
	default:
		http.NotFound(w, r)
	}
}

func (op *fakeOP) answer(token string, status int, body string) {
	op.mu.Lock()
	op.answers[token] = fakeAnswer{status, body}
	op.mu.Unlock()
}

// sign makes a JWT of op's key; typ "" leaves the header without one, as
// Dex does.
func (op *fakeOP) sign(t testing.TB, typ string, claims map[string]any) string {
	t.Helper()
	opts := new(jose.SignerOptions)
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: op.key, KeyID: "k1"}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// bearerEcho sends GET /api to gw with a bearer token and returns the
// upstream's echo.
func bearerEcho(t testing.TB, gw *gwServer, token string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, gw.URL+"/api", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("GET /api: %d, %v", resp.StatusCode, err)
	}
	return out
}

// gatewayFor runs a bearer-mode gateway in front of op.
func gatewayFor(t testing.TB, op *fakeOP, edit func(*Gateway)) *gwServer {
	t.Helper()
	return newGateway(t, &opServer{Server: op.Server}, func(g *Gateway) {
		g.Mode, g.ClientSecret = "bearer", ""
		edit(g)
	})
}

// TestGatewayDexAccessTokens: Dex's access tokens are JWTs without typ
// that carry at_hash and nonce, and whose aud is the client: refused as ID
// tokens by default, accepted with accept_id_tokens when the aud (and azp)
// is listed, refused when it is not.
func TestGatewayDexAccessTokens(t *testing.T) {
	op := newFakeOP(t)
	now := time.Now()
	claims := func(edit func(map[string]any)) map[string]any {
		c := map[string]any{
			"iss": op.URL, "sub": "CiQwOGE4Njg0Yi1kYjg4", "aud": "web-app", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(),
			"at_hash": "Wq2Jk0iD8vT3Ww", "nonce": "n-0S6_WzA2Mj", "email": "kilgore@example.com", "email_verified": true,
		}
		if edit != nil {
			edit(c)
		}
		return c
	}
	dex := op.sign(t, "", claims(nil))
	byDefault := gatewayFor(t, op, func(g *Gateway) { g.Audience = []string{"web-api"} })
	accepting := gatewayFor(t, op, func(g *Gateway) { g.Audience = []string{"web-api"}; g.AcceptIDTokens = []string{"web-app", "cli"} })
	idOnly := gatewayFor(t, op, func(g *Gateway) { g.AcceptIDTokens = []string{"web-app"} })
	otherClient := gatewayFor(t, op, func(g *Gateway) { g.AcceptIDTokens = []string{"other-app"} })

	for _, tc := range []struct {
		name  string
		gw    *gwServer
		token string
		want  int
	}{
		{"refused by default", byDefault, dex, http.StatusUnauthorized},
		{"accepted when aud is listed", accepting, dex, http.StatusOK},
		{"accepted with no audience", idOnly, dex, http.StatusOK},
		{"refused when aud is not listed", otherClient, dex, http.StatusUnauthorized},
		{"azp listed", accepting, op.sign(t, "", claims(func(c map[string]any) { c["aud"] = []string{"web-app", "cli"}; c["azp"] = "cli" })), http.StatusOK},
		{"azp not listed", accepting, op.sign(t, "", claims(func(c map[string]any) { c["azp"] = "elsewhere" })), http.StatusUnauthorized},
		{"several audiences and no azp", accepting, op.sign(t, "", claims(func(c map[string]any) { c["aud"] = []string{"web-app", "cli"} })), http.StatusUnauthorized},
		{"expired", accepting, op.sign(t, "", claims(func(c map[string]any) { c["exp"] = now.Add(-time.Hour).Unix() })), http.StatusUnauthorized},
		{"another issuer", accepting, op.sign(t, "", claims(func(c map[string]any) { c["iss"] = "https://dex.example.com" })), http.StatusUnauthorized},
		{"an access token for the API still passes", accepting, op.sign(t, "at+jwt", claims(func(c map[string]any) {
			c["aud"] = "web-api"
			delete(c, "nonce")
			delete(c, "at_hash")
		})), http.StatusOK},
		{"an access token for another API does not", idOnly, op.sign(t, "at+jwt", claims(func(c map[string]any) { c["aud"] = "web-api" })), http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := bearerResponse(t, tc.gw, tc.token)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want == http.StatusUnauthorized && !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
				t.Fatalf("WWW-Authenticate %q, want invalid_token", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	echo := bearerEcho(t, accepting, dex)
	if got := echoHeader(echo, "X-Auth-Request-Email"); got != "kilgore@example.com" {
		t.Fatalf("X-Auth-Request-Email %q", got)
	}
}

// TestGatewayUserinfoBearer: with bearer_check userinfo, an opaque token
// is what the provider's userinfo endpoint says it is, asked once per
// cache window; refusals there are 401, failures 502.
func TestGatewayUserinfoBearer(t *testing.T) {
	op := newFakeOP(t)
	op.answer("ya29.good", http.StatusOK, `{"sub":"1098","email":"kilgore@example.com","email_verified":true,"name":"Kilgore Trout"}`)
	op.answer("ya29.noscope", http.StatusForbidden, `{"error":"insufficient_scope"}`)
	op.answer("ya29.broken", http.StatusInternalServerError, `oops`)
	op.answer("ya29.array", http.StatusOK, `[{"sub":"1098"}]`)
	op.answer("ya29.null", http.StatusOK, `null`)
	op.answer("ya29.nosub", http.StatusOK, `{"email":"kilgore@example.com"}`)
	op.answer("ya29.control", http.StatusOK, `{"sub":"10\n98"}`)
	op.answer("ya29.huge", http.StatusOK, `{"sub":"1098","pad":"`+strings.Repeat("x", maxUserinfoBody)+`"}`)
	gw := gatewayFor(t, op, func(g *Gateway) {
		g.BearerCheck = "userinfo"
		g.UserinfoCache = caddy.Duration(time.Minute)
	})
	timed := providerOpCount(t, opUserinfo)

	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"unknown token", "ya29.bad", http.StatusUnauthorized},
		{"insufficient scope", "ya29.noscope", http.StatusUnauthorized},
		{"no sub", "ya29.nosub", http.StatusUnauthorized},
		{"sub with a control character", "ya29.control", http.StatusUnauthorized},
		{"provider error", "ya29.broken", http.StatusBadGateway},
		{"not an object", "ya29.array", http.StatusBadGateway},
		{"null", "ya29.null", http.StatusBadGateway},
		{"too large", "ya29.huge", http.StatusBadGateway},
		{"good", "ya29.good", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := bearerResponse(t, gw, tc.token)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want == http.StatusUnauthorized && !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
				t.Fatalf("WWW-Authenticate %q, want invalid_token", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}

	// Each call is timed in the metrics, as operation "userinfo".
	if got, want := providerOpCount(t, opUserinfo)-timed, uint64(op.calls.Load()); got != want || want == 0 {
		t.Fatalf("userinfo timed %d times for %d calls", got, want)
	}

	// Cached: more requests with the good token ask userinfo no more.
	before := op.calls.Load()
	for range 5 {
		echo := bearerEcho(t, gw, "ya29.good")
		if got := echoHeader(echo, "X-Auth-Request-User"); got != "1098" {
			t.Fatalf("X-Auth-Request-User %q, want the userinfo sub", got)
		}
		if got := echoHeader(echo, "X-Auth-Request-Email"); got != "kilgore@example.com" {
			t.Fatalf("X-Auth-Request-Email %q", got)
		}
		if got := echo["name"]; got != "Kilgore Trout" {
			t.Fatalf("claim placeholder name %q", got)
		}
	}
	if n := op.calls.Load() - before; n != 0 {
		t.Fatalf("userinfo asked %d times for a cached token", n)
	}
	// A refusal is not cached as a pass: the bad token stays refused.
	if st := bearerStatus(t, gw, "ya29.bad"); st != http.StatusUnauthorized {
		t.Fatalf("bad token again: %d", st)
	}
}

// TestGatewayUserinfoBurst: requests that arrive together with one new
// token make one userinfo call and share its answer.
func TestGatewayUserinfoBurst(t *testing.T) {
	op := newFakeOP(t)
	op.answer("opaque-1", http.StatusOK, `{"sub":"u1"}`)
	hold := make(chan struct{})
	op.hold = hold
	gw := gatewayFor(t, op, func(g *Gateway) { g.BearerCheck = "userinfo"; g.UserinfoCache = caddy.Duration(time.Minute) })
	misses := new(countingCounter)
	gw.gw.metrics.bearerMiss = misses

	const n = 8
	statuses := make(chan int, n)
	for range n {
		go func() {
			req, _ := http.NewRequest(http.MethodGet, gw.URL+"/api", nil)
			req.Header.Set("Authorization", "Bearer opaque-1")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	// Every request has missed the cache, and the first is at the
	// provider: then the provider answers.
	select {
	case <-op.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("userinfo was never asked")
	}
	deadline := time.Now().Add(10 * time.Second)
	for misses.n.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests reached the gateway", misses.n.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(hold)
	for range n {
		if st := <-statuses; st != http.StatusOK {
			t.Fatalf("status %d", st)
		}
	}
	if c := op.calls.Load(); c != 1 {
		t.Fatalf("userinfo asked %d times for %d requests with one token", c, n)
	}
}

type countingCounter struct{ n atomic.Int64 }

func (c *countingCounter) Inc() { c.n.Add(1) }

// TestGatewayUserinfoDown: a userinfo endpoint that cannot be reached is
// the provider being down, 502, as for introspection; the token is not
// taken for bad, and passes once the provider is back.
func TestGatewayUserinfoDown(t *testing.T) {
	op := newFakeOP(t)
	op.answer("opaque-1", http.StatusOK, `{"sub":"u1"}`)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	op.userinfo = dead.URL + "/userinfo"
	gw := gatewayFor(t, op, func(g *Gateway) { g.BearerCheck = "userinfo" })
	resp := bearerResponse(t, gw, "opaque-1")
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("WWW-Authenticate") != "" {
		t.Fatalf("status %d, WWW-Authenticate %q; want 502 and no challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}

	// Discovery down altogether: 502 too.
	gone := newFakeOP(t)
	gw2 := gatewayFor(t, gone, func(g *Gateway) { g.BearerCheck = "userinfo" })
	gone.Close()
	if st := bearerStatus(t, gw2, "opaque-1"); st != http.StatusBadGateway {
		t.Fatalf("discovery down: %d", st)
	}
}

// TestGatewayBearerCheckConfig: the combinations that would look checked
// and are not fail Validate, naming the option.
func TestGatewayBearerCheckConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		g    Gateway
		want string // "" passes
	}{
		{"userinfo alone", Gateway{Mode: "bearer", BearerCheck: "userinfo"}, ""},
		{"accept_id_tokens alone", Gateway{Mode: "bearer", AcceptIDTokens: []string{"web-app"}}, ""},
		{"jwt without audience", Gateway{Mode: "bearer", BearerCheck: "jwt"}, "needs an audience"},
		{"unknown check", Gateway{Mode: "bearer", Audience: []string{"a"}, BearerCheck: "opaque"}, `bearer_check "opaque"`},
		{"userinfo with audience", Gateway{Mode: "bearer", BearerCheck: "userinfo", Audience: []string{"a"}}, "cannot check an audience"},
		{"userinfo with accept_id_tokens", Gateway{Mode: "bearer", BearerCheck: "userinfo", AcceptIDTokens: []string{"a"}}, "exclude each other"},
		{"userinfo with introspect", Gateway{Mode: "bearer", BearerCheck: "userinfo", Introspect: true, ClientID: "c", ClientSecret: "s"}, "exclude each other"},
		{"browser mode", Gateway{BearerCheck: "userinfo", ClientID: "c", ClientSecret: "s"}, "bearer_check needs mode api or bearer"},
		{"accept_id_tokens in browser mode", Gateway{AcceptIDTokens: []string{"a"}, ClientID: "c", ClientSecret: "s"}, "accept_id_tokens needs mode api or bearer"},
		{"userinfo_cache without userinfo", Gateway{Mode: "bearer", Audience: []string{"a"}, UserinfoCache: caddy.Duration(time.Second)}, "userinfo_cache needs bearer_check userinfo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := tc.g
			g.Issuer = "https://login.example.com"
			g.SessionKeys = []string{"a-test-session-key-of-enough-length"}
			ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
			defer cancel()
			if err := g.Provision(ctx); err != nil {
				t.Fatalf("Provision: %v", err)
			}
			err := g.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
