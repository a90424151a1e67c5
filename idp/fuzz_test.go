package idp_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzAuthorizeRequest sends arbitrary query strings to the authorization
// endpoint: the answer is never a 5xx, and never a redirect anywhere but a
// registered redirect URI (or the provider's own login page).
func FuzzAuthorizeRequest(f *testing.F) {
	_, ch := pkce("v")
	f.Add(authorizeParams(ch).Encode())
	f.Add("client_id=demo-app&redirect_uri=" + url.QueryEscape(testRedirect) + "&response_type=token&state=x")
	f.Add("client_id=demo-app&redirect_uri=https%3A%2F%2Fevil.example%2F&response_type=code")
	f.Add("client_id=demo-app&client_id=x&redirect_uri=%zz&scope=openid%20%20profile&prompt=none+login&max_age=-5")
	f.Add("")
	ts := newServer(f, nil)
	f.Fuzz(func(t *testing.T, query string) {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			var r *http.Request
			if method == http.MethodGet {
				r = httptest.NewRequest(method, "/connect/authorize", nil)
				r.URL.RawQuery = query
			} else {
				r = httptest.NewRequest(method, "/connect/authorize", strings.NewReader(query))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			w := httptest.NewRecorder()
			ts.Provider.ServeHTTP(w, r)
			if w.Code >= 500 {
				t.Fatalf("%s %q: status %d", method, query, w.Code)
			}
			if loc := w.Header().Get("Location"); loc != "" {
				if !strings.HasPrefix(loc, testRedirect+"?") && !strings.HasPrefix(loc, "/account/login?") {
					t.Fatalf("%s %q: redirect to %q", method, query, loc)
				}
			}
		}
	})
}

// FuzzTokenRequest sends arbitrary bodies and Authorization headers to the
// token endpoint: the answer is a JSON OAuth error with a 4xx status, never
// a 5xx and never tokens.
func FuzzTokenRequest(f *testing.F) {
	f.Add("grant_type=authorization_code&code=abc&redirect_uri="+url.QueryEscape(testRedirect)+"&code_verifier=x", "Basic ZGVtby1hcHA6ZGVtby1hcHAtc2VjcmV0")
	f.Add("grant_type=password&username=alice&password=x", "")
	f.Add("client_id=demo-app&client_secret=demo-app-secret&grant_type=authorization_code&code=&code=", "")
	f.Add("%%%", "Basic !!!")
	f.Add("grant_type=refresh_token", "Bearer x")
	ts := newServer(f, nil)
	f.Fuzz(func(t *testing.T, body, auth string) {
		r := httptest.NewRequest(http.MethodPost, "/connect/token", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if auth != "" {
			r.Header["Authorization"] = []string{auth}
		}
		w := httptest.NewRecorder()
		ts.Provider.ServeHTTP(w, r)
		if w.Code != http.StatusBadRequest && w.Code != http.StatusUnauthorized {
			t.Fatalf("body %q auth %q: status %d: %s", body, auth, w.Code, w.Body)
		}
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
			t.Fatalf("body %q auth %q: not an OAuth error: %s", body, auth, w.Body)
		}
		if w.Header().Get("Cache-Control") != "no-store" {
			t.Fatalf("no Cache-Control: no-store")
		}
	})
}
