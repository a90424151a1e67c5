package idp_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/authgate/authgate/idp"
)

// TestErrorDescriptionQuotes: a double quote in an error_description
// becomes a single quote, which RFC 6749 §5.2 allows; a backslash and
// non-ASCII still become '?'.
func TestErrorDescriptionQuotes(t *testing.T) {
	ts := lifecycleServer(t, nil)
	t.Run("token endpoint", func(t *testing.T) {
		resp, body := postToken(t, ts, "service", "service-secret", url.Values{"grant_type": {"client_credentials"}, "scope": {"nope"}})
		var e struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if resp.StatusCode != http.StatusBadRequest || jsonUnmarshal(body, &e) != nil {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if e.Error != "invalid_scope" || e.Description != "scope 'nope' is not an api scope of this client" {
			t.Errorf("error_description = %q", e.Description)
		}
	})
	t.Run("authorize redirect", func(t *testing.T) {
		_, ch := pkce("v")
		q := authorizeParams(ch)
		q.Set("scope", `openid a"b\cé`)
		resp := authorize(t, ts, browser(t), q)
		u, _ := url.Parse(resp.Header.Get("Location"))
		desc := u.Query().Get("error_description")
		// %q escaped the inner quote and backslash: their backslashes become '?'.
		if desc != `unknown scope 'a?'b??c??'` {
			t.Errorf("error_description = %q", desc)
		}
	})
}

// syncBuffer is a log sink safe for the provider's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestUnregisteredRedirectPage: the error page names the redirect_uri it
// got, escaped and shortened, and never redirects to it; the log has the
// client and the URI at warn level.
func TestUnregisteredRedirectPage(t *testing.T) {
	var logs syncBuffer
	ts := newServer(t, func(c *idp.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	evil := `https://evil.example/cb?x=<script>alert(1)</script>&y="` + strings.Repeat("a", 300)
	_, ch := pkce("v")
	q := authorizeParams(ch)
	q.Set("redirect_uri", evil)
	resp, err := browser(t).Get(ts.URL + idp.PathAuthorize + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
		t.Fatalf("%d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if strings.Contains(body, "<script>") {
		t.Fatalf("the page carries the URI unescaped: %s", body)
	}
	if !strings.Contains(body, "https://evil.example/cb?x=&lt;script&gt;alert(1)&lt;/script&gt;") || !strings.Contains(body, "demo-app") {
		t.Errorf("the page does not name the URI and client: %s", body)
	}
	if strings.Contains(body, strings.Repeat("a", 250)) || !strings.Contains(body, "...") {
		t.Errorf("the URI is not shortened: %s", body)
	}
	log := logs.String()
	if !strings.Contains(log, "level=WARN") || !strings.Contains(log, "client_id=demo-app") || !strings.Contains(log, "https://evil.example/cb") {
		t.Errorf("log = %s", log)
	}
}
