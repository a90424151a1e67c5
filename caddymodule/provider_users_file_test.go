package caddymodule

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddyserver/caddy/v2"

	"github.com/authgate/authgate/idp"
)

// TestParseUsersFileErrors: every error in a users file says where it
// is, by line and column.
func TestParseUsersFileErrors(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"empty", "  \n", "line 1, column 1: the file is empty"},
		{"not an array", "\n{\"username\": \"a\"}", "line 2, column 1: want a JSON array of users"},
		{"syntax", "[\n  {\"username\": \"a\",\n   \"password_hash\" \"x\"}\n]", "line 3, column 20: invalid character '\"' after object key"},
		{"unknown field", "[\n  {\"username\": \"a\"},\n  {\"username\": \"b\",\n   \"pasword_hash\": \"x\"}\n]", `line 4, column 4: unknown field "pasword_hash"`},
		{"wrong type", "[\n  {\"username\": \"a\", \"disabled\": \"yes\"}\n]", "line 2, column 21: disabled: want a bool, not a string"},
		{"truncated", "[\n  {\"username\": \"a\"},\n", "line 3, column 1: unexpected end of the file"},
		{"trailing", "[]\n[]", "line 2, column 1: more after the array of users"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseUsersFile([]byte(tt.data))
			var fe *usersFileError
			if !errors.As(err, &fe) || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("error %v; want one starting %q", err, tt.want)
			}
		})
	}
	users, err := parseUsersFile([]byte("[\n  {\"username\": \"a\"},\n\t{\"username\": \"b\", \"disabled\": true}\n]"))
	if err != nil || len(users) != 2 || users[1].pos != (filePos{3, 2}) || !users[1].Disabled {
		t.Fatalf("parse: %+v %v; want b at line 3, column 2, disabled", users, err)
	}
}

// TestUsersFileReload: the provider takes the users of its file when it
// changes; a file that fails to parse, or names a user twice, leaves the
// users as they were and logs the line; one that cannot be read too.
func TestUsersFileReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "users.json")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	user := func(name string) string {
		return `{"username": "` + name + `", "password_hash": "` + testBcryptHash + `"}`
	}
	write("[" + user("bob") + "]")
	p := testProvider("https://login.example.com")
	p.UsersFile = file
	p.UsersFilePoll = -1 // looked at by hand below
	provision(t, newTestContext(t, dir), p)
	if p.stopUsersFile != nil {
		t.Fatal("a users file with poll off is polled")
	}
	core, logs := observer.New(zapcore.InfoLevel)
	p.logger = zap.New(core)
	w := &usersFileWatch{p: p, seen: p.usersSeen}

	known := func(name string) bool {
		t.Helper()
		_, err := p.provider.Load().UserSessions(context.Background(), name)
		if err != nil && !errors.Is(err, idp.ErrUnknownUser) {
			t.Fatal(err)
		}
		return err == nil
	}
	lastLog := func() observer.LoggedEntry {
		t.Helper()
		all := logs.TakeAll()
		if len(all) == 0 {
			t.Fatal("nothing logged")
		}
		return all[len(all)-1]
	}

	w.look()
	if !known("alice") || !known("bob") || logs.Len() != 0 {
		t.Fatalf("unchanged file: alice %v, bob %v, logs %v", known("alice"), known("bob"), logs.TakeAll())
	}

	write("[\n  " + user("carol") + "\n]")
	w.look()
	if !known("alice") || known("bob") || !known("carol") {
		t.Fatalf("after bob's removal and carol's addition: alice %v, bob %v, carol %v", known("alice"), known("bob"), known("carol"))
	}
	if e := lastLog(); e.Message != "users file reloaded" || e.ContextMap()["users"] != int64(2) {
		t.Fatalf("log %q %v", e.Message, e.ContextMap())
	}

	for _, tt := range []struct {
		name, content string
		line          int64
	}{
		{"syntax error", "[\n  " + user("dave") + ",\n  {\"username\" \"x\"}\n]", 3},
		{"duplicate name", "[\n  " + user("dave") + ",\n  " + user("dave") + "\n]", 3},
		{"name also configured", "[\n\n  " + user("alice") + "\n]", 3},
		{"bad hash", "[\n  {\"username\": \"dave\", \"password_hash\": \"hunter2\"}\n]", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			write(tt.content)
			w.look()
			if known("dave") || !known("carol") {
				t.Fatalf("after a bad file: dave %v, carol %v; want the users kept", known("dave"), known("carol"))
			}
			e := lastLog()
			if e.Level != zapcore.ErrorLevel || e.ContextMap()["line"] != tt.line || !strings.Contains(e.ContextMap()["error"].(string), "line ") {
				t.Fatalf("log %s %q %v; want an error at line %d", e.Level, e.Message, e.ContextMap(), tt.line)
			}
			w.look()
			if logs.Len() != 0 {
				t.Fatalf("the same bad file logged again: %v", logs.TakeAll())
			}
		})
	}

	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	w.look()
	w.look()
	if !known("carol") || logs.Len() != 1 {
		t.Fatalf("a missing file: carol %v, %d logs; want the users kept and one error", known("carol"), logs.Len())
	}
	logs.TakeAll()
	write("[" + user("dave") + "]")
	w.look()
	if !known("dave") || known("carol") {
		t.Fatalf("the file back: dave %v, carol %v", known("dave"), known("carol"))
	}
}

// TestUsersFilePoll: the poll interval's default and bounds.
func TestUsersFilePoll(t *testing.T) {
	for _, tt := range []struct {
		file string
		poll caddy.Duration
		want string
	}{
		{"users.json", 0, "5s"},
		{"users.json", caddy.Duration(250e6), "250ms"},
		{"users.json", -1, "0s"},
		{"", 0, "0s"},
		{"users.json", 1e6, "error"},
	} {
		p := &Provider{UsersFile: tt.file, UsersFilePoll: tt.poll}
		d, err := p.usersFilePoll()
		got := d.String()
		if err != nil {
			got = "error"
		}
		if got != tt.want {
			t.Errorf("users_file %q poll %d: %s (%v); want %s", tt.file, tt.poll, got, err, tt.want)
		}
	}
}
