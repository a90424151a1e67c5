package caddymodule

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/authgate/authgate/idp"
)

// Polling of the users file: how often by default, and the shortest
// interval allowed.
const (
	defaultUsersFilePoll = 5 * time.Second
	minUsersFilePoll     = 100 * time.Millisecond
)

// mtimeSlack is how long after a file's modification time a read must
// come to be trusted to have seen that modification: file systems keep
// times as coarsely as 2s (FAT), so that a second write within that time
// can leave size and time as they were.
const mtimeSlack = 2 * time.Second

// fileUser is a user of the users file, with where its object starts.
type fileUser struct {
	ProviderUser
	pos filePos
}

// filePos is a line and column (in bytes) of a file, from 1.
type filePos struct{ line, column int }

func (p filePos) String() string { return fmt.Sprintf("line %d, column %d", p.line, p.column) }

// positionOf returns the line and column of offset in data.
func positionOf(data []byte, offset int64) filePos {
	offset = min(max(offset, 0), int64(len(data)))
	before := data[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	return filePos{line: line, column: len(before) - bytes.LastIndexByte(before, '\n')}
}

// usersFileError is an error in the users file, at a position.
type usersFileError struct {
	pos filePos
	err error
}

func (e *usersFileError) Error() string { return e.pos.String() + ": " + e.err.Error() }
func (e *usersFileError) Unwrap() error { return e.err }

// jsonError drops the "json: " that encoding/json starts its errors with.
func jsonError(err error) error {
	if msg, ok := strings.CutPrefix(err.Error(), "json: "); ok {
		return errors.New(msg)
	}
	return err
}

var unknownField = regexp.MustCompile(`^json: unknown field "(.*)"$`)

// parseUsersFile reads a JSON array of users, each with its position.
// Unknown fields are errors, so that a misspelt "password_hash" is not a
// user without a password; so is a file without an array, an empty one
// included (a file being written, or truncated by mistake, must not
// remove every user). Errors say where in the file they are.
func parseUsersFile(data []byte) ([]fileUser, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &usersFileError{pos: filePos{1, 1}, err: errors.New("the file is empty; want a JSON array of users")}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	// at places err at offset; a syntax error carries its own offset,
	// from offset (where the value being decoded starts) to just past the
	// byte that broke the syntax.
	at := func(offset int64, err error) error {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			offset += se.Offset - 1
		}
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			offset, err = int64(len(data)), errors.New("unexpected end of the file")
		}
		return &usersFileError{pos: positionOf(data, offset), err: jsonError(err)}
	}
	// skip moves offset past white space and commas, to the next value.
	skip := func(offset int64) int64 {
		for offset < int64(len(data)) && strings.IndexByte(" \t\r\n,", data[offset]) >= 0 {
			offset++
		}
		return offset
	}

	start := skip(0)
	tok, err := dec.Token()
	if err != nil {
		return nil, at(start, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, at(start, errors.New("want a JSON array of users"))
	}
	var users []fileUser
	for dec.More() {
		start := skip(dec.InputOffset())
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			// The stream's offsets count from where it stopped, not from
			// where the value starts: decode the value alone again,
			// for an error whose offset counts from start.
			var again json.RawMessage
			if aerr := json.NewDecoder(bytes.NewReader(data[start:])).Decode(&again); aerr != nil {
				err = aerr
			}
			return nil, at(start, err)
		}
		u := fileUser{pos: positionOf(data, start)}
		ud := json.NewDecoder(bytes.NewReader(raw))
		ud.DisallowUnknownFields()
		if err := ud.Decode(&u.ProviderUser); err != nil {
			// Point at the field's name, where it can be found.
			offset, field := start, ""
			var te *json.UnmarshalTypeError
			switch {
			case errors.As(err, &te):
				field = te.Field[strings.LastIndexByte(te.Field, '.')+1:]
				err = fmt.Errorf("%s: want a %s, not a %s", te.Field, te.Type, te.Value)
			case unknownField.MatchString(err.Error()):
				field = unknownField.FindStringSubmatch(err.Error())[1]
			}
			if field != "" {
				if loc := regexp.MustCompile(`"` + regexp.QuoteMeta(field) + `"\s*:`).FindIndex(raw); loc != nil {
					offset = start + int64(loc[0])
				}
			}
			return nil, &usersFileError{pos: positionOf(data, offset), err: jsonError(err)}
		}
		users = append(users, u)
	}
	if _, err := dec.Token(); err != nil { // the closing bracket
		return nil, at(dec.InputOffset(), err)
	}
	if end := skip(dec.InputOffset()); end < int64(len(data)) {
		return nil, at(end, errors.New("more after the array of users"))
	}
	return users, nil
}

// fileIdentity tells whether a file may have changed since it was read:
// its size and modification time, and the digest of what was read.
type fileIdentity struct {
	size   int64
	mtime  time.Time
	readAt time.Time
	sum    [sha256.Size]byte
}

// readUsersFile reads filename and returns what it read with its
// identity. The file is looked at before it is read, so that a change
// while it is read shows at the next look.
func readUsersFile(filename string) ([]byte, fileIdentity, error) {
	info, err := os.Stat(filename)
	if err != nil {
		return nil, fileIdentity{}, err
	}
	data, err := os.ReadFile(filename)
	if err != nil {
		return nil, fileIdentity{}, err
	}
	return data, fileIdentity{size: info.Size(), mtime: info.ModTime(), readAt: time.Now(), sum: sha256.Sum256(data)}, nil
}

// users returns the provider's users: the configured ones, then those of
// the users file, from data (read from it). Everything is checked: hashes,
// names and subjects used twice, whether in the file or once in each.
func (p *Provider) users(data []byte) ([]idp.User, error) {
	repl := caddy.NewReplacer()
	var list []idp.User
	byName := make(map[string]string)    // where each username is declared
	bySubject := make(map[string]string) // and each subject
	add := func(u ProviderUser, where string) error {
		hash := repl.ReplaceAll(u.PasswordHash, "")
		switch {
		case u.Username == "":
			return errors.New("a user without a username")
		case byName[u.Username] != "":
			return fmt.Errorf("user %q is declared twice (also %s)", u.Username, byName[u.Username])
		case hash == "":
			return fmt.Errorf("user %q: password_hash is required", u.Username)
		}
		if err := checkPasswordHash(hash); err != nil {
			return fmt.Errorf("user %q: password_hash: %w", u.Username, err)
		}
		sub := u.Subject
		if sub == "" {
			sub = idp.DeriveSubject(u.Username)
		}
		if other := bySubject[sub]; other != "" {
			return fmt.Errorf("user %q: subject %q is used by another user (%s)", u.Username, sub, other)
		}
		if _, ok := u.Claims["sub"]; ok {
			return fmt.Errorf("user %q: the sub claim comes from the subject, not from claims", u.Username)
		}
		var secret string
		if u.TOTPSecret != "" {
			var err error
			// The error says what is wrong, never the secret.
			if secret, err = idp.NormalizeTOTPSecret(repl.ReplaceAll(u.TOTPSecret, "")); err != nil {
				return fmt.Errorf("user %q: totp_secret %w", u.Username, err)
			}
		}
		byName[u.Username], bySubject[sub] = where, where
		list = append(list, idp.User{Username: u.Username, Subject: u.Subject, PasswordHash: hash, Claims: u.Claims, Disabled: u.Disabled, TOTPSecret: secret, Require: u.Require})
		return nil
	}
	for _, u := range p.Users {
		if err := add(u, "in the configuration"); err != nil {
			return nil, err
		}
	}
	if p.UsersFile == "" {
		return list, nil
	}
	more, err := parseUsersFile(data)
	if err != nil {
		return nil, err
	}
	for _, u := range more {
		if err := add(u.ProviderUser, "in the users file at "+u.pos.String()); err != nil {
			return nil, &usersFileError{pos: u.pos, err: err}
		}
	}
	return list, nil
}

// usersFileWatch re-reads a provider's users file when it changes.
type usersFileWatch struct {
	p        *Provider
	interval time.Duration
	seen     fileIdentity // of the last content read, taken or refused
	missing  bool         // the file could not be read at the last look
}

// usersFilePoll returns how often the users file is looked at: 0 for
// never.
func (p *Provider) usersFilePoll() (time.Duration, error) {
	switch d := time.Duration(p.UsersFilePoll); {
	case p.UsersFile == "" || d < 0:
		return 0, nil
	case d == 0:
		return defaultUsersFilePoll, nil
	case d < minUsersFilePoll:
		return 0, fmt.Errorf("users_file poll %s: want at least %s", d, minUsersFilePoll)
	default:
		return d, nil
	}
}

// watchUsersFile starts looking at the users file every poll interval
// for changes, from seen, what the provisioning read; stopUsersFile (in
// Cleanup) stops it. The first look comes an interval after the start,
// so that `caddy validate`, which cleans up at once, never looks.
func (p *Provider) watchUsersFile(seen fileIdentity) {
	interval, _ := p.usersFilePoll() // checked by idpConfig
	if interval == 0 {
		return
	}
	w := &usersFileWatch{p: p, interval: interval, seen: seen}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.stopUsersFile = func() {
		cancel()
		<-done
	}
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.look()
			}
		}
	}()
}

// look reads the file if it may have changed, and gives the provider its
// users if they did. A file that cannot be read or fails its checks
// leaves the users as they are, and is logged once.
func (w *usersFileWatch) look() {
	p := w.p
	log := p.logger.With(zap.String("users_file", p.UsersFile))
	info, err := os.Stat(p.UsersFile)
	if err == nil && info.Size() == w.seen.size && info.ModTime().Equal(w.seen.mtime) && w.seen.readAt.Sub(w.seen.mtime) > mtimeSlack {
		return // unchanged
	}
	var data []byte
	var seen fileIdentity
	if err == nil {
		data, seen, err = readUsersFile(p.UsersFile)
	}
	if err != nil {
		if !w.missing {
			log.Error("reading the users file; keeping the users", zap.Error(err))
			w.missing = true
		}
		return
	}
	if w.missing {
		log.Info("the users file can be read again")
		w.missing = false
	}
	if seen.sum == w.seen.sum {
		w.seen = seen
		return
	}
	users, err := p.users(data)
	if err != nil {
		var fe *usersFileError
		if errors.As(err, &fe) {
			log = log.With(zap.Int("line", fe.pos.line), zap.Int("column", fe.pos.column))
		}
		log.Error("users file not reloaded; keeping the previous users", zap.Error(err))
		w.seen = seen
		return
	}
	pr := p.provider.Load()
	if pr == nil {
		return // keys still loading: the next look tries again
	}
	if err := pr.SetUsers(users); err != nil {
		log.Error("users file not reloaded; keeping the previous users", zap.Error(err))
	} else {
		log.Info("users file reloaded", zap.Int("users", len(users)))
	}
	w.seen = seen
}
