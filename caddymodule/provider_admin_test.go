package caddymodule

import (
	"errors"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/authgate/authgate/idp"
)

// TestProviderRegistry: during a reload the new provider of an issuer
// registers before the old one leaves, and the admin API finds the new
// one throughout; with two issuers it asks which.
func TestProviderRegistry(t *testing.T) {
	status := func(err error) int {
		var ae caddy.APIError
		if errors.As(err, &ae) {
			return ae.HTTPStatus
		}
		return 0
	}
	const iss = "https://registry.test"
	old, cur := new(liveProvider), new(liveProvider)
	old.Store(new(idp.Provider))
	cur.Store(new(idp.Provider))
	registerProvider(iss, old)
	registerProvider(iss, cur)
	if p, err := findProvider(iss); err != nil || p != cur.Load() {
		t.Fatalf("during the reload: %p, %v; want the new provider", p, err)
	}
	unregisterProvider(iss, old)
	if p, err := findProvider(""); err != nil || p != cur.Load() {
		t.Fatalf("after the reload, by default: %p, %v; want the new provider", p, err)
	}
	other := new(liveProvider)
	registerProvider("https://other.test", other)
	if _, err := findProvider(""); status(err) != http.StatusBadRequest {
		t.Errorf("two issuers, none chosen: %v; want 400", err)
	}
	if _, err := findProvider("https://other.test"); status(err) != http.StatusServiceUnavailable {
		t.Errorf("provider without keys: %v; want 503", err)
	}
	unregisterProvider("https://other.test", other)
	unregisterProvider(iss, cur)
	if _, err := findProvider(iss); status(err) != http.StatusNotFound {
		t.Errorf("after cleanup: %v; want 404", err)
	}
}
