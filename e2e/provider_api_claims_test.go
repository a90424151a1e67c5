package e2e_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"text/template"

	"github.com/authgate/authgate/internal/caddytest"
)

// apiClaimsTemplate is a provider whose API resource orders-api carries
// the users' role claim in its access tokens, with the static audience
// on, and a bearer API gateway in front of a handler that lets only role
// admin through, as an API moved from IdentityServer authorizes by its
// ApiResource.UserClaims. Lifetimes are bare seconds, as IdentityServer
// writes them.
var apiClaimsTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

{{.Issuer}} {
	oidc_provider {{.Issuer}} {
		client legacy {
			secret legacy-secret
			password_grant
			scopes openid profile orders
			access_token_lifetime 3600
		}
		client service {
			secret service-secret
			client_credentials
			scopes orders
			claim role admin
		}
		user alice {
			password_hash {{.Hash}}
			claim role admin
		}
		user bob {
			password_hash {{.Hash}}
			claim role viewer
		}
		api_scope orders
		api_resource orders-api orders {
			user_claims role
		}
		static_audience
	}
}

http://127.0.0.1:{{.APIPort}} {
	oidc_gateway {{.Issuer}} {
		client_id legacy
		mode bearer
		audience orders-api
		allow claim role admin
	}
	respond "orders for {http.auth.user.id}"
}
`))

// TestAPIResourceUserClaimsGateway: an access token of a user with role
// admin passes the bearer gateway's allow claim role admin, since the API
// resource put the user's role into it; bob's role viewer and a
// client_credentials token, which carries no user claims (its own role
// is client_role), are refused. Every token has the static audience too.
func TestAPIResourceUserClaimsGateway(t *testing.T) {
	t.Parallel()
	s := newEmptySite(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t))
	s.WriteConfig(t, apiClaimsTemplate, map[string]string{
		"Admin": s.AdminAddr, "Storage": s.Storage, "Issuer": s.issuer, "Hash": passwordHash,
		"APIPort": strings.TrimPrefix(api, "http://127.0.0.1:"),
	})
	s.Start(t)
	tokenURL := s.issuer + "/connect/token"

	token := func(t *testing.T, form url.Values, id, secret string) string {
		t.Helper()
		resp, body := postForm(t, tokenURL, form, http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))}})
		var tk struct {
			AccessToken string `json:"access_token"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &tk) != nil || tk.AccessToken == "" {
			t.Fatalf("token: %d %s", resp.StatusCode, body)
		}
		return tk.AccessToken
	}
	userToken := func(t *testing.T, user string) string {
		return token(t, url.Values{"grant_type": {"password"}, "username": {user}, "password": {password}, "scope": {"openid orders"}}, "legacy", "legacy-secret")
	}

	t.Run("admin passes", func(t *testing.T) {
		access := userToken(t, "alice")
		claims := jwtClaims(t, access)
		if claims["role"] != "admin" {
			t.Errorf("access token role = %v", claims["role"])
		}
		aud, _ := claims["aud"].([]any)
		if len(aud) != 2 || aud[0] != s.issuer+"/resources" || aud[1] != "orders-api" {
			t.Errorf("aud = %v, want the static audience and orders-api", claims["aud"])
		}
		resp, body := bearerGet(t, api+"/orders", access)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, "orders for ") {
			t.Fatalf("gateway: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("viewer is refused", func(t *testing.T) {
		if resp, body := bearerGet(t, api+"/orders", userToken(t, "bob")); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("gateway: %d %s; want 403", resp.StatusCode, body)
		}
	})
	t.Run("client_credentials has no user claims", func(t *testing.T) {
		access := token(t, url.Values{"grant_type": {"client_credentials"}}, "service", "service-secret")
		if c := jwtClaims(t, access); c["role"] != nil || c["client_role"] != "admin" {
			t.Errorf("client_credentials claims = %v", c)
		}
		if resp, body := bearerGet(t, api+"/orders", access); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("gateway: %d %s; want 403", resp.StatusCode, body)
		}
	})
}
