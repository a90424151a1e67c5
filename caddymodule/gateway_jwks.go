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

// jwksMaxFresh is the longest the gateway trusts keys without asking the
// provider again, whatever its max-age says: a key the provider pulls
// (after a leak, say) stops verifying within about this long.
const jwksMaxFresh = time.Hour

// jwksFetchTimeout bounds a background fetch of the keys.
const jwksFetchTimeout = 10 * time.Second

// errKeysUnavailable is the error of a signature that could not be
// checked because the provider's keys could not be fetched: the
// gateway's trouble, not the token's.
var errKeysUnavailable = errors.New("the provider's keys could not be fetched")

// keySet is the provider's JWKS for go-oidc's verifiers: fetched on first
// use, refetched for an unknown kid at most once per refetch gap, and in
// the background once the keys are older than the provider says they may
// be cached, so that a key it no longer publishes stops verifying.
type keySet struct {
	url  string
	http *http.Client

	mu         sync.Mutex
	keys       []jose.JSONWebKey
	fetched    time.Time     // the last fetch, failed or not
	gap        time.Duration // refetchGap of the last answer
	fresh      time.Time     // until when the keys need no fetch
	refreshing bool          // a background fetch runs
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
		return nil, fmt.Errorf("%w: %w", errKeysUnavailable, err)
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
// when none has kid and the last fetch is old enough. Keys past their
// freshness are used while a background fetch replaces them: a request
// never waits on the provider for a kid it knows.
func (k *keySet) get(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	known := k.keys != nil
	for _, key := range k.keys {
		if key.KeyID == kid || kid == "" {
			now := time.Now()
			if now.After(k.fresh) && !k.refreshing && now.Sub(k.fetched) >= k.gap {
				k.refreshing, k.fetched = true, now
				go k.refresh()
			}
			return k.keys, nil
		}
	}
	if known && time.Since(k.fetched) < k.gap {
		return k.keys, nil
	}
	keys, gap, fresh, err := k.fetch(ctx)
	k.fetched = time.Now()
	if err != nil {
		k.gap = jwksRefetchGap
		if known {
			return k.keys, nil // keep the keys we have
		}
		return nil, err
	}
	k.keys, k.gap, k.fresh = keys, gap, k.fetched.Add(fresh)
	return keys, nil
}

// refresh fetches the keys in the background. A failure keeps the keys
// there are, tried again after the refetch gap: a provider that is down
// must not end every session it issued.
func (k *keySet) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
	defer cancel()
	keys, gap, fresh, err := k.fetch(ctx)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.refreshing = false
	k.fetched = time.Now()
	if err != nil {
		k.gap = jwksRefetchGap
		return
	}
	k.keys, k.gap, k.fresh = keys, gap, k.fetched.Add(fresh)
}

// cacheTimes reads the Cache-Control of a JWKS answer (RFC 9111 §5.2.2:
// max-age, no-cache, no-store). gap is the least time between two fetches
// for unknown kids: jwksRefetchGap, or less if the answer may be cached
// for less, but at least jwksMinRefetchGap. fresh is how long the keys
// are used before a background fetch: max-age, between jwksRefetchGap
// and jwksMaxFresh, jwksMaxFresh when the answer says nothing.
func cacheTimes(cacheControl string) (gap, fresh time.Duration) {
	gap, fresh = jwksRefetchGap, jwksMaxFresh
	for _, d := range strings.Split(cacheControl, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), "=")
		switch strings.ToLower(name) {
		case "no-cache", "no-store":
			return jwksMinRefetchGap, jwksRefetchGap
		case "max-age":
			if secs, err := strconv.Atoi(value); err == nil && secs >= 0 {
				age := time.Duration(secs) * time.Second
				gap = min(gap, age)
				fresh = min(max(age, jwksRefetchGap), jwksMaxFresh)
			}
		}
	}
	return max(gap, jwksMinRefetchGap), fresh
}

func (k *keySet) fetch(ctx context.Context) (keys []jose.JSONWebKey, gap, fresh time.Duration, err error) {
	req, err := http.NewRequestWithContext(withProviderOp(ctx, opJWKS), http.MethodGet, k.url, nil)
	if err != nil {
		return nil, 0, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.http.Do(req)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("fetching keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, 0, fmt.Errorf("fetching keys: %s answered %d", k.url, resp.StatusCode)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, 0, 0, fmt.Errorf("reading keys: %w", err)
	}
	gap, fresh = cacheTimes(resp.Header.Get("Cache-Control"))
	return set.Keys, gap, fresh, nil
}
