package caddymodule

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
)

// Hashes of "correct horse", made once per test binary: bcrypt at the
// lowest cost so that tests stay fast.
var (
	testBcryptHash   = mustHash(bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost))
	testArgon2idHash = mustHash(argon2idLikeCaddys().Hash([]byte("correct horse")))
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

func TestNewHashComparerFakeHash(t *testing.T) {
	tests := []struct {
		name     string
		like     string
		wantFake []byte // nil: a fresh bcrypt hash of wantCost
		wantCost int
	}{
		{name: "no users", like: "", wantFake: caddyauth.BcryptHash{}.FakeHash()},
		{name: "bcrypt of caddy's cost", like: string(caddyauth.BcryptHash{}.FakeHash()), wantFake: caddyauth.BcryptHash{}.FakeHash()},
		{name: "bcrypt of another cost", like: testBcryptHash, wantCost: bcrypt.MinCost},
		{name: "argon2id", like: testArgon2idHash, wantFake: caddyauth.Argon2idHash{}.FakeHash()},
		{name: "malformed", like: "hunter2", wantFake: caddyauth.BcryptHash{}.FakeHash()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := newHashComparer(tt.like)
			if err != nil {
				t.Fatal(err)
			}
			fake := c.FakeHash()
			if tt.wantFake != nil {
				if !bytes.Equal(fake, tt.wantFake) {
					t.Fatalf("fake hash = %s, want %s", fake, tt.wantFake)
				}
				return
			}
			if cost, err := bcrypt.Cost(fake); err != nil || cost != tt.wantCost {
				t.Fatalf("fake hash cost = %d, %v; want %d", cost, err, tt.wantCost)
			}
			if ok, err := c.Compare(fake, []byte("correct horse")); err != nil || ok {
				t.Fatalf("fake hash matches a password: %v, %v", ok, err)
			}
		})
	}
}
