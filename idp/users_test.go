package idp_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

// userStores are the two ways the user index is updated: compare-and-swap
// on a store that can, read then write on one that cannot.
var userStores = []struct {
	name string
	wrap func(idp.Store) idp.Store
}{
	{"swap", nil},
	{"read then write", func(s idp.Store) idp.Store { return plainStore{s} }},
}

func userServer(t *testing.T, wrap func(idp.Store) idp.Store) *testServer {
	t.Helper()
	return newServerWithStore(t, func(c *idp.Config) {
		c.Clients[0].AllowOfflineAccess = true
		c.Clients[0].AbsoluteRefreshTokenLifetime = time.Hour
		c.Clients = append(c.Clients, idp.Client{ID: "other", Secret: "other-secret", RedirectURIs: []string{testRedirect}, AllowOfflineAccess: true})
	}, wrap)
}

// offlineTokensFor logs alice in with c, for client id, with
// offline_access.
func offlineTokensFor(t *testing.T, ts *testServer, c *http.Client, id, secret string) tokens {
	t.Helper()
	v, ch := pkce("v")
	q := authorizeParams(ch)
	q.Set("client_id", id)
	q.Set("scope", "openid profile offline_access")
	u := login(t, ts, c, q, "alice", testPassword)
	resp, body := postToken(t, ts, id, secret, exchangeForm(u.Query().Get("code"), v))
	var tk tokens
	if resp.StatusCode != http.StatusOK || jsonUnmarshal(body, &tk) != nil || tk.RefreshToken == "" {
		t.Fatalf("exchange for %s: %d %s", id, resp.StatusCode, body)
	}
	return tk
}

// TestEndUserSessions: ending alice's sessions ends her provider session
// (single sign-on asks for a login again) and revokes her refresh tokens,
// and her lists are empty after it; she may be named by username.
func TestEndUserSessions(t *testing.T) {
	for _, st := range userStores {
		t.Run(st.name, func(t *testing.T) {
			ts := userServer(t, st.wrap)
			ctx := context.Background()
			c := browser(t)
			tk := offlineTokensFor(t, ts, c, "demo-app", testSecret)
			sub := idp.DeriveSubject("alice")

			sessions, err := ts.Provider.UserSessions(ctx, sub)
			if err != nil || len(sessions) != 1 {
				t.Fatalf("UserSessions: %v, %v; want one", sessions, err)
			}
			fams, err := ts.Provider.UserFamilies(ctx, "alice")
			if err != nil || len(fams) != 1 || fams[0].ClientID != "demo-app" || fams[0].Created.IsZero() || fams[0].LastUsed.IsZero() {
				t.Fatalf("UserFamilies: %+v, %v; want one of demo-app", fams, err)
			}

			ended, revoked, err := ts.Provider.EndUserSessions(ctx, sub)
			if err != nil || ended != 1 || revoked != 1 {
				t.Fatalf("EndUserSessions: %d sessions, %d families, %v; want 1, 1", ended, revoked, err)
			}
			if status, _, body := refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, ""); status != http.StatusBadRequest {
				t.Fatalf("refresh after EndUserSessions: %d %s; want invalid_grant", status, body)
			}
			_, ch := pkce("v")
			q := authorizeParams(ch)
			q.Set("prompt", "none")
			if loc := authorize(t, ts, c, q).Header.Get("Location"); !strings.Contains(loc, "error=login_required") {
				t.Fatalf("authorize after EndUserSessions: %s; want login_required", loc)
			}
			if s, err := ts.Provider.UserSessions(ctx, sub); err != nil || len(s) != 0 {
				t.Fatalf("UserSessions after: %v, %v; want none", s, err)
			}
			if f, err := ts.Provider.UserFamilies(ctx, sub); err != nil || len(f) != 0 {
				t.Fatalf("UserFamilies after: %v, %v; want none", f, err)
			}
			if _, _, err := ts.Provider.EndUserSessions(ctx, "nobody"); !errors.Is(err, idp.ErrUnknownUser) {
				t.Fatalf("EndUserSessions(nobody): %v; want ErrUnknownUser", err)
			}
		})
	}
}

// TestRevokeClientTokens: revoking one client's tokens leaves the other
// client's and the provider session alone.
func TestRevokeClientTokens(t *testing.T) {
	for _, st := range userStores {
		for _, sub := range []string{"alice", ""} {
			t.Run(st.name+"/sub="+sub, func(t *testing.T) {
				ts := userServer(t, st.wrap)
				ctx := context.Background()
				c := browser(t)
				demo := offlineTokensFor(t, ts, c, "demo-app", testSecret)
				other := offlineTokensFor(t, ts, c, "other", "other-secret")

				n, err := ts.Provider.RevokeClientTokens(ctx, "demo-app", sub)
				if err != nil || n != 1 {
					t.Fatalf("RevokeClientTokens: %d, %v; want 1", n, err)
				}
				if status, _, body := refreshWith(t, ts, "demo-app", testSecret, demo.RefreshToken, ""); status != http.StatusBadRequest {
					t.Fatalf("demo-app refresh after revoke: %d %s; want invalid_grant", status, body)
				}
				if status, _, body := refreshWith(t, ts, "other", "other-secret", other.RefreshToken, ""); status != http.StatusOK {
					t.Fatalf("other refresh after revoking demo-app: %d %s", status, body)
				}
				fams, err := ts.Provider.UserFamilies(ctx, "alice")
				if err != nil || len(fams) != 1 || fams[0].ClientID != "other" {
					t.Fatalf("UserFamilies after: %+v, %v; want other's only", fams, err)
				}
				if s, _ := ts.Provider.UserSessions(ctx, "alice"); len(s) != 1 {
					t.Fatalf("UserSessions after revoking a client: %v; want the session kept", s)
				}
			})
		}
	}
	ts := userServer(t, nil)
	ctx := context.Background()
	if _, err := ts.Provider.RevokeClientTokens(ctx, "nope", ""); !errors.Is(err, idp.ErrUnknownClient) {
		t.Errorf("unknown client: %v; want ErrUnknownClient", err)
	}
	if _, err := ts.Provider.RevokeClientTokens(ctx, "demo-app", "nobody"); !errors.Is(err, idp.ErrUnknownUser) {
		t.Errorf("unknown user: %v; want ErrUnknownUser", err)
	}
}

// TestUserFamiliesLastUsed: a refresh records its family's last use,
// at most once per idp.LastUsedGranularity.
func TestUserFamiliesLastUsed(t *testing.T) {
	ts := userServer(t, nil)
	ctx := context.Background()
	tk := offlineTokensFor(t, ts, browser(t), "demo-app", testSecret)
	before, _ := ts.Provider.UserFamilies(ctx, "alice")

	ts.clock.Advance(idp.LastUsedGranularity / 2)
	status, tk, body := refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, "")
	if status != http.StatusOK {
		t.Fatalf("refresh: %d %s", status, body)
	}
	if f, _ := ts.Provider.UserFamilies(ctx, "alice"); len(f) != 1 || !f[0].LastUsed.Equal(before[0].LastUsed) {
		t.Fatalf("last used within the granularity: %+v; want unchanged %v", f, before[0].LastUsed)
	}

	ts.clock.Advance(idp.LastUsedGranularity)
	if status, _, body := refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, ""); status != http.StatusOK {
		t.Fatalf("refresh: %d %s", status, body)
	}
	now := ts.clock.Now().Truncate(time.Second)
	if f, _ := ts.Provider.UserFamilies(ctx, "alice"); len(f) != 1 || !f[0].LastUsed.Equal(now) || !f[0].Created.Equal(before[0].Created) {
		t.Fatalf("last used after the granularity: %+v; want %v", f, now)
	}
}
