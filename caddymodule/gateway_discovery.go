package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// How the gateway talks to its provider.
const (
	providerTimeout   = 10 * time.Second // any one request to the provider
	discoveryTTL      = time.Hour        // re-read discovery this often
	discoveryRetryGap = 5 * time.Second  // after a failure, wait before trying again
)

// oidcClient is the gateway's view of its provider: discovery and the key
// set, fetched on first use, cached, refreshed, and fetched by one request
// at a time.
type oidcClient struct {
	issuer string
	logger *zap.Logger
	http   *http.Client
	ctx    context.Context // carries http for go-oidc and x/oauth2; never cancelled

	mu        sync.Mutex
	current   *discovered
	fetchedAt time.Time
	lastErr   error
	failedAt  time.Time
}

// discovered is one successful discovery.
type discovered struct {
	provider      *oidc.Provider
	endpoint      oauth2.Endpoint
	endSession    string
	introspection string
	revocation    string
	issParam      bool // authorization_response_iss_parameter_supported
	keys          *keySet
	issuer        string // as configured; go-oidc checked discovery says the same
	verifierCache sync.Map
}

func newOIDCClient(issuer string, logger *zap.Logger) *oidcClient {
	hc := &http.Client{Timeout: providerTimeout}
	return &oidcClient{
		issuer: issuer,
		logger: logger,
		http:   hc,
		ctx:    oidc.ClientContext(context.WithValue(context.Background(), oauth2.HTTPClient, hc), hc),
	}
}

// get returns the provider's discovery, fetching it when there is none yet
// or it is stale. A stale copy is still served when a refresh fails, and a
// failure is not retried for discoveryRetryGap, so a down provider costs
// one slow request, not one per user request.
func (c *oidcClient) get() (*discovered, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.current != nil && now.Sub(c.fetchedAt) < discoveryTTL {
		return c.current, nil
	}
	if c.lastErr != nil && now.Sub(c.failedAt) < discoveryRetryGap {
		if c.current != nil {
			return c.current, nil
		}
		return nil, c.lastErr
	}
	d, err := c.fetch()
	if err != nil {
		c.lastErr, c.failedAt = err, now
		c.logger.Error("fetching provider discovery", zap.String("issuer", c.issuer), zap.Error(err))
		if c.current != nil {
			return c.current, nil
		}
		return nil, err
	}
	c.current, c.fetchedAt, c.lastErr = d, now, nil
	return d, nil
}

func (c *oidcClient) fetch() (*discovered, error) {
	p, err := oidc.NewProvider(withProviderOp(c.ctx, opDiscovery), c.issuer)
	if err != nil {
		return nil, fmt.Errorf("discovering %s: %w", c.issuer, err)
	}
	var extra struct {
		JWKS          string `json:"jwks_uri"`
		EndSession    string `json:"end_session_endpoint"`
		Introspection string `json:"introspection_endpoint"`
		Revocation    string `json:"revocation_endpoint"`
		IssParam      bool   `json:"authorization_response_iss_parameter_supported"`
	}
	if err := p.Claims(&extra); err != nil {
		return nil, fmt.Errorf("reading discovery of %s: %w", c.issuer, err)
	}
	if extra.JWKS == "" {
		return nil, fmt.Errorf("discovery of %s has no jwks_uri", c.issuer)
	}
	return &discovered{
		provider: p, endpoint: p.Endpoint(), endSession: extra.EndSession, introspection: extra.Introspection,
		revocation: extra.Revocation, issParam: extra.IssParam, keys: &keySet{url: extra.JWKS, http: c.http}, issuer: c.issuer,
	}, nil
}

// verifier returns an ID token or JWT verifier for audience: signature by
// the provider's JWKS (RS256 or ES256 only, so neither "none" nor an HMAC
// keyed with a public key passes), issuer and expiry.
func (d *discovered) verifier(audience string) *oidc.IDTokenVerifier {
	if v, ok := d.verifierCache.Load(audience); ok {
		return v.(*oidc.IDTokenVerifier)
	}
	v := oidc.NewVerifier(d.issuer, d.keys, &oidc.Config{
		ClientID:             audience,
		SkipClientIDCheck:    audience == "",
		SupportedSigningAlgs: []string{oidc.RS256, oidc.ES256},
	})
	d.verifierCache.Store(audience, v)
	return v
}
