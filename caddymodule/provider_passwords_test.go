package caddymodule

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"

	"github.com/authgate/authgate/idp"
)

// Hashes of "correct horse", made once per test binary: bcrypt at the
// lowest cost so that tests stay fast.
var (
	testBcryptHash   = mustHash(bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost))
	testArgon2idHash = mustHash(argon2idLikeCaddys().Hash([]byte("correct horse")))

	// long72 is as long a password as bcrypt takes: 72 bytes.
	long72         = strings.Repeat("correct horse ", 6)[:72]
	testBcrypt72   = mustHash(bcrypt.GenerateFromPassword([]byte(long72), bcrypt.MinCost))
	testArgon2id72 = mustHash(argon2idLikeCaddys().Hash([]byte(long72)))
)

// argon2idLikeCaddys returns an argon2id hasher with the parameters of
// `caddy hash-password --algorithm argon2id` (its zero value has none).
func argon2idLikeCaddys() *caddyauth.Argon2idHash {
	h, _, err := caddyauth.DecodeHash(caddyauth.Argon2idHash{}.FakeHash())
	if err != nil {
		panic(err)
	}
	return h
}

func mustHash(h []byte, err error) string {
	if err != nil {
		panic(err)
	}
	return string(h)
}

func TestHashComparer(t *testing.T) {
	tests := []struct {
		name     string
		hash     string
		password string
		want     bool
		wantErr  bool
	}{
		{name: "bcrypt match", hash: testBcryptHash, password: "correct horse", want: true},
		{name: "bcrypt mismatch", hash: testBcryptHash, password: "wrong horse"},
		{name: "argon2id match", hash: testArgon2idHash, password: "correct horse", want: true},
		{name: "argon2id mismatch", hash: testArgon2idHash, password: "wrong horse"},
		{name: "bcrypt of 72 bytes", hash: testBcrypt72, password: long72, want: true},
		// bcrypt reads 72 bytes and ignores the rest: anything appended
		// to a 72-byte password would match too.
		{name: "bcrypt of 72 bytes, one more", hash: testBcrypt72, password: long72 + "x"},
		{name: "bcrypt of 72 bytes, 1 KB more", hash: testBcrypt72, password: long72 + strings.Repeat("x", 1024)},
		{name: "argon2id of 72 bytes, one more", hash: testArgon2id72, password: long72 + "x"},
		{name: "plain text is no hash", hash: "correct horse", password: "correct horse", wantErr: true},
		{name: "unknown algorithm", hash: "$6$salt$hash", password: "correct horse", wantErr: true},
		{name: "empty hash", hash: "", password: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := hashComparer{}.Compare([]byte(tt.hash), []byte(tt.password))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Compare error = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("Compare = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckPasswordHash(t *testing.T) {
	tests := []struct {
		name    string
		hash    string
		wantErr error // nil: valid; errUnknownHash, or any other error
	}{
		{name: "bcrypt", hash: testBcryptHash},
		{name: "bcrypt from caddy hash-password", hash: string(caddyauth.BcryptHash{}.FakeHash())},
		{name: "argon2id", hash: testArgon2idHash},
		{name: "truncated bcrypt", hash: testBcryptHash[:20], wantErr: errMalformed},
		{name: "bcrypt with bad cost", hash: "$2a$xx" + testBcryptHash[6:], wantErr: errMalformed},
		{name: "truncated argon2id", hash: "$argon2id$v=19$m=47104,t=1,p=1$c2FsdA", wantErr: errMalformed},
		{name: "argon2id of another version", hash: "$argon2id$v=16$m=47104,t=1,p=1$c2FsdA$a2V5", wantErr: errMalformed},
		{name: "argon2id of no time", hash: "$argon2id$v=19$m=47104,t=0,p=1$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43), wantErr: errMalformed},
		{name: "argon2id of no threads", hash: "$argon2id$v=19$m=47104,t=1,p=0$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43), wantErr: errMalformed},
		{name: "argon2id of an empty key", hash: "$argon2id$v=19$m=47104,t=1,p=1$c2FsdHNhbHRzYWx0$", wantErr: errMalformed},
		{name: "argon2id of a short key", hash: "$argon2id$v=19$m=47104,t=1,p=1$c2FsdHNhbHRzYWx0$a2V5", wantErr: errMalformed},
		{name: "argon2i", hash: "$argon2i$v=19$m=47104,t=1,p=1$c2FsdA$a2V5", wantErr: errUnknownHash},
		{name: "sha512-crypt", hash: "$6$salt$hash", wantErr: errUnknownHash},
		{name: "plain text", hash: "hunter2", wantErr: errUnknownHash},
		{name: "base64 of a hash", hash: "JDJhJDE0JFgzdWxxZg==", wantErr: errUnknownHash},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkPasswordHash(tt.hash)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("error = %v, want none", err)
			case tt.wantErr == errUnknownHash && !errors.Is(err, errUnknownHash):
				t.Fatalf("error = %v, want %v", err, errUnknownHash)
			case tt.wantErr == errMalformed && (err == nil || errors.Is(err, errUnknownHash)):
				t.Fatalf("error = %v, want a malformed hash error", err)
			}
		})
	}
}

// errMalformed stands in TestCheckPasswordHash for any error but
// errUnknownHash.
var errMalformed = errors.New("malformed")

// TestHashComparerFakeHash: the fake hash made for a user's hash costs
// what it does, algorithm and parameters alike, and matches no password.
func TestHashComparerFakeHash(t *testing.T) {
	custom := mustHash(bcrypt.GenerateFromPassword([]byte("correct horse"), 5))
	tests := []struct {
		name, like, wantCost string
	}{
		{name: "bcrypt of the lowest cost", like: testBcryptHash, wantCost: "bcrypt cost 4"},
		{name: "bcrypt of cost 5", like: custom, wantCost: "bcrypt cost 5"},
		{name: "argon2id of caddy hash-password", like: testArgon2idHash, wantCost: "argon2id m=47104,t=1,p=1,len=32"},
		{name: "argon2id of other parameters", like: "$argon2id$v=19$m=1024,t=3,p=2$c2FsdHNhbHQ$" + strings.Repeat("A", 22), wantCost: "argon2id m=1024,t=3,p=2,len=16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := hashComparer{}
			if cost, err := c.HashCost([]byte(tt.like)); err != nil || cost != tt.wantCost {
				t.Fatalf("HashCost = %q, %v; want %q", cost, err, tt.wantCost)
			}
			fake, err := c.FakeHash([]byte(tt.like))
			if err != nil {
				t.Fatal(err)
			}
			if err := checkPasswordHash(string(fake)); err != nil {
				t.Fatalf("fake hash %s: %v", fake, err)
			}
			if cost, err := c.HashCost(fake); err != nil || cost != tt.wantCost {
				t.Fatalf("fake hash %s costs %q, %v; want %q", fake, cost, err, tt.wantCost)
			}
			if bytes.Equal(fake, []byte(tt.like)) {
				t.Fatal("the fake hash is the user's")
			}
			if ok, err := c.Compare(fake, []byte("correct horse")); err != nil || ok {
				t.Fatalf("fake hash matches a password: %v, %v", ok, err)
			}
			if again, _ := c.FakeHash([]byte(tt.like)); !bytes.Equal(again, fake) {
				t.Error("a second fake hash of the same cost was made")
			}
		})
	}
}

// TestWarnMixedCosts: provisioning warns when users' hashes differ in
// cost, naming the costs but no hash.
func TestWarnMixedCosts(t *testing.T) {
	cost5 := mustHash(bcrypt.GenerateFromPassword([]byte("correct horse"), 5))
	tests := []struct {
		name   string
		hashes []string
		want   []string // the costs field; nil: no warning
	}{
		{name: "one cost", hashes: []string{testBcryptHash, testBcryptHash}},
		{name: "bcrypt costs", hashes: []string{testBcryptHash, cost5, cost5}, want: []string{"bcrypt cost 4: 1 users", "bcrypt cost 5: 2 users"}},
		{name: "bcrypt and argon2id", hashes: []string{testArgon2idHash, testBcryptHash}, want: []string{"argon2id m=47104,t=1,p=1,len=32: 1 users", "bcrypt cost 4: 1 users"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zap.WarnLevel)
			var users []idp.User
			for i, h := range tt.hashes {
				users = append(users, idp.User{Username: fmt.Sprint("u", i), PasswordHash: h})
			}
			warnMixedCosts(zap.New(core), users)
			entries := logs.All()
			if tt.want == nil {
				if len(entries) != 0 {
					t.Fatalf("warned: %v", entries)
				}
				return
			}
			if len(entries) != 1 {
				t.Fatalf("%d log entries, want one warning", len(entries))
			}
			got, _ := entries[0].ContextMap()["costs"].([]any)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("costs = %v, want %v", got, tt.want)
			}
			for _, h := range tt.hashes {
				if strings.Contains(fmt.Sprint(entries[0]), h) {
					t.Error("the warning quotes a hash")
				}
			}
		})
	}
}
