package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/authgate/authgate/idp"
)

// stopBackchannel stops the back-channel logout worker of the provider,
// which its build started: deliveries under way stay queued in the store
// for the next provider (a reload's, or another node's).
func (p *Provider) stopBackchannel() {
	if p.provider == nil {
		return
	}
	if pr := p.provider.Load(); pr != nil {
		if err := pr.Close(); err != nil {
			p.logger.Warn("stopping back-channel logout deliveries", zap.Error(err))
		}
	}
}

// checkBackchannelLogoutURI applies OpenID Connect Back-Channel Logout 1.0
// §2.2: an absolute http(s) URI, with a query if need be, and no
// fragment. idp.New checks it too; this names the Caddyfile line.
func checkBackchannelLogoutURI(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("is not a URL")
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return errors.New("is not an absolute http(s) URI")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return errors.New("has a fragment")
	}
	return nil
}

// ProviderBackchannelLogout tunes how a [Provider] delivers logout
// tokens (OpenID Connect Back-Channel Logout 1.0): they are queued in the
// provider's store, so that a restart loses none, and a delivery that
// fails (a network error, 408, 425, 429 or 5xx) is tried again after a
// wait that doubles from Backoff up to MaxBackoff, until RetryFor has
// passed since the session ended.
type ProviderBackchannelLogout struct {
	// RetryFor is how long a delivery is tried. Default: 1h.
	RetryFor caddy.Duration `json:"retry_for,omitempty"`

	// Backoff is the wait before the first retry. Default: 2s.
	Backoff caddy.Duration `json:"backoff,omitempty"`

	// MaxBackoff caps the wait between retries. Default: 5m.
	MaxBackoff caddy.Duration `json:"max_backoff,omitempty"`

	// Poll is how often the queue in the store is read, for deliveries
	// that another node, or an earlier run, queued. Default: 10s.
	Poll caddy.Duration `json:"poll,omitempty"`

	// Timeout bounds one delivery attempt. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// idpBackchannel checks b and returns its idp form; zero fields take the
// idp defaults, and are checked with them.
func (b *ProviderBackchannelLogout) idpBackchannel() (idp.BackchannelConfig, error) {
	var cfg idp.BackchannelConfig
	if b == nil {
		return cfg, nil
	}
	for _, d := range []struct {
		option string
		value  caddy.Duration
	}{
		{"retry_for", b.RetryFor},
		{"backoff", b.Backoff},
		{"max_backoff", b.MaxBackoff},
		{"poll", b.Poll},
		{"timeout", b.Timeout},
	} {
		if d.value < 0 {
			return cfg, fmt.Errorf("backchannel_logout %s %s is negative", d.option, time.Duration(d.value))
		}
	}
	orDefault := func(v caddy.Duration, def time.Duration) time.Duration {
		if v == 0 {
			return def
		}
		return time.Duration(v)
	}
	retryFor := orDefault(b.RetryFor, idp.DefaultBackchannelRetryFor)
	backoff := orDefault(b.Backoff, idp.DefaultBackchannelBackoff)
	maxBackoff := orDefault(b.MaxBackoff, idp.DefaultBackchannelMaxBackoff)
	if maxBackoff < backoff {
		return cfg, fmt.Errorf("backchannel_logout max_backoff %s is less than backoff %s", maxBackoff, backoff)
	}
	// A retry that can never come is a configuration mistake, not a
	// choice: say so rather than give up after the first attempt.
	if retryFor <= backoff {
		return cfg, fmt.Errorf("backchannel_logout retry_for %s leaves no time for a retry after backoff %s", retryFor, backoff)
	}
	cfg = idp.BackchannelConfig{
		RetryFor:   time.Duration(b.RetryFor),
		Backoff:    time.Duration(b.Backoff),
		MaxBackoff: time.Duration(b.MaxBackoff),
		Poll:       time.Duration(b.Poll),
	}
	if b.Timeout > 0 {
		cfg.Client = &http.Client{Timeout: time.Duration(b.Timeout)}
	}
	return cfg, nil
}
