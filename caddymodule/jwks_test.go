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
			if got := refetchGap(tt.cacheControl); got != tt.want {
				t.Fatalf("refetchGap(%q) = %v, want %v", tt.cacheControl, got, tt.want)
			}
		})
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
	sign := func(k idp.SigningKey) string {
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
	ctx := context.Background()
	if _, err := ks.VerifySignature(ctx, sign(a)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	published = append(published, b)
	mu.Unlock()
	if _, err := ks.VerifySignature(ctx, sign(b)); err == nil {
		t.Fatal("a new kid right after a fetch was verified: the refetch gap is not kept")
	}
	ks.mu.Lock()
	ks.fetched = ks.fetched.Add(-1100 * time.Millisecond) // as if a second went by
	ks.mu.Unlock()
	if _, err := ks.VerifySignature(ctx, sign(b)); err != nil {
		t.Fatalf("a new kid a second after the last fetch of a max-age=0 JWKS: %v", err)
	}
}
