package e2e_test

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/authgate/authgate/internal/caddytest"
)

// backchannelTemplate is the Caddyfile of the back-channel logout tests:
// the provider registers the gateway's back-channel logout endpoint as
// demo-app's backchannel_logout_uri; behind the gateway, /ws and /events
// go to a streaming upstream, /echo to an upstream that echoes the
// request (with the access token, which carries the provider's sid), and
// the rest is answered by Caddy.
var backchannelTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

{{.Issuer}} {
	oidc_provider {{.Issuer}} {
		client demo-app {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.Gateway}}/oauth2/callback
			backchannel_logout_uri {{.Gateway}}/oauth2/backchannel_logout
			backchannel_logout_session_required
		}
		user alice {
			password_hash {{.Hash}}
			claim email alice@example.com
		}
	}
}

{{.Gateway}} {
	route {
		oidc_gateway {{.Issuer}} {
			client_id demo-app
			client_secret {env.{{.SecretEnv}}}
			pass_access_token
		}
		@streams path /ws /events
		reverse_proxy @streams {{.Streams}}
		@echo path /echo
		reverse_proxy @echo {{.Echo}}
		respond "hello {http.auth.user.id}"
	}
}
`))

var csrfInput = regexp.MustCompile(`name="csrf_token" value="([^"]*)"`)

// newBackchannelSite starts a Caddy of backchannelTemplate: the provider
// and the gateway in one process. Its splitSites has that one Caddy as
// both, for their helpers.
func newBackchannelSite(t *testing.T) *splitSites {
	t.Helper()
	node := caddytest.New(t, secretEnv+"="+clientSecret)
	s := &splitSites{
		provider: node,
		gateway:  node,
		issuer:   fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t)),
		gwURL:    fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t)),
	}
	node.WriteConfig(t, backchannelTemplate, map[string]any{
		"Admin": node.AdminAddr, "Storage": node.Storage, "Issuer": s.issuer, "Gateway": s.gwURL,
		"SecretEnv": secretEnv, "Hash": passwordHash,
		"Streams": newStreamingUpstream(t), "Echo": newUpstream(t),
	})
	node.Ready = []string{s.issuer + "/.well-known/openid-configuration"}
	node.Start(t)
	return s
}

// TestGatewayBackchannelLogout: a user logs in through the gateway and
// opens a WebSocket and an event stream through it, then signs out at the
// provider itself (its /account/logout page, not the gateway's sign-out);
// the provider posts a logout token to the gateway's back-channel
// endpoint, the gateway closes both streams, and refuses the session's
// cookie from then on: 401 for an API call, a fresh login for a
// navigation.
func TestGatewayBackchannelLogout(t *testing.T) {
	t.Parallel()
	s := newBackchannelSite(t)

	// The browser keeps both sites' cookies: the gateway's session and
	// the provider's single sign-on session.
	browser := caddytest.NewBrowser(t)
	cookie := s.gatewayLogin(t, browser)
	ws := openWebSocket(t, s.gwURL, cookie)
	events := openEvents(t, s.gwURL, cookie)

	// Sign out at the provider, as the user does on its page.
	s.providerSignOut(t, browser)
	signedOut := time.Now()

	// The delivery is asynchronous (the provider's queue, then a POST):
	// bounded by a few seconds on a quiet machine.
	const limit = 10 * time.Second
	expectStreamsClosed(t, ws, events, signedOut, limit)
	s.waitRefused(t, cookie, limit)
	resp, _ := apiGet(t, s.gwURL+"/", cookie, http.Header{"Accept": {"text/html"}})
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, s.issuer) {
		t.Errorf("navigation after the logout: %d to %q, want a fresh login", resp.StatusCode, loc)
	}
}
