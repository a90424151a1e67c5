package idp_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

func TestTokenErrors(t *testing.T) {
	tests := []struct {
		name       string
		id, secret string // Basic credentials; empty id: none
		edit       func(form url.Values, code, verifier string)
		setup      func(t *testing.T, ts *testServer)
		header     func(r *http.Request)
		wantStatus int
		wantErr    string
	}{
		{name: "wrong secret", id: "demo-app", secret: "wrong", wantStatus: 401, wantErr: "invalid_client"},
		{name: "unknown client", id: "nope", secret: testSecret, wantStatus: 401, wantErr: "invalid_client"},
		{name: "no client authentication", wantStatus: 401, wantErr: "invalid_client"},
		{name: "client_secret_post", edit: func(f url.Values, _, _ string) { f.Set("client_id", "demo-app"); f.Set("client_secret", testSecret) }, wantStatus: 200},
		{name: "client_secret_post wrong secret", edit: func(f url.Values, _, _ string) { f.Set("client_id", "demo-app"); f.Set("client_secret", "x") }, wantStatus: 401, wantErr: "invalid_client"},
		{name: "two authentication methods", id: "demo-app", secret: testSecret, edit: func(f url.Values, _, _ string) { f.Set("client_secret", testSecret) }, wantStatus: 400, wantErr: "invalid_request"},
		{name: "malformed Basic", header: func(r *http.Request) { r.Header.Set("Authorization", "Basic !!!") }, wantStatus: 401, wantErr: "invalid_client"},
		{name: "no grant_type", id: "demo-app", secret: testSecret, edit: func(f url.Values, _, _ string) { f.Del("grant_type") }, wantStatus: 400, wantErr: "invalid_request"},
		{name: "unsupported grant_type", id: "demo-app", secret: testSecret, edit: func(f url.Values, _, _ string) { f.Set("grant_type", "urn:x") }, wantStatus: 400, wantErr: "unsupported_grant_type"},
		{name: "no code", id: "demo-app", secret: testSecret, edit: func(f url.Values, _, _ string) { f.Del("code") }, wantStatus: 400, wantErr: "invalid_request"},
		{name: "unknown code", id: "demo-app", secret: testSecret, edit: func(f url.Values, _, _ string) { f.Set("code", "nope") }, wantStatus: 400, wantErr: "invalid_grant"},
		{name: "no redirect_uri", id: "demo-app", secret: testSecret, edit: func(f url.Values, _, _ string) { f.Del("redirect_uri") }, wantStatus: 400, wantErr: "invalid_request"},
		{name: "other redirect_uri", id: "demo-app", secret: testSecret, edit: func(f url.Values, _, _ string) { f.Set("redirect_uri", "https://app.example/other") }, wantStatus: 400, wantErr: "invalid_grant"},
		{name: "no code_verifier", id: "demo-app", secret: testSecret, edit: func(f url.Values, _, _ string) { f.Del("code_verifier") }, wantStatus: 400, wantErr: "invalid_grant"},
		{name: "wrong code_verifier", id: "demo-app", secret: testSecret, edit: func(f url.Values, _, _ string) { v, _ := pkce("z"); f.Set("code_verifier", v) }, wantStatus: 400, wantErr: "invalid_grant"},
		{name: "malformed code_verifier", id: "demo-app", secret: testSecret, edit: func(f url.Values, _, _ string) { f.Set("code_verifier", "short") }, wantStatus: 400, wantErr: "invalid_grant"},
		{name: "repeated parameter", id: "demo-app", secret: testSecret, edit: func(f url.Values, code, _ string) { f.Add("code", code) }, wantStatus: 400, wantErr: "invalid_request"},
		{name: "code of another client", id: "other", secret: "other-secret", wantStatus: 400, wantErr: "invalid_grant"},
		{name: "expired code", id: "demo-app", secret: testSecret, setup: func(t *testing.T, ts *testServer) { ts.clock.Advance(61 * time.Second) }, wantStatus: 400, wantErr: "invalid_grant"},
		{name: "JSON body", id: "demo-app", secret: testSecret, header: func(r *http.Request) { r.Header.Set("Content-Type", "application/json") }, wantStatus: 400, wantErr: "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newServer(t, func(c *idp.Config) {
				c.Clients = append(c.Clients, idp.Client{ID: "other", Secret: "other-secret", RedirectURIs: []string{testRedirect}})
			})
			code, verifier := codeFor(t, ts)
			if tt.setup != nil {
				tt.setup(t, ts)
			}
			form := exchangeForm(code, verifier)
			if tt.edit != nil {
				tt.edit(form, code, verifier)
			}
			req, _ := http.NewRequest(http.MethodPost, ts.URL+"/connect/token", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tt.id != "" {
				req.SetBasicAuth(tt.id, tt.secret)
			}
			if tt.header != nil {
				tt.header(req)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, body)
			}
			if resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", resp.Header.Get("Cache-Control"))
			}
			if tt.wantErr == "" {
				return
			}
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != tt.wantErr {
				t.Fatalf("body %s, want error %s", body, tt.wantErr)
			}
			if tt.wantStatus == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("WWW-Authenticate = %q, want Basic", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

func TestTokenMethod(t *testing.T) {
	ts := newServer(t, nil)
	resp, err := http.Get(ts.URL + "/connect/token")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" || !strings.Contains(body, "invalid_request") {
		t.Fatalf("GET token: %d Allow=%q %s; want 405 JSON", resp.StatusCode, resp.Header.Get("Allow"), body)
	}
}

// TestCodeReplay: a second use of a code fails and revokes the access token
// the first use issued (RFC 6749 §4.1.2).
func TestCodeReplay(t *testing.T) {
	ts := newServer(t, nil)
	code, verifier := codeFor(t, ts)
	resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first exchange: %d %s", resp.StatusCode, body)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	json.Unmarshal([]byte(body), &tr)
	if st, _ := userinfo(t, ts, tr.AccessToken); st != http.StatusOK {
		t.Fatalf("userinfo before replay: %d", st)
	}
	resp, body = postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier))
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"invalid_grant"`) {
		t.Fatalf("replay: %d %s; want 400 invalid_grant", resp.StatusCode, body)
	}
	if st, h := userinfo(t, ts, tr.AccessToken); st != http.StatusUnauthorized || !strings.Contains(h, `error="invalid_token"`) {
		t.Fatalf("userinfo after replay: %d %q; want 401 invalid_token", st, h)
	}
}

// TestConcurrentRedemption: of many simultaneous redemptions of one code,
// exactly one succeeds.
func TestConcurrentRedemption(t *testing.T) {
	ts := newServer(t, nil)
	code, verifier := codeFor(t, ts)
	const n = 10
	results := make(chan int, n)
	for range n {
		go func() {
			resp, _ := postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier))
			results <- resp.StatusCode
		}()
	}
	ok := 0
	for range n {
		if <-results == http.StatusOK {
			ok++
		}
	}
	if ok != 1 {
		t.Fatalf("%d redemptions succeeded, want exactly 1", ok)
	}
}

func TestHashedClientSecret(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		c.Clients[0].Secret = ""
		c.Clients[0].SecretHash = passwordHash(t) // the hash of testPassword
	})
	code, verifier := codeFor(t, ts)
	if resp, body := postToken(t, ts, "demo-app", "wrong", exchangeForm(code, verifier)); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d %s", resp.StatusCode, body)
	}
	if resp, body := postToken(t, ts, "demo-app", testPassword, exchangeForm(code, verifier)); resp.StatusCode != http.StatusOK {
		t.Fatalf("right secret: %d %s", resp.StatusCode, body)
	}
}

func TestES256IDTokens(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		c.Clients[0].IDTokenAlg = idp.ES256
		c.AccessTokenAlg = idp.ES256
	})
	code, verifier := codeFor(t, ts)
	resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(code, verifier))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		IDToken     string `json:"id_token"`
	}
	json.Unmarshal([]byte(body), &tr)
	for name, tok := range map[string]string{"id": tr.IDToken, "access": tr.AccessToken} {
		if alg := headerAlg(t, tok); alg != "ES256" {
			t.Errorf("%s token alg = %s, want ES256", name, alg)
		}
	}
	if st, _ := userinfo(t, ts, tr.AccessToken); st != http.StatusOK {
		t.Errorf("userinfo with ES256 access token: %d", st)
	}
}
