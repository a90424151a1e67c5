package e2e_test

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"text/template"

	"github.com/authgate/authgate/internal/caddytest"
)

// metricsTemplate is a provider and two gateways, with no `metrics`
// global option: our series are on the admin endpoint's /metrics
// whatever Caddy's own HTTP metrics are. The gateway at Fresh refreshes
// at every request (refresh_before is longer than the access token
// lives); the one at App only when its token is about to expire.
var metricsTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

{{.Issuer}} {
	oidc_provider {{.Issuer}} {
		client app {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.App}}/oauth2/callback
		}
		client fresh {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.Fresh}}/oauth2/callback
			offline_access
			access_token_lifetime 1m
		}
		user alice {
			password_hash {{.Hash}}
			claim email alice@example.com
			claim email_verified true
		}
	}
}

{{.App}} {
	oidc_gateway {
		issuer {{.Issuer}}
		client_id app
		client_secret {env.{{.SecretEnv}}}
	}
	reverse_proxy {{.Upstream}}
}

{{.Fresh}} {
	oidc_gateway {
		issuer {{.Issuer}}
		client_id fresh
		client_secret {env.{{.SecretEnv}}}
		scopes openid profile email offline_access
		refresh_before 2m
	}
	reverse_proxy {{.Upstream}}
}
`))

// TestMetrics logs in through two gateways, one of which refreshes, and
// reads Caddy's admin /metrics: the gateways' outcomes, provider round
// trips and cache lookups, and the provider's endpoint and store
// latencies are there with their labels, and counted what happened.
func TestMetrics(t *testing.T) {
	t.Parallel()
	s := newEmptySite(t)
	app := fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t))
	fresh := fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t))
	s.WriteConfig(t, metricsTemplate, map[string]string{
		"Admin": s.AdminAddr, "Storage": s.Storage, "SecretEnv": secretEnv, "Hash": passwordHash,
		"Issuer": s.issuer, "App": app, "Fresh": fresh, "Upstream": newUpstream(t),
	})
	s.Start(t)

	// 401 for an API call without a session.
	resp, _ := browserGet(t, caddytest.NewBrowser(t), app+"/api", http.Header{"Accept": {"application/json"}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("API call without a session: %d, want 401", resp.StatusCode)
	}
	// A login, and a second request, which passes from the cache.
	browser := caddytest.NewBrowser(t)
	browserSignIn(t, browser, app+"/", s.issuer, "alice")
	if resp, _ := browserGet(t, browser, app+"/again", navigation); resp.StatusCode != http.StatusOK {
		t.Fatalf("second request: %d", resp.StatusCode)
	}
	// A login at the gateway that refreshes: its first request after the
	// callback refreshes the tokens.
	browserSignIn(t, caddytest.NewBrowser(t), fresh+"/", s.issuer, "alice")

	m := scrapeMetrics(t, "http://"+s.AdminAddr+"/metrics")
	for _, c := range []struct {
		series string
		min    float64
	}{
		{`authgate_gateway_requests_total{outcome="unauthenticated"}`, 1},
		{`authgate_gateway_requests_total{outcome="login_started"}`, 2},
		{`authgate_gateway_requests_total{outcome="login_completed"}`, 2},
		{`authgate_gateway_requests_total{outcome="passed"}`, 2},
		{`authgate_gateway_requests_total{outcome="refreshed"}`, 1},
		{`authgate_gateway_session_cache_lookups_total{cache="session",result="hit"}`, 1},
		{`authgate_gateway_session_cache_lookups_total{cache="session",result="miss"}`, 2},
		{`authgate_gateway_provider_request_duration_seconds_count{operation="discovery"}`, 2},
		{`authgate_gateway_provider_request_duration_seconds_count{operation="jwks"}`, 2},
		{`authgate_gateway_provider_request_duration_seconds_count{operation="token_exchange"}`, 2},
		{`authgate_gateway_provider_request_duration_seconds_count{operation="token_refresh"}`, 1},
		{`authgate_provider_request_duration_seconds_count{endpoint="discovery"}`, 1},
		{`authgate_provider_request_duration_seconds_count{endpoint="authorize"}`, 2},
		{`authgate_provider_request_duration_seconds_count{endpoint="login"}`, 2},
		{`authgate_provider_request_duration_seconds_count{endpoint="token"}`, 3},
		{`authgate_provider_request_duration_seconds_count{endpoint="jwks"}`, 1},
		// The code is taken once each; the refresh swaps its token for
		// the next in one write, so the store wrapper kept Swap.
		{`authgate_provider_store_operation_duration_seconds_count{operation="take",store="bolt"}`, 2},
		{`authgate_provider_store_operation_duration_seconds_count{operation="swap",store="bolt"}`, 1},
	} {
		got, ok := m[c.series]
		if !ok {
			t.Errorf("%s is not on /metrics", c.series)
		} else if got < c.min {
			t.Errorf("%s = %v, want at least %v", c.series, got, c.min)
		}
	}
	for series, v := range m {
		if strings.HasPrefix(series, "authgate_gateway_requests_total") && strings.Contains(series, `outcome="provider_unreachable"`) && v != 0 {
			t.Errorf("%s = %v, want 0: the provider was up", series, v)
		}
		if strings.HasPrefix(series, "authgate_provider_store_errors_total") && v != 0 {
			t.Errorf("%s = %v, want 0", series, v)
		}
	}
}

// scrapeMetrics reads a Prometheus text exposition into its samples by
// name and labels as written, with the labels in the order Prometheus
// writes them, sorted by name.
func scrapeMetrics(t testing.TB, target string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(target)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", target, resp.StatusCode)
	}
	samples := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("GET %s: line %q is not a sample", target, line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("GET %s: line %q: %v", target, line, err)
		}
		samples[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return samples
}
