package e2e_test

// The binary under test is built from these packages by `go build` in
// TestMain, which go test cannot see. Linking them into the test binary
// too makes any change to them change the test binary, so that go test
// never reports a cached pass for a Caddy that has changed since.
import (
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/authgate/authgate/caddymodule"
)
