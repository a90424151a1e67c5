package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/authgate/authgate/idp"
)

// TestKeySetRefetchGap: the least time between two fetches is
// jwksRefetchGap, or the provider's max-age when that is shorter (a
// provider that rotates keys fast says so), but never under a second.
func TestKeySetRefetchGap(t *testing.T) {
	tests := []struct {
		cacheControl string
		want         time.Duration
	}{
		{"", jwksRefetchGap},
		{"public, max-age=300", jwksRefetchGap},
		{"public, max-age=3", 3 * time.Second},
		{"max-age=0", time.Second},
		{"no-store", time.Second},
		{"no-cache, max-age=60", time.Second},
		{"public, max-age=x", jwksRefetchGap},
	}
	for _, tt := range tests {
		t.Run(tt.cacheControl, func(t *testing.T) {
			if got, _ := cacheTimes(tt.cacheControl); got != tt.want {
				t.Fatalf("refetchGap(%q) = %v, want %v", tt.cacheControl, got, tt.want)
			}
		})
	}
}

// TestKeySetFreshness: keys are used without a fetch for the provider's
// max-age, but never longer than jwksMaxFresh (a pulled key stops
// verifying within the hour) nor, for a fetch per use, shorter than
// jwksRefetchGap.
func TestKeySetFreshness(t *testing.T) {
	for cc, want := range map[string]time.Duration{
		"":                     jwksMaxFresh,
		"public, max-age=300":  5 * time.Minute,
		"max-age=604800":       jwksMaxFresh,
		"max-age=2":            jwksRefetchGap,
		"no-store":             jwksRefetchGap,
		"public, max-age=oops": jwksMaxFresh,
	} {
		if _, got := cacheTimes(cc); got != want {
			t.Errorf("freshness of %q = %v, want %v", cc, got, want)
		}
	}
}

// TestKeySetShortMaxAge: a provider whose JWKS may be cached only briefly
// (its keys rotate fast) gets a token of a new kid verified a second after
// the last fetch, not only after jwksRefetchGap.
func TestKeySetShortMaxAge(t *testing.T) {
	a, b := testKey(t, idp.ES256, 0), testKey(t, idp.ES256, 1)
	var mu sync.Mutex
	published := []idp.SigningKey{a}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		var set jose.JSONWebKeySet
		for _, k := range published {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Key.Public(), KeyID: k.ID, Algorithm: k.Alg, Use: "sig"})
		}
		w.Header().Set("Cache-Control", "public, max-age=0")
		json.NewEncoder(w).Encode(set)
	}))
	defer srv.Close()
	ks := &keySet{url: srv.URL, http: srv.Client()}
	ctx := context.Background()
	if _, err := ks.VerifySignature(ctx, signES256(t, a)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	published = append(published, b)
	mu.Unlock()
	if _, err := ks.VerifySignature(ctx, signES256(t, b)); err == nil {
		t.Fatal("a new kid right after a fetch was verified: the refetch gap is not kept")
	}
	ks.mu.Lock()
	ks.fetched = ks.fetched.Add(-1100 * time.Millisecond) // as if a second went by
	ks.mu.Unlock()
	if _, err := ks.VerifySignature(ctx, signES256(t, b)); err != nil {
		t.Fatalf("a new kid a second after the last fetch of a max-age=0 JWKS: %v", err)
	}
}

// TestKeySetDropsRemovedKey: a key the provider no longer publishes
// (rotated out, or pulled after a leak) stops verifying once the keys are
// older than the provider's max-age: they are fetched again in the
// background, the request that notices it is not held up, and a failed
// fetch keeps the keys there are.
func TestKeySetDropsRemovedKey(t *testing.T) {
	a, b := testKey(t, idp.ES256, 0), testKey(t, idp.ES256, 1)
	var mu sync.Mutex
	published, fail, fetches := []idp.SigningKey{a}, false, 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fetches++
		if fail {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		var set jose.JSONWebKeySet
		for _, k := range published {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Key.Public(), KeyID: k.ID, Algorithm: k.Alg, Use: "sig"})
		}
		w.Header().Set("Cache-Control", "public, max-age=600")
		json.NewEncoder(w).Encode(set)
	}))
	defer srv.Close()
	ks := &keySet{url: srv.URL, http: srv.Client()}
	ctx := context.Background()
	tokenA := signES256(t, a)
	if _, err := ks.VerifySignature(ctx, tokenA); err != nil {
		t.Fatal(err)
	}
	age := func(d time.Duration) {
		ks.mu.Lock()
		ks.fetched, ks.fresh = ks.fetched.Add(-d), ks.fresh.Add(-d)
		ks.mu.Unlock()
	}
	settle := func() {
		t.Helper()
		for i := 0; ; i++ {
			ks.mu.Lock()
			busy := ks.refreshing
			ks.mu.Unlock()
			if !busy {
				return
			}
			if i == 500 {
				t.Fatal("the background fetch did not end")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Within max-age: no fetch.
	age(5 * time.Minute)
	if _, err := ks.VerifySignature(ctx, tokenA); err != nil {
		t.Fatal(err)
	}
	settle()
	mu.Lock()
	if fetches != 1 {
		t.Fatalf("%d fetches within max-age, want 1", fetches)
	}
	// The provider is down when the keys go stale: they are kept.
	fail = true
	mu.Unlock()
	age(6 * time.Minute)
	if _, err := ks.VerifySignature(ctx, tokenA); err != nil {
		t.Fatalf("stale keys while the provider is down: %v", err)
	}
	settle()
	if _, err := ks.VerifySignature(ctx, tokenA); err != nil {
		t.Fatalf("after a failed background fetch: %v", err)
	}
	// Back, without a: the next stale use fetches, and a is refused.
	mu.Lock()
	fail, published = false, []idp.SigningKey{b}
	mu.Unlock()
	age(11 * time.Minute)
	ks.VerifySignature(ctx, tokenA) // served from the stale set, or refused: either is fine here
	settle()
	if _, err := ks.VerifySignature(ctx, tokenA); err == nil {
		t.Fatal("a key the provider removed still verifies after its max-age")
	}
	if _, err := ks.VerifySignature(ctx, signES256(t, b)); err != nil {
		t.Fatal(err)
	}
}

func signES256(t *testing.T, k idp.SigningKey) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k.Key, KeyID: k.ID}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := jws.CompactSerialize()
	return raw
}
