package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
)

// tokenRequest is what a fake token endpoint saw of one request.
type tokenRequest struct {
	basicUser, formID, formSecret string
}

// fakeTokenProvider serves a discovery document that lists methods as
// token_endpoint_auth_methods_supported (none when nil), and a token
// endpoint that records each request and answers it with answer.
type fakeTokenProvider struct {
	*httptest.Server
	mu       sync.Mutex
	requests []tokenRequest
}

func newFakeTokenProvider(t *testing.T, methods []string, answer func(tokenRequest) (int, map[string]any)) *fakeTokenProvider {
	t.Helper()
	p := &fakeTokenProvider{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			doc := map[string]any{
				"issuer": p.URL, "authorization_endpoint": p.URL + "/authorize", "token_endpoint": p.URL + "/token",
				"jwks_uri": p.URL + "/jwks", "response_types_supported": []string{"code"},
			}
			if methods != nil {
				doc["token_endpoint_auth_methods_supported"] = methods
			}
			writeJSON(w, http.StatusOK, doc)
		case "/token":
			r.ParseForm()
			var req tokenRequest
			req.basicUser, _, _ = r.BasicAuth()
			req.formID, req.formSecret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
			p.mu.Lock()
			p.requests = append(p.requests, req)
			p.mu.Unlock()
			status, body := answer(req)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(body)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *fakeTokenProvider) seen() []tokenRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]tokenRequest(nil), p.requests...)
}

// refreshAt provisions a gateway of issuer with edit and runs one
// refresh_token grant.
func refreshAt(t *testing.T, issuer string, edit func(*Gateway)) error {
	t.Helper()
	g := &Gateway{Issuer: issuer, ClientID: "gw", ClientSecret: "gw-secret", SessionKeys: []string{"a-test-session-key-of-enough-length"}}
	if edit != nil {
		edit(g)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := g.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Cleanup() })
	g.logger = zap.NewNop()
	d, err := g.oidc.get()
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.refreshTokens(d, "a-refresh-token")
	return err
}

// TestGatewayTokenRequestOnce: every token request is one round trip,
// with the auth method discovery (or token_auth_method) names; a refused
// request is not sent again another way (x/oauth2's probing did, which a
// provider rotating refresh tokens takes for a replay).
func TestGatewayTokenRequestOnce(t *testing.T) {
	refuse := func(tokenRequest) (int, map[string]any) {
		return http.StatusBadRequest, map[string]any{"error": "invalid_grant"}
	}
	grant := func(req tokenRequest) (int, map[string]any) {
		if req.formID != "gw" || req.formSecret != "gw-secret" || req.basicUser != "" {
			return http.StatusUnauthorized, map[string]any{"error": "invalid_client"}
		}
		return http.StatusOK, map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 60}
	}
	basic := tokenRequest{basicUser: "gw"}
	post := tokenRequest{formID: "gw", formSecret: "gw-secret"}
	tests := []struct {
		name    string
		methods []string
		option  string
		public  bool
		answer  func(tokenRequest) (int, map[string]any)
		wantErr bool
		want    tokenRequest
	}{
		{"refused, methods not advertised", nil, "", false, refuse, true, basic},
		{"refused, basic and post advertised", []string{"client_secret_post", "client_secret_basic"}, "", false, refuse, true, basic},
		{"refused, post advertised", []string{"client_secret_post"}, "", false, refuse, true, post},
		{"post advertised", []string{"client_secret_post", "private_key_jwt"}, "", false, grant, false, post},
		{"post configured", nil, "post", false, grant, false, post},
		{"basic configured, post advertised", []string{"client_secret_post"}, "basic", false, refuse, true, basic},
		{"public client", []string{"client_secret_basic"}, "", true, refuse, true, tokenRequest{formID: "gw"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newFakeTokenProvider(t, tt.methods, tt.answer)
			err := refreshAt(t, p.URL, func(g *Gateway) {
				g.TokenAuthMethod = tt.option
				if tt.public {
					g.PublicClient, g.ClientSecret = true, ""
				}
			})
			if (err != nil) != tt.wantErr {
				t.Fatalf("refresh error %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr && !isOAuthRefusal(err) {
				t.Fatalf("refresh error %v is not the provider's refusal", err)
			}
			got := p.seen()
			if len(got) != 1 {
				t.Fatalf("token endpoint got %d requests (%+v), want exactly 1", len(got), got)
			}
			if got[0] != tt.want {
				t.Fatalf("token request authenticated as %+v, want %+v", got[0], tt.want)
			}
		})
	}
}

// TestGatewayTokenAuthMethodValidate: token_auth_method takes basic or
// post, and is no option of a public client.
func TestGatewayTokenAuthMethodValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		g    Gateway
	}{
		{"unknown method", Gateway{TokenAuthMethod: "client_secret_jwt", ClientSecret: "s"}},
		{"public client", Gateway{TokenAuthMethod: "post", PublicClient: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.g
			g.Issuer, g.ClientID, g.SessionKeys = "https://op.example", "gw", []string{"a-test-session-key-of-enough-length"}
			if err := provisionErr(t, &g); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
