// Package redistest runs a real redis-server for the tests of the Redis
// store: on a free 127.0.0.1 port, in a temporary folder, with nothing
// saved to disk unless the test asks for it, ended by its process id when
// the test ends; alone, as a Redis Cluster, or watched by a Sentinel. A machine
// without redis-server fails the test with the command that installs it:
// the Redis store is tested against the real server or not at all.
package redistest

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/caddytest"
)

// Install is the command that installs redis-server (`make deps` runs it).
const Install = "apt-get install -y redis-server"

// startTimeout bounds how long a server may take to accept connections.
const startTimeout = 10 * time.Second

// Server is a running redis-server.
type Server struct {
	Addr string // host:port

	t     testing.TB
	dir   string
	port  int
	args  []string
	tls   bool   // speaks only TLS
	node  bool   // a Cluster node
	bus   int    // a Cluster node's bus port
	conf  string // a configuration file, before the options
	ready string // the line it prints once it serves
	cmd   *exec.Cmd
	log   *logBuffer
	done  chan struct{} // closed when the process has exited
}

// logBuffer is what the server printed, written by the goroutine that
// reads it and read by the test.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) add(line string) {
	l.mu.Lock()
	l.b.WriteString(line + "\n")
	l.mu.Unlock()
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start starts a redis-server for the test and stops it at the test's
// end. args are further command-line options, e.g. "--requirepass", "pw".
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	return launch(t, &Server{t: t, dir: t.TempDir(), args: args})
}

// StartTLS is Start for a server that speaks only TLS, with the
// certificate and key in PEM, and asks clients for no certificate.
func StartTLS(t testing.TB, certPEM, keyPEM []byte, args ...string) *Server {
	t.Helper()
	s := &Server{t: t, dir: t.TempDir(), tls: true}
	cert, key := filepath.Join(s.dir, "cert.pem"), filepath.Join(s.dir, "key.pem")
	if err := os.WriteFile(cert, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s.args = append([]string{"--tls-cert-file", cert, "--tls-key-file", key,
		"--tls-ca-cert-file", cert, "--tls-auth-clients", "no"}, args...)
	return launch(t, s)
}

// StartSentinel starts a Redis Sentinel that watches master under name.
// conf are further lines of its configuration file, such as
// "requirepass <password>" (what clients of the Sentinel must send) or
// "sentinel auth-pass <name> <password>" (what it sends to the master).
func StartSentinel(t testing.TB, master *Server, name string, conf ...string) *Server {
	t.Helper()
	// A Sentinel does not say it is ready; it serves by the time it
	// reports the master it watches.
	s := &Server{t: t, dir: t.TempDir(), args: []string{"--sentinel"}, ready: "+monitor master"}
	// A Sentinel rewrites its configuration file, so it needs one.
	s.conf = filepath.Join(s.dir, "sentinel.conf")
	host, port, _ := net.SplitHostPort(master.Addr)
	text := fmt.Sprintf("sentinel monitor %s %s %s 1\n", name, host, port)
	for _, line := range conf {
		text += line + "\n"
	}
	if err := os.WriteFile(s.conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return launch(t, s)
}

// launch runs s, on a free port, until the test's end.
func launch(t testing.TB, s *Server) *Server {
	t.Helper()
	if s.ready == "" {
		s.ready = "Ready to accept connections"
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not installed; install it with `%s` (`make deps` does)", Install)
	}
	// The port is free when picked but may be taken before the server
	// binds it: then the server exits, and another port is tried.
	for try := 0; ; try++ {
		s.port = caddytest.FreePort(t)
		if s.node {
			s.bus = caddytest.FreePort(t)
		}
		err := s.start(bin)
		if err == nil {
			break
		}
		if try == 2 {
			t.Fatalf("redis-server: %v", err)
		}
	}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	t.Cleanup(s.Kill)
	return s
}

// start runs the server on s.port and waits until it accepts connections.
func (s *Server) start(bin string) error {
	s.log = new(logBuffer)
	ports := []string{"--port", strconv.Itoa(s.port)}
	if s.tls {
		ports = []string{"--port", "0", "--tls-port", strconv.Itoa(s.port)}
	}
	if s.node {
		ports = append(ports, "--cluster-port", strconv.Itoa(s.bus))
	}
	if s.conf != "" {
		ports = append([]string{s.conf}, ports...)
	}
	s.cmd = exec.Command(bin, append(append(ports, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--logfile", "", "--loglevel", "notice",
	), s.args...)...)
	s.cmd.SysProcAttr = sysProcAttr()
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		return err
	}
	// The server says when it is ready; wait for that line, or its exit.
	ready := make(chan struct{})
	s.done = make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			s.log.add(sc.Text())
			if !signalled && strings.Contains(sc.Text(), s.ready) {
				close(ready)
				signalled = true
			}
		}
		io.Copy(io.Discard, out)
		s.cmd.Wait()
		close(s.done)
	}()
	select {
	case <-ready:
	case <-s.done:
		return fmt.Errorf("exited before accepting connections:\n%s", s.log)
	case <-time.After(startTimeout):
		s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("not ready after %s:\n%s", startTimeout, s.log)
	}
	return s.ping()
}

// ping sends PING and expects PONG, in plain RESP.
func (s *Server) ping() error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	var c net.Conn
	var err error
	if s.tls {
		// Only whether it serves: the test checks the certificate.
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: &tls.Config{InsecureSkipVerify: true}}
		c, err = d.Dial("tcp", addr)
	} else {
		c, err = net.DialTimeout("tcp", addr, time.Second)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	// +PONG, or -NOAUTH when a password is required: either way it serves.
	if !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// Pause stops the server's process (SIGSTOP): its port still accepts
// connections, but nothing is answered, as with a server that hangs.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig os.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("redis-server: %s: %v", sig, err)
	}
}

// Kill ends the server's process (SIGKILL, as a crash), by its id, and
// waits for it to exit. What it had not written to disk is gone.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Kill() // SIGKILL ends a stopped process too
	<-s.done
}

// Stop shuts the server down as an operator would (SIGTERM), by its id,
// and waits for it to exit: its port is closed, and a server started with
// "--appendonly", "yes" has written all it had to disk. A server that
// does not exit within startTimeout is killed.
func (s *Server) Stop() {
	s.t.Helper()
	select {
	case <-s.done:
		return
	default:
	}
	s.signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(startTimeout):
		s.t.Errorf("redis-server did not exit %s after SIGTERM; killing it", startTimeout)
		s.Kill()
	}
}

// Restart kills the server if it still runs and starts it again on the
// same address and folder. Its data is what it kept on disk: none by
// default, as after a crash of a server that keeps nothing, and what its
// append-only file holds for one started with "--appendonly", "yes".
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	if err := s.start(s.cmd.Path); err != nil {
		s.t.Fatalf("redis-server restart: %v", err)
	}
}

// Log returns what the server has printed.
func (s *Server) Log() string { return s.log.String() }
