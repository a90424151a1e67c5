package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/authgate/authgate/internal/caddytest"
)

// adminCall sends method to path on Caddy's admin endpoint and returns
// the status and the decoded JSON answer.
func adminCall(t testing.TB, ctx context.Context, s *site, method, path string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+s.AdminAddr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := caddytest.ReadBody(t, resp)
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("%s %s: %d, not JSON: %q", method, path, resp.StatusCode, body)
	}
	return resp.StatusCode, v
}

// TestProviderAdminAPI: on Caddy's admin endpoint, the admin API lists
// alice's sessions and refresh token families, and signing her out there
// ends her single sign-on and makes her refresh token invalid_grant; an
// unknown user, client or path is a JSON 404, a wrong method a JSON 405.
func TestProviderAdminAPI(t *testing.T) {
	t.Parallel()
	s := newSite(t, `
		client admin-app {
			secret admin-app-secret
			redirect_uri `+redirectURI+`
			offline_access
		}`)
	s.Start(t)
	ctx := testContext(t)
	rp := newRP(t, ctx, s.issuer)
	rp.conf.ClientID, rp.conf.ClientSecret = "admin-app", "admin-app-secret"
	rp.conf.Scopes = append(rp.conf.Scopes, "offline_access")
	browser := caddytest.NewBrowser(t)
	tok, _ := rp.signIn(t, ctx, browser)
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token")
	}

	status, list := adminCall(t, ctx, s, http.MethodGet, "/authgate/users/alice/sessions")
	fams, _ := list["refresh_families"].([]any)
	sessions, _ := list["sessions"].([]any)
	if status != http.StatusOK || len(fams) != 1 || len(sessions) != 1 {
		t.Fatalf("sessions: %d %v; want one session and one family", status, list)
	}
	if f, _ := fams[0].(map[string]any); f["client_id"] != "admin-app" || f["last_used"] == nil {
		t.Fatalf("family %v: want client_id admin-app and last_used", f)
	}

	status, ended := adminCall(t, ctx, s, http.MethodPost, "/authgate/users/alice/logout")
	if status != http.StatusOK || ended["sessions_ended"] != 1.0 || ended["refresh_families_revoked"] != 1.0 {
		t.Fatalf("logout: %d %v; want one session and one family ended", status, ended)
	}
	_, err := rp.conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("refresh after the admin logout: %v; want invalid_grant", err)
	}
	// Single sign-on is over: authorize asks for a login again.
	resp, err := browser.Get(rp.conf.AuthCodeURL("state-e2e", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()), oauth2.SetAuthURLParam("prompt", "none")))
	if err != nil {
		t.Fatal(err)
	}
	caddytest.ReadBody(t, resp)
	if loc, _ := resp.Location(); loc == nil || loc.Query().Get("error") != "login_required" {
		t.Fatalf("authorize prompt=none after the admin logout: %d %v; want login_required", resp.StatusCode, loc)
	}
	status, list = adminCall(t, ctx, s, http.MethodGet, "/authgate/users/alice/sessions")
	if fams, _ := list["refresh_families"].([]any); status != http.StatusOK || len(fams) != 0 || len(list["sessions"].([]any)) != 0 {
		t.Fatalf("sessions after logout: %d %v; want none", status, list)
	}

	for _, tc := range []struct {
		name, method, path string
		status             int
	}{
		{"unknown user", http.MethodPost, "/authgate/users/nobody/logout", http.StatusNotFound},
		{"unknown user list", http.MethodGet, "/authgate/users/nobody/sessions", http.StatusNotFound},
		{"unknown client", http.MethodPost, "/authgate/clients/nope/revoke", http.StatusNotFound},
		{"unknown issuer", http.MethodPost, "/authgate/users/alice/logout?issuer=http://elsewhere.test", http.StatusNotFound},
		{"unknown path", http.MethodGet, "/authgate/users/alice", http.StatusNotFound},
		{"logout by GET", http.MethodGet, "/authgate/users/alice/logout", http.StatusMethodNotAllowed},
		{"client revoke", http.MethodPost, "/authgate/clients/admin-app/revoke?sub=alice", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, v := adminCall(t, ctx, s, tc.method, tc.path)
			if status != tc.status {
				t.Fatalf("%d %v; want %d", status, v, tc.status)
			}
			if msg, _ := v["error"].(string); tc.status != http.StatusOK && msg == "" {
				t.Fatalf("%d %v; want an error message", status, v)
			}
		})
	}
}

// TestAdminLogoutEverywhere: alice is signed in through a gateway that
// registered back-channel logout, in a Caddy of its own, and holds a
// refresh token of another client from another login; signing her out
// on the provider's admin API makes the gateway refuse her old cookie
// and the refresh token invalid_grant.
func TestAdminLogoutEverywhere(t *testing.T) {
	t.Parallel()
	s := newSplitSites(t, `
		client admin-app {
			secret admin-app-secret
			redirect_uri `+redirectURI+`
			offline_access
		}`, "")
	cookie := s.gatewayLogin(t, caddytest.NewBrowser(t))

	ctx := testContext(t)
	rp := newRP(t, ctx, s.issuer)
	rp.conf.ClientID, rp.conf.ClientSecret = "admin-app", "admin-app-secret"
	rp.conf.Scopes = append(rp.conf.Scopes, "offline_access")
	tok, _ := rp.signIn(t, ctx, caddytest.NewBrowser(t))
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token")
	}

	admin := &site{Caddy: s.provider, issuer: s.issuer}
	status, ended := adminCall(t, ctx, admin, http.MethodPost, "/authgate/users/alice/logout")
	if status != http.StatusOK || ended["sessions_ended"] != 2.0 || ended["refresh_families_revoked"] != 1.0 {
		t.Fatalf("logout: %d %v; want two sessions and one family ended", status, ended)
	}
	s.waitRefused(t, cookie, 10*time.Second)
	_, err := rp.conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("refresh after the admin logout: %v; want invalid_grant", err)
	}
}
