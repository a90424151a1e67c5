package caddymodule

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/authgate/authgate/idp"
)

// providerStoragePrefix is where the provider of issuer keeps its state in
// Caddy's storage: a digest of the issuer, so that several providers, and
// several Caddy instances of one provider, find their own.
func providerStoragePrefix(issuer string) string {
	sum := sha256.Sum256([]byte(issuer))
	return "authgate/provider/" + hex.EncodeToString(sum[:])[:16]
}

// keyStore is where keys live: values without expiry, read at
// provisioning and by key rotation, and a lock that one process of all
// that share the store holds at a time. certmagic.Storage is one; the
// provider's configured store (Redis, the default database) is another, so
// that every node signs with the same keys. Load answers fs.ErrNotExist
// for an absent key.
type keyStore interface {
	Load(ctx context.Context, key string) ([]byte, error)
	Store(ctx context.Context, key string, value []byte) error
	Lock(ctx context.Context, name string) error
	Unlock(ctx context.Context, name string) error
}

var _ keyStore = certmagic.Storage(nil)

// loadOrCreate returns the value at key in storage. If there is none, it
// takes the storage's lock for key, loads again (another instance sharing
// the storage may have just made it), and otherwise makes the value with
// create and stores it; created reports that. So instances that share
// storage and start together all end up with the one value that was
// stored, which is what keys need.
func loadOrCreate(ctx context.Context, storage keyStore, key string, create func() ([]byte, error)) (data []byte, created bool, err error) {
	data, err = storage.Load(ctx, key)
	if err == nil {
		return data, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("loading %s: %w", key, err)
	}

	lockName := strings.ReplaceAll(key, "/", "_")
	if err := storage.Lock(ctx, lockName); err != nil {
		return nil, false, fmt.Errorf("locking %s: %w", key, err)
	}
	defer func() {
		if uerr := storage.Unlock(context.WithoutCancel(ctx), lockName); uerr != nil && err == nil {
			data, created, err = nil, false, fmt.Errorf("unlocking %s: %w", key, uerr)
		}
	}()

	data, err = storage.Load(ctx, key)
	if err == nil {
		return data, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("loading %s: %w", key, err)
	}
	data, err = create()
	if err != nil {
		return nil, false, err
	}
	if err := storage.Store(ctx, key, data); err != nil {
		return nil, false, fmt.Errorf("storing %s: %w", key, err)
	}
	return data, true, nil
}

// storedSigningKeys is the stored form of signing keys, the key ring: a
// JWK Set (RFC 7517 §5) of private keys, each with its schedule in members
// of its own (RFC 7517 §4: members a reader does not understand are
// ignored), times in RFC 3339:
//
//	created     when it was made
//	signs_from  when it starts signing, until a newer key of its
//	            algorithm does
//	retire_at   when it leaves the JWKS; set once its successor is made
//
// A ring stored before keys rotated has none of them: its keys sign since
// forever, and of keys that start signing together the first in the list
// wins, so it loads as it always did (the first key of each algorithm
// signs, the others are only published). See keyRing for the schedule.
type storedSigningKeys struct {
	Keys []json.RawMessage `json:"keys"`
}

// ringKey is a signing key of the ring with its schedule.
type ringKey struct {
	idp.SigningKey
	ringTimes
}

type ringTimes struct {
	Created   time.Time `json:"created,omitzero"`
	SignsFrom time.Time `json:"signs_from,omitzero"`
	RetireAt  time.Time `json:"retire_at,omitzero"`
}

// keyRing is the signing keys of a provider, in the order they were made.
type keyRing []ringKey

// decodeRing decodes a stored ring. Every key must be a private key of a
// supported algorithm; a ring without keys is an error, not an empty one.
func decodeRing(data []byte) (keyRing, error) {
	var stored storedSigningKeys
	if err := json.Unmarshal(data, &stored); err != nil {
		return nil, err
	}
	if len(stored.Keys) == 0 {
		return nil, errors.New("no keys")
	}
	ring := make(keyRing, 0, len(stored.Keys))
	for i, jwk := range stored.Keys {
		k, err := idp.ParseKey(jwk)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		var times ringTimes
		if err := json.Unmarshal(jwk, &times); err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		ring = append(ring, ringKey{SigningKey: k, ringTimes: times})
	}
	return ring, nil
}

// encode returns the stored form of r.
func (r keyRing) encode() ([]byte, error) {
	var stored storedSigningKeys
	for _, k := range r {
		jwk, err := idp.MarshalKey(k.SigningKey)
		if err != nil {
			return nil, fmt.Errorf("encoding key %s: %w", k.ID, err)
		}
		times, err := json.Marshal(k.ringTimes)
		if err != nil {
			return nil, err
		}
		members := make(map[string]json.RawMessage)
		if err := json.Unmarshal(jwk, &members); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(times, &members); err != nil {
			return nil, err
		}
		b, err := json.Marshal(members)
		if err != nil {
			return nil, err
		}
		stored.Keys = append(stored.Keys, b)
	}
	return json.Marshal(stored)
}

// storedCookieKeys is the stored form of cookie keys: pairs of hash key
// and block key (gorilla/securecookie), the first pair encoding and every
// pair decoding. Rotating is putting a new pair first.
type storedCookieKeys struct {
	Keys []storedCookieKeyPair `json:"keys"`
}

type storedCookieKeyPair struct {
	HashKey  []byte `json:"hash_key"`
	BlockKey []byte `json:"block_key"`
}

// cookieKeySize is the size of both keys of a pair: HMAC-SHA256 and
// AES-256.
const cookieKeySize = 32

// loadOrCreateCookieKeys returns the cookie key pairs stored at key,
// making and storing one random pair the first time.
func loadOrCreateCookieKeys(ctx context.Context, storage keyStore, key string) ([][2][]byte, bool, error) {
	data, created, err := loadOrCreate(ctx, storage, key, func() ([]byte, error) {
		pair := storedCookieKeyPair{HashKey: make([]byte, cookieKeySize), BlockKey: make([]byte, cookieKeySize)}
		rand.Read(pair.HashKey)
		rand.Read(pair.BlockKey)
		return json.Marshal(storedCookieKeys{Keys: []storedCookieKeyPair{pair}})
	})
	if err != nil {
		return nil, false, err
	}
	var stored storedCookieKeys
	if err := json.Unmarshal(data, &stored); err != nil {
		return nil, false, fmt.Errorf("decoding %s: %w", key, err)
	}
	if len(stored.Keys) == 0 {
		return nil, false, fmt.Errorf("decoding %s: no keys", key)
	}
	pairs := make([][2][]byte, 0, len(stored.Keys))
	for i, p := range stored.Keys {
		if len(p.HashKey) != cookieKeySize || len(p.BlockKey) != cookieKeySize {
			return nil, false, fmt.Errorf("decoding %s: key pair %d: want two keys of %d bytes", key, i, cookieKeySize)
		}
		pairs = append(pairs, [2][]byte{p.HashKey, p.BlockKey})
	}
	return pairs, created, nil
}

// restoreCookieKeys stores pairs at key if storage has nothing there (it
// lost them), under its lock, and reports whether it did.
func restoreCookieKeys(ctx context.Context, storage keyStore, key string, pairs [][2][]byte) (bool, error) {
	_, restored, err := loadOrCreate(ctx, storage, key, func() ([]byte, error) {
		var stored storedCookieKeys
		for _, p := range pairs {
			stored.Keys = append(stored.Keys, storedCookieKeyPair{HashKey: p[0], BlockKey: p[1]})
		}
		return json.Marshal(stored)
	})
	return restored, err
}

// readSigningKeyFile reads a private key from a PEM file: PKCS #8
// ("PRIVATE KEY"), PKCS #1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE
// KEY"); other blocks, such as the "EC PARAMETERS" that openssl writes
// first, are skipped.
func readSigningKeyFile(filename string) (idp.SigningKey, error) {
	rest, err := os.ReadFile(filename)
	if err != nil {
		return idp.SigningKey{}, err
	}
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return idp.SigningKey{}, errors.New("no PEM private key found")
		}
		var priv any
		switch block.Type {
		case "PRIVATE KEY":
			priv, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			priv, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			priv, err = x509.ParseECPrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return idp.SigningKey{}, errors.New("encrypted private keys are not supported")
		default:
			continue
		}
		if err != nil {
			return idp.SigningKey{}, fmt.Errorf("parsing %s: %w", block.Type, err)
		}
		signer, ok := priv.(crypto.Signer)
		if !ok {
			return idp.SigningKey{}, fmt.Errorf("unsupported key type %T", priv)
		}
		return idp.NewSigningKey(signer)
	}
}
