package e2e_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"text/template"
	"time"

	"github.com/authgate/authgate/internal/caddytest"
	"github.com/authgate/authgate/internal/redistest"
)

// rotationTemplate is the Caddyfile of each node of the rotation test:
// keys in Redis and nothing else shared, a key signing for 4s and
// published 2s before, ES256 access tokens and RS256 ID tokens, so that
// both algorithms rotate; and a gateway in bearer mode.
var rotationTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

http://127.0.0.1:{{.ProviderPort}} {
	oidc_provider {{.Issuer}} {
		store redis {
			address {{.Redis}}
		}
		key_rotation {
			period {{.Period}}
			publish_ahead {{.PublishAhead}}
		}
		access_token_alg ES256
		client demo-app {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.RedirectURI}}
			offline_access
			password_grant
		}
		user alice {
			password_hash {{.Hash}}
		}
	}
}

http://127.0.0.1:{{.GatewayPort}} {
	route {
		oidc_gateway {{.Issuer}} {
			client_id demo-app
			mode bearer
			audience {{.Issuer}}/resources
		}
		respond "hello {http.auth.user.id}"
	}
}
`))

// Rotation schedule of the test: short, so that keys rotate twice in
// seconds, and a pre-publication longer than the gateway's least JWKS
// refetch gap (1s) plus the nodes' check interval (an eighth of it).
const (
	testRotationPeriod = 4 * time.Second
	testPublishAhead   = 2 * time.Second
)

func newRotationCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{redis: redistest.Start(t)}
	var providerPort, gatewayPort [2]int
	for i := range 2 {
		providerPort[i], gatewayPort[i] = caddytest.FreePort(t), caddytest.FreePort(t)
		c.provider[i] = fmt.Sprintf("http://127.0.0.1:%d", providerPort[i])
		c.gateway[i] = fmt.Sprintf("http://127.0.0.1:%d", gatewayPort[i])
	}
	c.issuer = c.provider[0]
	data := map[string]any{
		"Redis": c.redis.Addr, "Issuer": c.issuer, "SecretEnv": secretEnv, "RedirectURI": redirectURI, "Hash": passwordHash,
		"Period": testRotationPeriod, "PublishAhead": testPublishAhead,
	}
	for i := range 2 {
		node := caddytest.New(t, secretEnv+"="+clientSecret)
		data["Admin"], data["Storage"] = node.AdminAddr, node.Storage
		data["ProviderPort"], data["GatewayPort"] = providerPort[i], gatewayPort[i]
		node.WriteConfig(t, rotationTemplate, data)
		node.Ready = []string{c.provider[i] + "/.well-known/openid-configuration"}
		node.Start(t)
		c.nodes[i] = node
	}
	return c
}

// publishedKids returns the kids of the JWKS at base.
func publishedKids(t testing.TB, ctx context.Context, base string) []string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/.well-known/openid-configuration/jwks", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := caddytest.ReadBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("JWKS of %s: %d %s", base, resp.StatusCode, body)
	}
	var set struct {
		Keys []struct {
			KeyID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(body), &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	return kids
}

// TestKeyRotationAcrossNodes runs two nodes on one Redis through two
// rotations of each algorithm, minting tokens on both all along: every
// token's kid was already in both nodes' JWKS, fetched before it was
// minted; the first tokens keep working at userinfo on both nodes; and the
// gateway of each node takes every access token.
func TestKeyRotationAcrossNodes(t *testing.T) {
	c := newRotationCluster(t)
	ctx := testContext(t)

	status, body, _ := c.postToken(t, 0, url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {password}, "scope": {"openid offline_access"}})
	if status != http.StatusOK {
		t.Fatalf("password grant: %d %v", status, body)
	}
	firstAccess, rt := body["access_token"].(string), body["refresh_token"].(string)

	seen := map[string][]string{} // alg -> kids that signed, in order
	rotated := func() bool { return len(seen["RS256"]) >= 3 && len(seen["ES256"]) >= 3 }
	deadline := time.Now().Add(4*testRotationPeriod + 10*time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; !rotated() && time.Now().Before(deadline); i++ {
		node := i % 2
		jwks := [2][]string{publishedKids(t, ctx, c.provider[0]), publishedKids(t, ctx, c.provider[1])}

		status, body, _ := c.postToken(t, node, refresh(rt))
		if status != http.StatusOK {
			t.Fatalf("refresh %d on node %d: %d %v", i, node, status, body)
		}
		rt = body["refresh_token"].(string)
		access := body["access_token"].(string)
		for alg, tok := range map[string]string{"ES256": access, "RS256": body["id_token"].(string)} {
			kid := jwtKeyID(t, tok)
			for n := range 2 {
				if !slices.Contains(jwks[n], kid) {
					t.Fatalf("refresh %d on node %d: %s token of kid %s, not in node %d's JWKS fetched just before: %q", i, node, alg, kid, n, jwks[n])
				}
			}
			if !slices.Contains(seen[alg], kid) {
				seen[alg] = append(seen[alg], kid)
				t.Logf("refresh %d on node %d: %s signs with %s", i, node, alg, kid)
			}
		}

		if resp, body := bearerGet(t, c.gateway[node]+"/", access); resp.StatusCode != http.StatusOK {
			t.Fatalf("gateway of node %d refused the access token of kid %s: %d %s", node, jwtKeyID(t, access), resp.StatusCode, body)
		}
		if resp, body := bearerGet(t, c.provider[1-node]+"/connect/userinfo", access); resp.StatusCode != http.StatusOK {
			t.Fatalf("userinfo on node %d: %d %s", 1-node, resp.StatusCode, body)
		}
		if resp, body := bearerGet(t, c.provider[node]+"/connect/userinfo", firstAccess); resp.StatusCode != http.StatusOK {
			t.Fatalf("userinfo on node %d with the first access token (kid %s): %d %s", node, jwtKeyID(t, firstAccess), resp.StatusCode, body)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	if !rotated() {
		t.Fatalf("signing kids seen %v: want two rotations of each algorithm", seen)
	}
}

// TestKeyRotationRestart: a restarted Caddy on the default store keeps its
// ring: every key it published before is published after, and a token
// signed before still works.
func TestKeyRotationRestart(t *testing.T) {
	t.Parallel()
	s := newSite(t, fmt.Sprintf(`
		key_rotation {
			period %s
			publish_ahead %s
		}
		client svc {
			secret svc-secret
			redirect_uri http://app.test/svc
			password_grant
		}`, testRotationPeriod, testPublishAhead))
	s.Start(t)
	ctx := testContext(t)

	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {password}, "scope": {"openid"}}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("svc:svc-secret"))
	resp, body := postForm(t, s.issuer+"/connect/token", form, http.Header{"Authorization": {basic}})
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &tok) != nil {
		t.Fatalf("password grant: %d %s", resp.StatusCode, body)
	}

	// Wait for a successor published ahead: three keys or more.
	var before []string
	deadline := time.Now().Add(2*testRotationPeriod + 5*time.Second)
	for before = publishedKids(t, ctx, s.issuer); len(before) < 3; before = publishedKids(t, ctx, s.issuer) {
		if time.Now().After(deadline) {
			t.Fatalf("no key published ahead within %s: JWKS %q", 2*testRotationPeriod+5*time.Second, before)
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}

	s.Stop(t)
	s.Start(t)
	after := publishedKids(t, ctx, s.issuer)
	for _, kid := range before {
		if !slices.Contains(after, kid) {
			t.Fatalf("kid %s published before the restart is gone after: before %q, after %q", kid, before, after)
		}
	}
	if resp, body := bearerGet(t, s.issuer+"/connect/userinfo", tok.AccessToken); resp.StatusCode != http.StatusOK {
		t.Fatalf("userinfo after the restart with a token of kid %s: %d %s", jwtKeyID(t, tok.AccessToken), resp.StatusCode, body)
	}
}
