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
	req, err := http.NewRequestWithContext(g.oidc.ctx, http.MethodPost, d.introspection,
		strings.NewReader(url.Values{"token": {token}, "token_type_hint": {"access_token"}}.Encode()))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(g.ClientID), url.QueryEscape(g.ClientSecret))
	resp, err := g.oidc.http.Do(req)
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
