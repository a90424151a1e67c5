package idp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

const requestURIPrefix = "urn:ietf:params:oauth:request_uri:"

// parResult is the answer of the PAR endpoint, its body decoded.
type parResult struct {
	resp       *http.Response
	body       string
	RequestURI string `json:"request_uri"`
	ExpiresIn  int64  `json:"expires_in"`
	Error      string `json:"error"`
}

// push posts form to the PAR endpoint, with Basic credentials when id is
// not empty.
func push(t testing.TB, ts *testServer, id, secret string, form url.Values) parResult {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, ts.URL+"/connect/par", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if id != "" {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := parResult{resp: resp, body: readBody(t, resp)}
	if err := jsonUnmarshal(r.body, &r); err != nil {
		t.Fatalf("PAR: status %d, body not JSON: %q", resp.StatusCode, r.body)
	}
	return r
}

// pushOK pushes the authorization request q of demo-app and returns its
// request_uri.
func pushOK(t testing.TB, ts *testServer, q url.Values) string {
	t.Helper()
	r := push(t, ts, "demo-app", testSecret, q)
	if r.resp.StatusCode != http.StatusCreated || !strings.HasPrefix(r.RequestURI, requestURIPrefix) {
		t.Fatalf("PAR: status %d: %s", r.resp.StatusCode, r.body)
	}
	return r.RequestURI
}

// wantPage checks that resp is an error page, not a redirect.
func wantPage(t testing.TB, resp *http.Response, status int) {
	t.Helper()
	if resp.StatusCode != status || resp.Header.Get("Location") != "" || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("status %d, Location %q, Content-Type %q; want an error page with %d", resp.StatusCode,
			resp.Header.Get("Location"), resp.Header.Get("Content-Type"), status)
	}
}

func TestPARCodeFlow(t *testing.T) {
	ts := newServer(t, nil)
	verifier, challenge := pkce("p")
	r := push(t, ts, "demo-app", testSecret, authorizeParams(challenge))
	if r.resp.StatusCode != http.StatusCreated {
		t.Fatalf("PAR: status %d, want 201: %s", r.resp.StatusCode, r.body)
	}
	if cc := r.resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	if ct := r.resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want JSON", ct)
	}
	if !strings.HasPrefix(r.RequestURI, requestURIPrefix) || len(r.RequestURI) < len(requestURIPrefix)+40 {
		t.Errorf("request_uri %q: want the RFC 9126 URN with a long random part", r.RequestURI)
	}
	if r.ExpiresIn != 60 {
		t.Errorf("expires_in %d, want 60", r.ExpiresIn)
	}

	// RFC 9126 §4: only client_id and request_uri count; whatever else the
	// URL says is ignored, the redirect URI and state included.
	q := url.Values{
		"client_id":     {"demo-app"},
		"request_uri":   {r.RequestURI},
		"redirect_uri":  {"https://evil.example/cb"},
		"state":         {"forged"},
		"scope":         {"openid phone"},
		"response_type": {"token"},
		"prompt":        {"none"},
	}
	u := login(t, ts, browser(t), q, "alice", testPassword)
	if !strings.HasPrefix(u.String(), testRedirect+"?") || u.Query().Get("state") != "st-123" || u.Query().Get("code") == "" {
		t.Fatalf("callback %s: want the pushed redirect URI, state st-123 and a code", u)
	}
	resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(u.Query().Get("code"), verifier))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("exchange: %d %s", resp.StatusCode, body)
	}
	var tok struct {
		Scope string `json:"scope"`
	}
	if jsonUnmarshal(body, &tok); tok.Scope != "openid profile email" {
		t.Errorf("scope %q: want the pushed scopes", tok.Scope)
	}
}

func TestPARWithConsentAndSSO(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) { c.Clients[0].RequireConsent = true })
	c := browser(t)
	_, challenge := pkce("c")
	uri := pushOK(t, ts, authorizeParams(challenge))
	resp := authorize(t, ts, c, url.Values{"client_id": {"demo-app"}, "request_uri": {uri}})
	form := loginForm(t, c, ts.URL, resp.Header.Get("Location"))
	form.Set("username", "alice")
	form.Set("password", testPassword)
	resp, _ = postFrom(t, ts, c, "/account/login", form, sameOrigin)
	loc := resp.Header.Get("Location")
	if !strings.Contains(loc, "/account/consent") {
		t.Fatalf("after login: redirected to %q, want the consent page", loc)
	}
	form = loginForm(t, c, ts.URL, loc)
	form.Set("decision", "allow")
	form.Set("remember", "on")
	resp, _ = postFrom(t, ts, c, "/account/consent", form, sameOrigin)
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, testRedirect+"?code=") || !strings.Contains(loc, "state=st-123") {
		t.Fatalf("after consent: Location %q, want a code and the pushed state", loc)
	}

	// Single sign-on: a second pushed request goes straight back.
	q := authorizeParams(challenge)
	q.Set("state", "second")
	uri = pushOK(t, ts, q)
	resp = authorize(t, ts, c, url.Values{"client_id": {"demo-app"}, "request_uri": {uri}})
	loc = resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, testRedirect+"?code=") || !strings.Contains(loc, "state=second") {
		t.Fatalf("single sign-on: status %d, Location %q; want a code", resp.StatusCode, loc)
	}
}

func TestPARRequestURIOnce(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		c.Clients = append(c.Clients, idp.Client{ID: "other", Secret: "other-secret", RedirectURIs: []string{"https://other.example/cb"}})
	})
	_, challenge := pkce("o")

	t.Run("replay", func(t *testing.T) {
		uri := pushOK(t, ts, authorizeParams(challenge))
		q := url.Values{"client_id": {"demo-app"}, "request_uri": {uri}}
		if resp := authorize(t, ts, browser(t), q); resp.StatusCode != http.StatusFound || !strings.Contains(resp.Header.Get("Location"), "/account/login") {
			t.Fatalf("first use: status %d, Location %q; want the login page", resp.StatusCode, resp.Header.Get("Location"))
		}
		wantPage(t, authorize(t, ts, browser(t), q), http.StatusBadRequest)
	})

	t.Run("concurrent uses, one wins", func(t *testing.T) {
		uri := pushOK(t, ts, authorizeParams(challenge))
		q := url.Values{"client_id": {"demo-app"}, "request_uri": {uri}}
		var mu sync.Mutex
		found := 0
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := browser(t).Get(ts.URL + "/connect/authorize?" + q.Encode())
				if err != nil {
					return
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusFound {
					mu.Lock()
					found++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if found != 1 {
			t.Fatalf("%d uses of one request_uri succeeded, want 1", found)
		}
	})

	t.Run("expired", func(t *testing.T) {
		uri := pushOK(t, ts, authorizeParams(challenge))
		ts.clock.Advance(61 * time.Second)
		wantPage(t, authorize(t, ts, browser(t), url.Values{"client_id": {"demo-app"}, "request_uri": {uri}}), http.StatusBadRequest)
	})

	t.Run("unknown", func(t *testing.T) {
		wantPage(t, authorize(t, ts, browser(t), url.Values{"client_id": {"demo-app"}, "request_uri": {requestURIPrefix + "nope"}}), http.StatusBadRequest)
	})

	t.Run("other client's, not used up", func(t *testing.T) {
		uri := pushOK(t, ts, authorizeParams(challenge))
		// The other client's redirect URI on the URL changes nothing: the
		// answer is a page, never a redirect.
		q := url.Values{"client_id": {"other"}, "request_uri": {uri}, "redirect_uri": {"https://other.example/cb"}}
		wantPage(t, authorize(t, ts, browser(t), q), http.StatusBadRequest)
		q = url.Values{"client_id": {"demo-app"}, "request_uri": {uri}}
		if resp := authorize(t, ts, browser(t), q); resp.StatusCode != http.StatusFound {
			t.Fatalf("its own client: status %d, want 302", resp.StatusCode)
		}
	})

	for _, tt := range []struct {
		name string
		q    func(uri string) url.Values
	}{
		{"no client_id", func(uri string) url.Values { return url.Values{"request_uri": {uri}} }},
		{"unknown client_id", func(uri string) url.Values { return url.Values{"client_id": {"nope"}, "request_uri": {uri}} }},
		{"two client_ids", func(uri string) url.Values {
			return url.Values{"client_id": {"demo-app", "demo-app"}, "request_uri": {uri}}
		}},
		{"two request_uris", func(uri string) url.Values {
			return url.Values{"client_id": {"demo-app"}, "request_uri": {uri, uri}}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantPage(t, authorize(t, ts, browser(t), tt.q(pushOK(t, ts, authorizeParams(challenge)))), http.StatusBadRequest)
		})
	}
}

func TestPARClientAuthentication(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		c.Clients = append(c.Clients, idp.Client{ID: "spa", Public: true, RedirectURIs: []string{"https://spa.example/cb"}})
	})
	_, challenge := pkce("a")
	spa := authorizeParams(challenge)
	spa.Set("client_id", "spa")
	spa.Set("redirect_uri", "https://spa.example/cb")
	with := func(q url.Values, kv ...string) url.Values {
		out := url.Values{}
		for k, v := range q {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				out.Del(kv[i])
			} else {
				out.Set(kv[i], kv[i+1])
			}
		}
		return out
	}
	tests := []struct {
		name       string
		id, secret string // Basic credentials
		form       url.Values
		status     int
		err        string
	}{
		{name: "basic", id: "demo-app", secret: testSecret, form: authorizeParams(challenge), status: 201},
		{name: "post", form: with(authorizeParams(challenge), "client_secret", testSecret), status: 201},
		{name: "public client, client_id only", form: spa, status: 201},
		{name: "confidential client without secret", form: authorizeParams(challenge), status: 401, err: "invalid_client"},
		{name: "wrong secret", id: "demo-app", secret: "nope", form: authorizeParams(challenge), status: 401, err: "invalid_client"},
		{name: "wrong secret in form", form: with(authorizeParams(challenge), "client_secret", "nope"), status: 401, err: "invalid_client"},
		{name: "no credentials at all", form: with(authorizeParams(challenge), "client_id", ""), status: 401, err: "invalid_client"},
		{name: "unknown client", form: with(authorizeParams(challenge), "client_id", "nope", "client_secret", "x"), status: 401, err: "invalid_client"},
		{name: "public client with a secret", form: with(spa, "client_secret", "x"), status: 401, err: "invalid_client"},
		{name: "two methods", id: "demo-app", secret: testSecret, form: with(authorizeParams(challenge), "client_secret", testSecret), status: 400, err: "invalid_request"},
		{name: "basic for another client_id", id: "demo-app", secret: testSecret, form: with(authorizeParams(challenge), "client_id", "spa"), status: 400, err: "invalid_request"},
		{name: "basic without client_id", id: "demo-app", secret: testSecret, form: with(authorizeParams(challenge), "client_id", ""), status: 400, err: "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := push(t, ts, tt.id, tt.secret, tt.form)
			if r.resp.StatusCode != tt.status || r.Error != tt.err {
				t.Fatalf("status %d, error %q; want %d %q: %s", r.resp.StatusCode, r.Error, tt.status, tt.err, r.body)
			}
			if tt.status == 401 && r.resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
			if tt.status != 201 && !strings.Contains(r.resp.Header.Get("Cache-Control"), "no-store") {
				t.Errorf("error without Cache-Control: no-store")
			}
		})
	}

	t.Run("public client completes the flow", func(t *testing.T) {
		verifier, challenge := pkce("s")
		q := with(spa, "code_challenge", challenge)
		r := push(t, ts, "", "", q)
		if r.resp.StatusCode != http.StatusCreated {
			t.Fatalf("PAR: %d %s", r.resp.StatusCode, r.body)
		}
		u := login(t, ts, browser(t), url.Values{"client_id": {"spa"}, "request_uri": {r.RequestURI}}, "alice", testPassword)
		form := exchangeForm(u.Query().Get("code"), verifier)
		form.Set("redirect_uri", "https://spa.example/cb")
		form.Set("client_id", "spa")
		if resp, body := postToken(t, ts, "", "", form); resp.StatusCode != http.StatusOK {
			t.Fatalf("exchange: %d %s", resp.StatusCode, body)
		}
	})
}

// TestPARErrorsMatchAuthorize: a pushed request is checked as the
// authorization endpoint checks it, and gets its error as JSON (RFC 9126
// §2.3): the error the endpoint would redirect with, or invalid_request
// where it would show a page.
func TestPARErrorsMatchAuthorize(t *testing.T) {
	_, challenge := pkce("v")
	edits := []struct {
		name string
		edit func(url.Values)
	}{
		{"unregistered redirect_uri", func(q url.Values) { q.Set("redirect_uri", "https://evil.example/cb") }},
		{"no redirect_uri", func(q url.Values) { q.Del("redirect_uri") }},
		{"two redirect_uris", func(q url.Values) { q.Add("redirect_uri", testRedirect) }},
		{"no response_type", func(q url.Values) { q.Del("response_type") }},
		{"token response_type", func(q url.Values) { q.Set("response_type", "token") }},
		{"unknown response_mode", func(q url.Values) { q.Set("response_mode", "web_message") }},
		{"no scope", func(q url.Values) { q.Del("scope") }},
		{"unknown scope", func(q url.Values) { q.Set("scope", "openid admin") }},
		{"scope not allowed", func(q url.Values) { q.Set("scope", "openid phone") }},
		{"no code_challenge", func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") }},
		{"plain PKCE", func(q url.Values) { q.Set("code_challenge_method", "plain") }},
		{"short code_challenge", func(q url.Values) { q.Set("code_challenge", "abc") }},
		{"request object", func(q url.Values) { q.Set("request", "eyJ.x.y") }},
		{"unknown prompt", func(q url.Values) { q.Set("prompt", "maybe") }},
		{"prompt none with login", func(q url.Values) { q.Set("prompt", "none login") }},
		{"bad max_age", func(q url.Values) { q.Set("max_age", "-1") }},
		{"repeated state", func(q url.Values) { q.Add("state", "x") }},
		{"foreign id_token_hint", func(q url.Values) { q.Set("id_token_hint", "eyJhbGciOiJub25lIn0.e30.") }},
	}
	ts := newServer(t, nil)
	for _, tt := range edits {
		t.Run(tt.name, func(t *testing.T) {
			q := authorizeParams(challenge)
			tt.edit(q)
			want := "invalid_request" // for an error page
			resp := authorize(t, ts, browser(t), q)
			if loc, err := resp.Location(); err == nil {
				want = loc.Query().Get("error")
			} else if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("authorize: status %d, want an error", resp.StatusCode)
			}
			if want == "" {
				t.Fatalf("authorize accepted the request")
			}
			r := push(t, ts, "demo-app", testSecret, q)
			if r.resp.StatusCode != http.StatusBadRequest || r.Error != want || !strings.Contains(r.resp.Header.Get("Cache-Control"), "no-store") {
				t.Fatalf("PAR: status %d, error %q, Cache-Control %q; want 400 %q, no-store", r.resp.StatusCode, r.Error, r.resp.Header.Get("Cache-Control"), want)
			}
		})
	}

	t.Run("request_uri cannot be pushed", func(t *testing.T) {
		for _, v := range []string{"https://x.example/r", requestURIPrefix + "abc"} {
			q := authorizeParams(challenge)
			q.Set("request_uri", v)
			if r := push(t, ts, "demo-app", testSecret, q); r.resp.StatusCode != http.StatusBadRequest || r.Error != "invalid_request" {
				t.Fatalf("request_uri %q: status %d, error %q; want 400 invalid_request", v, r.resp.StatusCode, r.Error)
			}
		}
	})
	t.Run("GET", func(t *testing.T) {
		resp, err := http.Get(ts.URL + "/connect/par?" + authorizeParams(challenge).Encode())
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
			t.Fatalf("status %d, Allow %q; want 405, POST", resp.StatusCode, resp.Header.Get("Allow"))
		}
	})
	t.Run("not a form", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/connect/par", strings.NewReader(`{"client_id":"demo-app"}`))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("demo-app", testSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "invalid_request") {
			t.Fatalf("status %d %s; want 400 invalid_request", resp.StatusCode, body)
		}
	})
}

// recordingStore remembers every value put, to look for secrets.
type recordingStore struct {
	idp.Store
	mu   sync.Mutex
	puts []string
}

func (s *recordingStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	s.mu.Lock()
	s.puts = append(s.puts, key+" "+string(value))
	s.mu.Unlock()
	return s.Store.Put(ctx, key, value, ttl)
}

func TestPARKeepsNoSecret(t *testing.T) {
	rec := &recordingStore{}
	ts := newServerWithStore(t, nil, func(s idp.Store) idp.Store { rec.Store = s; return rec })
	_, challenge := pkce("k")
	q := authorizeParams(challenge)
	q.Set("client_secret", testSecret)
	r := push(t, ts, "", "", q)
	if r.resp.StatusCode != http.StatusCreated {
		t.Fatalf("PAR: %d %s", r.resp.StatusCode, r.body)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.puts) != 1 {
		t.Fatalf("%d puts, want 1", len(rec.puts))
	}
	for _, p := range rec.puts {
		if strings.Contains(p, testSecret) || strings.Contains(p, strings.TrimPrefix(r.RequestURI, requestURIPrefix)) {
			t.Fatalf("the store holds the client secret or the request_uri: %s", p)
		}
		if !strings.Contains(p, challenge) {
			t.Fatalf("the store does not hold the pushed request: %s", p)
		}
	}
}

func TestPARRequired(t *testing.T) {
	_, challenge := pkce("r")
	for _, tt := range []struct {
		name      string
		edit      func(*idp.Config)
		discovery bool
	}{
		{"by the client", func(c *idp.Config) { c.Clients[0].RequirePushedAuthorizationRequests = true }, false},
		{"by the provider", func(c *idp.Config) { c.RequirePushedAuthorizationRequests = true }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := newServer(t, tt.edit)
			resp := authorize(t, ts, browser(t), authorizeParams(challenge))
			loc, err := resp.Location()
			if err != nil || !strings.HasPrefix(loc.String(), testRedirect+"?") || loc.Query().Get("error") != "invalid_request" || loc.Query().Get("state") != "st-123" {
				t.Fatalf("plain authorize: status %d, Location %v; want invalid_request at the redirect URI", resp.StatusCode, loc)
			}
			// An unregistered redirect URI still gets a page, not a redirect.
			q := authorizeParams(challenge)
			q.Set("redirect_uri", "https://evil.example/cb")
			wantPage(t, authorize(t, ts, browser(t), q), http.StatusBadRequest)

			uri := pushOK(t, ts, authorizeParams(challenge))
			u := login(t, ts, browser(t), url.Values{"client_id": {"demo-app"}, "request_uri": {uri}}, "alice", testPassword)
			if u.Query().Get("code") == "" {
				t.Fatalf("pushed request: callback %s, want a code", u)
			}

			dresp, err := http.Get(ts.URL + "/.well-known/openid-configuration")
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := jsonUnmarshal(readBody(t, dresp), &doc); err != nil {
				t.Fatal(err)
			}
			if doc["pushed_authorization_request_endpoint"] != ts.URL+"/connect/par" || doc["require_pushed_authorization_requests"] != tt.discovery {
				t.Fatalf("discovery: endpoint %v, required %v; want %s, %v", doc["pushed_authorization_request_endpoint"],
					doc["require_pushed_authorization_requests"], ts.URL+"/connect/par", tt.discovery)
			}
		})
	}
}

func TestPARCORS(t *testing.T) {
	ts := newServer(t, func(c *idp.Config) {
		c.Clients = append(c.Clients, idp.Client{ID: "spa", Public: true, RedirectURIs: []string{"https://spa.example/cb"}, CORSOrigins: []string{"https://spa.example"}})
	})
	req, _ := http.NewRequest(http.MethodOptions, ts.URL+"/connect/par", nil)
	req.Header.Set("Origin", "https://spa.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://spa.example" {
		t.Fatalf("preflight: status %d, no CORS for the SPA's origin", resp.StatusCode)
	}
}

// FuzzPushedAuthorization pushes any body with any Authorization header:
// the answer is 201 or a JSON OAuth error with no-store, never 5xx; a
// request_uri it gives leads the browser only to the login page or the
// registered redirect URI, and only once.
func FuzzPushedAuthorization(f *testing.F) {
	_, ch := pkce("f")
	f.Add(authorizeParams(ch).Encode(), "Basic ZGVtby1hcHA6ZGVtby1hcHAtc2VjcmV0")
	f.Add(authorizeParams(ch).Encode()+"&client_secret=demo-app-secret&response_mode=form_post&prompt=none", "")
	f.Add("client_id=demo-app&request_uri=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3Ax", "Basic ZGVtby1hcHA6ZGVtby1hcHAtc2VjcmV0")
	f.Add("client_id=demo-app&redirect_uri=%zz&scope=&scope=x", "Basic !!!")
	f.Add("", "")
	ts := newServer(f, nil)
	f.Fuzz(func(t *testing.T, body, auth string) {
		r := httptest.NewRequest(http.MethodPost, "/connect/par", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if auth != "" {
			r.Header["Authorization"] = []string{auth}
		}
		w := httptest.NewRecorder()
		ts.Provider.ServeHTTP(w, r)
		if w.Header().Get("Cache-Control") != "no-store" {
			t.Fatalf("body %q auth %q: no Cache-Control: no-store", body, auth)
		}
		var got struct {
			RequestURI string `json:"request_uri"`
			Error      string `json:"error"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatalf("body %q auth %q: not JSON: %s", body, auth, w.Body)
		}
		switch {
		case w.Code == http.StatusCreated && strings.HasPrefix(got.RequestURI, requestURIPrefix):
		case (w.Code == http.StatusBadRequest || w.Code == http.StatusUnauthorized) && got.Error != "":
			return
		default:
			t.Fatalf("body %q auth %q: status %d: %s", body, auth, w.Code, w.Body)
		}
		q := url.Values{"client_id": {"demo-app"}, "request_uri": {got.RequestURI}}
		for i := range 2 {
			r := httptest.NewRequest(http.MethodGet, "/connect/authorize?"+q.Encode(), nil)
			w := httptest.NewRecorder()
			ts.Provider.ServeHTTP(w, r)
			loc := w.Header().Get("Location")
			switch {
			case i == 1 && (w.Code != http.StatusBadRequest || loc != ""):
				t.Fatalf("body %q: second use: status %d, Location %q", body, w.Code, loc)
			case i == 0 && w.Code == http.StatusOK && strings.Contains(w.Body.String(), testRedirect):
				// form_post to the registered redirect URI
			case i == 0 && !strings.HasPrefix(loc, testRedirect) && !strings.HasPrefix(loc, "/account/login?"):
				t.Fatalf("body %q: status %d, redirect to %q", body, w.Code, loc)
			}
		}
	})
}

// TestPARStoreFails: a store that fails the push gets the client 503
// temporarily_unavailable; one that fails the take gets the browser a
// 503 page, not a redirect; neither is a 500.
func TestPARStoreFails(t *testing.T) {
	ts, ns := newNthServer(t, 0)
	_, challenge := pkce("d")
	ns.arm(1, true)
	r := push(t, ts, "demo-app", testSecret, authorizeParams(challenge))
	ns.disarm()
	if r.resp.StatusCode != http.StatusServiceUnavailable || r.Error != "temporarily_unavailable" || r.resp.Header.Get("Retry-After") == "" {
		t.Fatalf("push: status %d, error %q; want 503 temporarily_unavailable with Retry-After", r.resp.StatusCode, r.Error)
	}
	uri := pushOK(t, ts, authorizeParams(challenge))
	ns.arm(1, true)
	resp := authorize(t, ts, browser(t), url.Values{"client_id": {"demo-app"}, "request_uri": {uri}})
	ns.disarm()
	wantPage(t, resp, http.StatusServiceUnavailable)
	if resp.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
}

// lazyStore keeps entries ten times longer than asked, as a store whose
// expiry lags might.
type lazyStore struct{ idp.Store }

func (s lazyStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return s.Store.Put(ctx, key, value, 10*ttl)
}

// TestPARExpiredInLazyStore: a request_uri past its expires_in is refused
// even when the store still holds it.
func TestPARExpiredInLazyStore(t *testing.T) {
	ts := newServerWithStore(t, nil, func(s idp.Store) idp.Store { return lazyStore{s} })
	_, challenge := pkce("l")
	uri := pushOK(t, ts, authorizeParams(challenge))
	ts.clock.Advance(62 * time.Second)
	wantPage(t, authorize(t, ts, browser(t), url.Values{"client_id": {"demo-app"}, "request_uri": {uri}}), http.StatusBadRequest)
}
