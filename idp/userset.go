package idp

import (
	"errors"
	"fmt"
	"slices"
)

// userSet is the provider's users, swapped whole by [Provider.SetUsers]:
// a request loads it once and sees one set from start to end, so that a
// login in flight while the users change checks the password against the
// set it started with. Nothing in a set changes once it is stored.
type userSet struct {
	byName    map[string]*User
	bySubject map[string]*User
	fakes     []fakeHash // for unknown usernames, by cost
}

// users returns the current set.
func (p *Provider) users() *userSet { return p.accounts.Load() }

// newUserSet checks list and builds its set, reusing the fake hashes of
// prev (nil at the first).
func (p *Provider) newUserSet(list []User, prev *userSet) (*userSet, error) {
	us := &userSet{byName: make(map[string]*User, len(list)), bySubject: make(map[string]*User, len(list))}
	for i := range list {
		u := list[i]
		if u.Username == "" {
			return nil, errors.New("idp: user without a username")
		}
		if _, dup := us.byName[u.Username]; dup {
			return nil, fmt.Errorf("idp: user %q is declared twice", u.Username)
		}
		if u.PasswordHash == "" {
			return nil, fmt.Errorf("idp: user %q: a password hash is required", u.Username)
		}
		if u.Subject == "" {
			u.Subject = DeriveSubject(u.Username)
		}
		if _, dup := us.bySubject[u.Subject]; dup {
			return nil, fmt.Errorf("idp: user %q: subject %q is used by another user", u.Username, u.Subject)
		}
		if !checkRequire(u.Require) {
			return nil, fmt.Errorf("idp: user %q: require %q is not %q or %q", u.Username, u.Require, RequirePasskey, RequirePasskeyOrOTP)
		}
		if _, ok := u.Claims["sub"]; ok {
			return nil, fmt.Errorf("idp: user %q: the sub claim comes from the subject, not from claims", u.Username)
		}
		if u.TOTPSecret != "" {
			s, err := NormalizeTOTPSecret(u.TOTPSecret)
			if err != nil {
				return nil, fmt.Errorf("idp: user %q: the TOTP secret %w", u.Username, err)
			}
			u.TOTPSecret = s
		}
		us.byName[u.Username] = &u
		us.bySubject[u.Subject] = &u
	}
	var prevFakes []fakeHash
	if prev != nil {
		prevFakes = prev.fakes
	}
	fakes, err := p.fakeHashes(us.byName, prevFakes)
	if err != nil {
		return nil, err
	}
	us.fakes = fakes
	return us, nil
}

// SetUsers replaces the provider's users with list, checked as [New]
// checks [Config.Users]; on an error the users stay as they were. It is
// safe to call while the provider serves: each request sees either the
// old users or the new ones. Added users can log in at once, and a
// changed password or claim applies from the next request on.
//
// The users that list removes or newly disables lose their provider
// sessions and refresh tokens at once, as a disabled user's stop working;
// the worker of [Provider.Start] then ends those sessions as
// [Provider.EndUserSessions] does, so that the clients with a
// back-channel logout URI are told. Without a running worker this waits
// for its start.
func (p *Provider) SetUsers(list []User) error {
	for {
		old := p.users()
		us, err := p.newUserSet(list, old)
		if err != nil {
			return err
		}
		if !p.accounts.CompareAndSwap(old, us) {
			continue // another SetUsers came first: build on its set
		}
		var gone []string
		for sub, u := range old.bySubject {
			if nu := us.bySubject[sub]; (nu == nil || nu.Disabled) && !u.Disabled {
				gone = append(gone, sub)
			}
		}
		if len(gone) > 0 {
			slices.Sort(gone)
			p.log.Info("users removed or disabled; ending their sessions", "subs", gone)
			p.endLater(gone)
		}
		return nil
	}
}

// username returns the username of subject sub, or "" if no user has it
// (any more).
func (p *Provider) username(sub string) string {
	if u := p.users().bySubject[sub]; u != nil {
		return u.Username
	}
	return ""
}
