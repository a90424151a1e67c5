package e2e_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"text/template"

	"golang.org/x/oauth2"

	"github.com/authgate/authgate/internal/caddytest"
)

// storeTemplate is a provider on its default store, whose one client asks
// for consent and may refresh; Extra goes into the provider's block, for
// a reload to change something.
var storeTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 2s
}

{{.Issuer}} {
	oidc_provider {{.Issuer}} {
		client demo-app {
			secret {env.{{.SecretEnv}}}
			redirect_uri {{.RedirectURI}}
			offline_access
			require_consent
		}
		user alice {
			password_hash {{.Hash}}
		}{{.Extra}}
	}
}
`))

// storeSite is a Caddy whose provider keeps its state in the default
// store.
type storeSite struct {
	*site
	rp *relyingParty
}

func newStoreSite(t *testing.T) *storeSite {
	t.Helper()
	s := &storeSite{site: newEmptySite(t)}
	s.write(t, "")
	return s
}

func (s *storeSite) write(t *testing.T, extra string) {
	t.Helper()
	s.WriteConfig(t, storeTemplate, map[string]string{
		"Admin": s.AdminAddr, "Storage": s.Storage, "Issuer": s.issuer, "SecretEnv": secretEnv,
		"RedirectURI": redirectURI, "Hash": passwordHash, "Extra": extra,
	})
}

// code logs alice in with a new browser and returns a code with its
// verifier; consented says whether the consent page was shown (and
// allowed, remembered).
func (s *storeSite) code(t *testing.T) (code, verifier string, consented bool) {
	t.Helper()
	browser := caddytest.NewBrowser(t)
	verifier = oauth2.GenerateVerifier()
	resp, err := browser.Get(s.rp.conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier)))
	if err != nil {
		t.Fatal(err)
	}
	caddytest.ReadBody(t, resp)
	loginURL, err := resp.Location()
	if err != nil {
		t.Fatalf("authorize: status %d, no redirect", resp.StatusCode)
	}
	next := caddytest.Login(t, browser, loginURL, "alice", password)
	if next.Path == "/account/consent" {
		consented = true
		next = caddytest.Consent(t, browser, next)
	}
	if got := next.Scheme + "://" + next.Host + next.Path; got != redirectURI || next.Query().Get("code") == "" {
		t.Fatalf("login ended at %s, want a code at %s", next, redirectURI)
	}
	return next.Query().Get("code"), verifier, consented
}

// postToken posts form with demo-app's credentials to the token endpoint.
func (s *storeSite) postToken(t *testing.T, form url.Values) (int, map[string]any) {
	t.Helper()
	c := &cluster{provider: [2]string{s.issuer}}
	status, body, _ := c.postToken(t, 0, form)
	return status, body
}

// TestDefaultStore runs the provider on its default store, the bbolt file
// in the storage folder: a refresh token and a remembered consent survive
// a reload with a changed configuration and a restart, a rotated-out
// refresh token is still recognised after both, and a code redeemed by
// many requests at once is redeemed once.
func TestDefaultStore(t *testing.T) {
	t.Parallel()
	s := newStoreSite(t)
	s.Start(t)
	s.rp = newRP(t, testContext(t), s.issuer)
	s.rp.conf.Scopes = append(s.rp.conf.Scopes, "offline_access")

	code, verifier, consented := s.code(t)
	if !consented {
		t.Fatal("first login: no consent page")
	}
	// Where the README says the file is, made by the first request that
	// needed it.
	sum := sha256.Sum256([]byte(s.issuer))
	dbFile := filepath.Join(s.Storage, "authgate", "provider-"+hex.EncodeToString(sum[:])[:16]+".db")
	if _, err := os.Stat(dbFile); err != nil {
		t.Fatalf("the default store's file: %v", err)
	}
	status, body := s.postToken(t, exchange(code, verifier))
	rt, _ := body["refresh_token"].(string)
	if status != http.StatusOK || rt == "" {
		t.Fatalf("exchange: %d %v, want a refresh token", status, body)
	}
	var rotatedOut []string

	survives := func(t *testing.T) {
		t.Helper()
		status, body := s.postToken(t, refresh(rt))
		next, _ := body["refresh_token"].(string)
		if status != http.StatusOK || next == "" {
			t.Fatalf("refresh: %d %v", status, body)
		}
		rotatedOut = append(rotatedOut, rt)
		rt = next
		if _, _, consented := s.code(t); consented {
			t.Error("the remembered consent was forgotten: consent page shown again")
		}
	}

	if !t.Run("reload", func(t *testing.T) {
		s.write(t, `
		client second-app {
			secret second-app-secret
			redirect_uri http://second.test/callback
		}`)
		s.Reload(t)
		survives(t)
	}) {
		return
	}
	if !t.Run("restart", func(t *testing.T) {
		s.Stop(t)
		s.Start(t)
		survives(t)
	}) {
		return
	}

	t.Run("code redeemed concurrently", func(t *testing.T) {
		code, verifier, _ := s.code(t)
		const n = 16
		statuses := make([]int, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		c := &cluster{provider: [2]string{s.issuer}}
		ctx := testContext(t)
		for i := range n {
			wg.Go(func() {
				statuses[i], _, _, errs[i] = c.tryPostToken(ctx, 0, exchange(code, verifier))
			})
		}
		wg.Wait()
		ok := 0
		for i := range n {
			switch {
			case errs[i] != nil:
				t.Errorf("request %d: %v", i, errs[i])
			case statuses[i] == http.StatusOK:
				ok++
			case statuses[i] != http.StatusBadRequest:
				t.Errorf("request %d: status %d, want 200 or 400", i, statuses[i])
			}
		}
		if ok != 1 {
			t.Fatalf("%d of %d concurrent redemptions of one code succeeded, want 1 (statuses %v)", ok, n, statuses)
		}
	})

	t.Run("rotated-out token recognised", func(t *testing.T) {
		// The first refresh token, rotated out before the reload: its reuse
		// revokes the family, so the current token fails too.
		status, body := s.postToken(t, refresh(rotatedOut[0]))
		if status != http.StatusBadRequest || body["error"] != "invalid_grant" {
			t.Fatalf("reused refresh token: %d %v, want invalid_grant", status, body)
		}
		if status, body := s.postToken(t, refresh(rt)); status != http.StatusBadRequest {
			t.Fatalf("refresh after its family's reuse: %d %v, want invalid_grant", status, body)
		}
	})
}

// TestDefaultStoreOneProcess: `caddy validate` of the running
// configuration succeeds while Caddy has the bbolt file open (the file is
// opened by the first request that needs it, not at provisioning), and a
// second Caddy process on the same file serves 503 temporarily_unavailable
// to what needs the store, with a log line that names the file and says
// what several processes need, while the first serves on.
func TestDefaultStoreOneProcess(t *testing.T) {
	t.Parallel()
	dbFile := filepath.Join(t.TempDir(), "login.db")
	extra := "\n\t\tstore bolt " + dbFile
	s := newStoreSite(t)
	s.write(t, extra)
	s.Start(t)
	bogus := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"no-such-token"}}
	if status, body := s.postToken(t, bogus); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Fatalf("unknown refresh token: %d %v, want 400 invalid_grant", status, body)
	}
	if _, err := os.Stat(dbFile); err != nil {
		t.Fatalf("the store file after a request: %v", err)
	}

	// `caddy validate` provisions the provider in a process of its own.
	cmd := exec.Command(caddyBin, "validate", "--config", s.Config, "--adapter", "caddyfile")
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), secretEnv+"="+clientSecret,
		"XDG_CONFIG_HOME="+filepath.Join(s.Dir, "xdg-config"),
		"XDG_DATA_HOME="+filepath.Join(s.Dir, "xdg-data"),
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("validate while Caddy runs with the file open: %v\n%s", err, out)
	}
	// Nothing of the checked configuration touches the store: no worker
	// of it waits on the file the running Caddy holds.
	if strings.Contains(string(out), "cannot be opened") {
		t.Errorf("validate tried to open the store:\n%s", out)
	}

	second := newStoreSite(t)
	second.write(t, extra)
	second.Start(t)
	status, body := second.postToken(t, bogus)
	if status != http.StatusServiceUnavailable || body["error"] != "temporarily_unavailable" {
		t.Fatalf("second process: %d %v, want 503 temporarily_unavailable", status, body)
	}
	log, err := os.ReadFile(second.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{dbFile, "another process", "store redis", "caddy reload"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the second process's log does not say %q", want)
		}
	}
	// The first still serves.
	if status, _ := s.postToken(t, bogus); status != http.StatusBadRequest {
		t.Fatalf("first process after the second started: %d, want 400", status)
	}
}
