package idp_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
)

// eventLog records the events of a provider.
type eventLog struct {
	mu     sync.Mutex
	events []idp.Event
}

func (l *eventLog) record(_ context.Context, e idp.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

// take returns the events recorded since the last take.
func (l *eventLog) take() []idp.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.events
	l.events = nil
	return out
}

// all returns every event recorded, without taking them.
func (l *eventLog) all() []idp.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]idp.Event(nil), l.events...)
}

// awaitEvent waits, boundedly, for an event that match accepts.
func (l *eventLog) await(t testing.TB, what string, match func(idp.Event) bool) idp.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, e := range l.all() {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event; got %+v", what, l.all())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// withEvents records the provider's events in l.
func withEvents(l *eventLog, edit func(*idp.Config)) func(*idp.Config) {
	return func(c *idp.Config) {
		if edit != nil {
			edit(c)
		}
		c.Events = l.record
	}
}

// eventLogin posts username and password to the login page of the
// authorization request q, in c, and returns the response status.
func eventLogin(t testing.TB, ts *testServer, c *http.Client, q url.Values, username, password string) int {
	t.Helper()
	resp := authorize(t, ts, c, q)
	form := loginForm(t, c, ts.URL, resp.Header.Get("Location"))
	form.Set("username", username)
	form.Set("password", password)
	resp, err := c.PostForm(ts.URL+"/account/login", form)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	return resp.StatusCode
}

// checkEvent compares the fields of got that want sets, and that the
// request's address and user agent are there.
func checkEvent(t testing.TB, got, want idp.Event) {
	t.Helper()
	w := want
	g := got
	if w.Subject == "" {
		g.Subject = ""
	}
	if w.SID == "" {
		g.SID = ""
	}
	g.RemoteIP, g.UserAgent = "", ""
	if g != w {
		t.Errorf("event %+v, want %+v", got, want)
	}
	if got.RemoteIP != "127.0.0.1" || got.UserAgent == "" {
		t.Errorf("event %+v: want the client's remote_ip and user agent", got)
	}
}

// TestEvents: the provider reports each security event with who, what
// client and what came of it, and never a password, secret, code or token
// (issue 11 §2).
func TestEvents(t *testing.T) {
	const wrongPassword = "Wrong-Pass-Word-42"
	var l eventLog
	ts := newServer(t, withEvents(&l, func(c *idp.Config) {
		c.Clients[0].AllowOfflineAccess = true
		c.Clients[0].AllowPasswordGrant = true
		withBob(c)
		c.Users[1].Disabled = true
	}))
	sub := idp.DeriveSubject("alice")
	secrets := []string{testPassword, testSecret, wrongPassword}

	v, ch := pkce("v")
	q := authorizeParams(ch)
	q.Set("scope", "openid profile offline_access")
	c := browser(t)
	if st := eventLogin(t, ts, c, q, "alice", wrongPassword); st != http.StatusOK {
		t.Fatalf("wrong password: status %d", st)
	}
	if st := eventLogin(t, ts, c, q, "nobody", testPassword); st != http.StatusOK {
		t.Fatalf("unknown user: status %d", st)
	}
	if st := eventLogin(t, ts, c, q, "bob", testPassword); st != http.StatusOK {
		t.Fatalf("disabled user: status %d", st)
	}
	ev := l.take()
	if len(ev) != 3 {
		t.Fatalf("events %+v, want 3 failed logins", ev)
	}
	checkEvent(t, ev[0], idp.Event{Type: idp.EventLogin, Outcome: idp.OutcomeInvalid, Username: "alice", ClientID: "demo-app"})
	// An unknown user is an invalid login, as a wrong password is.
	checkEvent(t, ev[1], idp.Event{Type: idp.EventLogin, Outcome: idp.OutcomeInvalid, Username: "nobody", ClientID: "demo-app"})
	checkEvent(t, ev[2], idp.Event{Type: idp.EventLogin, Outcome: idp.OutcomeDisabled, Username: "bob", ClientID: "demo-app"})

	u := login(t, ts, c, q, "alice", testPassword)
	code := u.Query().Get("code")
	secrets = append(secrets, code)
	resp, body := postToken(t, ts, "demo-app", testSecret, exchangeForm(code, v))
	var tk tokens
	if err := jsonUnmarshal(body, &tk); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("exchange: %d %s", resp.StatusCode, body)
	}
	secrets = append(secrets, tk.AccessToken, tk.IDToken, tk.RefreshToken)
	sid, _ := idClaims(t, tk.IDToken)["sid"].(string)
	ev = l.take()
	if len(ev) != 2 {
		t.Fatalf("events %+v, want a login and a token", ev)
	}
	checkEvent(t, ev[0], idp.Event{Type: idp.EventLogin, Outcome: idp.OutcomeSuccess, Username: "alice", Subject: sub, ClientID: "demo-app", SID: sid})
	checkEvent(t, ev[1], idp.Event{Type: idp.EventTokenIssued, Subject: sub, ClientID: "demo-app", GrantType: "authorization_code", SID: sid})

	// The code again: a replay, and an invalid_grant.
	postToken(t, ts, "demo-app", testSecret, exchangeForm(code, v))
	ev = l.take()
	if len(ev) != 2 {
		t.Fatalf("events %+v, want a replay and a token error", ev)
	}
	checkEvent(t, ev[0], idp.Event{Type: idp.EventCodeReplay, ClientID: "demo-app"})
	checkEvent(t, ev[1], idp.Event{Type: idp.EventTokenError, Error: "invalid_grant", ClientID: "demo-app", GrantType: "authorization_code"})

	// The code flow's tokens were revoked by the replay: a fresh login.
	tk = signInOffline(t, ts, browser(t))
	secrets = append(secrets, tk.AccessToken, tk.IDToken, tk.RefreshToken)
	l.take()
	st, next, body := refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, "")
	if st != http.StatusOK {
		t.Fatalf("refresh: %d %s", st, body)
	}
	secrets = append(secrets, next.AccessToken, next.IDToken, next.RefreshToken)
	sid, _ = idClaims(t, tk.IDToken)["sid"].(string)
	ev = l.take()
	if len(ev) != 2 {
		t.Fatalf("events %+v, want a refresh and a token", ev)
	}
	checkEvent(t, ev[0], idp.Event{Type: idp.EventRefresh, Outcome: idp.OutcomeRotated, Subject: sub, ClientID: "demo-app", SID: sid})
	checkEvent(t, ev[1], idp.Event{Type: idp.EventTokenIssued, Subject: sub, ClientID: "demo-app", GrantType: "refresh_token", SID: sid})

	// The rotated-out token again: reuse, its family and session revoked.
	refreshWith(t, ts, "demo-app", testSecret, tk.RefreshToken, "")
	ev = l.take()
	if len(ev) != 2 {
		t.Fatalf("events %+v, want a reuse and a token error", ev)
	}
	checkEvent(t, ev[0], idp.Event{Type: idp.EventRefresh, Outcome: idp.OutcomeReuseDetected, Subject: sub, ClientID: "demo-app", SID: sid})
	checkEvent(t, ev[1], idp.Event{Type: idp.EventTokenError, Error: "invalid_grant", ClientID: "demo-app", GrantType: "refresh_token"})
	// Its successor is revoked with the family.
	refreshWith(t, ts, "demo-app", testSecret, next.RefreshToken, "")
	ev = l.take()
	if len(ev) != 2 {
		t.Fatalf("events %+v, want a refused refresh and a token error", ev)
	}
	checkEvent(t, ev[0], idp.Event{Type: idp.EventRefresh, Outcome: idp.OutcomeRevoked, Subject: sub, ClientID: "demo-app", SID: sid})

	// A wrong client secret: invalid_client, naming the client it tried.
	refreshWith(t, ts, "demo-app", testSecret+"-wrong", next.RefreshToken, "")
	secrets = append(secrets, testSecret+"-wrong")
	ev = l.take()
	if len(ev) != 1 {
		t.Fatalf("events %+v, want a token error", ev)
	}
	checkEvent(t, ev[0], idp.Event{Type: idp.EventTokenError, Error: "invalid_client", ClientID: "demo-app", GrantType: "refresh_token"})

	// The password grant: a login and a token; a made-up grant_type is
	// not repeated.
	resp, body = postToken(t, ts, "demo-app", testSecret, url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {testPassword}, "scope": {"openid"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("password grant: %d %s", resp.StatusCode, body)
	}
	secrets = append(secrets, body) // every token of the answer
	postToken(t, ts, "demo-app", testSecret, url.Values{"grant_type": {"urn:made-up"}})
	ev = l.take()
	if len(ev) != 3 {
		t.Fatalf("events %+v, want a login, a token and a token error", ev)
	}
	checkEvent(t, ev[0], idp.Event{Type: idp.EventLogin, Outcome: idp.OutcomeSuccess, Username: "alice", Subject: sub, ClientID: "demo-app", GrantType: "password"})
	checkEvent(t, ev[1], idp.Event{Type: idp.EventTokenIssued, Subject: sub, ClientID: "demo-app", GrantType: "password"})
	checkEvent(t, ev[2], idp.Event{Type: idp.EventTokenError, Error: "unsupported_grant_type", ClientID: "demo-app"})

	// Sign-out from the provider's own page.
	c = browser(t)
	tk = signInOffline(t, ts, c)
	secrets = append(secrets, tk.AccessToken, tk.IDToken, tk.RefreshToken)
	sid, _ = idClaims(t, tk.IDToken)["sid"].(string)
	l.take()
	form := loginForm(t, c, ts.URL, "/account/logout")
	form.Set("decision", "logout")
	postFrom(t, ts, c, "/account/logout", form, sameOrigin)
	ev = l.take()
	if len(ev) != 1 {
		t.Fatalf("events %+v, want a logout", ev)
	}
	checkEvent(t, ev[0], idp.Event{Type: idp.EventLogout, Reason: idp.ReasonAccount, Subject: sub, SID: sid})

	// Admin: alice signed out everywhere.
	if _, _, err := ts.Provider.EndUserSessions(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	ev = l.take()
	if len(ev) != 1 || ev[0].Type != idp.EventAdmin || ev[0].Outcome != idp.ActionEndUserSessions || ev[0].Subject != sub {
		t.Fatalf("events %+v, want the admin action on alice", ev)
	}

	assertNoSecrets(t, l.all(), secrets)
}

// TestEventsThrottled: a login refused by the throttle is reported as
// throttled, with the name that was tried.
func TestEventsThrottled(t *testing.T) {
	var l eventLog
	ts := newServer(t, withEvents(&l, func(c *idp.Config) {
		c.Throttle.UserIP = idp.ThrottleLimit{Free: 1, Base: time.Hour, Max: time.Hour}
	}))
	_, ch := pkce("v")
	q := authorizeParams(ch)
	c := browser(t)
	for range 2 {
		eventLogin(t, ts, c, q, "alice", "guess-guess")
	}
	if st := eventLogin(t, ts, c, q, "alice", testPassword); st != http.StatusTooManyRequests {
		t.Fatalf("third attempt: status %d, want 429", st)
	}
	ev := l.take()
	if len(ev) != 3 {
		t.Fatalf("events %+v, want 3", ev)
	}
	checkEvent(t, ev[2], idp.Event{Type: idp.EventLogin, Outcome: idp.OutcomeThrottled, Username: "alice", ClientID: "demo-app"})
	assertNoSecrets(t, ev, []string{testPassword, "guess-guess"})
}

// TestEventsConsentAndRevocation: consent given, a token revoked, and an
// RP-initiated logout.
func TestEventsConsentAndRevocation(t *testing.T) {
	var l eventLog
	ts := newServer(t, withEvents(&l, func(c *idp.Config) {
		c.Clients[0].RequireConsent = true
		c.Clients[0].AllowOfflineAccess = true
	}))
	sub := idp.DeriveSubject("alice")
	v, ch := pkce("v")
	q := authorizeParams(ch)
	q.Set("scope", "openid offline_access")
	c := browser(t)
	resp := authorize(t, ts, c, q)
	form := loginForm(t, c, ts.URL, resp.Header.Get("Location"))
	form.Set("username", "alice")
	form.Set("password", testPassword)
	resp, err := c.PostForm(ts.URL+"/account/login", form)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	form = loginForm(t, c, ts.URL, resp.Header.Get("Location"))
	form.Set("decision", "allow")
	resp, body := postFrom(t, ts, c, "/account/consent", form, sameOrigin)
	loc, _ := url.Parse(resp.Header.Get("Location"))
	code := loc.Query().Get("code")
	if code == "" {
		t.Fatalf("consent: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	resp, body = postToken(t, ts, "demo-app", testSecret, exchangeForm(code, v))
	var tk tokens
	if err := jsonUnmarshal(body, &tk); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("exchange: %d %s", resp.StatusCode, body)
	}
	sid, _ := idClaims(t, tk.IDToken)["sid"].(string)
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/connect/revocation", strings.NewReader(url.Values{"token": {tk.RefreshToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("demo-app", testSecret)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("revocation: %v %v", resp, err)
	}
	r, err := c.Get(ts.URL + "/connect/endsession?" + url.Values{"id_token_hint": {tk.IDToken}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, r)

	var got []string
	for _, e := range l.all() {
		got = append(got, e.Type+"/"+e.Outcome+e.Reason)
	}
	want := []string{"login/success", "consent/granted", "token_issued/", "token_revoked/refresh_token", "logout/rp_initiated"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	ev := l.all()
	checkEvent(t, ev[1], idp.Event{Type: idp.EventConsent, Outcome: idp.OutcomeGranted, Subject: sub, ClientID: "demo-app", SID: sid})
	checkEvent(t, ev[3], idp.Event{Type: idp.EventTokenRevoked, Reason: "refresh_token", Subject: sub, ClientID: "demo-app", SID: sid})
	checkEvent(t, ev[4], idp.Event{Type: idp.EventLogout, Reason: idp.ReasonRPInitiated, Subject: sub, ClientID: "demo-app", SID: sid})
	assertNoSecrets(t, ev, []string{testPassword, testSecret, code, tk.AccessToken, tk.IDToken, tk.RefreshToken})
}

// TestEventsBackchannel: a delivery that fails once is retried, then
// delivered; each attempt is an event.
func TestEventsBackchannel(t *testing.T) {
	var l eventLog
	rc := newReceiver(t, func(call int) int {
		if call == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	ts := newServer(t, withEvents(&l, func(c *idp.Config) {
		withBackchannel(rc)(c)
		c.Now = time.Now // the retry waits on real time
	}))
	started(t, ts)
	c := browser(t)
	tk := signInOffline(t, ts, c)
	sid, _ := idClaims(t, tk.IDToken)["sid"].(string)
	form := loginForm(t, c, ts.URL, "/account/logout")
	form.Set("decision", "logout")
	postFrom(t, ts, c, "/account/logout", form, sameOrigin)
	logoutToken := rc.await(t)

	isDelivery := func(outcome string) func(idp.Event) bool {
		return func(e idp.Event) bool { return e.Type == idp.EventBackchannel && e.Outcome == outcome }
	}
	retry := l.await(t, "retrying", isDelivery(idp.OutcomeRetrying))
	done := l.await(t, "delivered", isDelivery(idp.OutcomeDelivered))
	want := idp.Event{Type: idp.EventBackchannel, Outcome: idp.OutcomeRetrying, Subject: idp.DeriveSubject("alice"), ClientID: "demo-app", SID: sid, Attempt: 1, Reason: "status 503"}
	if retry != want {
		t.Errorf("retry %+v, want %+v", retry, want)
	}
	want.Outcome, want.Attempt, want.Reason = idp.OutcomeDelivered, 2, "status 200"
	if done != want {
		t.Errorf("delivery %+v, want %+v", done, want)
	}
	assertNoSecrets(t, l.all(), []string{testPassword, testSecret, tk.AccessToken, tk.IDToken, tk.RefreshToken, logoutToken})
}

// assertNoSecrets fails if any field of any event holds one of secrets.
func assertNoSecrets(t testing.TB, events []idp.Event, secrets []string) {
	t.Helper()
	for _, e := range events {
		all := fmt.Sprintf("%+v", e)
		for _, s := range secrets {
			if s != "" && strings.Contains(all, s) {
				t.Errorf("event %s holds a secret (%.12s...)", all, s)
			}
		}
	}
}
