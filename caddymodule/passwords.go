package caddymodule

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
)

// Hash prefixes in Modular Crypt Format, as `caddy hash-password` writes
// them: bcrypt's $2a$, $2b$ and $2y$ and argon2id's.
const (
	bcryptPrefix   = "$2"
	argon2idPrefix = "$argon2id$"
)

// hashComparer is the [idp.PasswordComparer] of the provider: it checks a
// password against a bcrypt or an argon2id hash, telling them apart by
// prefix, with the comparers of Caddy's basic_auth, so that any hash from
// `caddy hash-password` works and users can move from one algorithm to
// the other one at a time.
type hashComparer struct {
	// fake is compared against when the username is unknown, so that an
	// unknown user takes as long to reject as a wrong password: it is a
	// hash of the same algorithm and, for bcrypt, of the same cost as the
	// first user's.
	fake []byte
}

// newHashComparer returns a comparer whose fake hash is made like the hash like
// (bcrypt if like is empty or malformed).
func newHashComparer(like string) (hashComparer, error) {
	if like == "" || checkPasswordHash(like) != nil {
		return hashComparer{fake: caddyauth.BcryptHash{}.FakeHash()}, nil
	}
	if strings.HasPrefix(like, argon2idPrefix) {
		return hashComparer{fake: caddyauth.Argon2idHash{}.FakeHash()}, nil
	}
	fake := caddyauth.BcryptHash{}.FakeHash()
	cost, err := bcrypt.Cost([]byte(like))
	if err != nil {
		return hashComparer{}, err
	}
	if fakeCost, _ := bcrypt.Cost(fake); cost != fakeCost {
		fake, err = bcrypt.GenerateFromPassword([]byte(rand.Text()), cost)
		if err != nil {
			return hashComparer{}, fmt.Errorf("making a bcrypt hash of cost %d: %w", cost, err)
		}
	}
	return hashComparer{fake: fake}, nil
}

// Compare implements [idp.PasswordComparer].
func (c hashComparer) Compare(hashed, plaintext []byte) (bool, error) {
	switch {
	case bytes.HasPrefix(hashed, []byte(argon2idPrefix)):
		return caddyauth.Argon2idHash{}.Compare(hashed, plaintext)
	case bytes.HasPrefix(hashed, []byte(bcryptPrefix)):
		return caddyauth.BcryptHash{}.Compare(hashed, plaintext)
	default:
		return false, errUnknownHash
	}
}

// FakeHash returns the hash that idp compares passwords of unknown users
// against.
func (c hashComparer) FakeHash() []byte { return c.fake }

// minArgon2idKeyLen is the shortest argon2id key accepted: 128 bits.
const minArgon2idKeyLen = 16

var errUnknownHash = errors.New("not a bcrypt or argon2id hash (make one with caddy hash-password)")

// checkPasswordHash reports whether hash is a well-formed bcrypt or
// argon2id hash, without the cost of computing one, so that a mistyped
// hash fails `caddy validate` rather than every login. Its errors never
// quote the hash.
func checkPasswordHash(hash string) error {
	switch {
	case strings.HasPrefix(hash, argon2idPrefix):
		_, key, err := caddyauth.DecodeHash([]byte(hash))
		if err != nil {
			return fmt.Errorf("malformed argon2id hash: %w", err)
		}
		// DecodeHash leaves the parameters to argon2, which panics on a
		// time or parallelism of 0; and an empty key matches every
		// password.
		var memory, time uint32
		var threads uint8
		params := strings.Split(hash, "$")[3] // DecodeHash found 6 parts
		if _, err := fmt.Sscanf(params, "m=%d,t=%d,p=%d", &memory, &time, &threads); err != nil || time < 1 || threads < 1 {
			return errors.New("malformed argon2id hash: time and parallelism must be at least 1")
		}
		if len(key) < minArgon2idKeyLen {
			return fmt.Errorf("malformed argon2id hash: key of %d bytes, want at least %d", len(key), minArgon2idKeyLen)
		}
	case strings.HasPrefix(hash, bcryptPrefix):
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return fmt.Errorf("malformed bcrypt hash: %w", err)
		}
	default:
		return errUnknownHash
	}
	return nil
}
