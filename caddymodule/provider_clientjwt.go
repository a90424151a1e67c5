package caddymodule

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/authgate/authgate/idp"
)

// maxJWKSFile bounds a client's jwks file: a JWK Set of a few keys is a
// few KiB.
const maxJWKSFile = 1 << 20

// clientKeys sets the private_key_jwt fields of ic from c: the inline JWK
// Set, the file (read now), or the jwks_uri, and the auth methods.
func (c ProviderClient) clientKeys(repl *caddy.Replacer, ic *idp.Client) error {
	n := 0
	for _, set := range []bool{len(c.JWKS) > 0, c.JWKSFile != "", c.JWKSURI != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("client %q: jwks, jwks_file and jwks_uri are exclusive", c.ID)
	}
	ic.JWKS = c.JWKS
	ic.JWKSURI = c.JWKSURI
	ic.TokenEndpointAuthMethods = c.TokenEndpointAuthMethods
	if c.JWKSFile != "" {
		path := repl.ReplaceAll(c.JWKSFile, "")
		if path == "" {
			return fmt.Errorf("client %q: jwks file is empty once its placeholders are replaced", c.ID)
		}
		data, err := readLimited(path, maxJWKSFile)
		if err != nil {
			return fmt.Errorf("client %q: jwks: %w", c.ID, err)
		}
		ic.JWKS = data
	}
	return nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	if len(data) == 0 {
		return nil, errors.New(path + " is empty")
	}
	return data, nil
}

// inlineJSON says whether a Caddyfile argument of jwks is a JSON object
// rather than a file name: "{" then a quote, space or "}", where a
// placeholder such as {env.KEYS} has a letter.
func inlineJSON(v string) bool {
	return len(v) >= 2 && v[0] == '{' && strings.ContainsAny(v[1:2], "\"} \t\r\n")
}
