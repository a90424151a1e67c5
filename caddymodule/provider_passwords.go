package caddymodule

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"

	"github.com/authgate/authgate/idp"
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
// the other one at a time. It is an [idp.FakeHasher] too, so that an
// unknown username costs what a real user's of some algorithm and cost
// does, whatever the mix.
type hashComparer struct{}

// fakeHashes keeps the fake hashes made, by cost, so that a config reload
// does not spend a second per bcrypt cost on making them again. They are
// hashes of random passwords, good for any provider.
var fakeHashes sync.Map // string → []byte

// Compare implements [idp.PasswordComparer].
func (hashComparer) Compare(hashed, plaintext []byte) (bool, error) {
	switch {
	case bytes.HasPrefix(hashed, []byte(argon2idPrefix)):
		return caddyauth.Argon2idHash{}.Compare(hashed, plaintext)
	case bytes.HasPrefix(hashed, []byte(bcryptPrefix)):
		return idp.BcryptComparer{}.Compare(hashed, plaintext)
	default:
		return false, errUnknownHash
	}
}

// HashCost implements [idp.FakeHasher]: the algorithm and its parameters.
func (hashComparer) HashCost(hashed []byte) (string, error) {
	switch {
	case bytes.HasPrefix(hashed, []byte(argon2idPrefix)):
		a, err := parseArgon2id(hashed)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("argon2id m=%d,t=%d,p=%d,len=%d", a.memory, a.time, a.threads, a.keyLen), nil
	case bytes.HasPrefix(hashed, []byte(bcryptPrefix)):
		return idp.BcryptComparer{}.HashCost(hashed)
	default:
		return "", errUnknownHash
	}
}

// FakeHash implements [idp.FakeHasher].
func (c hashComparer) FakeHash(hashed []byte) ([]byte, error) {
	cost, err := c.HashCost(hashed)
	if err != nil {
		return nil, err
	}
	if fake, ok := fakeHashes.Load(cost); ok {
		return fake.([]byte), nil
	}
	var fake []byte
	if bytes.HasPrefix(hashed, []byte(argon2idPrefix)) {
		a, _ := parseArgon2id(hashed)
		salt := make([]byte, a.saltLen)
		rand.Read(salt)
		key := argon2.IDKey([]byte(rand.Text()), salt, a.time, a.memory, a.threads, a.keyLen)
		fake = fmt.Appendf(nil, "%sv=%d$m=%d,t=%d,p=%d$%s$%s", argon2idPrefix, argon2.Version, a.memory, a.time, a.threads,
			base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
	} else if fake, err = (idp.BcryptComparer{}).FakeHash(hashed); err != nil {
		return nil, fmt.Errorf("making a bcrypt hash of %s: %w", cost, err)
	}
	fakeHashes.Store(cost, fake)
	return fake, nil
}

// argon2idHash holds what an argon2id hash's check costs.
type argon2idHash struct {
	memory, time    uint32
	threads         uint8
	keyLen, saltLen uint32
}

// parseArgon2id reads the parameters of an argon2id hash.
func parseArgon2id(hash []byte) (argon2idHash, error) {
	var a argon2idHash
	_, key, err := caddyauth.DecodeHash(hash)
	if err != nil {
		return a, fmt.Errorf("malformed argon2id hash: %w", err)
	}
	parts := strings.Split(string(hash), "$") // DecodeHash found 6 parts
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &a.memory, &a.time, &a.threads); err != nil {
		return a, fmt.Errorf("malformed argon2id hash: %w", err)
	}
	salt, _ := base64.RawStdEncoding.DecodeString(parts[4]) // DecodeHash decoded it
	a.keyLen, a.saltLen = uint32(len(key)), uint32(len(salt))
	return a, nil
}

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
		a, err := parseArgon2id([]byte(hash))
		if err != nil {
			return err
		}
		// DecodeHash leaves the parameters to argon2, which panics on a
		// time or parallelism of 0; and an empty key matches every
		// password.
		if a.time < 1 || a.threads < 1 {
			return errors.New("malformed argon2id hash: time and parallelism must be at least 1")
		}
		if a.keyLen < minArgon2idKeyLen {
			return fmt.Errorf("malformed argon2id hash: key of %d bytes, want at least %d", a.keyLen, minArgon2idKeyLen)
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

// warnMixedCosts warns when the users' password hashes differ in
// algorithm or cost: an unknown username then costs what one of them
// does, but how long a login takes tells which kind a user's hash is, and
// the cheaper ones are the weaker.
func warnMixedCosts(logger *zap.Logger, users []idp.User) {
	count := make(map[string]int)
	for _, u := range users {
		if cost, err := (hashComparer{}).HashCost([]byte(u.PasswordHash)); err == nil {
			count[cost]++
		}
	}
	if len(count) < 2 {
		return
	}
	costs := make([]string, 0, len(count))
	for cost, n := range count {
		costs = append(costs, fmt.Sprintf("%s: %d users", cost, n))
	}
	slices.Sort(costs)
	logger.Warn("users' password hashes differ in algorithm or cost: login times tell them apart; hash every password alike with caddy hash-password",
		zap.Strings("costs", costs))
}
