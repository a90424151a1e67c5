package caddymodule

import (
	"errors"
	"net/url"
	"strings"

	"go.uber.org/zap"
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
