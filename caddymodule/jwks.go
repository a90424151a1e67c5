package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// jwksRefetchGap is the least time between two fetches of the provider's
// keys: a token with an unknown kid triggers one fetch (the provider may
// have rotated), but a stream of forged kids cannot turn the gateway into
// a flood of requests to the provider.
const jwksRefetchGap = 10 * time.Second

// jwksMinRefetchGap is the least gap whatever the provider says: a
// provider whose JWKS may be cached for less than jwksRefetchGap (it
// publishes new keys shortly before they sign) gets its max-age as the
// gap, but a forged kid still costs at most one fetch a second.
const jwksMinRefetchGap = time.Second

// keySet is the provider's JWKS for go-oidc's verifiers: fetched on first
// use, refetched for an unknown kid at most once per refetch gap.
type keySet struct {
	url  string
	http *http.Client

	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetched time.Time
	gap     time.Duration // refetchGap of the last answer
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
	if known && time.Since(k.fetched) < k.gap {
		return k.keys, nil
	}
	keys, gap, err := k.fetch(ctx)
	k.fetched = time.Now()
	if err != nil {
		k.gap = jwksRefetchGap
		if known {
			return k.keys, nil // keep the keys we have
		}
		return nil, err
	}
	k.keys, k.gap = keys, gap
	return keys, nil
}

// refetchGap is the least time between two fetches of a JWKS served with
// cacheControl: jwksRefetchGap, or less if the answer may be cached for
// less (RFC 9111 §5.2.2: max-age, no-cache, no-store), but at least
// jwksMinRefetchGap.
func refetchGap(cacheControl string) time.Duration {
	gap := jwksRefetchGap
	for _, d := range strings.Split(cacheControl, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), "=")
		switch strings.ToLower(name) {
		case "no-cache", "no-store":
			return jwksMinRefetchGap
		case "max-age":
			if secs, err := strconv.Atoi(value); err == nil && secs >= 0 {
				gap = min(gap, time.Duration(secs)*time.Second)
			}
		}
	}
	return max(gap, jwksMinRefetchGap)
}

func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.http.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("fetching keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("fetching keys: %s answered %d", k.url, resp.StatusCode)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, 0, fmt.Errorf("reading keys: %w", err)
	}
	return set.Keys, refetchGap(resp.Header.Get("Cache-Control")), nil
}
