package e2e_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
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

	"github.com/authgate/authgate/examples/assertion-verifier/verifier"
	"github.com/authgate/authgate/internal/caddytest"
)

// assertionUpstream is the example verifier as the upstream, which also
// records the assertion header of the last request, and whose clock can
// be moved ahead.
type assertionUpstream struct {
	addr  string
	ahead atomic.Int64 // nanoseconds the verifier's clock is ahead
	mu    sync.Mutex
	last  []string // the X-Authgate-Assertion values last received
}

func newAssertionUpstream(t testing.TB, site string) *assertionUpstream {
	t.Helper()
	u := &assertionUpstream{}
	v := &verifier.Verifier{
		JWKSURL: site + "/.well-known/authgate/jwks.json", Issuer: site, Audience: site, Leeway: time.Second,
		Now: func() time.Time { return time.Now().Add(time.Duration(u.ahead.Load())) },
	}
	h := v.Handler("X-Authgate-Assertion")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.last = r.Header.Values("X-Authgate-Assertion")
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	u.addr = srv.Listener.Addr().String()
	return u
}

func (u *assertionUpstream) lastAssertion() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

// assertionClient follows no redirect: a 302 to the provider is an answer.
var assertionClient = &http.Client{
	Timeout:       15 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// sendAssertion sends GET to target with the assertion header (if not "") and
// cookie (if not ""), and returns the status and body.
func sendAssertion(t testing.TB, target, assertion, cookie string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	if assertion != "" {
		req.Header.Set("X-Authgate-Assertion", assertion)
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := assertionClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, caddytest.ReadBody(t, resp)
}

// TestGatewayIdentityAssertion runs the gateway with identity_assertion
// in front of the example verifier: requests through the gateway pass
// with the user's identity; a client's own header never reaches the
// upstream; an assertion replayed straight to the upstream after it
// expired, or forged, is refused.
func TestGatewayIdentityAssertion(t *testing.T) {
	t.Parallel()
	g := newGatewaySite(t, gatewayConfig{Gateway: []string{"identity_assertion {\n\t\t\t\tlifetime 5s\n\t\t\t}"}})
	up := newAssertionUpstream(t, g.gateway)
	g.upstream = up.addr
	g.writeGatewayConfig(t)
	g.Start(t)

	cookie := httpLogin(t, g.gateway, "alice")

	var captured string
	t.Run("through the gateway", func(t *testing.T) {
		status, body := sendAssertion(t, g.gateway+"/", "", cookie)
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		var id verifier.Identity
		if err := json.Unmarshal([]byte(body), &id); err != nil || id.Subject == "" || id.Email != "alice@example.com" {
			t.Fatalf("identity %s: %v", body, err)
		}
		captured = up.lastAssertion()[0]
	})
	if captured == "" {
		t.Fatal("no assertion captured")
	}

	t.Run("client header replaced", func(t *testing.T) {
		status, body := sendAssertion(t, g.gateway+"/", captured+"x", cookie)
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		if got := up.lastAssertion(); len(got) != 1 || got[0] == captured+"x" {
			t.Errorf("the upstream got %q", got)
		}
		// Without a session nothing reaches the upstream, header or not.
		up.mu.Lock()
		up.last = []string{"none"}
		up.mu.Unlock()
		if status, _ := sendAssertion(t, g.gateway+"/", captured, ""); status != http.StatusUnauthorized {
			t.Errorf("no session: status %d", status)
		}
		if got := up.lastAssertion(); len(got) != 1 || got[0] != "none" {
			t.Errorf("a request without a session reached the upstream with %q", got)
		}
	})

	t.Run("jwks", func(t *testing.T) {
		resp, err := assertionClient.Get(g.gateway + "/.well-known/authgate/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		body := caddytest.ReadBody(t, resp)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "public, max-age=300" || !strings.Contains(body, `"alg":"ES256"`) {
			t.Errorf("status %d, Cache-Control %q, body %s", resp.StatusCode, resp.Header.Get("Cache-Control"), body)
		}
	})

	direct := "http://" + up.addr + "/"
	t.Run("forged", func(t *testing.T) {
		parts := strings.Split(captured, ".")
		header, err := base64.RawURLEncoding.DecodeString(parts[0])
		if err != nil {
			t.Fatal(err)
		}
		var hdr map[string]any
		if err := json.Unmarshal(header, &hdr); err != nil {
			t.Fatal(err)
		}
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		var claims map[string]any
		if err := json.Unmarshal(payload, &claims); err != nil {
			t.Fatal(err)
		}
		claims["sub"] = "mallory"
		mallory, _ := json.Marshal(claims)

		none, _ := json.Marshal(map[string]any{"alg": "none", "typ": hdr["typ"], "kid": hdr["kid"]})
		otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: otherKey, KeyID: hdr["kid"].(string)}},
			(&jose.SignerOptions{}).WithType(jose.ContentType(verifier.Type)))
		if err != nil {
			t.Fatal(err)
		}
		otherSigned, err := jwt.Signed(signer).Claims(claims).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		enc := base64.RawURLEncoding.EncodeToString
		for _, c := range []struct{ name, token string }{
			{"modified payload", parts[0] + "." + enc(mallory) + "." + parts[2]},
			{"alg none", enc(none) + "." + enc(mallory) + "."},
			{"other key, same kid", otherSigned},
		} {
			if status, body := sendAssertion(t, direct, c.token, ""); status != http.StatusUnauthorized {
				t.Errorf("%s: status %d: %s", c.name, status, body)
			}
		}
		if status, body := sendAssertion(t, direct, "", ""); status != http.StatusUnauthorized {
			t.Errorf("no assertion: status %d: %s", status, body)
		}
	})

	t.Run("replayed", func(t *testing.T) {
		// Straight to the upstream, within its lifetime: it passes, as a
		// bearer token would.
		if status, body := sendAssertion(t, direct, captured, ""); status != http.StatusOK {
			t.Fatalf("within its lifetime: status %d: %s", status, body)
		}
		// The upstream's clock past exp and its leeway: refused.
		up.ahead.Store(int64(5*time.Second + 2*time.Second))
		if status, body := sendAssertion(t, direct, captured, ""); status != http.StatusUnauthorized || !strings.Contains(body, "expired") {
			t.Errorf("after expiry: status %d: %s", status, body)
		}
		// The gateway makes a new one for the session, which passes.
		up.ahead.Store(0)
		if status, body := sendAssertion(t, g.gateway+"/", "", cookie); status != http.StatusOK {
			t.Errorf("a fresh request through the gateway: status %d: %s", status, body)
		}
	})
}
