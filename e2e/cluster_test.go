package e2e_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"golang.org/x/oauth2"

	"github.com/authgate/authgate/internal/caddytest"
	"github.com/authgate/authgate/internal/redistest"
)

// clusterTemplate is the Caddyfile of every node: only the admin address,
// the storage folder and the ports of the node's sites differ.
// The nodes share only Redis, and the signing key file; each has its own
// Caddy storage, so nothing reaches the other node through a folder.
var clusterTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

(redis) {
	store redis {
		address {{.Redis}}
		read_timeout 500ms
		write_timeout 500ms
		dial_timeout 500ms
	}
}

http://127.0.0.1:{{.ProviderPort}} {
	oidc_provider {{.Issuer}} {
		signing_key {{.SigningKey}}
		login_throttle 2 1m 15m
		import redis
		client demo-app {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.RedirectURI}}
			redirect_uri http://127.0.0.1:{{.GatewayA}}/oauth2/callback
			redirect_uri http://127.0.0.1:{{.GatewayB}}/oauth2/callback
			offline_access
			password_grant
		}
		user alice {
			password_hash {{.Hash}}
			claim email alice@example.com
			claim email_verified true
		}
	}
}

http://127.0.0.1:{{.GatewayPort}} {
	route {
		oidc_gateway {{.Issuer}} {
			client_id demo-app
			client_secret {env.{{.SecretEnv}}}
			import redis
		}
		respond "hello {http.auth.user.id}"
	}
}
`))

// cluster is two Caddy nodes on one redis-server.
type cluster struct {
	redis    *redistest.Server
	issuer   string    // node A's provider: the issuer of both
	provider [2]string // each node's provider site
	gateway  [2]string // each node's gateway site
	nodes    [2]*caddytest.Caddy
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	// Persistence as the README recommends, so that what the nodes keep
	// survives a restart of Redis.
	c := &cluster{redis: redistest.Start(t, "--appendonly", "yes", "--appendfsync", "everysec")}
	var providerPort, gatewayPort [2]int
	for i := range 2 {
		providerPort[i], gatewayPort[i] = caddytest.FreePort(t), caddytest.FreePort(t)
		c.provider[i] = fmt.Sprintf("http://127.0.0.1:%d", providerPort[i])
		c.gateway[i] = fmt.Sprintf("http://127.0.0.1:%d", gatewayPort[i])
	}
	c.issuer = c.provider[0]

	dir := t.TempDir()
	keyFile := filepath.Join(dir, "signing.pem")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}

	data := map[string]any{
		"Redis": c.redis.Addr, "Issuer": c.issuer, "SigningKey": keyFile,
		"SecretEnv": secretEnv, "RedirectURI": redirectURI, "Hash": passwordHash,
		"GatewayA": gatewayPort[0], "GatewayB": gatewayPort[1],
	}
	for i := range 2 {
		node := caddytest.New(t, secretEnv+"="+clientSecret)
		data["Admin"], data["Storage"] = node.AdminAddr, node.Storage
		data["ProviderPort"], data["GatewayPort"] = providerPort[i], gatewayPort[i]
		node.WriteConfig(t, clusterTemplate, data)
		node.Ready = []string{c.provider[i] + "/.well-known/openid-configuration"}
		node.Start(t)
		c.nodes[i] = node
	}
	return c
}

// postToken posts form with demo-app's credentials to the token endpoint
// of node i and returns the status and the decoded body.
func (c *cluster) postToken(t *testing.T, i int, form url.Values) (int, map[string]any, http.Header) {
	t.Helper()
	status, body, header, err := c.tryPostToken(testContext(t), i, form)
	if err != nil {
		t.Fatal(err)
	}
	return status, body, header
}

// tryPostToken is postToken for other goroutines than the test's.
func (c *cluster) tryPostToken(ctx context.Context, i int, form url.Values) (int, map[string]any, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.provider[i]+"/connect/token", strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("demo-app", clientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, nil, nil, fmt.Errorf("token endpoint of node %d: status %d: %w", i, resp.StatusCode, err)
	}
	return resp.StatusCode, out, resp.Header, nil
}

// code runs the code flow on node A and returns a code and its verifier.
func (c *cluster) code(t *testing.T, scopes ...string) (code, verifier string) {
	t.Helper()
	rp := newRP(t, testContext(t), c.issuer)
	rp.conf.Scopes = append(rp.conf.Scopes, scopes...)
	verifier = oauth2.GenerateVerifier()
	return rp.authorize(t, caddytest.NewBrowser(t), verifier, "n"), verifier
}

func exchange(code, verifier string) url.Values {
	return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI}, "code_verifier": {verifier}}
}

func refresh(token string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}}
}

// TestCluster runs two Caddy nodes that share one Redis and nothing else
// but the signing key file.
func TestCluster(t *testing.T) {
	c := newCluster(t)

	t.Run("code redeemed once across nodes", func(t *testing.T) {
		code, verifier := c.code(t)
		if status, body, _ := c.postToken(t, 1, exchange(code, verifier)); status != http.StatusOK {
			t.Fatalf("code of node A on node B: %d %v", status, body)
		}
		if status, body, _ := c.postToken(t, 0, exchange(code, verifier)); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
			t.Fatalf("code again on node A: %d %v, want invalid_grant", status, body)
		}
	})

	t.Run("refresh rotation across nodes", func(t *testing.T) {
		code, verifier := c.code(t, "offline_access")
		status, first, _ := c.postToken(t, 0, exchange(code, verifier))
		if status != http.StatusOK || first["refresh_token"] == nil {
			t.Fatalf("exchange: %d %v", status, first)
		}
		old := first["refresh_token"].(string)
		status, second, _ := c.postToken(t, 0, refresh(old))
		if status != http.StatusOK {
			t.Fatalf("rotate on A: %d %v", status, second)
		}
		next := second["refresh_token"].(string)
		status, third, _ := c.postToken(t, 1, refresh(next))
		if status != http.StatusOK {
			t.Fatalf("the new token on B: %d %v", status, third)
		}
		if status, body, _ := c.postToken(t, 1, refresh(old)); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
			t.Fatalf("the old token again on B: %d %v, want invalid_grant", status, body)
		}
		// The replay revoked the family: the newest token is dead too.
		if status, body, _ := c.postToken(t, 0, refresh(third["refresh_token"].(string))); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
			t.Fatalf("the newest token on A after the replay: %d %v, want invalid_grant", status, body)
		}
	})

	t.Run("concurrent refreshes across nodes", func(t *testing.T) {
		code, verifier := c.code(t, "offline_access")
		status, first, _ := c.postToken(t, 0, exchange(code, verifier))
		if status != http.StatusOK || first["refresh_token"] == nil {
			t.Fatalf("exchange: %d %v", status, first)
		}
		rt := first["refresh_token"].(string)
		const n = 64
		ctx := testContext(t)
		statuses := make(chan int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, _, _, err := c.tryPostToken(ctx, i%2, refresh(rt))
				if err != nil {
					t.Error(err)
				}
				statuses <- status
			}()
		}
		wg.Wait()
		close(statuses)
		counts := map[int]int{}
		for s := range statuses {
			counts[s]++
		}
		if counts[http.StatusOK] != 1 || counts[http.StatusBadRequest] != n-1 {
			t.Fatalf("statuses %v, want one 200 and %d 400", counts, n-1)
		}
	})

	t.Run("login throttle counts across nodes", func(t *testing.T) {
		bad := url.Values{"grant_type": {"password"}, "username": {"mallory"}, "password": {"wrong"}, "scope": {"openid"}}
		// login_throttle 2 1m 15m: two failures are free, the third makes
		// the next attempt wait, whichever node it comes to.
		for i, node := range []int{0, 1, 0} {
			if status, body, _ := c.postToken(t, node, bad); status != http.StatusBadRequest || !strings.Contains(fmt.Sprint(body["error_description"]), "invalid username or password") {
				t.Fatalf("failure %d: %d %v", i+1, status, body)
			}
		}
		status, body, _ := c.postToken(t, 1, bad)
		if status != http.StatusBadRequest || !strings.Contains(fmt.Sprint(body["error_description"]), "too many failed attempts") {
			t.Fatalf("fourth attempt on B: %d %v, want it throttled", status, body)
		}
	})

	t.Run("gateway session across nodes", func(t *testing.T) {
		browser := caddytest.NewBrowser(t)
		get := func(target string) *http.Response {
			t.Helper()
			req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, target, nil)
			if err != nil {
				t.Fatal(err)
			}
			// A page load: the gateway sends it to sign in, not 401.
			req.Header.Set("Accept", "text/html")
			resp, err := browser.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			caddytest.ReadBody(t, resp)
			return resp
		}
		resp := get(c.gateway[0] + "/")
		authz, err := resp.Location()
		if err != nil {
			t.Fatalf("gateway A: status %d, no redirect to the provider", resp.StatusCode)
		}
		resp = get(authz.String())
		loginURL, err := resp.Location()
		if err != nil {
			t.Fatalf("authorize: status %d, no redirect to the login page", resp.StatusCode)
		}
		cb := caddytest.Login(t, browser, loginURL, "alice", password)
		resp = get(cb.String())
		if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("callback on A: status %d", resp.StatusCode)
		}
		// The jar sends 127.0.0.1's cookies to any port: node B gets A's.
		req, _ := http.NewRequestWithContext(testContext(t), http.MethodGet, c.gateway[1]+"/", nil)
		resp, err = browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := caddytest.ReadBody(t, resp)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, "hello ") || body == "hello " {
			t.Fatalf("gateway B with A's session: %d %q", resp.StatusCode, body)
		}
	})

	t.Run("redis paused then resumed", func(t *testing.T) {
		bogus := exchange("no-such-code", oauth2.GenerateVerifier())
		c.redis.Pause()
		paused := true
		defer func() {
			if paused {
				c.redis.Resume()
			}
		}()
		status, body, header := c.postToken(t, 1, bogus)
		if status != http.StatusServiceUnavailable || body["error"] != "temporarily_unavailable" || header.Get("Retry-After") == "" {
			t.Fatalf("with Redis paused: %d %v, Retry-After %q; want 503 temporarily_unavailable", status, body, header.Get("Retry-After"))
		}
		c.redis.Resume()
		paused = false
		// Recovery needs no restart; the pool may hold connections that
		// the pause broke, each failing one request, so allow a few.
		for attempt := 1; ; attempt++ {
			status, body, _ = c.postToken(t, 1, bogus)
			if status == http.StatusBadRequest && body["error"] == "invalid_grant" {
				break
			}
			if attempt == 20 {
				t.Fatalf("after Resume, %d attempts: %d %v, want invalid_grant", attempt, status, body)
			}
		}
	})

	t.Run("redis stopped then started again", func(t *testing.T) {
		code, verifier := c.code(t, "offline_access")
		status, first, _ := c.postToken(t, 0, exchange(code, verifier))
		if status != http.StatusOK || first["refresh_token"] == nil {
			t.Fatalf("exchange: %d %v", status, first)
		}
		rt := first["refresh_token"].(string)
		bogus := exchange("no-such-code", oauth2.GenerateVerifier())

		c.redis.Stop()
		if conn, err := net.DialTimeout("tcp", c.redis.Addr, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			if conn != nil {
				conn.Close()
			}
			t.Fatalf("dialing the stopped redis-server: %v, want connection refused", err)
		}
		for _, tt := range []struct {
			name string
			node int
			form url.Values
		}{
			{"a code on A", 0, bogus},
			{"a code on B", 1, bogus},
			// The token is not taken while Redis is away: it works after.
			{"the refresh token on B", 1, refresh(rt)},
		} {
			status, body, header := c.postToken(t, tt.node, tt.form)
			if status != http.StatusServiceUnavailable || body["error"] != "temporarily_unavailable" || header.Get("Retry-After") == "" {
				t.Fatalf("%s with Redis stopped: %d %v, Retry-After %q; want 503 temporarily_unavailable", tt.name, status, body, header.Get("Retry-After"))
			}
		}

		// Same port, same folder: the append-only file brings the data back.
		c.redis.Restart()
		for i := range 2 {
			for attempt := 1; ; attempt++ {
				status, body, _ := c.postToken(t, i, bogus)
				if status == http.StatusBadRequest && body["error"] == "invalid_grant" {
					break
				}
				if status != http.StatusServiceUnavailable || attempt == 20 {
					t.Fatalf("node %d after the restart, attempt %d: %d %v; want 503 until invalid_grant", i, attempt, status, body)
				}
			}
		}
		status, next, _ := c.postToken(t, 1, refresh(rt))
		if status != http.StatusOK || next["refresh_token"] == nil {
			t.Fatalf("a refresh token issued before the restart, on B after it: %d %v", status, next)
		}
		for i, node := range c.nodes {
			log, err := os.ReadFile(node.LogPath)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(log), "panic") {
				t.Errorf("node %d's log holds a panic:\n%s", i, log)
			}
		}
	})
}
