package e2e_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// newStreamingUpstream starts an app that keeps connections open: /ws is
// a WebSocket echo, /events a server-sent event stream with an event
// every 100 ms until the client goes; anything else answers "ok".
func newStreamingUpstream(t testing.TB) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/ws", websocket.Handler(func(ws *websocket.Conn) {
		for {
			var msg string
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				return
			}
			if err := websocket.Message.Send(ws, msg); err != nil {
				return
			}
		}
	}))
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		rc := http.NewResponseController(w)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		// Bounded: the test never needs a stream longer than a minute.
		for i := range 600 {
			if _, err := fmt.Fprintf(w, "data: %d\n\n", i); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// openWebSocket opens a WebSocket to the gateway's /ws with cookie, and
// checks that it echoes.
func openWebSocket(t testing.TB, gateway, cookie string) *websocket.Conn {
	t.Helper()
	cfg, err := websocket.NewConfig(strings.Replace(gateway, "http", "ws", 1)+"/ws", gateway)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Header.Set("Cookie", cookie)
	cfg.Dialer = &net.Dialer{Timeout: 5 * time.Second}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("opening a WebSocket through the gateway: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	_ = ws.SetDeadline(time.Now().Add(5 * time.Second))
	if err := websocket.Message.Send(ws, "ping"); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := websocket.Message.Receive(ws, &got); err != nil || got != "ping" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	return ws
}

// eventStream is an open server-sent event stream.
type eventStream struct {
	resp  *http.Response
	lines *bufio.Scanner
}

// openEvents opens the gateway's /events with cookie and reads its first
// event.
func openEvents(t testing.TB, gateway, cookie string) *eventStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, gateway+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cookie", cookie)
	resp, err := (&http.Client{}).Do(req) // no Timeout: it would end the stream
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &eventStream{resp: resp, lines: bufio.NewScanner(resp.Body)}
	if _, err := s.next(); err != nil {
		t.Fatalf("first event: %v", err)
	}
	return s
}

// next returns the data of the stream's next event, or why there is none.
func (s *eventStream) next() (string, error) {
	for s.lines.Scan() {
		if data, ok := strings.CutPrefix(s.lines.Text(), "data: "); ok {
			return data, nil
		}
	}
	if err := s.lines.Err(); err != nil {
		return "", err
	}
	return "", errors.New("end of stream")
}

// closedWithin reads from a connection until it fails: a failure that is
// not the caller's deadline (set before, its watchdog) means the server
// closed it, which is logged with the time since start.
func closedWithin(t testing.TB, what string, start time.Time, read func() error) {
	t.Helper()
	for range 1000 { // at 100 ms an event, the deadline comes first
		err := read()
		if err == nil {
			continue // until closed, or the caller's deadline
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s still open %v after sign-out (read: %v)", what, time.Since(start), err)
		}
		t.Logf("%s closed %v after sign-out: %v", what, time.Since(start).Round(time.Millisecond), err)
		return
	}
	t.Fatalf("%s never closed", what)
}

// expectStreamsClosed checks, in subtests, that the server closes ws and
// events at the latest limit after start, when their session ended.
func expectStreamsClosed(t *testing.T, ws *websocket.Conn, events *eventStream, start time.Time, limit time.Duration) {
	t.Helper()
	t.Run("websocket", func(t *testing.T) {
		_ = ws.SetDeadline(start.Add(limit))
		closedWithin(t, "WebSocket", start, func() error {
			var msg string
			return websocket.Message.Receive(ws, &msg)
		})
	})
	t.Run("event stream", func(t *testing.T) {
		timer := time.AfterFunc(time.Until(start.Add(limit)), func() { events.resp.Body.Close() })
		defer timer.Stop()
		closedWithin(t, "event stream", start, func() error {
			_, err := events.next()
			if err != nil && !timer.Stop() {
				return os.ErrDeadlineExceeded // closed by us, not the server
			}
			return err
		})
	})
}

// TestGatewayConnsEndWithSession: a WebSocket and an event stream opened
// through the gateway are closed by the server when their session signs
// out, while another session's stream of the same user goes on.
func TestGatewayConnsEndWithSession(t *testing.T) {
	t.Parallel()
	g := newGatewaySite(t, gatewayConfig{})
	g.upstream = newStreamingUpstream(t)
	g.writeGatewayConfig(t)
	g.Start(t)

	first := httpLogin(t, g.gateway, "alice")
	second := httpLogin(t, g.gateway, "alice")
	ws := openWebSocket(t, g.gateway, first)
	events := openEvents(t, g.gateway, first)
	other := openEvents(t, g.gateway, second)

	signOutWith(t, g.gateway, first)
	signedOut := time.Now()

	// Sign-out revokes on this node at once: a second is plenty.
	const limit = 3 * time.Second
	expectStreamsClosed(t, ws, events, signedOut, limit)
	t.Run("other session's stream goes on", func(t *testing.T) {
		// Its events keep coming after the others were closed.
		timer := time.AfterFunc(limit+5*time.Second, func() { other.resp.Body.Close() })
		defer timer.Stop()
		for i := range 30 { // 3 s of events at one per 100 ms
			if _, err := other.next(); err != nil {
				t.Fatalf("event %d of the other session, %v after sign-out: %v", i, time.Since(signedOut), err)
			}
		}
	})
	t.Run("log", func(t *testing.T) {
		b, err := os.ReadFile(g.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for line := range strings.SplitSeq(string(b), "\n") {
			if strings.Contains(line, `"msg":"long-lived connection closed"`) {
				n++
				if !strings.Contains(line, `"sub":"`) || !strings.Contains(line, `"reason":"session revoked"`) {
					t.Errorf("log line without sub or reason: %s", line)
				}
			}
		}
		if n != 2 {
			t.Errorf("%d closes logged, want 2", n)
		}
		_, value, _ := strings.Cut(first, "authgate=")
		if value, _, _ = strings.Cut(value, ";"); value != "" && strings.Contains(string(b), value) {
			t.Error("the log holds the session cookie's value")
		}
	})
}
