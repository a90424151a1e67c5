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

// FuzzBackChannelRequest sends arbitrary bodies and Authorization headers
// to introspection, revocation and userinfo, whose client, resource and
// bearer authentication parse them: never a 5xx, never a token found
// active or a user's claims, as no real token is sent.
func FuzzBackChannelRequest(f *testing.F) {
	f.Add("token=abc&token_type_hint=access_token", "Basic ZGVtby1hcHA6ZGVtby1hcHAtc2VjcmV0")
	f.Add("token=abc&client_id=demo-app&client_secret=demo-app-secret", "")
	f.Add("token=a&token=b&client_id=demo-api&client_secret=x", "Basic ZGVtby1hcGk6")
	f.Add("access_token=eyJhbGciOiJub25lIn0.e30.", "")
	f.Add("access_token=x", "Bearer y")
	f.Add("%zz", "Basic Og==")
	f.Add("", "Basic !!!")
	f.Add("", "Bearer \t ")
	f.Add("", "bEaReR eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.e30.c2ln")
	ts := newServer(f, nil)
	f.Fuzz(func(t *testing.T, body, auth string) {
		for _, path := range []string{"/connect/introspect", "/connect/revocation", "/connect/userinfo"} {
			r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if auth != "" {
				r.Header["Authorization"] = []string{auth}
			}
			w := httptest.NewRecorder()
			ts.Provider.ServeHTTP(w, r)
			switch {
			case w.Code >= 500:
				t.Fatalf("%s body %q auth %q: status %d: %s", path, body, auth, w.Code, w.Body)
			case path == "/connect/userinfo" && w.Code == http.StatusOK:
				t.Fatalf("userinfo body %q auth %q: claims without a token: %s", body, auth, w.Body)
			case path == "/connect/introspect" && w.Code == http.StatusOK:
				var resp struct {
					Active bool `json:"active"`
				}
				if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || resp.Active {
					t.Fatalf("introspect body %q auth %q: %s", body, auth, w.Body)
				}
			}
		}
	})
}

// FuzzEndSession sends arbitrary end-session requests, id_token_hint
// included: never a 5xx, and never a redirect anywhere but the client's
// registered post-logout URI or the provider's own pages.
func FuzzEndSession(f *testing.F) {
	ts := newServer(f, nil)
	code, verifier := codeFor(f, ts)
	_, body := postToken(f, ts, "demo-app", testSecret, exchangeForm(code, verifier))
	var tok struct {
		IDToken     string `json:"id_token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(body), &tok); err != nil || tok.IDToken == "" {
		f.Fatalf("no id_token: %s", body)
	}
	const after = "https://app.example/"
	f.Add(url.Values{"id_token_hint": {tok.IDToken}, "post_logout_redirect_uri": {after}, "state": {"s"}}.Encode())
	f.Add(url.Values{"id_token_hint": {tok.AccessToken}, "post_logout_redirect_uri": {after}}.Encode())
	f.Add(url.Values{"id_token_hint": {tok.IDToken}, "client_id": {"other"}, "post_logout_redirect_uri": {after}}.Encode())
	f.Add(url.Values{"client_id": {"demo-app"}, "post_logout_redirect_uri": {"https://evil.example/"}}.Encode())
	f.Add("id_token_hint=eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.&post_logout_redirect_uri=" + url.QueryEscape(after))
	f.Add("id_token_hint=%zz&id_token_hint=a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, query string) {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			var r *http.Request
			if method == http.MethodGet {
				r = httptest.NewRequest(method, "/connect/endsession", nil)
				r.URL.RawQuery = query
			} else {
				r = httptest.NewRequest(method, "/connect/endsession", strings.NewReader(query))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			w := httptest.NewRecorder()
			ts.Provider.ServeHTTP(w, r)
			if w.Code >= 500 {
				t.Fatalf("%s %q: status %d", method, query, w.Code)
			}
			if loc := w.Header().Get("Location"); loc != "" && !strings.HasPrefix(loc, after) &&
				(!strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") || strings.HasPrefix(loc, "/\\")) {
				t.Fatalf("%s %q: redirect to %q", method, query, loc)
			}
		}
	})
}

// FuzzLoginForm posts arbitrary login forms, with the CSRF cookie of a
// real login page, and opens the login page with arbitrary sealed
// requests: never a 5xx, and never a redirect but to the client's
// registered redirect URI or the provider's own pages.
func FuzzLoginForm(f *testing.F) {
	ts := newServer(f, nil)
	c := browser(f)
	_, challenge := pkce("v")
	resp := authorize(f, ts, c, authorizeParams(challenge))
	loc := resp.Header.Get("Location")
	form := loginForm(f, c, ts.URL, loc)
	base, _ := url.Parse(ts.URL)
	var cookie []string
	for _, ck := range c.Jar.Cookies(base) {
		cookie = append(cookie, ck.Name+"="+ck.Value)
	}
	wrong := url.Values{"csrf_token": {form.Get("csrf_token")}, "request": {form.Get("request")}, "username": {"alice"}, "password": {"wrong"}}
	f.Add(wrong.Encode())
	wrong.Set("username", "nobody")
	f.Add(wrong.Encode())
	wrong.Set("request", form.Get("request")[1:])
	f.Add(wrong.Encode())
	f.Add("request=&csrf_token=&username=&password=")
	f.Add("%zz")
	f.Fuzz(func(t *testing.T, body string) {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			var r *http.Request
			if method == http.MethodGet {
				r = httptest.NewRequest(method, "/account/login", nil)
				r.URL.RawQuery = body
			} else {
				r = httptest.NewRequest(method, "/account/login", strings.NewReader(body))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			r.Header.Set("Cookie", strings.Join(cookie, "; "))
			w := httptest.NewRecorder()
			ts.Provider.ServeHTTP(w, r)
			if w.Code >= 500 {
				t.Fatalf("%s %q: status %d", method, body, w.Code)
			}
			if loc := w.Header().Get("Location"); loc != "" && !strings.HasPrefix(loc, testRedirect+"?") &&
				(!strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") || strings.HasPrefix(loc, "/\\")) {
				t.Fatalf("%s %q: redirect to %q", method, body, loc)
			}
		}
	})
}
