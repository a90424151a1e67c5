package idp

import "testing"

func TestFormActionSource(t *testing.T) {
	tests := []struct {
		name, uri, want string
	}{
		{name: "path", uri: "https://app.example/signin-oidc", want: "https://app.example/signin-oidc"},
		{name: "port kept", uri: "http://127.0.0.1:5000/cb", want: "http://127.0.0.1:5000/cb"},
		{name: "query dropped", uri: "https://app.example/cb?tenant=a", want: "https://app.example/cb"},
		{name: "no path", uri: "https://app.example", want: "https://app.example/"},
		// ";" would end the directive, "," the policy, a space the source.
		{name: "separators encoded", uri: "https://app.example/a;b,c d", want: "https://app.example/a%3Bb%2Cc%20d"},
		{name: "quote encoded", uri: "https://app.example/it's", want: "https://app.example/it%27s"},
		{name: "IPv6 loopback", uri: "http://[::1]:8400/cb", want: "http:"},
		{name: "no host", uri: "com.example.app:/cb", want: "'none'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := formActionSource(tt.uri); got != tt.want {
				t.Fatalf("formActionSource(%q) = %q, want %q", tt.uri, got, tt.want)
			}
		})
	}
}
