package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// jwksRefetchGap is the least time between two fetches of the provider's
// keys: a token with an unknown kid triggers one fetch (the provider may
// have rotated), but a stream of forged kids cannot turn the gateway into
// a flood of requests to the provider.
const jwksRefetchGap = 10 * time.Second

// keySet is the provider's JWKS for go-oidc's verifiers: fetched on first
// use, refetched for an unknown kid at most once per jwksRefetchGap.
type keySet struct {
	url  string
	http *http.Client

	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetched time.Time
}

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("parsing token: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("token has not exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	keys, err := k.get(ctx, kid)
	if err != nil {
		return nil, err
	}
	for _, key := range keys {
		if kid == "" || key.KeyID == kid {
			if payload, err := jws.Verify(&key); err == nil {
				return payload, nil
			}
		}
	}
	return nil, errors.New("no key of the provider verifies the token's signature")
}

// get returns the keys, fetching them first when there are none yet, or
// when none has kid and the last fetch is old enough.
func (k *keySet) get(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	known := k.keys != nil
	for _, key := range k.keys {
		if key.KeyID == kid || kid == "" {
			return k.keys, nil
		}
	}
	if known && time.Since(k.fetched) < jwksRefetchGap {
		return k.keys, nil
	}
	keys, err := k.fetch(ctx)
	k.fetched = time.Now()
	if err != nil {
		if known {
			return k.keys, nil // keep the keys we have
		}
		return nil, err
	}
	k.keys = keys
	return keys, nil
}

func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching keys: %s answered %d", k.url, resp.StatusCode)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("reading keys: %w", err)
	}
	return set.Keys, nil
}
