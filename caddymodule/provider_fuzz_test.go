package caddymodule

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"

	"github.com/authgate/authgate/idp"
)

// FuzzProviderCaddyfile parses arbitrary oidc_provider blocks: never a
// panic; a block that parses is what its JSON says, and where checking it
// is cheap (no files to read, no bcrypt hash to make) its configuration
// builds an idp provider or errors, without panicking.
func FuzzProviderCaddyfile(f *testing.F) {
	for _, s := range caddyfileSeeds(f, "oidc_provider") {
		f.Add(s)
	}
	f.Add("oidc_provider")
	f.Add("oidc_provider http://a/{x}")
	f.Add("oidc_provider http://a/b%20c {\n\tapi_scope openid\n}")
	f.Add("oidc_provider http://a {\n\tclient c {\n\t\tsecret s\n\t\tredirect_uri http://a/cb\n\t\tscopes\n\t}\n\tuser u {\n\t\tpassword_hash $argon2id$v=19$m=1,t=0,p=0$c2FsdA$a2V5\n\t}\n}")
	var keys []idp.SigningKey
	for _, alg := range []string{idp.RS256, idp.ES256} {
		k, err := idp.GenerateKey(alg)
		if err != nil {
			f.Fatal(err)
		}
		keys = append(keys, k)
	}
	cookieKeys := [][2][]byte{{make([]byte, 32), make([]byte, 32)}}
	f.Fuzz(func(t *testing.T, input string) {
		tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
		if err != nil {
			return
		}
		p := new(Provider)
		if err := p.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
			return
		}
		raw, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("%q: marshalling: %v", input, err)
		}
		var fromJSON Provider
		if err := json.Unmarshal(raw, &fromJSON); err != nil {
			t.Fatalf("%q: unmarshalling %s: %v", input, raw, err)
		}
		if !reflect.DeepEqual(*p, fromJSON) {
			t.Fatalf("%q: parsed %#v, but its JSON %s is %#v", input, *p, raw, fromJSON)
		}
		if !cheapToBuild(p, string(raw)) {
			return
		}
		cfg, err := p.idpConfig()
		if err != nil {
			return
		}
		cfg.Keys, cfg.CookieKeys = keys, cookieKeys
		store := idp.NewMemoryStore(nil)
		defer store.Close()
		idp.New(cfg, store)
	})
}

// cheapToBuild reports whether p's configuration can be built without
// reading files, and without making a bcrypt hash for unknown users
// (one of the first hash's cost, unless that is the cost of Caddy's own
// fake hash), which takes from milliseconds to days by the cost.
func cheapToBuild(p *Provider, raw string) bool {
	if p.UsersFile != "" || p.Templates != "" || len(p.SigningKeys) > 0 || strings.Contains(raw, "{file.") {
		return false
	}
	fakeCost, _ := bcrypt.Cost(caddyauth.BcryptHash{}.FakeHash())
	hashes := []string{}
	for _, u := range p.Users {
		hashes = append(hashes, u.PasswordHash)
	}
	for _, c := range p.Clients {
		hashes = append(hashes, c.SecretHash)
	}
	for _, r := range p.APIResources {
		hashes = append(hashes, r.SecretHash)
	}
	for _, h := range hashes {
		if cost, err := bcrypt.Cost([]byte(h)); err == nil && cost > bcrypt.MinCost+2 && cost != fakeCost {
			return false
		}
	}
	return true
}
