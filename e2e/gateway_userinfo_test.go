package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/authgate/authgate/internal/caddytest"
)

// userinfoTemplate is the bundled provider with a client that may use the
// password grant, and three bearer gateways in front of one answer:
// bearer_check userinfo (the token as an opaque string, checked at our
// userinfo endpoint), accept_id_tokens for the client, and the default
// JWT check for an API audience.
var userinfoTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

{{.Issuer}} {
	oidc_provider {{.Issuer}} {
		client svc {
			secret svc-secret
			redirect_uri ` + redirectURI + `
			password_grant
		}
		user alice {
			password_hash {{.Hash}}
			claim email alice@example.com
			claim email_verified true
		}
	}
}

http://127.0.0.1:{{.UserinfoPort}} {
	oidc_gateway {{.Issuer}} {
		mode bearer
		bearer_check userinfo 300ms
		allow email alice@example.com
	}
	respond "userinfo {http.auth.user.id} {http.auth.user.email}"
}

http://127.0.0.1:{{.IDTokenPort}} {
	oidc_gateway {{.Issuer}} {
		mode bearer
		accept_id_tokens svc
	}
	respond "id_token {http.auth.user.id}"
}

http://127.0.0.1:{{.JWTPort}} {
	oidc_gateway {{.Issuer}} {
		mode bearer
		audience {{.Issuer}}/resources
	}
	respond "jwt {http.auth.user.id}"
}
`))

// TestGatewayBearerUserinfo: with the real binary, bearer_check userinfo
// passes our access token as an opaque string to our userinfo endpoint:
// it passes with the identity userinfo gives, a made-up token gets 401,
// and a revoked token is refused once the short cache ends.
// accept_id_tokens takes our ID token, which the default check refuses.
func TestGatewayBearerUserinfo(t *testing.T) {
	t.Parallel()
	s := newEmptySite(t)
	ports := map[string]int{"UserinfoPort": caddytest.FreePort(t), "IDTokenPort": caddytest.FreePort(t), "JWTPort": caddytest.FreePort(t)}
	data := map[string]any{"Admin": s.AdminAddr, "Storage": s.Storage, "Issuer": s.issuer, "Hash": passwordHash}
	for k, v := range ports {
		data[k] = v
	}
	s.WriteConfig(t, userinfoTemplate, data)
	s.Start(t)
	at := func(port string) string { return fmt.Sprintf("http://127.0.0.1:%d/", ports[port]) }

	tokens := passwordTokens(t, s.issuer, "openid email")
	access, _ := tokens["access_token"].(string)
	if access == "" {
		t.Fatalf("no access token: %v", tokens)
	}
	if resp, body := bearerGet(t, at("UserinfoPort"), access); resp.StatusCode != http.StatusOK || !strings.HasSuffix(body, " alice@example.com") {
		t.Fatalf("userinfo gateway: %d %q; want the identity from userinfo", resp.StatusCode, body)
	}
	resp, body := bearerGet(t, at("UserinfoPort"), "not-a-token-of-anyone")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("made-up token: %d %q %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
	}
	// The JWT gateway checks the same token locally, as before.
	if resp, body := bearerGet(t, at("JWTPort"), access); resp.StatusCode != http.StatusOK {
		t.Fatalf("jwt gateway: %d %q", resp.StatusCode, body)
	}

	if idToken, _ := tokens["id_token"].(string); idToken != "" {
		if resp, body := bearerGet(t, at("IDTokenPort"), idToken); resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, "id_token ") {
			t.Fatalf("accept_id_tokens gateway, ID token: %d %q", resp.StatusCode, body)
		}
		if resp, _ := bearerGet(t, at("JWTPort"), idToken); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("jwt gateway, ID token: %d; want 401", resp.StatusCode)
		}
	} else {
		t.Fatalf("the password grant with openid gave no ID token: %v", tokens)
	}

	// Revoked at the provider: userinfo says no once the answer cached
	// for 300ms is asked again.
	form := url.Values{"token": {access}, "token_type_hint": {"access_token"}}
	req, _ := http.NewRequestWithContext(testContext(t), http.MethodPost, s.issuer+"/connect/revocation", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("svc", "svc-secret")
	rr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if caddytest.ReadBody(t, rr); rr.StatusCode != http.StatusOK {
		t.Fatalf("revocation: %d", rr.StatusCode)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, _ := bearerGet(t, at("UserinfoPort"), access)
		if resp.StatusCode == http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked token still answered %d after 10s", resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// passwordTokens runs svc's password grant for alice and returns the
// token response.
func passwordTokens(t testing.TB, issuer, scope string) map[string]any {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {password}, "scope": {scope}}
	req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, issuer+"/connect/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("svc", "svc-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := caddytest.ReadBody(t, resp)
	var out map[string]any
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil {
		t.Fatalf("password grant: %d %s", resp.StatusCode, body)
	}
	return out
}
