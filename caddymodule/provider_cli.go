package caddymodule

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "authgate",
		Usage: "user add|passwd|disable|enable|remove|list [<username>] --file <users.json>",
		Short: "Manages the users file of an oidc_provider",
		Long: `
Manages the users file of an oidc_provider (its users_file option): a
JSON array of users, which a running provider reloads by itself when it
changes.

  caddy authgate user add <username> --file users.json [--claim name=value]... [--subject <sub>]
  caddy authgate user passwd <username> --file users.json
  caddy authgate user disable|enable|remove <username> --file users.json
  caddy authgate user list --file users.json

add and passwd ask for the password twice on a terminal; otherwise, or
with --password-stdin, they read it from the first line of standard
input. There is no flag with the password itself, which would stay in
the shell's history. Passwords are hashed with bcrypt as
'caddy hash-password' does (cost 14 unless --bcrypt-cost says).

The file is written whole to a temporary file beside it, then renamed
over it, keeping its permissions (a new file is made 0600), so that the
provider never reads half of it. list prints usernames, whether they are
disabled and their claims, never a hash.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(newUserCommand())
		},
	})
}

// newUserCommand returns the `user` command with its subcommands.
func newUserCommand() *cobra.Command {
	user := &cobra.Command{
		Use:   "user",
		Short: "Adds, changes, disables, removes or lists the users of a users file",
	}
	user.PersistentFlags().StringP("file", "f", "", "The users file (required)")
	_ = user.MarkPersistentFlagRequired("file")

	passwordFlags := func(c *cobra.Command) {
		c.Flags().Bool("password-stdin", false, "Read the password from the first line of standard input, without prompting")
		c.Flags().Int("bcrypt-cost", 0, "bcrypt cost (default: caddy hash-password's, 14)")
	}

	add := &cobra.Command{
		Use:   "add <username>",
		Short: "Adds a user, with a password and claims",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			u := ProviderUser{Username: args[0]}
			u.Subject, _ = c.Flags().GetString("subject")
			claims, _ := c.Flags().GetStringArray("claim")
			var err error
			if u.Claims, err = parseClaimFlags(claims); err != nil {
				return err
			}
			return editUsersFile(c, true, func(users []ProviderUser) ([]ProviderUser, string, error) {
				if err := checkNewUser(users, u); err != nil {
					return nil, "", err
				}
				if u.PasswordHash, err = readPasswordHash(c); err != nil {
					return nil, "", err
				}
				return append(users, u), fmt.Sprintf("added user %q", u.Username), nil
			})
		},
	}
	passwordFlags(add)
	add.Flags().StringArray("claim", nil, "A claim as name=value, repeatable; true and false are booleans")
	add.Flags().String("subject", "", "The user's subject, the sub claim (default: derived from the username)")

	passwd := &cobra.Command{
		Use:   "passwd <username>",
		Short: "Changes a user's password",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return editUser(c, args[0], func(u *ProviderUser) (string, error) {
				hash, err := readPasswordHash(c)
				u.PasswordHash = hash
				return "changed the password of user %q", err
			})
		},
	}
	passwordFlags(passwd)

	disable := &cobra.Command{
		Use:   "disable <username>",
		Short: "Disables a user: no login, and the user's sessions end",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return editUser(c, args[0], func(u *ProviderUser) (string, error) {
				u.Disabled = true
				return "disabled user %q", nil
			})
		},
	}
	enable := &cobra.Command{
		Use:   "enable <username>",
		Short: "Enables a disabled user",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return editUser(c, args[0], func(u *ProviderUser) (string, error) {
				u.Disabled = false
				return "enabled user %q", nil
			})
		},
	}
	remove := &cobra.Command{
		Use:   "remove <username>",
		Short: "Removes a user; the user's sessions end",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return editUsersFile(c, false, func(users []ProviderUser) ([]ProviderUser, string, error) {
				i := slices.IndexFunc(users, func(u ProviderUser) bool { return u.Username == args[0] })
				if i < 0 {
					return nil, "", fmt.Errorf("no user %q", args[0])
				}
				return slices.Delete(users, i, i+1), fmt.Sprintf("removed user %q", args[0]), nil
			})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "Lists the users: usernames, disabled or not, claims",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			file, _ := c.Flags().GetString("file")
			users, _, err := loadUsersFile(file, false)
			if err != nil {
				return err
			}
			return listUsers(c.OutOrStdout(), users)
		},
	}
	user.AddCommand(add, passwd, disable, enable, remove, list)
	return user
}

// parseClaimFlags turns name=value pairs into claims: true and false are
// booleans, as in the Caddyfile; anything else a string.
func parseClaimFlags(pairs []string) (map[string]any, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	claims := make(map[string]any, len(pairs))
	for _, pair := range pairs {
		name, value, ok := strings.Cut(pair, "=")
		switch {
		case !ok || name == "":
			return nil, fmt.Errorf("claim %q: want name=value", pair)
		case name == "sub":
			return nil, errors.New("claim sub: the subject is set with --subject")
		case claims[name] != nil:
			return nil, fmt.Errorf("claim %q is given twice", name)
		}
		switch value {
		case "true":
			claims[name] = true
		case "false":
			claims[name] = false
		default:
			claims[name] = value
		}
	}
	return claims, nil
}

// checkNewUser refuses a user whose username or subject another has.
func checkNewUser(users []ProviderUser, u ProviderUser) error {
	if u.Username == "" {
		return errors.New("the username is empty")
	}
	for _, o := range users {
		if o.Username == u.Username {
			return fmt.Errorf("user %q exists already; change it with passwd, disable or enable", u.Username)
		}
		if u.Subject != "" && o.Subject == u.Subject {
			return fmt.Errorf("subject %q is user %q's", u.Subject, o.Username)
		}
	}
	return nil
}

// editUser applies change to the user named username; change returns
// the message to print, with a %q for the username.
func editUser(c *cobra.Command, username string, change func(*ProviderUser) (string, error)) error {
	return editUsersFile(c, false, func(users []ProviderUser) ([]ProviderUser, string, error) {
		i := slices.IndexFunc(users, func(u ProviderUser) bool { return u.Username == username })
		if i < 0 {
			return nil, "", fmt.Errorf("no user %q", username)
		}
		msg, err := change(&users[i])
		return users, fmt.Sprintf(msg, username), err
	})
}

// editUsersFile loads the file of --file (an empty list if it does not
// exist and create is true), applies change and writes the result back,
// then prints change's message.
func editUsersFile(c *cobra.Command, create bool, change func([]ProviderUser) ([]ProviderUser, string, error)) error {
	file, _ := c.Flags().GetString("file")
	users, mode, err := loadUsersFile(file, create)
	if err != nil {
		return err
	}
	users, msg, err := change(users)
	if err != nil {
		return err
	}
	if err := writeUsersFile(file, users, mode); err != nil {
		return err
	}
	fmt.Fprintf(c.OutOrStdout(), "%s in %s\n", msg, file)
	return nil
}

// loadUsersFile reads the users of file and its permissions. A file
// that does not exist is an empty list of permissions 0600 if create is
// true, an error otherwise.
func loadUsersFile(file string, create bool) ([]ProviderUser, fs.FileMode, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) && create {
		return nil, 0o600, nil
	}
	if err != nil {
		return nil, 0, err
	}
	info, err := os.Stat(file)
	if err != nil {
		return nil, 0, err
	}
	parsed, err := parseUsersFile(data)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", file, err)
	}
	users := make([]ProviderUser, len(parsed))
	for i, u := range parsed {
		users[i] = u.ProviderUser
	}
	return users, info.Mode().Perm(), nil
}

// writeUsersFile writes users to file atomically: to a temporary file in
// the same directory, synced, then renamed over file, with mode.
func writeUsersFile(file string, users []ProviderUser, mode fs.FileMode) (err error) {
	if users == nil {
		users = []ProviderUser{}
	}
	data, err := json.MarshalIndent(users, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(mode); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// readPasswordHash reads a password, twice from a terminal (unless
// --password-stdin), else once from the first line of standard input,
// and hashes it as `caddy hash-password` does.
func readPasswordHash(c *cobra.Command) (string, error) {
	fromStdin, _ := c.Flags().GetBool("password-stdin")
	cost, _ := c.Flags().GetInt("bcrypt-cost")
	if cost != 0 && (cost < bcrypt.MinCost || cost > bcrypt.MaxCost) {
		return "", fmt.Errorf("--bcrypt-cost %d: want %d to %d", cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	var password []byte
	in := c.InOrStdin()
	if f, ok := in.(*os.File); ok && !fromStdin && term.IsTerminal(int(f.Fd())) {
		stderr := c.ErrOrStderr()
		fmt.Fprint(stderr, "Password: ")
		first, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(stderr, "Password again: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		if !bytes.Equal(first, again) {
			return "", errors.New("the passwords differ")
		}
		password = first
	} else {
		line, err := bufio.NewReader(in).ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("reading the password: %w", err)
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		password = bytes.TrimSuffix(line, []byte("\r"))
	}
	switch {
	case len(password) == 0:
		return "", errors.New("the password is empty")
	case len(password) > 72:
		// bcrypt reads 72 bytes, and the provider refuses longer
		// passwords rather than let anything after them match.
		return "", errors.New("the password is longer than bcrypt's 72 bytes")
	}
	var hash []byte
	var err error
	if cost == 0 {
		hash, err = caddyauth.BcryptHash{}.Hash(password)
	} else {
		hash, err = bcrypt.GenerateFromPassword(password, cost)
	}
	if err != nil {
		return "", fmt.Errorf("hashing the password: %w", err)
	}
	return string(hash), nil
}

// listUsers prints one line per user: username, disabled or not, and
// claims; never a hash.
func listUsers(w io.Writer, users []ProviderUser) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USERNAME\tDISABLED\tCLAIMS")
	for _, u := range users {
		names := make([]string, 0, len(u.Claims))
		for name := range u.Claims {
			names = append(names, name)
		}
		slices.Sort(names)
		claims := make([]string, 0, len(names))
		for _, name := range names {
			v, _ := json.Marshal(u.Claims[name])
			if s, ok := u.Claims[name].(string); ok {
				v = []byte(s)
			}
			claims = append(claims, name+"="+string(v))
		}
		disabled := "no"
		if u.Disabled {
			disabled = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Username, disabled, strings.Join(claims, " "))
	}
	return tw.Flush()
}
