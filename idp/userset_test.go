package idp_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/authgate/authgate/idp"
)

// passwordGrant answers the password grant of username, as demo-app.
func passwordGrant(t testing.TB, ts *testServer, username, password string) (int, string) {
	t.Helper()
	resp, body := postToken(t, ts, "demo-app", testSecret, url.Values{
		"grant_type": {"password"}, "username": {username}, "password": {password}, "scope": {"openid"},
	})
	return resp.StatusCode, body
}

// TestSetUsers: a running provider takes a new set of users: an added
// user logs in, a changed password replaces the old one, a removed user
// and a newly disabled one lose their single sign-on session and refresh
// tokens, and the worker ends their sessions by back channel; a set that
// fails its checks changes nothing.
func TestSetUsers(t *testing.T) {
	rc := newReceiver(t, nil)
	ts := newServer(t, func(c *idp.Config) {
		withBackchannel(rc)(c)
		c.Clients[0].AllowPasswordGrant = true
		c.Users = append(c.Users, idp.User{Username: "carol", PasswordHash: passwordHash(t)})
	})
	started(t, ts)
	alice, carol := browser(t), browser(t)
	aliceTokens := signInOffline(t, ts, alice)
	_, ch := pkce("v")
	login(t, ts, carol, authorizeParams(ch), "carol", testPassword)

	newHash, err := bcrypt.GenerateFromPassword([]byte("new password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	base := testConfig(t).Users[0]

	t.Run("invalid set", func(t *testing.T) {
		for _, list := range [][]idp.User{
			{base, base},
			{base, {Username: "bob"}},
			{base, {Username: "bob", PasswordHash: passwordHash(t), Claims: map[string]any{"sub": "x"}}},
		} {
			if err := ts.Provider.SetUsers(list); err == nil {
				t.Fatalf("SetUsers(%v) = nil; want an error", list)
			}
		}
		if status, body := passwordGrant(t, ts, "carol", testPassword); status != http.StatusOK {
			t.Fatalf("carol after refused sets: %d %s; want her users kept", status, body)
		}
	})

	// carol goes, alice is disabled, bob arrives, dave's password
	// changes... dave is new too: with the new hash only.
	disabled := base
	disabled.Disabled = true
	err = ts.Provider.SetUsers([]idp.User{
		disabled,
		{Username: "bob", PasswordHash: passwordHash(t)},
		{Username: "dave", PasswordHash: string(newHash)},
	})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("added user logs in", func(t *testing.T) {
		if status, body := passwordGrant(t, ts, "bob", testPassword); status != http.StatusOK {
			t.Fatalf("bob: %d %s", status, body)
		}
	})
	t.Run("removed user cannot", func(t *testing.T) {
		if status, _ := passwordGrant(t, ts, "carol", testPassword); status != http.StatusBadRequest {
			t.Fatalf("carol after her removal: %d; want 400", status)
		}
		_, ch := pkce("v")
		q := authorizeParams(ch)
		q.Set("prompt", "none")
		if loc := authorize(t, ts, carol, q).Header.Get("Location"); !strings.Contains(loc, "error=login_required") {
			t.Fatalf("carol's single sign-on after her removal: %s; want login_required", loc)
		}
	})
	t.Run("disabled user cannot", func(t *testing.T) {
		if status, _ := passwordGrant(t, ts, "alice", testPassword); status != http.StatusBadRequest {
			t.Fatalf("alice after she is disabled: %d; want 400", status)
		}
		if status, _, body := refreshWith(t, ts, "demo-app", testSecret, aliceTokens.RefreshToken, ""); status != http.StatusBadRequest || !strings.Contains(body, "invalid_grant") {
			t.Fatalf("alice's refresh token: %d %s; want invalid_grant", status, body)
		}
	})
	t.Run("new password", func(t *testing.T) {
		if status, _ := passwordGrant(t, ts, "dave", testPassword); status != http.StatusBadRequest {
			t.Fatalf("dave with another password: %d; want 400", status)
		}
		if status, body := passwordGrant(t, ts, "dave", "new password"); status != http.StatusOK {
			t.Fatalf("dave with his password: %d %s", status, body)
		}
	})
	t.Run("sessions end by back channel", func(t *testing.T) {
		subs := map[any]bool{}
		for range 2 {
			_, claims := logoutClaimsOf(t, ts, rc.await(t))
			subs[claims["sub"]] = true
		}
		if !subs[idp.DeriveSubject("alice")] || !subs[idp.DeriveSubject("carol")] {
			t.Fatalf("logout tokens for %v; want alice's and carol's", subs)
		}
		if f, err := ts.Provider.UserFamilies(context.Background(), "alice"); err != nil || len(f) != 0 {
			t.Fatalf("alice's refresh families: %v %v; want none", f, err)
		}
	})
}

// TestSetUsersRace: logins and token requests in flight while the users
// change see one set or the other, never a mix or a missing user: for
// `go test -race`.
func TestSetUsersRace(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) { c.Clients[0].AllowPasswordGrant = true })
	started(t, ts)
	alice := testConfig(t).Users[0]
	bob := idp.User{Username: "bob", PasswordHash: passwordHash(t)}
	c := browser(t)
	_, ch := pkce("v")
	login(t, ts, c, authorizeParams(ch), "alice", testPassword)

	var setter, wg sync.WaitGroup
	stop := make(chan struct{})
	setter.Add(1)
	go func() {
		defer setter.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			list := []idp.User{alice}
			if i%2 == 0 {
				list = append(list, bob)
			}
			if err := ts.Provider.SetUsers(list); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if status, body := passwordGrant(t, ts, "alice", testPassword); status != http.StatusOK {
					t.Errorf("alice, kept in every set: %d %s", status, body)
					return
				}
				if status, _ := passwordGrant(t, ts, "bob", testPassword); status != http.StatusOK && status != http.StatusBadRequest {
					t.Errorf("bob, in one set of two: %d", status)
					return
				}
				resp, err := c.Get(ts.URL + "/account/login")
				if err != nil {
					t.Error(err)
					return
				}
				if body := readBody(t, resp); !strings.Contains(body, "signed in as alice") {
					t.Errorf("alice's session page: %s", body)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	setter.Wait()
}
