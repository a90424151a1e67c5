package caddymodule

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/authgate/authgate/internal/redistest"
)

// redisGateway provisions a gateway without session keys on the Redis at
// addr, as one node of several.
func redisGateway(t *testing.T, addr string) *Gateway {
	t.Helper()
	g := &Gateway{
		Issuer:   "https://login.example.com",
		ClientID: "app",
		Store:    &StateStore{Redis: &RedisStore{Addresses: []string{addr}, KeyPrefix: "gw:", DialTimeout: caddy.Duration(200 * time.Millisecond)}},
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := g.Provision(ctx); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	t.Cleanup(func() { g.Cleanup() })
	return g
}

// TestGatewaySharedSessionKey: two gateways that share only Redis open each
// other's cookies: the generated session key is created once, in Redis.
func TestGatewaySharedSessionKey(t *testing.T) {
	srv := redistest.Start(t)
	a, b := redisGateway(t, srv.Addr), redisGateway(t, srv.Addr)
	value, err := a.codec.encode(a.cookieName, &session{ID: "i", Subject: "alice", Created: time.Now().Unix(), Binding: a.binding})
	if err != nil {
		t.Fatal(err)
	}
	s, err := b.openSession(value)
	if err != nil || s.Subject != "alice" {
		t.Fatalf("node B: %+v, %v", s, err)
	}
}

// TestGatewaySharedSessionKeyDown: Provision needs no Redis; without it a
// cookie can be neither sealed nor opened, with errSessionKeyUnavailable,
// at once while a failed load is recent.
func TestGatewaySharedSessionKeyDown(t *testing.T) {
	g := redisGateway(t, closedAddr(t))
	for range 2 {
		_, err := g.codec.encode(g.cookieName, &session{ID: "i", Subject: "alice"})
		if !errors.Is(err, errSessionKeyUnavailable) {
			t.Fatalf("encode: %v, want errSessionKeyUnavailable", err)
		}
	}
}
