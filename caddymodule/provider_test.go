package caddymodule

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/idp/boltstore"
)

// newTestContext returns a Caddy context whose storage is the file system
// under root, as a Caddy process configured so would have.
func newTestContext(t testing.TB, root string) caddy.Context {
	t.Helper()
	raw, err := json.Marshal(map[string]any{
		"storage": map[string]any{"module": "file_system", "root": root},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	ctx, err := caddy.ProvisionContext(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ctx
}

// testProvider returns a small valid configuration.
func testProvider(issuer string) *Provider {
	return &Provider{
		Issuer: issuer,
		Clients: []ProviderClient{{
			ID:           "app",
			Secret:       "s3cret-value",
			RedirectURIs: []string{"https://app.example.com/callback"},
		}},
		Users: []ProviderUser{{Username: "alice", PasswordHash: testBcryptHash}},
	}
}

func provision(t testing.TB, ctx caddy.Context, p *Provider) {
	t.Helper()
	if err := p.Provision(ctx); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	t.Cleanup(func() { p.Cleanup() })
}

// serve sends a GET for target through the module and returns the
// response, and whether the next handler got the request instead.
func serve(t testing.TB, p *Provider, target string) (*http.Response, bool) {
	t.Helper()
	var passed bool
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		passed = true
		w.WriteHeader(http.StatusTeapot)
		return nil
	})
	w := httptest.NewRecorder()
	if err := p.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil), next); err != nil {
		t.Fatalf("ServeHTTP(%s): %v", target, err)
	}
	return w.Result(), passed
}

func jwksKeyIDs(t testing.TB, p *Provider) []string {
	t.Helper()
	resp, passed := serve(t, p, strings.TrimSuffix(p.Issuer, "/")+idp.PathJWKS)
	if passed || resp.StatusCode != http.StatusOK {
		t.Fatalf("JWKS: status %d, passed on %v", resp.StatusCode, passed)
	}
	var set struct {
		Keys []struct {
			KeyID string `json:"kid"`
			Alg   string `json:"alg"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range set.Keys {
		ids = append(ids, k.Alg+" "+k.KeyID)
	}
	return ids
}

func TestProvisionKeepsKeys(t *testing.T) {
	const issuer = "https://login.example.com"
	prefix := providerStoragePrefix(issuer)
	tests := []struct {
		name  string
		store *StateStore
	}{
		{"default (bolt)", nil},
		{"storage", &StateStore{Storage: &StorageStateStore{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			newProvider := func(issuer string) *Provider {
				p := testProvider(issuer)
				p.Store = tt.store
				return p
			}
			first := newProvider(issuer)
			provision(t, newTestContext(t, root), first)
			ids := jwksKeyIDs(t, first)
			if len(ids) != 2 {
				t.Fatalf("JWKS %q, want an RS256 and an ES256 key", ids)
			}
			for _, name := range []string{"signing_keys.json", "cookie_keys.json"} {
				// In Caddy's storage with every local store: they are
				// needed at provisioning, which opens no bbolt file.
				if _, err := os.Stat(filepath.Join(root, prefix, name)); err != nil {
					t.Errorf("%s in storage: %v", name, err)
				}
				if _, err := first.state.keys.Load(context.Background(), prefix+"/"+name); err != nil {
					t.Errorf("%s not in the provider's key store: %v", name, err)
				}
			}

			// A restart: same keys.
			first.Cleanup()
			second := newProvider(issuer)
			provision(t, newTestContext(t, root), second)
			if again := jwksKeyIDs(t, second); strings.Join(again, ",") != strings.Join(ids, ",") {
				t.Fatalf("keys after restart %q, want %q", again, ids)
			}

			// Another issuer on the same storage has keys of its own.
			other := newProvider("https://other.example.com")
			provision(t, newTestContext(t, root), other)
			for _, id := range jwksKeyIDs(t, other) {
				if strings.Contains(strings.Join(ids, ","), id) {
					t.Fatalf("issuers share key %s", id)
				}
			}
		})
	}
}

func TestProvisionBoltFile(t *testing.T) {
	// The default store is a file per issuer next to the storage's
	// folders, made at the first request that needs it, not at
	// provisioning (which `caddy validate` does while Caddy runs); `store
	// bolt <path>` puts it elsewhere.
	ctx := context.Background()
	root := t.TempDir()
	const issuer = "https://login.example.com"
	p := testProvider(issuer)
	provision(t, newTestContext(t, root), p)
	want := filepath.Join(root, "authgate", "provider-"+strings.TrimPrefix(providerStoragePrefix(issuer), "authgate/provider/")+".db")
	if p.state.poolKey != want {
		t.Fatalf("store file %s, want %s", p.state.poolKey, want)
	}
	if _, err := os.Stat(want); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("store file after provisioning: %v, want none yet", err)
	}
	if err := p.state.store.Put(ctx, "c/x", []byte("x"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(want); err != nil {
		t.Fatal(err)
	}

	elsewhere := filepath.Join(t.TempDir(), "state", "login.db")
	q := testProvider(issuer)
	q.Store = &StateStore{Bolt: &BoltStore{Path: elsewhere}}
	provision(t, newTestContext(t, root), q)
	if q.state.poolKey != elsewhere {
		t.Fatalf("store file %s, want %s", q.state.poolKey, elsewhere)
	}
	if err := q.state.store.Put(ctx, "c/x", []byte("x"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(elsewhere); err != nil {
		t.Fatal(err)
	}
}

func TestProvisionBoltFileInUse(t *testing.T) {
	// bbolt opens a file in one process: a second (here another open of
	// the file, which its lock treats alike) provisions, as `caddy
	// validate` must, and its requests fail with an error that says what
	// to use instead, until the file is free.
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "login.db")
	other, err := boltstore.Open(path, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	p := testProvider("https://login.example.com")
	p.Store = &StateStore{Bolt: &BoltStore{Path: path}}
	provision(t, newTestContext(t, t.TempDir()), p)
	err = p.state.store.Put(ctx, "c/x", []byte("x"), time.Minute)
	if err == nil {
		t.Fatal("Put on a file open elsewhere succeeded")
	}
	for _, want := range []string{"store", path, "another process", "store redis", "store storage"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// Within boltRetry the failure is answered again without waiting on
	// the lock; once the file is free and boltRetry has passed, the next
	// request opens it.
	if again := p.state.store.Put(ctx, "c/x", []byte("x"), time.Minute); again == nil || again.Error() != err.Error() {
		t.Fatalf("second Put: %v, want the same failure", again)
	}
	other.Close()
	lb := p.state.store.(*lazyBolt)
	lb.mu.Lock()
	lb.failed = lb.failed.Add(-boltRetry)
	lb.mu.Unlock()
	if err := p.state.store.Put(ctx, "c/x", []byte("x"), time.Minute); err != nil {
		t.Fatalf("Put once the file is free: %v", err)
	}
}

func TestProvisionSharesStore(t *testing.T) {
	// Two providers of one issuer (a reload provisions the new
	// configuration before it cleans up the old) share one open store,
	// released by the last Cleanup.
	tests := []struct {
		name  string
		store *StateStore
		pool  *caddy.UsagePool
	}{
		{"default (bolt)", nil, boltPool},
		{"storage", &StateStore{Storage: &StorageStateStore{}}, storePool},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := newTestContext(t, t.TempDir())
			a, b := testProvider("https://login.example.com"), testProvider("https://login.example.com")
			a.Store, b.Store = tt.store, tt.store
			provision(t, ctx, a)
			provision(t, ctx, b)
			if a.state.poolKey == "" || a.state.poolKey != b.state.poolKey {
				t.Fatalf("store keys %q and %q, want one", a.state.poolKey, b.state.poolKey)
			}
			key := a.state.poolKey
			if refs, _ := tt.pool.References(key); refs != 2 {
				t.Fatalf("store has %d references, want 2", refs)
			}
			if err := a.Cleanup(); err != nil {
				t.Fatal(err)
			}
			if refs, _ := tt.pool.References(key); refs != 1 {
				t.Fatalf("store has %d references after one cleanup, want 1", refs)
			}
			if err := b.Cleanup(); err != nil {
				t.Fatal(err)
			}
			if _, ok := tt.pool.References(key); ok {
				t.Fatal("store still pooled after every cleanup")
			}
		})
	}
}

func TestProvisionSigningKeyFiles(t *testing.T) {
	root := t.TempDir()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var files, want []string
	for _, priv := range []crypto.Signer{rsaKey, ecKey} {
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		k, err := idp.NewSigningKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		filename := filepath.Join(t.TempDir(), k.Alg+".pem")
		if err := os.WriteFile(filename, pemBlock("PRIVATE KEY", der), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, filename)
		want = append(want, k.Alg+" "+k.ID)
	}

	p := testProvider("https://login.example.com")
	p.SigningKeys = files
	provision(t, newTestContext(t, root), p)
	if ids := jwksKeyIDs(t, p); strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Fatalf("JWKS %q, want %q", ids, want)
	}
	if _, err := os.Stat(filepath.Join(root, providerStoragePrefix(p.Issuer), "signing_keys.json")); !os.IsNotExist(err) {
		t.Fatalf("signing keys generated although configured: %v", err)
	}
}

func TestProvisionErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		filename := filepath.Join(dir, name)
		if err := os.WriteFile(filename, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return filename
	}
	misspelt := write("misspelt.json", `[{"username": "bob", "password": "hunter2"}]`)
	notPEM := write("not.pem", "hello")

	tests := []struct {
		name    string
		modify  func(p *Provider)
		wantErr string
	}{
		{"no issuer", func(p *Provider) { p.Issuer = "" }, "issuer is required"},
		{"relative issuer", func(p *Provider) { p.Issuer = "login.example.com" }, `issuer "login.example.com" is not an absolute http(s) URL`},
		{"plain text password", func(p *Provider) { p.Users[0].PasswordHash = "hunter2" }, `user "alice": password_hash: not a bcrypt or argon2id hash`},
		{"truncated bcrypt", func(p *Provider) { p.Users[0].PasswordHash = testBcryptHash[:30] }, `user "alice": password_hash: malformed bcrypt hash`},
		{"no password hash", func(p *Provider) { p.Users[0].PasswordHash = "" }, `user "alice": password_hash is required`},
		{"password hash from unset variable", func(p *Provider) { p.Users[0].PasswordHash = "{env.AUTHGATE_TEST_UNSET}" }, `user "alice": password_hash is required`},
		{"plain text secret hash", func(p *Provider) {
			p.Clients[0].Secret, p.Clients[0].SecretHash = "", "s3cret-value"
		}, `client "app": secret_hash: not a bcrypt or argon2id hash`},
		{"secret from unset variable", func(p *Provider) { p.Clients[0].Secret = "{env.AUTHGATE_TEST_UNSET}" }, `client "app": secret is empty`},
		{"misspelt users file", func(p *Provider) { p.UsersFile = misspelt }, `users_file "` + misspelt + `": line 1, column 22: unknown field "password"`},
		{"users file user also configured", func(p *Provider) {
			p.UsersFile = write("dup.json", "[\n  {\"username\": \"alice\", \"password_hash\": \""+testBcryptHash+"\"}\n]")
		},
			`users_file "` + filepath.Join(dir, "dup.json") + `": line 2, column 3: user "alice" is declared twice (also in the configuration)`},
		{"users file poll too short", func(p *Provider) { p.UsersFile, p.UsersFilePoll = misspelt, caddy.Duration(time.Millisecond) }, "users_file poll 1ms: want at least 100ms"},
		{"missing users file", func(p *Provider) { p.UsersFile = filepath.Join(dir, "none.json") }, "users_file"},
		{"signing key not PEM", func(p *Provider) { p.SigningKeys = []string{notPEM} }, `signing_key "` + notPEM + `": no PEM private key found`},
		{"templates not a directory", func(p *Provider) { p.Templates = notPEM }, "is not a directory"},
		{"negative code lifetime", func(p *Provider) { p.CodeLifetime = caddy.Duration(-time.Minute) }, "code_lifetime -1m0s is negative"},
		{"negative throttle", func(p *Provider) { p.LoginThrottle = &ProviderLoginThrottle{User: &ProviderThrottleLimit{Free: -1}} }, "login_throttle user"},
		{"throttle max below base", func(p *Provider) {
			p.LoginThrottle = &ProviderLoginThrottle{IP: &ProviderThrottleLimit{Base: caddy.Duration(time.Minute), Max: caddy.Duration(time.Second)}}
		}, "login_throttle ip"},
		{"negative device cookie lifetime", func(p *Provider) {
			p.LoginThrottle = &ProviderLoginThrottle{DeviceCookieLifetime: caddy.Duration(-time.Hour)}
		}, "device_cookie_lifetime"},
		{"relative redirect URI", func(p *Provider) { p.Clients[0].RedirectURIs = []string{"/cb"} }, `"/cb"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testProvider("https://login.example.com")
			tt.modify(p)
			err := p.Provision(newTestContext(t, t.TempDir()))
			if err == nil {
				p.Cleanup()
				t.Fatalf("Provision succeeded, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %q, want it to contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "s3cret-value") || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error %q reveals a secret", err)
			}
			// As Caddy does after a failed Provision.
			if err := p.Cleanup(); err != nil {
				t.Fatal(err)
			}
			if p.state.release != nil {
				t.Fatal("store kept after cleanup")
			}
		})
	}
}

func TestIdpConfig(t *testing.T) {
	dir := t.TempDir()
	hashFile := filepath.Join(dir, "alice.hash")
	if err := os.WriteFile(hashFile, []byte(testArgon2idHash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	usersFile := filepath.Join(dir, "users.json")
	users := `[{"username": "bob", "subject": "b-1", "password_hash": "` + testBcryptHash + `", "claims": {"email": "bob@example.com", "email_verified": true}}]`
	if err := os.WriteFile(usersFile, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AUTHGATE_TEST_SECRET", "from-env")
	no := false

	p := &Provider{
		Issuer: "https://login.example.com",
		Clients: []ProviderClient{
			{ID: "env", Secret: "{env.AUTHGATE_TEST_SECRET}", RedirectURIs: []string{"https://a.example.com/cb"}, AccessTokenLifetime: caddy.Duration(time.Minute)},
			{ID: "legacy", SecretHash: testBcryptHash, RedirectURIs: []string{"https://b.example.com/cb"}, RequirePKCE: &no, AllowPlainPKCE: true},
		},
		Users:           []ProviderUser{{Username: "alice", PasswordHash: "{file." + hashFile + "}"}},
		UsersFile:       usersFile,
		APIResources:    []ProviderAPIResource{{Name: "api", Scopes: []string{"api.read"}}},
		CodeLifetime:    caddy.Duration(30 * time.Second),
		SessionLifetime: caddy.Duration(time.Hour),
		LoginThrottle: &ProviderLoginThrottle{
			UserIP:               &ProviderThrottleLimit{Free: 5, Base: caddy.Duration(time.Second), Max: caddy.Duration(time.Minute)},
			Device:               &ProviderThrottleLimit{Free: 2, Base: caddy.Duration(time.Second), Max: caddy.Duration(time.Hour)},
			DeviceCookieLifetime: caddy.Duration(48 * time.Hour),
		},
		Templates: dir,
	}
	cfg, err := p.idpConfig()
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		got, want any
	}{
		{"secret from env", cfg.Clients[0].Secret, "from-env"},
		{"access token lifetime", cfg.Clients[0].AccessTokenLifetime, time.Minute},
		{"pkce required by default", cfg.Clients[0].InsecurePKCEOptional, false},
		{"secret hash", cfg.Clients[1].SecretHash, testBcryptHash},
		{"require_pkce false", cfg.Clients[1].InsecurePKCEOptional, true},
		{"allow_plain_pkce", cfg.Clients[1].AllowPlainPKCE, true},
		{"users from config and file", len(cfg.Users), 2},
		{"password hash from file", cfg.Users[0].PasswordHash, testArgon2idHash},
		{"user from file", cfg.Users[1].Username, "bob"},
		{"subject from file", cfg.Users[1].Subject, "b-1"},
		{"claim from file", cfg.Users[1].Claims["email_verified"], true},
		{"api resource", cfg.APIResources[0].Name, "api"},
		{"code lifetime", cfg.CodeLifetime, 30 * time.Second},
		{"session lifetime", cfg.SessionLifetime, time.Hour},
		{"throttle", cfg.Throttle, idp.ThrottleConfig{
			UserIP:               idp.ThrottleLimit{Free: 5, Base: time.Second, Max: time.Minute},
			Device:               idp.ThrottleLimit{Free: 2, Base: time.Second, Max: time.Hour},
			DeviceCookieLifetime: 48 * time.Hour,
		}},
		{"templates", cfg.Templates != nil, true},
		{"comparer", cfg.PasswordComparer, idp.PasswordComparer(hashComparer{})},
		{"module config untouched", p.Users[0].PasswordHash, "{file." + hashFile + "}"},
		{"module users untouched", len(p.Users), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestServeHTTP(t *testing.T) {
	ctx := newTestContext(t, t.TempDir())
	tests := []struct {
		name       string
		issuer     string
		target     string
		wantPassed bool
	}{
		{"discovery", "https://login.example.com", "https://login.example.com" + idp.PathDiscovery, false},
		{"jwks", "https://login.example.com", "https://login.example.com" + idp.PathJWKS, false},
		{"other path", "https://login.example.com", "https://login.example.com/app/", true},
		{"root", "https://login.example.com", "https://login.example.com/", true},
		{"discovery under the issuer path", "https://example.com/auth", "https://example.com/auth" + idp.PathDiscovery, false},
		{"discovery outside the issuer path", "https://example.com/auth", "https://example.com" + idp.PathDiscovery, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testProvider(tt.issuer)
			provision(t, ctx, p)
			resp, passed := serve(t, p, tt.target)
			if passed != tt.wantPassed {
				t.Fatalf("passed on = %v, want %v (status %d)", passed, tt.wantPassed, resp.StatusCode)
			}
			if passed {
				return
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if tt.target == tt.issuer+idp.PathDiscovery && !strings.Contains(string(body), `"issuer":"`+tt.issuer+`"`) {
				t.Fatalf("discovery document without issuer %s: %s", tt.issuer, body)
			}
		})
	}
}

func TestStorageIdentity(t *testing.T) {
	a, b := &otherStorage{}, &otherStorage{}
	tests := []struct {
		name  string
		x, y  certmagic.Storage
		equal bool
	}{
		{"file storages of one path", &certmagic.FileStorage{Path: "/a"}, &certmagic.FileStorage{Path: "/a"}, true},
		{"file storages of two paths", &certmagic.FileStorage{Path: "/a"}, &certmagic.FileStorage{Path: "/b"}, false},
		{"one storage without String", a, a, true},
		{"two storages without String", a, b, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, y := storageIdentity(tt.x), storageIdentity(tt.y)
			if (x == y) != tt.equal {
				t.Fatalf("identities %q and %q: equal %v, want %v", x, y, x == y, tt.equal)
			}
		})
	}
}

// otherStorage is a storage that does not say who it is.
type otherStorage struct {
	certmagic.Storage
	_ int // not zero-sized: distinct values have distinct addresses
}
