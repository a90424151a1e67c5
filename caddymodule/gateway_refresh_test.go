package caddymodule

import (
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/authgate/authgate/idp"
)

// TestGatewaySiblingsShareRefresh: gateways of one issuer and client_id
// (the per-route policy pattern) share a session, so a browser sends the
// same cookie to both; when it needs refreshing, one refresh serves both.
// Each gateway refreshing on its own would present the rotated-out refresh
// token a second time, which the provider takes for a stolen token and
// answers by revoking the whole login.
func TestGatewaySiblingsShareRefresh(t *testing.T) {
	op := newOP(t, func(c *idp.Config) { c.Clients[0].AccessTokenLifetime = time.Hour })
	sibling := func(g *Gateway) {
		g.Scopes = []string{"openid", "profile", "email", "offline_access"}
		// Every session is inside its refresh window from the start.
		g.RefreshBefore = caddy.Duration(2 * time.Hour)
	}
	admin := newGateway(t, op, sibling)
	general := newGateway(t, op, sibling)
	u := newUser(t, admin, op)
	u.signIn("/")
	old := sessionCookieValue(t, u, "authgate")
	refreshed := op.refreshes.Load()

	for _, sent := range []struct {
		name string
		gw   *gwServer
	}{{"/admin", admin}, {"/", general}} {
		resp := sendCookie(t, newUser(t, sent.gw, op), "/x", old, false)
		if resp.StatusCode != http.StatusOK || clears(resp) {
			t.Fatalf("the cookie at the %s gateway: status %d (cleared: %v), want 200", sent.name, resp.StatusCode, clears(resp))
		}
	}
	if n := op.refreshes.Load() - refreshed; n != 1 {
		t.Errorf("the provider saw %d refreshes for one session sent to two sibling gateways, want 1", n)
	}
}
