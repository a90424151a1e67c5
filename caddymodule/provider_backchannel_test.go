package caddymodule

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// TestBackchannelLogoutOptions: the delivery options reach the idp
// configuration, and those that cannot work are errors naming them.
func TestBackchannelLogoutOptions(t *testing.T) {
	d := func(s string) caddy.Duration {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return caddy.Duration(v)
	}
	for _, tc := range []struct {
		name    string
		opts    *ProviderBackchannelLogout
		wantErr string
	}{
		{name: "none"},
		{name: "short", opts: &ProviderBackchannelLogout{RetryFor: d("1m"), Backoff: d("100ms"), MaxBackoff: d("1s"), Poll: d("200ms"), Timeout: d("2s")}},
		{name: "negative", opts: &ProviderBackchannelLogout{Poll: d("-1s")}, wantErr: "backchannel_logout poll -1s is negative"},
		{name: "max below backoff", opts: &ProviderBackchannelLogout{Backoff: d("10s"), MaxBackoff: d("1s")}, wantErr: "max_backoff 1s is less than backoff 10s"},
		{name: "backoff above the default max", opts: &ProviderBackchannelLogout{Backoff: d("10m")}, wantErr: "max_backoff 5m0s is less than backoff 10m0s"},
		{name: "no time to retry", opts: &ProviderBackchannelLogout{RetryFor: d("1s")}, wantErr: "retry_for 1s leaves no time for a retry after backoff 2s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.opts.idpBackchannel()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o := tc.opts; o != nil {
				if cfg.RetryFor != time.Duration(o.RetryFor) || cfg.Backoff != time.Duration(o.Backoff) ||
					cfg.MaxBackoff != time.Duration(o.MaxBackoff) || cfg.Poll != time.Duration(o.Poll) ||
					cfg.Client == nil || cfg.Client.Timeout != time.Duration(o.Timeout) {
					t.Fatalf("config %+v from %+v", cfg, o)
				}
			}
		})
	}
}
