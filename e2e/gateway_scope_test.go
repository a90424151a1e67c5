package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"text/template"

	"github.com/authgate/authgate/internal/caddytest"
)

// scopeTemplate is the Caddyfile of TestGatewayAllowScope: a provider
// whose client service may get the API scopes api and admin of
// api_resource demo-api, and a bearer-only API whose /admin/ needs scope
// admin and the rest scope api.
var scopeTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

{{.Issuer}} {
	oidc_provider {{.Issuer}} {
		client service {
			secret {{.ServiceSecret}}
			client_credentials
			scopes api admin
		}
		api_scope api
		api_scope admin
		api_resource demo-api api admin
	}
}

{{.API}} {
	handle /admin/* {
		oidc_gateway {{.Issuer}} {
			mode bearer
			audience demo-api
			allow scope admin
		}
		respond "admin {http.auth.user.id}"
	}
	handle {
		oidc_gateway {{.Issuer}} {
			mode bearer
			audience demo-api
			allow scope api
		}
		respond "api {http.auth.user.id}"
	}
}
`))

// TestGatewayAllowScope runs allow scope in the real binary with the
// bundled provider's client_credentials tokens: a token passes where it
// carries the scope the route's rule wants, and elsewhere gets 403 with
// RFC 6750's insufficient_scope challenge naming that scope.
func TestGatewayAllowScope(t *testing.T) {
	t.Parallel()
	s := newEmptySite(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t))
	s.WriteConfig(t, scopeTemplate, map[string]any{
		"Admin": s.AdminAddr, "Storage": s.Storage, "Issuer": s.issuer, "API": api, "ServiceSecret": serviceSecret,
	})
	s.Start(t)

	token := func(scope string) string {
		t.Helper()
		req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, s.issuer+"/connect/token",
			strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("service", serviceSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := caddytest.ReadBody(t, resp)
		var out struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal([]byte(body), &out); err != nil || out.AccessToken == "" {
			t.Fatalf("client_credentials with scope %q: %d %s", scope, resp.StatusCode, body)
		}
		return out.AccessToken
	}
	apiOnly, both := token("api"), token("api admin")

	tests := []struct {
		name, token, path string
		status            int
		body, challenge   string
	}{
		{"api scope at the API", apiOnly, "/things", 200, "api service", ""},
		{"api scope at admin", apiOnly, "/admin/users", 403, "", `Bearer realm="` + strings.TrimPrefix(api, "http://") + `", error="insufficient_scope", scope="admin"`},
		{"both scopes at admin", both, "/admin/users", 200, "admin service", ""},
		{"both scopes at the API", both, "/things", 200, "api service", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, api+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+tt.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := caddytest.ReadBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tt.status)
			}
			if tt.body != "" && body != tt.body {
				t.Fatalf("body %q, want %q", body, tt.body)
			}
			if h := resp.Header.Get("WWW-Authenticate"); h != tt.challenge {
				t.Fatalf("WWW-Authenticate %q, want %q", h, tt.challenge)
			}
		})
	}
}
