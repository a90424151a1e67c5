// Package caddytest runs the Caddy binary of ./cmd/caddy for the tests
// that drive it from outside, the end-to-end tests and the load benchmark:
// it builds the binary once, starts it on free 127.0.0.1 ports with a
// test's Caddyfile and folders, waits until it serves, reloads and stops
// it, and shows its log when the test fails. It also plays the browser
// through the provider's login page over plain HTTP.
package caddytest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// Binary returns the binary built from ./cmd/caddy of this module,
// building it into a new temporary folder on the first call. That folder
// stays until [RemoveBinary]: a TestMain calls it after m.Run.
func Binary() (string, error) {
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "authgate-caddytest-"); buildErr != nil {
			return
		}
		buildBin, buildErr = build(buildDir)
	})
	return buildBin, buildErr
}

// RemoveBinary removes the folder [Binary] built into, if it has built.
func RemoveBinary() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// build builds ./cmd/caddy of this module into dir.
func build(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("finding the module root: not inside a module")
	}
	bin := filepath.Join(dir, "caddy")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/caddy")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building ./cmd/caddy: %w\n%s", err, out)
	}
	return bin, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
