package idp

import (
	"net/url"
	"testing"
)

func TestWebOrigin(t *testing.T) {
	tests := []struct {
		name, issuer, want string
	}{
		{name: "path dropped", issuer: "https://id.example/tenant/", want: "https://id.example"},
		{name: "default https port", issuer: "https://id.example:443", want: "https://id.example"},
		{name: "default http port", issuer: "http://id.example:80/", want: "http://id.example"},
		{name: "other port", issuer: "http://127.0.0.1:9000", want: "http://127.0.0.1:9000"},
		{name: "443 on http", issuer: "http://id.example:443", want: "http://id.example:443"},
		{name: "case", issuer: "HTTPS://ID.Example", want: "https://id.example"},
		{name: "IPv6", issuer: "http://[::1]:8080", want: "http://[::1]:8080"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.issuer)
			if err != nil {
				t.Fatal(err)
			}
			if got := webOrigin(u); got != tt.want {
				t.Errorf("webOrigin(%s) = %q, want %q", tt.issuer, got, tt.want)
			}
		})
	}
}
