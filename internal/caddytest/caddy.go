package caddytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// Caddy is the Caddy of one test: a folder of its own for the Caddyfile,
// the storage, the XDG folders and the log, an admin endpoint on a free
// port, and the process while it runs. The folders and the log are kept
// across restarts and reloads.
type Caddy struct {
	// Dir is the test's folder, the working directory of every caddy
	// command.
	Dir string
	// AdminAddr is the host:port of the admin endpoint, for the
	// Caddyfile's admin option.
	AdminAddr string
	// Storage is the folder for the Caddyfile's storage file_system.
	Storage string
	// Config is the path of the Caddyfile.
	Config string
	// LogPath is Caddy's stdout and stderr, across restarts.
	LogPath string
	// Ready are the URLs that must answer 200, in order, after the admin
	// endpoint does, before [Caddy.Start] returns.
	Ready []string

	bin  string
	env  []string
	proc *exec.Cmd
	done chan struct{} // closed when proc has exited
}

// New builds the binary if no test has yet, and picks the admin port and
// the folder of a test's Caddy; env are NAME=value entries added to the
// environment of every caddy command. When the test ends, Caddy is
// stopped, and its log shown if the test failed.
func New(t testing.TB, env ...string) *Caddy {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := &Caddy{
		Dir:       dir,
		AdminAddr: fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		Storage:   filepath.Join(dir, "storage"),
		Config:    filepath.Join(dir, "Caddyfile"),
		LogPath:   filepath.Join(dir, "caddy.log"),
		bin:       bin,
		env:       env,
	}
	// Cleanups run last first: stop Caddy, then show its log.
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLog(t)
		}
	})
	t.Cleanup(func() { c.Stop(t) })
	return c
}

// WriteConfig writes the Caddyfile that tmpl makes of data.
func (c *Caddy) WriteConfig(t testing.TB, tmpl *template.Template, data any) {
	t.Helper()
	var b bytes.Buffer
	if err := tmpl.Execute(&b, data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.Config, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// command returns a caddy command with an environment of its own: the
// test's entries, and XDG folders inside the test's folder so that
// nothing is written to the user's home.
func (c *Caddy) command(args ...string) *exec.Cmd {
	cmd := exec.Command(c.bin, args...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Env = append(cmd.Env,
		"XDG_CONFIG_HOME="+filepath.Join(c.Dir, "xdg-config"),
		"XDG_DATA_HOME="+filepath.Join(c.Dir, "xdg-data"),
		"XDG_CACHE_HOME="+filepath.Join(c.Dir, "xdg-cache"),
	)
	return cmd
}

// Start runs `caddy run` on the Caddyfile and returns once the admin
// endpoint and then each of c.Ready answer.
func (c *Caddy) Start(t testing.TB) {
	t.Helper()
	log, err := os.OpenFile(c.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close() // the child has its own copy
	cmd := c.command("run", "--config", c.Config, "--adapter", "caddyfile")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting caddy: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	c.proc, c.done = cmd, done
	c.waitReady(t)
}

// waitReady polls until the admin endpoint and c.Ready answer, failing
// at once if Caddy exits.
func (c *Caddy) waitReady(t testing.TB) {
	t.Helper()
	urls := append([]string{"http://" + c.AdminAddr + "/config/"}, c.Ready...)
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for len(urls) > 0 && answers(urls[0]) {
			urls = urls[1:]
		}
		if len(urls) == 0 {
			return
		}
		select {
		case <-c.done:
			t.Fatalf("caddy exited before it was ready: %v", c.proc.ProcessState)
		case <-timeout.C:
			t.Fatalf("caddy is not ready after 30s: no answer from %s", urls[0])
		case <-tick.C:
		}
	}
}

func answers(url string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Reload has the running Caddy load the Caddyfile with `caddy reload`,
// which returns once the new configuration serves.
func (c *Caddy) Reload(t testing.TB) {
	t.Helper()
	cmd := c.command("reload", "--config", c.Config, "--adapter", "caddyfile", "--address", c.AdminAddr)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("caddy reload: %v\n%s", err, out)
	}
}

// Pid returns the process ID of the running Caddy, or 0 if it does not
// run.
func (c *Caddy) Pid() int {
	if c.proc == nil {
		return 0
	}
	return c.proc.Process.Pid
}

// Stop ends Caddy if it runs: SIGTERM, then a kill if it has not exited
// within 10 seconds.
func (c *Caddy) Stop(t testing.TB) {
	t.Helper()
	if c.proc == nil {
		return
	}
	proc, done := c.proc, c.done
	c.proc, c.done = nil, nil
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("stopping caddy: %v", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("caddy did not exit 10s after SIGTERM; killing it")
		proc.Process.Kill()
		<-done
	}
}

func (c *Caddy) dumpLog(t testing.TB) {
	t.Helper()
	b, err := os.ReadFile(c.LogPath)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			t.Logf("reading caddy's log: %v", err)
		}
		return
	}
	t.Logf("caddy's log:\n%s", b)
}
