package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// introspect asks the provider whether token is active (RFC 7662 §2).
func (g *Gateway) introspect(d *discovered, token string) (bool, error) {
	if d.introspection == "" {
		return false, errors.New("the provider advertises no introspection_endpoint")
	}
	resp, err := g.postForm(d, opIntrospect, d.introspection, url.Values{"token": {token}, "token_type_hint": {"access_token"}})
	if err != nil {
		return false, fmt.Errorf("introspecting token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("introspection endpoint answered %d", resp.StatusCode)
	}
	var out struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return false, fmt.Errorf("reading introspection answer: %w", err)
	}
	return out.Active, nil
}

// revoke revokes a refresh token at the provider (RFC 7009 §2).
func (g *Gateway) revoke(d *discovered, token string) error {
	resp, err := g.postForm(d, opRevoke, d.revocation, url.Values{"token": {token}, "token_type_hint": {"refresh_token"}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revocation endpoint answered %d", resp.StatusCode)
	}
	return nil
}

// postForm sends a back-channel form to the provider, authenticated as
// this gateway's client the way it is at the token endpoint (RFC 7009
// §2.1, RFC 7662 §2.1): client_secret_basic, client_secret_post, or for a
// public client its client_id in the form. op names the request in the
// metrics.
func (g *Gateway) postForm(d *discovered, op providerOp, endpoint string, form url.Values) (*http.Response, error) {
	switch d.authMethod {
	case "none":
		form.Set("client_id", g.ClientID)
	case "post":
		form.Set("client_id", g.ClientID)
		form.Set("client_secret", g.ClientSecret)
	}
	req, err := http.NewRequestWithContext(withProviderOp(g.oidc.ctx, op), http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if d.authMethod == "basic" {
		req.SetBasicAuth(url.QueryEscape(g.ClientID), url.QueryEscape(g.ClientSecret))
	}
	return g.oidc.http.Do(req)
}
