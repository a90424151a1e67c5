// Command caddy is Caddy with its standard modules and authgate's modules:
// the binary that `xcaddy build --with github.com/authgate/authgate/caddymodule`
// produces, used by `make run` and the end-to-end tests.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// authgate's gateway and provider.
	_ "github.com/authgate/authgate/caddymodule"
)

func main() {
	caddycmd.Main()
}
