package caddymodule

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// runUser runs `caddy authgate user args...` with stdin, and returns its
// output and error.
func runUser(t testing.TB, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := newUserCommand()
	var out bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.Execute()
	return out.String(), err
}

// TestUserCommand: the user command adds, changes, disables, enables,
// removes and lists the users of a file that the provider reads, writing
// it whole with its permissions kept, and refuses what would spoil it.
func TestUserCommand(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "users.json")
	users := func() []ProviderUser {
		t.Helper()
		got, _, err := loadUsersFile(file, false)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	mustRun := func(stdin string, args ...string) string {
		t.Helper()
		out, err := runUser(t, stdin, append(args, "--file", file)...)
		if err != nil {
			t.Fatalf("user %v: %v\n%s", args, err, out)
		}
		return out
	}

	mustRun("first secret\n", "add", "alice", "--bcrypt-cost", "4", "--claim", "email=alice@example.com", "--claim", "email_verified=true")
	info, err := os.Stat(file)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("new file: %v %v; want mode 0600", info, err)
	}
	if err := os.Chmod(file, 0o640); err != nil {
		t.Fatal(err)
	}
	mustRun("bob's\r\n", "add", "bob", "--password-stdin", "--bcrypt-cost", "4", "--subject", "b-1")
	got := users()
	if len(got) != 2 || got[0].Username != "alice" || got[0].Claims["email"] != "alice@example.com" || got[0].Claims["email_verified"] != true ||
		got[1].Subject != "b-1" {
		t.Fatalf("users %+v", got)
	}
	if bcrypt.CompareHashAndPassword([]byte(got[0].PasswordHash), []byte("first secret")) != nil ||
		bcrypt.CompareHashAndPassword([]byte(got[1].PasswordHash), []byte("bob's")) != nil {
		t.Fatal("the hashes are not of the passwords given")
	}
	if info, _ := os.Stat(file); info.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v after a rewrite; want 0640 kept", info.Mode())
	}

	// The provider reads what the command writes.
	p := &Provider{Issuer: "https://login.example.com", UsersFile: file}
	data, _, err := readUsersFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if list, err := p.users(data); err != nil || len(list) != 2 {
		t.Fatalf("the provider reads %v, %v", list, err)
	}

	mustRun("second secret\n", "passwd", "alice", "--bcrypt-cost", "5")
	if h := users()[0].PasswordHash; bcrypt.CompareHashAndPassword([]byte(h), []byte("second secret")) != nil {
		t.Fatal("passwd did not change the hash")
	} else if cost, _ := bcrypt.Cost([]byte(h)); cost != 5 {
		t.Fatalf("cost %d; want 5", cost)
	}
	mustRun("", "disable", "bob")
	if !users()[1].Disabled {
		t.Fatal("bob is not disabled")
	}
	out := mustRun("", "list")
	if strings.Contains(out, "$2a$") || !strings.Contains(out, "email=alice@example.com email_verified=true") {
		t.Fatalf("list:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "bob ") && !strings.Contains(line, "yes") {
			t.Fatalf("list does not show bob disabled:\n%s", out)
		}
	}
	mustRun("", "enable", "bob")
	if users()[1].Disabled {
		t.Fatal("bob is still disabled")
	}
	mustRun("", "remove", "alice")
	if got := users(); len(got) != 1 || got[0].Username != "bob" {
		t.Fatalf("after remove: %+v", got)
	}

	before, _ := os.ReadFile(file)
	for _, tt := range []struct {
		name, stdin, want string
		args              []string
	}{
		{"duplicate name", "pw\n", "exists already", []string{"add", "bob"}},
		{"duplicate subject", "pw\n", `subject "b-1" is user "bob"'s`, []string{"add", "carol", "--subject", "b-1"}},
		{"empty password", "\n", "the password is empty", []string{"add", "carol", "--bcrypt-cost", "4"}},
		{"long password", strings.Repeat("x", 73) + "\n", "longer than bcrypt's 72 bytes", []string{"add", "carol", "--bcrypt-cost", "4"}},
		{"sub claim", "pw\n", "claim sub", []string{"add", "carol", "--claim", "sub=x"}},
		{"claim without value", "pw\n", "want name=value", []string{"add", "carol", "--claim", "email"}},
		{"bad cost", "pw\n", "--bcrypt-cost 40", []string{"add", "carol", "--bcrypt-cost", "40"}},
		{"unknown user", "pw\n", `no user "carol"`, []string{"passwd", "carol"}},
		{"remove unknown", "", `no user "carol"`, []string{"remove", "carol"}},
		{"no file flag", "", `"file" not set`, []string{"list"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.name != "no file flag" {
				args = append(args, "--file", file)
			}
			if out, err := runUser(t, tt.stdin, args...); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v; want %q\n%s", err, tt.want, out)
			}
			if after, _ := os.ReadFile(file); !bytes.Equal(after, before) {
				t.Fatal("a refused command changed the file")
			}
		})
	}

	t.Run("broken file", func(t *testing.T) {
		broken := filepath.Join(dir, "broken.json")
		if err := os.WriteFile(broken, []byte("[\n  {\"username\": \"x\",}\n]"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := runUser(t, "pw\n", "add", "y", "--file", broken); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Fatalf("add to a broken file: %v; want an error naming line 2", err)
		}
		if _, err := runUser(t, "", "disable", "x", "--file", filepath.Join(dir, "none.json")); err == nil {
			t.Fatal("disable in a missing file: no error")
		}
	})
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("files left in the directory: %v; want users.json and broken.json", entries)
	}
}
