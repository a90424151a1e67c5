package caddymodule

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// FuzzSessionCookie sends arbitrary session cookies: never a pass to the
// upstream, never a 5xx.
func FuzzSessionCookie(f *testing.F) {
	g := &Gateway{Issuer: "http://127.0.0.1:1", ClientID: "c", SessionKeys: []string{"fuzz-session-key-0123456789"}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := g.Provision(ctx); err != nil {
		f.Fatal(err)
	}
	g.logger = zap.NewNop()
	valid, err := g.codec.encode(g.cookieName, &session{ID: "i", Subject: "s", Created: 1, Binding: g.binding})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid, "")
	f.Add(valid[:len(valid)/2], valid[len(valid)/2:])
	f.Add(strings.Repeat("A", chunkSize), "B")
	f.Add("", "")
	f.Add("%%%|||", "x")
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		f.Fatal("request passed to the upstream")
		return nil
	})
	f.Fuzz(func(t *testing.T, first, second string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Accept", "application/json")
		r.Header.Set("Cookie", "authgate="+first+"; authgate_1="+second)
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		w := httptest.NewRecorder()
		if err := g.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
		if w.Code != http.StatusUnauthorized {
			t.Fatalf("cookie %q|%q: status %d, want 401", first, second, w.Code)
		}
	})
}

// FuzzReturnURL: whatever comes in, the return URL stays on this origin.
func FuzzReturnURL(f *testing.F) {
	for _, s := range []string{"/", "/a?b=c", "//evil.com", "/\\evil.com", "https://evil.com", "/%2F%2Fx", "/\t/evil.com", "\x00"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://app.example/some/page")
	f.Fuzz(func(t *testing.T, raw string) {
		got := safeReturnURL(raw)
		if !strings.HasPrefix(got, "/") {
			t.Fatalf("safeReturnURL(%q) = %q", raw, got)
		}
		u, err := url.Parse(got)
		if err != nil {
			t.Fatalf("safeReturnURL(%q) = %q does not parse", raw, got)
		}
		if dest := base.ResolveReference(u); dest.Host != base.Host || dest.Scheme != base.Scheme {
			t.Fatalf("safeReturnURL(%q) = %q leads to %s", raw, got, dest)
		}
		// Browsers treat a backslash like a slash; none may survive near the start.
		if strings.Contains(got, "\\") {
			t.Fatalf("safeReturnURL(%q) = %q keeps a backslash", raw, got)
		}
	})
}

// FuzzGatewayCaddyfile parses arbitrary oidc_gateway blocks: never a
// panic; a block that parses is what its JSON says (the parser sets only
// the config fields, so JSON and Caddyfile configs behave alike), and it
// provisions and validates or errors, without panicking.
func FuzzGatewayCaddyfile(f *testing.F) {
	for _, s := range caddyfileSeeds(f, "oidc_gateway") {
		f.Add(s)
	}
	f.Add("oidc_gateway")
	f.Add("oidc_gateway http://a b")
	f.Add("oidc_gateway {\n\tcookie {\n\t\tlifetime -1s\n\t}\n\tintrospect 0s\n\tallow claim\n}")
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	f.Fuzz(func(t *testing.T, input string) {
		tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
		if err != nil {
			return // the lexer's error, before any directive sees the tokens
		}
		g := new(Gateway)
		if err := g.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
			return
		}
		raw, err := json.Marshal(g)
		if err != nil {
			t.Fatalf("%q: marshalling: %v", input, err)
		}
		var fromJSON Gateway
		if err := json.Unmarshal(raw, &fromJSON); err != nil {
			t.Fatalf("%q: unmarshalling %s: %v", input, raw, err)
		}
		if !reflect.DeepEqual(*g, fromJSON) {
			t.Fatalf("%q: parsed %#v, but its JSON %s is %#v", input, *g, raw, fromJSON)
		}
		// Without a session_key, Provision would generate one into the
		// default storage, outside the test.
		if len(g.SessionKeys) == 0 {
			g.SessionKeys = []string{"fuzz-session-key-0123456789"}
		}
		if g.Provision(ctx) == nil {
			g.Validate()
		}
	})
}

// FuzzBearerHeader sends arbitrary Authorization headers to a gateway in
// bearer mode: never a 5xx, and the upstream is reached only with the
// token the provider signed (its signature may be spelt otherwise: base64
// leaves spare bits).
func FuzzBearerHeader(f *testing.F) {
	op := newOP(f, nil)
	gw := newGateway(f, op, func(g *Gateway) {
		g.Mode = "bearer"
		g.Audience = []string{"demo-api"}
	})
	now := time.Now()
	valid := signFuzzToken(f, "at+jwt", map[string]any{
		"iss": op.URL, "sub": "alice", "aud": "demo-api", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(),
	})
	signedPart := valid[:strings.LastIndex(valid, ".")+1]
	f.Add("Bearer " + valid)
	f.Add("bearer   " + valid + " ")
	f.Add("Bearer " + signFuzzToken(f, "JWT", map[string]any{"iss": op.URL, "sub": "alice", "aud": "demo-api", "exp": now.Add(time.Hour).Unix(), "nonce": "n"}))
	f.Add("Bearer " + signFuzzToken(f, "at+jwt", map[string]any{"iss": op.URL, "sub": "alice", "aud": "other", "exp": now.Add(time.Hour).Unix()}))
	f.Add("Bearer " + signFuzzToken(f, "at+jwt", map[string]any{"iss": op.URL, "sub": "alice", "aud": "demo-api", "exp": now.Add(-time.Hour).Unix()}))
	f.Add("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.")
	f.Add("Basic ZGVtby1hcHA6eA==")
	f.Add("Bearer")
	f.Add("Bearer ")
	f.Add("")
	f.Fuzz(func(t *testing.T, auth string) {
		r := httptest.NewRequest(http.MethodGet, "/api", nil)
		r.Header["Authorization"] = []string{auth}
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		w := httptest.NewRecorder()
		reached := false
		next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
			reached = true
			return nil
		})
		if err := gw.gw.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
		if w.Code >= 500 {
			t.Fatalf("Authorization %q: status %d", auth, w.Code)
		}
		if reached {
			_, cred, _ := strings.Cut(auth, " ")
			if !strings.HasPrefix(strings.TrimSpace(cred), signedPart) {
				t.Fatalf("Authorization %q reached the upstream", auth)
			}
		} else if w.Code != http.StatusUnauthorized {
			t.Fatalf("Authorization %q: status %d, want 401", auth, w.Code)
		}
	})
}

// FuzzTokenClaims reads arbitrary strings as the JWTs the gateway looks
// into without verifying (their signatures are checked elsewhere):
// isAccessToken, jwtExpiry and idTokenClaims never panic, answer the same
// twice, and agree with what the token's parts say.
func FuzzTokenClaims(f *testing.F) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	f.Add(enc(`{"typ":"at+jwt"}`) + "." + enc(`{"exp":1700000000,"sub":"a"}`) + ".sig")
	f.Add(enc(`{"typ":"JWT"}`) + "." + enc(`{"nonce":"n","email":"a@b","iss":"x","aud":["y"]}`) + ".sig")
	f.Add(enc(`{"typ":"application/AT+JWT"}`) + "." + enc(`{"nonce":"n"}`) + ".")
	f.Add(enc(`{}`) + "." + enc(`{"exp":"soon"}`) + ".s")
	f.Add(enc(`{}`) + "." + enc(`[1,2]`) + ".s")
	f.Add(enc(`{}`) + "." + enc(`{"exp":1e300}`) + ".s")
	f.Add("a.b.c.d")
	f.Add("..")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		access, exp, claims := isAccessToken(token), jwtExpiry(token), idTokenClaims(token)
		if isAccessToken(token) != access || jwtExpiry(token) != exp || !reflect.DeepEqual(idTokenClaims(token), claims) {
			t.Fatalf("%q: a second reading differs", token)
		}
		if claims == nil {
			t.Fatalf("%q: idTokenClaims is nil", token)
		}
		if _, ok := claims["sub"]; ok {
			t.Fatalf("%q: idTokenClaims keeps sub", token)
		}
		for _, c := range protocolClaims {
			if _, ok := claims[c]; ok {
				t.Fatalf("%q: idTokenClaims keeps %s", token, c)
			}
		}
		parts := strings.Split(token, ".")
		if len(parts) != 3 {
			if exp != 0 || len(claims) != 0 {
				t.Fatalf("%q: not three parts, yet exp %d and claims %v", token, exp, claims)
			}
			return
		}
		// RFC 9068 §2.1: typ at+jwt is an access token, whatever else.
		var header struct {
			Typ string `json:"typ"`
		}
		typed := false
		if b, err := base64.RawURLEncoding.DecodeString(parts[0]); err == nil && json.Unmarshal(b, &header) == nil {
			typ := strings.ToLower(header.Typ)
			typed = typ == "at+jwt" || typ == "application/at+jwt"
		}
		if typed && !access {
			t.Fatalf("%q: typ %q, yet not an access token", token, header.Typ)
		}
		var payload map[string]json.RawMessage
		b, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil || json.Unmarshal(b, &payload) != nil {
			if (access && !typed) || exp != 0 || len(claims) != 0 {
				t.Fatalf("%q: no JSON object as payload, yet access %v, exp %d, claims %v", token, access, exp, claims)
			}
			return
		}
		// Otherwise an access token is one without the claims only ID
		// tokens carry.
		idOnly := false
		for _, c := range []string{"nonce", "at_hash", "c_hash"} {
			if _, ok := payload[c]; ok {
				idOnly = true
			}
		}
		if !typed && access == idOnly {
			t.Fatalf("%q: untyped, ID token claims %v, yet access token %v", token, idOnly, access)
		}
	})
}

// signFuzzToken signs claims with the test provider's RS256 key (newOP
// makes it) under typ.
func signFuzzToken(tb testing.TB, typ string, claims map[string]any) string {
	tb.Helper()
	k := gwKeys[0]
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k.Key, KeyID: k.ID}}, (&jose.SignerOptions{}).WithType(jose.ContentType(typ)))
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// caddyfileSeeds returns every block of directive in the Caddyfiles of
// testdata/caddyfile_adapt and in the demo Caddyfile, from the directive's
// line to the brace that closes it.
func caddyfileSeeds(tb testing.TB, directive string) []string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "caddyfile_adapt", "*.caddyfiletest"))
	if err != nil {
		tb.Fatal(err)
	}
	files = append(files, filepath.Join("..", "Caddyfile"))
	var seeds []string
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			tb.Fatal(err)
		}
		text, _, _ := strings.Cut(string(data), "\n----------\n")
		lines := strings.Split(text, "\n")
		for i, line := range lines {
			if !strings.HasPrefix(strings.TrimSpace(line), directive) {
				continue
			}
			depth := 0
			for j := i; j < len(lines); j++ {
				depth += strings.Count(lines[j], "{") - strings.Count(lines[j], "}")
				if depth <= 0 {
					seeds = append(seeds, strings.Join(lines[i:j+1], "\n"))
					break
				}
			}
		}
	}
	if len(seeds) == 0 {
		tb.Fatalf("no %s blocks in testdata", directive)
	}
	return seeds
}
