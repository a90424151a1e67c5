package e2e_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"golang.org/x/oauth2"

	"github.com/authgate/authgate/internal/caddytest"
)

// usersFileTemplate is a provider whose users are all in a users file,
// polled every 200ms; demo-app is the gateway of splitGatewayTemplate,
// with back-channel logout, and admin-app a client with refresh tokens
// and the password grant.
var usersFileTemplate = template.Must(template.New("Caddyfile").Parse(`{
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
		}
		client admin-app {
			secret admin-app-secret
			redirect_uri ` + redirectURI + `
			offline_access
			password_grant
		}
		users_file {{.UsersFile}} {
			poll 200ms
		}
	}
}
`))

// userCommand runs `caddy authgate user args... --file file` with the
// password, if any, on standard input.
func userCommand(t testing.TB, file, stdin string, args ...string) {
	t.Helper()
	cmd := exec.Command(caddyBin, append(append([]string{"authgate", "user"}, args...), "--file", file)...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("caddy authgate user %v: %v\n%s", args, err, out)
	}
}

// passwordGrantStatus is the status of admin-app's password grant for
// username.
func passwordGrantStatus(t testing.TB, issuer, username, pw string) int {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "username": {username}, "password": {pw}, "scope": {"openid"}}
	req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, issuer+"/connect/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("admin-app", "admin-app-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	caddytest.ReadBody(t, resp)
	return resp.StatusCode
}

// waitStatus polls admin-app's password grant of username until it
// answers want, for at most within.
func waitStatus(t testing.TB, issuer, username, pw string, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := passwordGrantStatus(t, issuer, username, pw)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("password grant of %s: %d after %s; want %d", username, got, within, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUsersFileReload: the users file changes under a running provider,
// through the real `caddy authgate user` command, with no reload: an
// added user can log in; a disabled user cannot, her refresh token is
// refused and her session at a gateway in another Caddy ends by
// back-channel logout; a file broken by hand keeps the users, and the
// log names its line.
func TestUsersFileReload(t *testing.T) {
	t.Parallel()
	s := &splitSites{
		provider: caddytest.New(t, secretEnv+"="+clientSecret),
		gateway:  caddytest.New(t, secretEnv+"="+clientSecret),
		issuer:   fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t)),
		gwURL:    fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(t)),
	}
	usersFile := filepath.Join(s.provider.Dir, "users.json")
	userCommand(t, usersFile, password+"\n", "add", "alice", "--bcrypt-cost", "4", "--claim", "email=alice@example.com")
	s.provider.WriteConfig(t, usersFileTemplate, map[string]any{
		"Admin": s.provider.AdminAddr, "Storage": s.provider.Storage, "Issuer": s.issuer, "Gateway": s.gwURL,
		"SecretEnv": secretEnv, "UsersFile": usersFile,
	})
	s.provider.Ready = []string{s.issuer + "/.well-known/openid-configuration"}
	s.gateway.WriteConfig(t, splitGatewayTemplate, map[string]any{
		"Admin": s.gateway.AdminAddr, "Storage": s.gateway.Storage, "Issuer": s.issuer, "Gateway": s.gwURL,
		"SecretEnv": secretEnv,
	})
	s.provider.Start(t)
	s.gateway.Start(t)

	cookie := s.gatewayLogin(t, caddytest.NewBrowser(t))
	ctx := testContext(t)
	rp := newRP(t, ctx, s.issuer)
	rp.conf.ClientID, rp.conf.ClientSecret = "admin-app", "admin-app-secret"
	rp.conf.Scopes = append(rp.conf.Scopes, "offline_access")
	tok, _ := rp.signIn(t, ctx, caddytest.NewBrowser(t))
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token")
	}

	// Within 10s: the poll is 200ms; the rest is a loaded machine's.
	const bound = 10 * time.Second
	if status := passwordGrantStatus(t, s.issuer, "bob", "bob's password"); status != http.StatusBadRequest {
		t.Fatalf("bob before he is added: %d; want 400", status)
	}
	userCommand(t, usersFile, "bob's password\n", "add", "bob", "--bcrypt-cost", "4")
	waitStatus(t, s.issuer, "bob", "bob's password", http.StatusOK, bound)

	userCommand(t, usersFile, "", "disable", "alice")
	s.waitRefused(t, cookie, bound)
	if status := passwordGrantStatus(t, s.issuer, "alice", password); status != http.StatusBadRequest {
		t.Fatalf("alice once disabled: %d; want 400", status)
	}
	_, err := rp.conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("alice's refresh token once she is disabled: %v; want invalid_grant", err)
	}

	// A hand edit that breaks the file: bob stays, and the log says where.
	if err := os.WriteFile(usersFile, []byte("[\n  {\"username\": \"carol\",\n    password_hash: \"x\"}\n]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitLog(t, s.provider, `"line":3`, bound)
	waitLog(t, s.provider, "users file not reloaded; keeping the previous users", bound)
	if status := passwordGrantStatus(t, s.issuer, "bob", "bob's password"); status != http.StatusOK {
		t.Fatalf("bob after a broken file: %d; want 200", status)
	}
}
