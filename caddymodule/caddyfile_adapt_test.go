package caddymodule

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	// reverse_proxy, to check that oidc_gateway is ordered before it.
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// TestCaddyfileAdapt adapts each testdata/caddyfile_adapt/*.caddyfiletest:
// a Caddyfile, a line of ten dashes, then the JSON it adapts to or the
// error it fails with (compared as a substring).
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "caddyfile_adapt", "*.caddyfiletest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no test files")
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			caddyfile, want, ok := strings.Cut(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n----------\n")
			if !ok {
				t.Fatal("no ---------- line")
			}
			// caddy fmt ends a Caddyfile with one newline; anything else
			// draws a warning.
			caddyfile = strings.TrimSpace(caddyfile) + "\n"
			want = strings.TrimSpace(want)
			if want == "" {
				t.Fatal("nothing after the ---------- line")
			}

			got, warnings, err := adapter.Adapt([]byte(caddyfile), nil)
			for _, w := range warnings {
				t.Logf("warning: %s:%d: %s: %s", w.File, w.Line, w.Directive, w.Message)
			}
			if !strings.HasPrefix(want, "{") {
				if err == nil {
					t.Fatalf("adapted without error, want error containing %q", want)
				}
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error = %q, want it to contain %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			if g, w := indentJSON(t, got), indentJSON(t, []byte(want)); g != w {
				t.Errorf("adapted JSON differs; got:\n%s\nwant:\n%s", g, w)
			}
		})
	}
}

func indentJSON(t testing.TB, data []byte) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Indent(&buf, data, "", "\t"); err != nil {
		t.Fatalf("indenting JSON: %v", err)
	}
	return buf.String()
}
