package caddymodule

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/authgate/authgate/idp"
)

func TestLoadOrCreate(t *testing.T) {
	ctx := context.Background()
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	var calls int
	create := func() ([]byte, error) {
		calls++
		return []byte("first"), nil
	}

	data, created, err := loadOrCreate(ctx, storage, "authgate/test/value", create)
	if err != nil || !created || string(data) != "first" {
		t.Fatalf("first loadOrCreate = %q, %v, %v; want first, true, nil", data, created, err)
	}
	data, created, err = loadOrCreate(ctx, storage, "authgate/test/value", func() ([]byte, error) {
		t.Fatal("create called for a stored value")
		return nil, nil
	})
	if err != nil || created || string(data) != "first" {
		t.Fatalf("second loadOrCreate = %q, %v, %v; want first, false, nil", data, created, err)
	}
	if calls != 1 {
		t.Fatalf("create called %d times, want 1", calls)
	}
	if locks, _ := os.ReadDir(filepath.Join(storage.Path, "locks")); len(locks) != 0 {
		t.Fatalf("lock files left: %v", locks)
	}
}

func TestLoadOrCreateConcurrent(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("waits on the file storage's lock polling")
	}
	// Instances starting together on shared storage: one creates, all get
	// what it created.
	ctx := context.Background()
	root := t.TempDir()
	var creates atomic.Int32
	results := make([]string, 3)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			storage := &certmagic.FileStorage{Path: root}
			data, _, err := loadOrCreate(ctx, storage, "authgate/test/value", func() ([]byte, error) {
				n := creates.Add(1)
				return []byte{byte('0' + n)}, nil
			})
			if err != nil {
				t.Error(err)
			}
			results[i] = string(data)
		})
	}
	wg.Wait()
	if creates.Load() != 1 {
		t.Fatalf("created %d times, want 1", creates.Load())
	}
	for i, r := range results {
		if r != "1" {
			t.Fatalf("instance %d got %q, want the one created value", i, r)
		}
	}
}

func TestLoadOrCreateSigningKeys(t *testing.T) {
	ctx := context.Background()
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	const key = "authgate/provider/test/signing_keys.json"

	first, err := loadSigningKeys(ctx, storage, key)
	if err != nil {
		t.Fatalf("first load: %v", err)
	}
	if len(first) != 2 || first[0].Alg != idp.RS256 || first[1].Alg != idp.ES256 {
		t.Fatalf("generated keys %v, want one RS256 then one ES256", keyAlgs(first))
	}
	again, err := loadSigningKeys(ctx, storage, key)
	if err != nil {
		t.Fatalf("second load: %v", err)
	}
	for i := range first {
		if again[i].ID != first[i].ID || again[i].Alg != first[i].Alg {
			t.Fatalf("key %d loaded as %s %s, stored as %s %s", i, again[i].Alg, again[i].ID, first[i].Alg, first[i].ID)
		}
	}
}

// loadSigningKeys loads the ring at key as a provider does when it
// starts, making it the first time, and returns the keys of now.
func loadSigningKeys(ctx context.Context, s keyStore, key string) ([]idp.SigningKey, error) {
	sched, err := (*KeyRotation)(nil).schedule(nil)
	if err != nil {
		return nil, err
	}
	return newKeyRotation(s, key, nil, sched, zap.NewNop()).init(ctx)
}

func TestLoadStoredKeysErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		stored  string
		load    func(context.Context, certmagic.Storage, string) error
		wantErr string
	}{
		{"signing keys not JSON", "-----BEGIN", loadSigning, "decoding"},
		{"no signing keys", `{"keys":[]}`, loadSigning, "no keys"},
		{"public signing key", `{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k"}]}`, loadSigning, "not a private key"},
		{"cookie keys not JSON", "{", loadCookie, "decoding"},
		{"no cookie keys", `{"keys":[]}`, loadCookie, "no keys"},
		{"short cookie key", `{"keys":[{"hash_key":"c2hvcnQ=","block_key":"c2hvcnQ="}]}`, loadCookie, "32 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			storage := &certmagic.FileStorage{Path: t.TempDir()}
			if err := storage.Store(ctx, "k.json", []byte(tt.stored)); err != nil {
				t.Fatal(err)
			}
			err := tt.load(ctx, storage, "k.json")
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
			// What is stored stays: a key is never silently replaced.
			if data, _ := storage.Load(ctx, "k.json"); string(data) != tt.stored {
				t.Fatalf("stored value replaced by %q", data)
			}
		})
	}
}

func loadSigning(ctx context.Context, s certmagic.Storage, key string) error {
	_, err := loadSigningKeys(ctx, s, key)
	return err
}

func loadCookie(ctx context.Context, s certmagic.Storage, key string) error {
	_, _, err := loadOrCreateCookieKeys(ctx, s, key)
	return err
}

func TestLoadOrCreateCookieKeys(t *testing.T) {
	ctx := context.Background()
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	first, created, err := loadOrCreateCookieKeys(ctx, storage, "c.json")
	if err != nil || !created || len(first) != 1 {
		t.Fatalf("first load = %d pairs, %v, %v; want 1 pair, created", len(first), created, err)
	}
	if len(first[0][0]) != 32 || len(first[0][1]) != 32 || string(first[0][0]) == string(first[0][1]) {
		t.Fatal("want two different 32-byte keys")
	}
	again, created, err := loadOrCreateCookieKeys(ctx, storage, "c.json")
	if err != nil || created || string(again[0][0]) != string(first[0][0]) || string(again[0][1]) != string(first[0][1]) {
		t.Fatalf("second load differs (created %v, error %v)", created, err)
	}
}

func TestReadSigningKeyFile(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384Key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pemBlock("PRIVATE KEY", der)
	}
	sec1, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ecParams := pemBlock("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07})

	tests := []struct {
		name    string
		pem     []byte
		wantAlg string
		wantErr string
	}{
		{name: "RSA PKCS #8", pem: pkcs8(rsaKey), wantAlg: idp.RS256},
		{name: "RSA PKCS #1", pem: pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), wantAlg: idp.RS256},
		{name: "EC PKCS #8", pem: pkcs8(ecKey), wantAlg: idp.ES256},
		{name: "EC SEC 1 after parameters", pem: append(ecParams, pemBlock("EC PRIVATE KEY", sec1)...), wantAlg: idp.ES256},
		{name: "EC P-384", pem: pkcs8(p384Key), wantErr: "P-256"},
		{name: "Ed25519", pem: pkcs8(edKey), wantErr: "unsupported key type"},
		{name: "certificate only", pem: pemBlock("CERTIFICATE", []byte{1, 2, 3}), wantErr: "no PEM private key"},
		{name: "encrypted", pem: pemBlock("ENCRYPTED PRIVATE KEY", []byte{1, 2, 3}), wantErr: "encrypted"},
		{name: "corrupt", pem: pemBlock("PRIVATE KEY", []byte{1, 2, 3}), wantErr: "parsing PRIVATE KEY"},
		{name: "not PEM", pem: []byte("hello"), wantErr: "no PEM private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			filename := filepath.Join(t.TempDir(), "key.pem")
			if err := os.WriteFile(filename, tt.pem, 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := readSigningKeyFile(filename)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Alg != tt.wantAlg || k.ID == "" {
				t.Fatalf("key %s %q, want alg %s and a kid", k.Alg, k.ID, tt.wantAlg)
			}
		})
	}
	if _, err := readSigningKeyFile(filepath.Join(t.TempDir(), "missing.pem")); !os.IsNotExist(err) {
		t.Fatalf("missing file: error = %v, want not exist", err)
	}
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func keyAlgs(keys []idp.SigningKey) []string {
	var algs []string
	for _, k := range keys {
		algs = append(algs, k.Alg)
	}
	return algs
}
