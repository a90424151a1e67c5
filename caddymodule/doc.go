// Package caddymodule holds authgate's Caddy modules.
package caddymodule
