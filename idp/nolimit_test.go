package idp_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

// TestNoAbsoluteRefreshLimit: with NoAbsoluteLimit and sliding
// expiration, a login's refresh tokens live for as long as each is used
// within the sliding lifetime, far past it; an idle one expires; and
// EndUserSessions still finds and revokes a family that has outlived its
// first end.
func TestNoAbsoluteRefreshLimit(t *testing.T) {
	for _, usage := range []string{idp.RefreshOneTime, idp.RefreshReuse} {
		t.Run(usage, func(t *testing.T) {
			ts := offlineServerWith(t, func(c *idp.Client) {
				c.RefreshTokenExpiration = idp.RefreshSliding
				c.SlidingRefreshTokenLifetime = time.Hour
				c.AbsoluteRefreshTokenLifetime = idp.NoAbsoluteLimit
				c.RefreshTokenUsage = usage
			})
			rt := offlineTokens(t, ts).RefreshToken
			for i := range 30 { // 25 hours of use, 50 minutes apart
				ts.clock.Advance(50 * time.Minute)
				st, tk, body := refreshWith(t, ts, "demo-app", testSecret, rt, "")
				if st != http.StatusOK {
					t.Fatalf("refresh %d, %v after the login: %d %s", i+1, time.Duration(i+1)*50*time.Minute, st, body)
				}
				rt = tk.RefreshToken
			}

			if _, families, err := ts.Provider.EndUserSessions(context.Background(), "alice"); err != nil || families != 1 {
				t.Fatalf("EndUserSessions = %d families, %v; want the live family revoked", families, err)
			}
			if st, _, body := refreshWith(t, ts, "demo-app", testSecret, rt, ""); st != http.StatusBadRequest || !strings.Contains(body, "invalid_grant") {
				t.Fatalf("refresh after EndUserSessions: %d %s", st, body)
			}

			rt = offlineTokens(t, ts).RefreshToken
			ts.clock.Advance(61 * time.Minute)
			if st, _, body := refreshWith(t, ts, "demo-app", testSecret, rt, ""); st != http.StatusBadRequest || !strings.Contains(body, "invalid_grant") {
				t.Fatalf("refresh after an idle sliding lifetime: %d %s", st, body)
			}
		})
	}
}

// TestNoAbsoluteRefreshLimitNeedsSliding: with absolute expiration, no
// absolute limit would be tokens that never expire.
func TestNoAbsoluteRefreshLimitNeedsSliding(t *testing.T) {
	cfg := testConfig(t)
	cfg.Issuer = "https://id.example"
	cfg.Clients[0].AllowOfflineAccess = true
	cfg.Clients[0].AbsoluteRefreshTokenLifetime = idp.NoAbsoluteLimit
	if _, err := idp.New(cfg, idp.NewMemoryStore(nil)); err == nil || !strings.Contains(err.Error(), "needs sliding") {
		t.Fatalf("New = %v", err)
	}
}
