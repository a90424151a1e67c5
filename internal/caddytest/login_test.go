package caddytest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// TestLogin submits a login page shaped as the provider's: the hidden
// fields go back unescaped, with the credentials, to the form's action.
func TestLogin(t *testing.T) {
	const (
		csrf    = "c&sr/f"
		request = `re"q`
		cb      = "http://app.test/callback?code=abc"
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /account/login", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<form method="post" action="/account/login">
<input type="hidden" name="csrf_token" value="c&amp;sr/f">
<input type="hidden" name="request" value="re&#34;q">
<input type="text" id="username" name="username" value="" required autofocus>
</form>`)
	})
	mux.HandleFunc("POST /account/login", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			t.Errorf("posted to %s, want the form's action without a query", r.URL)
		}
		want := map[string]string{"csrf_token": csrf, "request": request, "username": "alice", "password": "pw"}
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		for name, v := range want {
			if got := r.PostForm.Get(name); got != v {
				t.Errorf("posted %s = %q, want %q", name, got, v)
			}
		}
		http.Redirect(w, r, cb, http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	loginURL, err := url.Parse(srv.URL + "/account/login?request=x")
	if err != nil {
		t.Fatal(err)
	}
	if got := Login(t, NewBrowser(t), loginURL, "alice", "pw"); got.String() != cb {
		t.Errorf("Login returned %s, want %s", got, cb)
	}
}
