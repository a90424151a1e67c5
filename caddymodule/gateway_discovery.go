package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
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

	// The client this gateway is at the provider, for the one
	// oauth2.Config each discovery makes: client_id, secret, scopes, and
	// the token endpoint auth method configured ("basic", "post"), "none"
	// for a public client, or "" to choose it from discovery.
	clientID, clientSecret string
	scopes                 []string
	authMethod             string
	clockSkew              time.Duration // leeway for exp, nbf and iat

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

	// oauth is the one client configuration of the token endpoint, its
	// auth style fixed (never x/oauth2's probing, which sends a refused
	// request twice); authMethod is the method it uses: "basic", "post"
	// or "none".
	oauth      *oauth2.Config
	authMethod string
	clockSkew  time.Duration
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
		JWKS          string   `json:"jwks_uri"`
		EndSession    string   `json:"end_session_endpoint"`
		Introspection string   `json:"introspection_endpoint"`
		Revocation    string   `json:"revocation_endpoint"`
		IssParam      bool     `json:"authorization_response_iss_parameter_supported"`
		AuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
	}
	if err := p.Claims(&extra); err != nil {
		return nil, fmt.Errorf("reading discovery of %s: %w", c.issuer, err)
	}
	if extra.JWKS == "" {
		return nil, fmt.Errorf("discovery of %s has no jwks_uri", c.issuer)
	}
	d := &discovered{
		provider: p, endpoint: p.Endpoint(), endSession: extra.EndSession, introspection: extra.Introspection,
		revocation: extra.Revocation, issParam: extra.IssParam, keys: &keySet{url: extra.JWKS, http: c.http}, issuer: c.issuer,
		authMethod: c.authMethod, clockSkew: c.clockSkew,
	}
	if d.authMethod == "" {
		d.authMethod = chooseAuthMethod(extra.AuthMethods)
	}
	endpoint := d.endpoint
	endpoint.AuthStyle = oauth2.AuthStyleInHeader
	if d.authMethod != "basic" {
		endpoint.AuthStyle = oauth2.AuthStyleInParams // "none" sends client_id alone
	}
	d.oauth = &oauth2.Config{ClientID: c.clientID, ClientSecret: c.clientSecret, Endpoint: endpoint, Scopes: c.scopes}
	return d, nil
}

// checkTimes checks a verified token's nbf and iat with the clock skew
// (RFC 7519 §4.1.5 allows "some small leeway" for nbf; OpenID Connect
// Core §3.1.3.7 leaves the iat window to the client): not yet valid when
// nbf is more than the skew ahead of now, refused when iat is (a token
// from the future is a wrong clock or a forgery). A token without them
// passes; exp was checked by the verifier.
func (d *discovered) checkTimes(idt *oidc.IDToken, now time.Time) error {
	latest := now.Add(d.clockSkew)
	if idt.IssuedAt.After(latest) {
		return errors.New("token iat is in the future")
	}
	var c struct {
		NotBefore *float64 `json:"nbf"`
	}
	if err := idt.Claims(&c); err != nil {
		return fmt.Errorf("reading token nbf: %w", err)
	}
	if c.NotBefore != nil && time.Unix(int64(*c.NotBefore), 0).After(latest) {
		return errors.New("token is not valid yet (nbf)")
	}
	return nil
}

// chooseAuthMethod picks how a confidential client authenticates at the
// token endpoint from discovery's token_endpoint_auth_methods_supported:
// client_secret_basic when listed, or when nothing is (its default, RFC
// 8414 §2), else client_secret_post when listed. Chosen once per
// discovery, so every token request is one round trip: x/oauth2 left to
// itself would try Basic, then the form, sending every refused request
// twice.
func chooseAuthMethod(supported []string) string {
	if len(supported) == 0 || slices.Contains(supported, "client_secret_basic") || !slices.Contains(supported, "client_secret_post") {
		return "basic"
	}
	return "post"
}

// verifier returns an ID token or JWT verifier for audience: signature by
// the provider's JWKS (RS256 or ES256 only, so neither "none" nor an HMAC
// keyed with a public key passes), issuer and expiry, exp with the
// gateway's clock skew. go-oidc allows no leeway for exp and a fixed 5
// minutes for nbf, and does not check iat: [discovered.checkTimes] does
// those with the gateway's own.
func (d *discovered) verifier(audience string) *oidc.IDTokenVerifier {
	if v, ok := d.verifierCache.Load(audience); ok {
		return v.(*oidc.IDTokenVerifier)
	}
	skew := d.clockSkew
	v := oidc.NewVerifier(d.issuer, d.keys, &oidc.Config{
		ClientID:             audience,
		SkipClientIDCheck:    audience == "",
		SupportedSigningAlgs: []string{oidc.RS256, oidc.ES256},
		// The verifier's exp check, which stays on, with the leeway: a
		// token is expired once our clock, less the skew, passes exp.
		Now: func() time.Time { return time.Now().Add(-skew) },
	})
	d.verifierCache.Store(audience, v)
	return v
}
