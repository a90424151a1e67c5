package caddymodule

import (
	"net/http"
	"slices"
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

// TestGatewayRefreshedCookieNotStored: the upstream's answer that carries
// a refreshed session cookie says Cache-Control: no-store, so that no
// shared cache hands the cookie to the next visitor.
func TestGatewayRefreshedCookieNotStored(t *testing.T) {
	op := newOP(t, nil)
	gw := newGateway(t, op, func(g *Gateway) {
		g.Scopes = []string{"openid", "profile", "email", "offline_access"}
		g.RefreshBefore = caddy.Duration(2 * time.Hour) // every request refreshes
	})
	u := newUser(t, gw, op)
	u.signIn("/")
	resp := sendCookie(t, u, "/x", sessionCookieValue(t, u, "authgate"), false)
	var refreshed bool
	for _, c := range resp.Cookies() {
		refreshed = refreshed || c.Name == "authgate" && c.MaxAge > 0
	}
	if resp.StatusCode != http.StatusOK || !refreshed {
		t.Fatalf("status %d, new cookie %v; want 200 with a refreshed session cookie", resp.StatusCode, refreshed)
	}
	if cc := resp.Header.Values("Cache-Control"); !slices.Contains(cc, "no-store") {
		t.Errorf("Cache-Control %q on an answer with a session cookie, want no-store", cc)
	}
}
