package idp_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/authgate/authgate/idp"
)

// rotatedKeys returns a second RS256 and ES256 key pair, other than
// signingKeys', made once per test binary.
var (
	rotatedOnce sync.Once
	rotated     []idp.SigningKey
)

func rotatedKeys(t testing.TB) []idp.SigningKey {
	t.Helper()
	rotatedOnce.Do(func() {
		for _, alg := range []string{idp.RS256, idp.ES256} {
			k, err := idp.GenerateKey(alg)
			if err != nil {
				panic(err)
			}
			rotated = append(rotated, k)
		}
	})
	return rotated
}

// tokenKeyID returns the kid of a compact JWS.
func tokenKeyID(t testing.TB, raw string) string {
	t.Helper()
	tok, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Signatures[0].Header.KeyID
}

// jwks fetches the provider's JWKS and returns its kids and Cache-Control.
func jwks(t testing.TB, ts *testServer) ([]string, string) {
	t.Helper()
	resp, err := http.Get(ts.URL + idp.PathJWKS)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(readBody(t, resp)), &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	return kids, resp.Header.Get("Cache-Control")
}

// introspectActive asks the introspection endpoint, as demo-app, whether
// token is active.
func introspectActive(t testing.TB, ts *testServer, token string) bool {
	t.Helper()
	form := url.Values{"token": {token}}
	req, _ := http.NewRequest(http.MethodPost, ts.URL+idp.PathIntrospect, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("demo-app", testSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	var out struct {
		Active bool `json:"active"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil {
		t.Fatalf("introspection: %d %s", resp.StatusCode, body)
	}
	return out.Active
}

// TestSetKeys swaps the key set of a running provider: new tokens are
// signed by the new first keys, and tokens signed before the swap keep
// working at userinfo and introspection while their key is still
// published, and stop once it is not.
func TestSetKeys(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) { c.AccessTokenAlg = idp.ES256 })
	old, next := signingKeys(t), rotatedKeys(t)

	oldAccess, _ := tokensFor(t, ts, "openid")
	if kid := tokenKeyID(t, oldAccess); kid != old[1].ID {
		t.Fatalf("access token kid %q, want the first ES256 key %q", kid, old[1].ID)
	}

	// The new keys sign; the old ones are only published.
	if err := ts.Provider.SetKeys(slices.Concat(next, old)); err != nil {
		t.Fatalf("SetKeys: %v", err)
	}
	kids, _ := jwks(t, ts)
	if want := []string{next[0].ID, next[1].ID, old[0].ID, old[1].ID}; !slices.Equal(kids, want) {
		t.Fatalf("JWKS kids %q, want %q", kids, want)
	}
	access, id := tokensFor(t, ts, "openid")
	if got := tokenKeyID(t, access); got != next[1].ID {
		t.Errorf("access token after SetKeys: kid %q, want %q", got, next[1].ID)
	}
	if got := tokenKeyID(t, id); got != next[0].ID {
		t.Errorf("id token after SetKeys: kid %q, want %q", got, next[0].ID)
	}
	for _, tok := range []string{oldAccess, access} {
		if status, www := userinfo(t, ts, tok); status != http.StatusOK {
			t.Errorf("userinfo with the token of kid %s: %d %s", tokenKeyID(t, tok), status, www)
		}
		if !introspectActive(t, ts, tok) {
			t.Errorf("introspection: token of kid %s is inactive", tokenKeyID(t, tok))
		}
	}

	// The old keys retired: their tokens are refused.
	if err := ts.Provider.SetKeys(next); err != nil {
		t.Fatalf("SetKeys: %v", err)
	}
	if kids, _ := jwks(t, ts); !slices.Equal(kids, []string{next[0].ID, next[1].ID}) {
		t.Fatalf("JWKS kids %q after retiring the old keys", kids)
	}
	if status, _ := userinfo(t, ts, oldAccess); status != http.StatusUnauthorized {
		t.Errorf("userinfo with a token of a retired key: %d, want 401", status)
	}
	if introspectActive(t, ts, oldAccess) {
		t.Error("introspection: a token of a retired key is active")
	}
	if status, _ := userinfo(t, ts, access); status != http.StatusOK {
		t.Errorf("userinfo with a token of the current key: %d", status)
	}
}

// TestSetKeysRejects: a key set the provider cannot sign with is refused,
// and the keys in use stay.
func TestSetKeysRejects(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		c.Clients = append(c.Clients, idp.Client{ID: "es-app", Secret: testSecret, RedirectURIs: []string{testRedirect}, IDTokenAlg: idp.ES256})
	})
	old, next := signingKeys(t), rotatedKeys(t)
	tests := []struct {
		name    string
		keys    []idp.SigningKey
		wantErr string
	}{
		{"none", nil, "no signing keys"},
		{"no RS256", []idp.SigningKey{next[1]}, "RS256 signing key is required"},
		{"client alg without key", []idp.SigningKey{next[0]}, `client "es-app": no ES256 signing key`},
		{"kid twice", []idp.SigningKey{next[0], next[1], next[0]}, "used twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ts.Provider.SetKeys(tt.keys)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("SetKeys = %v, want an error with %q", err, tt.wantErr)
			}
			if kids, _ := jwks(t, ts); !slices.Equal(kids, []string{old[0].ID, old[1].ID}) {
				t.Fatalf("JWKS kids %q after a refused SetKeys, want the old keys", kids)
			}
		})
	}
}

// TestSetKeysDiscovery: discovery lists the algorithms the current key
// set signs with.
func TestSetKeysDiscovery(t *testing.T) {
	ts := newServer(t, nil)
	algs := func() []any {
		t.Helper()
		resp, err := http.Get(ts.URL + idp.PathDiscovery)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Algs []any `json:"id_token_signing_alg_values_supported"`
		}
		json.Unmarshal([]byte(readBody(t, resp)), &doc)
		return doc.Algs
	}
	if got := algs(); len(got) != 2 {
		t.Fatalf("algorithms %v, want ES256 and RS256", got)
	}
	if err := ts.Provider.SetKeys(rotatedKeys(t)[:1]); err != nil {
		t.Fatal(err)
	}
	if got := algs(); len(got) != 1 || got[0] != idp.RS256 {
		t.Fatalf("algorithms %v after SetKeys with an RS256 key only, want [RS256]", got)
	}
}

// TestJWKSCacheControl: the JWKS may be cached for Config.JWKSMaxAge, 5
// minutes by default, so that a verifier caching it sees a new key long
// before it signs.
func TestJWKSCacheControl(t *testing.T) {
	tests := []struct {
		name   string
		maxAge time.Duration
		want   string
	}{
		{"default", 0, "public, max-age=300"},
		{"set", 90 * time.Second, "public, max-age=90"},
		{"under a second", 250 * time.Millisecond, "public, max-age=0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newServer(t, func(c *idp.Config) { c.JWKSMaxAge = tt.maxAge })
			if _, cc := jwks(t, ts); cc != tt.want {
				t.Fatalf("Cache-Control %q, want %q", cc, tt.want)
			}
		})
	}
}

// TestSetKeysConcurrent swaps keys while tokens are issued and checked:
// every token verifies (run with -race).
func TestSetKeysConcurrent(t *testing.T) {
	ts := newServer(t, nil)
	both := slices.Concat(signingKeys(t), rotatedKeys(t))
	swapped := slices.Concat(rotatedKeys(t), signingKeys(t))
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			keys := both
			if i%2 == 1 {
				keys = swapped
			}
			if err := ts.Provider.SetKeys(keys); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 5 {
		access, _ := tokensFor(t, ts, "openid")
		if status, www := userinfo(t, ts, access); status != http.StatusOK {
			t.Errorf("userinfo during swaps: %d %s", status, www)
		}
	}
	close(done)
	wg.Wait()
}
