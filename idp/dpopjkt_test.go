package idp_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/idp/dpop"
)

// jkt is the RFC 7638 thumbprint of k, as dpop_jkt carries it.
func (k *dpopKey) jkt(t testing.TB) string {
	t.Helper()
	p, err := dpop.Verify(k.proof(t, time.Now(), "POST", "https://x.example/", "", ""),
		dpop.Check{Method: "POST", URL: mustURL("https://x.example/"), Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return p.JKT
}

// pushWithProof posts form to the PAR endpoint as demo-app, with proof as
// the DPoP header when it is set.
func pushWithProof(t testing.TB, ts *testServer, proof string, form url.Values) parResult {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, ts.URL+"/connect/par", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("demo-app", testSecret)
	if proof != "" {
		req.Header.Set("DPoP", proof)
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

// boundCode logs alice in through demo-app with q's extra parameters
// (dpop_jkt) and returns the exchange form of the code.
func boundCode(t *testing.T, ts *testServer, extra url.Values) url.Values {
	t.Helper()
	v, ch := pkce("j")
	q := authorizeParams(ch)
	for k, vs := range extra {
		q[k] = vs
	}
	u := login(t, ts, browser(t), q, "alice", testPassword)
	if u.Query().Get("code") == "" {
		t.Fatalf("no code: %s", u)
	}
	return exchangeForm(u.Query().Get("code"), v)
}

// TestDPoPJKTCodeBinding: a code asked for with dpop_jkt (RFC 9449 §10)
// is redeemed only with a proof of that key: another key, or no proof, is
// refused with invalid_grant, and the code is then used up.
func TestDPoPJKTCodeBinding(t *testing.T) {
	ts := dpopServer(t, nil)
	tokenURL := ts.URL + "/connect/token"
	key, other := newDPoPKey(t), newDPoPKey(t)
	bind := url.Values{"dpop_jkt": {key.jkt(t)}}

	cases := []struct {
		name  string
		proof func() string
	}{
		{"another key", func() string { return other.proof(t, ts.clock.Now(), "POST", tokenURL, "", "") }},
		{"no proof", func() string { return "" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			form := boundCode(t, ts, bind)
			resp, body := tokenReq(t, ts, "demo-app", testSecret, c.proof(), form)
			if resp.StatusCode != 400 || body["error"] != "invalid_grant" || resp.Header.Get("Cache-Control") != "no-store" {
				t.Fatalf("%d %v; want 400 invalid_grant", resp.StatusCode, body)
			}
			// The refused attempt used the code up, as a wrong
			// code_verifier does: the key's holder cannot redeem it now.
			resp, body = tokenReq(t, ts, "demo-app", testSecret, key.proof(t, ts.clock.Now(), "POST", tokenURL, "", ""), form)
			if resp.StatusCode != 400 || body["error"] != "invalid_grant" {
				t.Fatalf("after a refusal: %d %v", resp.StatusCode, body)
			}
		})
	}

	t.Run("the key", func(t *testing.T) {
		form := boundCode(t, ts, bind)
		resp, body := tokenReq(t, ts, "demo-app", testSecret, key.proof(t, ts.clock.Now(), "POST", tokenURL, "", ""), form)
		if resp.StatusCode != 200 || body["token_type"] != "DPoP" || jktOf(t, body["access_token"].(string)) != key.jkt(t) {
			t.Fatalf("%d %v", resp.StatusCode, body)
		}
	})

	t.Run("require_dpop client", func(t *testing.T) {
		// spa requires DPoP anyway; dpop_jkt adds that the proof be of
		// this key.
		for _, c := range []struct {
			name string
			k    *dpopKey
			code int
			err  string
		}{{"another key", other, 400, "invalid_grant"}, {"the key", key, 200, ""}} {
			v, ch := pkce("s")
			q := authorizeParams(ch)
			q.Set("client_id", "spa")
			q.Set("dpop_jkt", key.jkt(t))
			u := login(t, ts, browser(t), q, "alice", testPassword)
			form := exchangeForm(u.Query().Get("code"), v)
			form.Set("client_id", "spa")
			resp, body := tokenReq(t, ts, "", "", c.k.proof(t, ts.clock.Now(), "POST", tokenURL, "", ""), form)
			if resp.StatusCode != c.code || c.err != "" && body["error"] != c.err {
				t.Errorf("%s: %d %v", c.name, resp.StatusCode, body)
			}
		}
	})

	t.Run("unbound code", func(t *testing.T) {
		// Without dpop_jkt nothing changes: demo-app may go without a
		// proof, or bind its tokens to any key.
		if resp, body := tokenReq(t, ts, "demo-app", testSecret, "", boundCode(t, ts, nil)); resp.StatusCode != 200 || body["token_type"] != "Bearer" {
			t.Errorf("no proof: %d %v", resp.StatusCode, body)
		}
		if resp, body := tokenReq(t, ts, "demo-app", testSecret, other.proof(t, ts.clock.Now(), "POST", tokenURL, "", ""), boundCode(t, ts, nil)); resp.StatusCode != 200 || body["token_type"] != "DPoP" {
			t.Errorf("a proof: %d %v", resp.StatusCode, body)
		}
	})
}

// TestDPoPJKTMalformed: a dpop_jkt that is not a SHA-256 thumbprint, or
// one given twice, is refused like any bad parameter: invalid_request to
// the redirect URI at the authorization endpoint, in JSON at PAR.
func TestDPoPJKTMalformed(t *testing.T) {
	ts := newServer(t, nil)
	good := newDPoPKey(t).jkt(t)
	_, ch := pkce("m")
	cases := []struct {
		name string
		vals []string
	}{
		{"too short", []string{good[:42]}},
		{"too long", []string{good + "A"}},
		{"padded", []string{good + "="}},
		{"standard base64", []string{"+" + good[1:]}},
		{"not base64", []string{"!" + good[1:]}},
		{"stray low bits", []string{good[:42] + string(strayBits(good[42]))}},
		{"a line break", []string{good[:21] + "\n" + good[22:]}},
		{"given twice", []string{good, good}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := authorizeParams(ch)
			q["dpop_jkt"] = c.vals
			resp := authorize(t, ts, browser(t), q)
			loc, _ := url.Parse(resp.Header.Get("Location"))
			if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc.String(), testRedirect+"?") ||
				loc.Query().Get("error") != "invalid_request" || loc.Query().Get("state") != "st-123" {
				t.Errorf("authorize: %d %s; want invalid_request to the client", resp.StatusCode, loc)
			}
			if r := pushWithProof(t, ts, "", q); r.resp.StatusCode != 400 || r.Error != "invalid_request" {
				t.Errorf("PAR: %d %s", r.resp.StatusCode, r.body)
			}
		})
	}
	// An empty dpop_jkt is no dpop_jkt (RFC 6749 §3.1).
	q := authorizeParams(ch)
	q.Set("dpop_jkt", "")
	if resp := authorize(t, ts, browser(t), q); !strings.Contains(resp.Header.Get("Location"), "/account/login") {
		t.Errorf("empty dpop_jkt: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// strayBits is c, the last character of a 43-character base64url string,
// with one of the two low bits set that encode nothing.
func strayBits(c byte) byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	return alphabet[strings.IndexByte(alphabet, c)|1]
}

// TestDPoPJKTPushed: RFC 9449 §10.1. A pushed request binds its code by
// dpop_jkt in the body, or by a DPoP proof on the push itself, which is
// checked as at the token endpoint; with both, they must agree.
func TestDPoPJKTPushed(t *testing.T) {
	ts := dpopServer(t, nil)
	parURL, tokenURL := ts.URL+"/connect/par", ts.URL+"/connect/token"
	key, other := newDPoPKey(t), newDPoPKey(t)
	now := ts.clock.Now

	// redeem pushes q (with proof, if set), logs alice in with its
	// request_uri, and redeems the code with a proof of k.
	redeem := func(t *testing.T, proof string, extra url.Values, k *dpopKey) (*http.Response, map[string]any) {
		t.Helper()
		v, ch := pkce("p")
		q := authorizeParams(ch)
		for name, vs := range extra {
			q[name] = vs
		}
		r := pushWithProof(t, ts, proof, q)
		if r.resp.StatusCode != http.StatusCreated {
			t.Fatalf("PAR: %d %s", r.resp.StatusCode, r.body)
		}
		u := login(t, ts, browser(t), url.Values{"client_id": {"demo-app"}, "request_uri": {r.RequestURI}}, "alice", testPassword)
		return tokenReq(t, ts, "demo-app", testSecret, k.proof(t, now(), "POST", tokenURL, "", ""), exchangeForm(u.Query().Get("code"), v))
	}

	t.Run("DPoP header binds", func(t *testing.T) {
		if resp, body := redeem(t, key.proof(t, now(), "POST", parURL, "", ""), nil, other); resp.StatusCode != 400 || body["error"] != "invalid_grant" {
			t.Errorf("another key: %d %v", resp.StatusCode, body)
		}
		resp, body := redeem(t, key.proof(t, now(), "POST", parURL, "", ""), nil, key)
		if resp.StatusCode != 200 || jktOf(t, body["access_token"].(string)) != key.jkt(t) {
			t.Errorf("the key: %d %v", resp.StatusCode, body)
		}
	})
	t.Run("dpop_jkt in the body binds", func(t *testing.T) {
		if resp, body := redeem(t, "", url.Values{"dpop_jkt": {key.jkt(t)}}, other); resp.StatusCode != 400 || body["error"] != "invalid_grant" {
			t.Errorf("another key: %d %v", resp.StatusCode, body)
		}
	})
	t.Run("both, agreeing", func(t *testing.T) {
		if resp, body := redeem(t, key.proof(t, now(), "POST", parURL, "", ""), url.Values{"dpop_jkt": {key.jkt(t)}}, key); resp.StatusCode != 200 {
			t.Errorf("%d %v", resp.StatusCode, body)
		}
	})

	_, ch := pkce("p")
	cases := []struct {
		name, proof, jkt, want string
	}{
		{"dpop_jkt of another key than the header's", key.proof(t, now(), "POST", parURL, "", ""), other.jkt(t), "invalid_request"},
		{"proof for the token endpoint", key.proof(t, now(), "POST", tokenURL, "", ""), "", "invalid_dpop_proof"},
		{"stale proof", key.proof(t, now().Add(-10*time.Minute), "POST", parURL, "", ""), "", "invalid_dpop_proof"},
		{"not a JWT", "not-a-proof", "", "invalid_dpop_proof"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := authorizeParams(ch)
			if c.jkt != "" {
				q.Set("dpop_jkt", c.jkt)
			}
			r := pushWithProof(t, ts, c.proof, q)
			if r.resp.StatusCode != 400 || r.Error != c.want || r.resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("%d %s; want 400 %s", r.resp.StatusCode, r.body, c.want)
			}
		})
	}

	t.Run("replayed proof", func(t *testing.T) {
		proof := key.proof(t, now(), "POST", parURL, "", "")
		if r := pushWithProof(t, ts, proof, authorizeParams(ch)); r.resp.StatusCode != http.StatusCreated {
			t.Fatalf("first: %d %s", r.resp.StatusCode, r.body)
		}
		if r := pushWithProof(t, ts, proof, authorizeParams(ch)); r.resp.StatusCode != 400 || r.Error != "invalid_dpop_proof" {
			t.Errorf("again: %d %s", r.resp.StatusCode, r.body)
		}
	})
}

// TestDPoPJKTPushedNonce: with dpop_nonce, a proof on a push needs the
// provider's nonce too (RFC 9449 §8), handed out in DPoP-Nonce.
func TestDPoPJKTPushedNonce(t *testing.T) {
	ts := dpopServer(t, func(c *idp.Config) { c.DPoPNonce = true })
	parURL := ts.URL + "/connect/par"
	key := newDPoPKey(t)
	_, ch := pkce("n")
	r := pushWithProof(t, ts, key.proof(t, ts.clock.Now(), "POST", parURL, "", ""), authorizeParams(ch))
	nonce := r.resp.Header.Get("DPoP-Nonce")
	if r.resp.StatusCode != 400 || r.Error != "use_dpop_nonce" || nonce == "" {
		t.Fatalf("without a nonce: %d %s, nonce %q", r.resp.StatusCode, r.body, nonce)
	}
	if r := pushWithProof(t, ts, key.proof(t, ts.clock.Now(), "POST", parURL, "", nonce), authorizeParams(ch)); r.resp.StatusCode != http.StatusCreated || r.resp.Header.Get("DPoP-Nonce") == "" {
		t.Fatalf("with the nonce: %d %s", r.resp.StatusCode, r.body)
	}
	// Without a proof a push needs no nonce.
	if r := pushWithProof(t, ts, "", authorizeParams(ch)); r.resp.StatusCode != http.StatusCreated {
		t.Fatalf("without a proof: %d %s", r.resp.StatusCode, r.body)
	}
}
