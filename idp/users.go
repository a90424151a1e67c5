package idp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"
)

// The user index: what an operator needs to end a user's sessions, kept
// per subject because the store cannot list keys.
//
// Store key: user/<hash sub>, a [userIndex]: the user's provider sessions
// (sid, start, end) and refresh token families (family, client, created,
// last used, end); never a token. One entry per user, so that it is read
// with one Get; its time to live is that of its longest-lived member. It
// is updated with a compare-and-swap on a store that can ([Swapper]); on
// the others with a read and a write, and two updates of one user at the
// same instant (two logins, or a login and a refresh) may lose one of
// them: a lost session or family is then out of the operator's reach
// (it still ends on its own, and by RP-initiated logout), which the
// provider's log says.

// Bounds of a user index: past them the oldest members are dropped,
// after the expired ones.
const (
	maxUserSessions = 64
	maxUserFamilies = 128
)

// LastUsedGranularity is how precise a family's last use is: a refresh
// records its use in the user index only when the recorded one is older,
// so that most refreshes cost no write of it.
const LastUsedGranularity = 10 * time.Minute

var (
	// ErrUnknownUser is returned for a subject (or username) that is not
	// one of the provider's users.
	ErrUnknownUser = errors.New("idp: unknown user")
	// ErrUnknownClient is returned for a client_id that is not one of
	// the provider's clients.
	ErrUnknownClient = errors.New("idp: unknown client")
)

func userIndexKey(sub string) string { return "user/" + hashKey(sub) }

type userIndex struct {
	Sessions []indexedSession `json:"sessions,omitempty"`
	Families []indexedFamily  `json:"families,omitempty"`
}

type indexedSession struct {
	SID     string `json:"sid"`
	Created int64  `json:"created"`
	End     int64  `json:"end"`
}

type indexedFamily struct {
	Family   string `json:"family"`
	ClientID string `json:"client_id"`
	Created  int64  `json:"created"`
	LastUsed int64  `json:"last_used"`
	End      int64  `json:"end"`
}

// SessionInfo is a provider session of a user, as [Provider.UserSessions]
// lists it.
type SessionInfo struct {
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// FamilyInfo is a refresh token family of a user (the tokens of one
// login at one client), as [Provider.UserFamilies] lists it. LastUsed is
// precise to [LastUsedGranularity].
type FamilyInfo struct {
	ClientID string    `json:"client_id"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used"`
	Expires  time.Time `json:"expires"`
}

// prune drops the members that ended before now, then the oldest past
// the bounds.
func (ix *userIndex) prune(now int64) {
	ix.Sessions = slices.DeleteFunc(ix.Sessions, func(s indexedSession) bool { return s.End <= now })
	ix.Families = slices.DeleteFunc(ix.Families, func(f indexedFamily) bool { return f.End <= now })
	sort.SliceStable(ix.Sessions, func(i, j int) bool { return ix.Sessions[i].Created < ix.Sessions[j].Created })
	sort.SliceStable(ix.Families, func(i, j int) bool { return ix.Families[i].Created < ix.Families[j].Created })
	if n := len(ix.Sessions); n > maxUserSessions {
		ix.Sessions = ix.Sessions[n-maxUserSessions:]
	}
	if n := len(ix.Families); n > maxUserFamilies {
		ix.Families = ix.Families[n-maxUserFamilies:]
	}
}

// end is when the last member of ix ends (unix seconds).
func (ix *userIndex) end() int64 {
	var end int64
	for _, s := range ix.Sessions {
		end = max(end, s.End)
	}
	for _, f := range ix.Families {
		end = max(end, f.End)
	}
	return end
}

// readUserIndex returns sub's index, empty if there is none.
func (p *Provider) readUserIndex(ctx context.Context, sub string) (userIndex, error) {
	var ix userIndex
	data, err := p.store.Get(ctx, userIndexKey(sub))
	switch {
	case errors.Is(err, ErrNotFound):
		return ix, nil
	case err != nil:
		return ix, fmt.Errorf("idp: reading the user index: %w", err)
	}
	_ = json.Unmarshal(data, &ix) // a damaged index starts afresh
	ix.prune(p.now().Unix())
	return ix, nil
}

// updateUserIndex applies change to sub's index and stores it, unless
// change reports that it changed nothing. See the top of this file for
// what a store without [Swapper] may lose.
func (p *Provider) updateUserIndex(ctx context.Context, sub string, change func(*userIndex) bool) error {
	key := userIndexKey(sub)
	sw, canSwap := p.store.(Swapper)
	for range 8 {
		old, err := p.store.Get(ctx, key)
		var ix userIndex
		switch {
		case errors.Is(err, ErrNotFound):
			old = nil
		case err != nil:
			return fmt.Errorf("idp: reading the user index: %w", err)
		default:
			_ = json.Unmarshal(old, &ix)
		}
		if !change(&ix) {
			return nil
		}
		now := p.now()
		ix.prune(now.Unix())
		ttl := time.Unix(ix.end(), 0).Sub(now)
		var entries []Entry
		if ttl > 0 {
			data, _ := json.Marshal(ix)
			entries = []Entry{{Key: key, Value: data, TTL: ttl}}
		}
		if !canSwap || old == nil {
			// A first entry is put, not swapped: two first updates at once
			// may lose one, as on a store without Swapper.
			if len(entries) == 0 {
				err = p.store.Delete(ctx, key)
			} else {
				err = p.store.Put(ctx, key, entries[0].Value, ttl)
			}
			if err != nil {
				return fmt.Errorf("idp: writing the user index: %w", err)
			}
			return nil
		}
		ok, err := sw.Swap(ctx, key, old, entries)
		if err != nil {
			return fmt.Errorf("idp: writing the user index: %w", err)
		}
		if ok {
			return nil
		}
	}
	return errors.New("idp: writing the user index: too much contention")
}

// indexSession records a new provider session of its user. A failure is
// logged: the login goes on, and the session is out of the operator's
// reach.
func (p *Provider) indexSession(ctx context.Context, s *session) {
	is := indexedSession{SID: s.SID, Created: s.AuthTime, End: time.Unix(s.AuthTime, 0).Add(p.sessionTTL).Unix()}
	err := p.updateUserIndex(ctx, s.Subject, func(ix *userIndex) bool {
		ix.Sessions = append(ix.Sessions, is)
		return true
	})
	if err != nil {
		p.log.ErrorContext(ctx, "recording a session in the user index; the admin API cannot end it", "sub", s.Subject, "error", err)
	}
}

// indexFamily records the use of g's family at now: a new family created
// then, or the last use of a known one (one the index lost, or that
// predates it, is added, created at its login).
func (p *Provider) indexFamily(ctx context.Context, g refreshGrant, now int64) {
	end := g.End
	if c := p.clients[g.ClientID]; c != nil && c.unlimited() {
		// The family's end moves with each use, and the index hears of a
		// use only every LastUsedGranularity: it keeps the family that
		// much longer.
		end = max(end, now+int64((c.SlidingRefreshTokenLifetime+LastUsedGranularity)/time.Second))
	}
	err := p.updateUserIndex(ctx, g.Subject, func(ix *userIndex) bool {
		for i := range ix.Families {
			if ix.Families[i].Family == g.Family {
				ix.Families[i].LastUsed = max(ix.Families[i].LastUsed, now)
				ix.Families[i].End = max(ix.Families[i].End, end)
				return true
			}
		}
		ix.Families = append(ix.Families, indexedFamily{
			Family: g.Family, ClientID: g.ClientID, Created: g.AuthTime, LastUsed: now, End: end,
		})
		return true
	})
	if err != nil {
		p.log.ErrorContext(ctx, "recording a refresh token family in the user index", "client_id", g.ClientID, "sub", g.Subject, "error", err)
	}
}

// subject resolves user, a subject or else a username, to a subject.
func (p *Provider) subject(user string) (string, error) {
	us := p.users()
	if us.bySubject[user] != nil {
		return user, nil
	}
	if u := us.byName[user]; u != nil {
		return u.Subject, nil
	}
	return "", ErrUnknownUser
}

// sessionLive says whether the session sid has not been ended.
func (p *Provider) sessionLive(ctx context.Context, sid string) (bool, error) {
	_, err := p.store.Get(ctx, endedKey(sid))
	if errors.Is(err, ErrNotFound) {
		return true, nil
	}
	return false, err
}

// UserSessions lists the provider sessions of user (a subject or a
// username) that have neither expired nor ended, oldest first.
func (p *Provider) UserSessions(ctx context.Context, user string) ([]SessionInfo, error) {
	sub, err := p.subject(user)
	if err != nil {
		return nil, err
	}
	ix, err := p.readUserIndex(ctx, sub)
	if err != nil {
		return nil, err
	}
	list := []SessionInfo{}
	for _, s := range ix.Sessions {
		live, err := p.sessionLive(ctx, s.SID)
		if err != nil {
			return nil, fmt.Errorf("idp: reading a session: %w", err)
		}
		if live {
			list = append(list, SessionInfo{Created: time.Unix(s.Created, 0), Expires: time.Unix(s.End, 0)})
		}
	}
	return list, nil
}

// UserFamilies lists the refresh token families of user (a subject or a
// username) that have neither reached their end nor been revoked, oldest
// first. A family of a client with sliding expiration that went unused
// past its sliding lifetime is listed until its absolute end.
func (p *Provider) UserFamilies(ctx context.Context, user string) ([]FamilyInfo, error) {
	sub, err := p.subject(user)
	if err != nil {
		return nil, err
	}
	ix, err := p.readUserIndex(ctx, sub)
	if err != nil {
		return nil, err
	}
	list := []FamilyInfo{}
	for _, f := range ix.Families {
		revoked, err := p.familyRevoked(ctx, f.Family)
		if err != nil {
			return nil, fmt.Errorf("idp: reading a refresh token family: %w", err)
		}
		if !revoked {
			list = append(list, FamilyInfo{
				ClientID: f.ClientID, Created: time.Unix(f.Created, 0),
				LastUsed: time.Unix(f.LastUsed, 0), Expires: time.Unix(f.End, 0),
			})
		}
	}
	return list, nil
}

// EndUserSessions signs user (a subject or a username) out everywhere:
// each of the user's provider sessions ends as [Provider.EndSession]
// ends it (back-channel logout to the clients that registered for it),
// and every refresh token family of the user is revoked, whatever its
// client's LogoutRevokesRefreshTokens. It returns how many live sessions
// it ended and families it revoked. On a store error, what was done stays
// done and the call may be repeated.
func (p *Provider) EndUserSessions(ctx context.Context, user string) (sessions, families int, err error) {
	sub, sessions, families, err := p.endUserSessions(ctx, user)
	ev := Event{Type: EventAdmin, Outcome: ActionEndUserSessions, Subject: sub, Sessions: sessions, Families: families}
	if sub == "" {
		ev.Username = loggedName(user)
	}
	if err != nil {
		ev.Reason = err.Error()
	}
	p.emit(ctx, ev)
	return sessions, families, err
}

// endUserSessions is [Provider.EndUserSessions], which it also returns
// the subject of, without its event.
func (p *Provider) endUserSessions(ctx context.Context, user string) (sub string, sessions, families int, err error) {
	sub, err = p.subject(user)
	if err != nil {
		return "", 0, 0, err
	}
	sessions, families, err = p.endSubjectSessions(ctx, sub)
	return sub, sessions, families, err
}

// endSubjectSessions is [Provider.EndUserSessions] of the subject sub,
// which need not be a user's any more.
func (p *Provider) endSubjectSessions(ctx context.Context, sub string) (sessions, families int, err error) {
	ix, err := p.readUserIndex(ctx, sub)
	if err != nil {
		return 0, 0, err
	}
	// The families first: ending a session revokes some of them too,
	// and they are counted here.
	revoked, families, err := p.revokeIndexed(ctx, ix.Families, func(indexedFamily) bool { return true })
	if err != nil {
		return 0, families, err
	}
	ended := make(map[string]bool)
	for _, s := range ix.Sessions {
		live, err := p.sessionLive(ctx, s.SID)
		if err != nil {
			return sessions, families, fmt.Errorf("idp: reading a session: %w", err)
		}
		if live {
			if err := p.EndSession(ctx, s.SID); err != nil {
				return sessions, families, err
			}
			sessions++
		}
		ended[s.SID] = true
	}
	err = p.updateUserIndex(ctx, sub, func(ix *userIndex) bool {
		ix.Sessions = slices.DeleteFunc(ix.Sessions, func(s indexedSession) bool { return ended[s.SID] })
		ix.Families = slices.DeleteFunc(ix.Families, func(f indexedFamily) bool { return revoked[f.Family] })
		return true
	})
	p.log.InfoContext(ctx, "user signed out everywhere", "sub", sub, "sessions", sessions, "families", families)
	return sessions, families, err
}

// RevokeClientTokens revokes the refresh token families (and with them
// the access tokens, as introspection sees them) that clientID holds for
// user (a subject or a username), or for every user when user is empty:
// one index read per configured user, as users are configured, not
// stored. It returns how many families it revoked. The users' provider
// sessions stay.
func (p *Provider) RevokeClientTokens(ctx context.Context, clientID, user string) (int, error) {
	n, err := p.revokeClientTokens(ctx, clientID, user)
	ev := Event{Type: EventAdmin, Outcome: ActionRevokeClientTokens, ClientID: truncate(clientID, 100), Families: n}
	if user != "" {
		if sub, serr := p.subject(user); serr == nil {
			ev.Subject = sub
		} else {
			ev.Username = loggedName(user)
		}
	}
	if err != nil {
		ev.Reason = err.Error()
	}
	p.emit(ctx, ev)
	return n, err
}

func (p *Provider) revokeClientTokens(ctx context.Context, clientID, user string) (int, error) {
	if p.clients[clientID] == nil {
		return 0, ErrUnknownClient
	}
	var subs []string
	if user != "" {
		sub, err := p.subject(user)
		if err != nil {
			return 0, err
		}
		subs = []string{sub}
	} else {
		for sub := range p.users().bySubject {
			subs = append(subs, sub)
		}
		slices.Sort(subs)
	}
	n := 0
	for _, sub := range subs {
		ix, err := p.readUserIndex(ctx, sub)
		if err != nil {
			return n, err
		}
		revoked, k, err := p.revokeIndexed(ctx, ix.Families, func(f indexedFamily) bool { return f.ClientID == clientID })
		n += k
		if err != nil {
			return n, err
		}
		if len(revoked) == 0 {
			continue
		}
		err = p.updateUserIndex(ctx, sub, func(ix *userIndex) bool {
			ix.Families = slices.DeleteFunc(ix.Families, func(f indexedFamily) bool { return revoked[f.Family] })
			return true
		})
		if err != nil {
			return n, err
		}
	}
	p.log.InfoContext(ctx, "client tokens revoked", "client_id", clientID, "sub", user, "families", n)
	return n, nil
}

// revokeIndexed revokes the families that match: it returns them all,
// to drop from the index, and how many of them it revoked (the others
// were revoked already).
func (p *Provider) revokeIndexed(ctx context.Context, fams []indexedFamily, match func(indexedFamily) bool) (map[string]bool, int, error) {
	done := make(map[string]bool)
	n := 0
	for _, f := range fams {
		if !match(f) {
			continue
		}
		already, err := p.familyRevoked(ctx, f.Family)
		if err != nil {
			return done, n, fmt.Errorf("idp: reading a refresh token family: %w", err)
		}
		if !already {
			if err := p.revokeFamily(ctx, refreshGrant{Family: f.Family, End: f.End}); err != nil {
				return done, n, fmt.Errorf("idp: %w", err)
			}
			n++
		}
		done[f.Family] = true
	}
	return done, n, nil
}

// endDisabledSessions ends the sessions and revokes the refresh tokens of
// the disabled users, as [Provider.EndUserSessions] does, so that
// disabling a user in the configuration also signs the user out of the
// clients (by back-channel logout), not only out of new logins. It runs
// at each start of the worker: a user's index that is empty costs one
// read, and a session that another node or an earlier start ended is
// not ended again. A store error is logged; the next start tries again.
func (p *Provider) endDisabledSessions(ctx context.Context) {
	var subs []string
	for sub, u := range p.users().bySubject {
		if u.Disabled {
			subs = append(subs, sub)
		}
	}
	slices.Sort(subs)
	for _, sub := range subs {
		if err := p.endIndexed(ctx, sub); err != nil && ctx.Err() == nil {
			p.log.ErrorContext(ctx, "ending the sessions of a disabled user", "sub", sub, "error", err)
		}
	}
}

// endIndexed ends the sessions and families of sub if its index lists
// any, under the store's timeout: a subject with an empty index costs
// one read.
func (p *Provider) endIndexed(ctx context.Context, sub string) error {
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	ix, err := p.readUserIndex(sctx, sub)
	if err == nil && (len(ix.Sessions) > 0 || len(ix.Families) > 0) {
		var sessions, families int
		sessions, families, err = p.endSubjectSessions(sctx, sub)
		if sessions > 0 || families > 0 {
			p.emit(ctx, Event{Type: EventLogout, Reason: ReasonUserDisabled, Subject: sub, Sessions: sessions, Families: families})
		}
	}
	return err
}

// endLater queues the subjects of users that [Provider.SetUsers] removed
// or disabled, for the worker to end their sessions, and wakes it.
func (p *Provider) endLater(subs []string) {
	b := p.bcl
	b.mu.Lock()
	for _, sub := range subs {
		b.ending[sub] = true
	}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// endQueued ends the sessions of the subjects that endLater queued. One
// that fails stays queued, for the worker's next round.
func (p *Provider) endQueued(ctx context.Context) {
	b := p.bcl
	b.mu.Lock()
	subs := make([]string, 0, len(b.ending))
	for sub := range b.ending {
		subs = append(subs, sub)
	}
	b.mu.Unlock()
	slices.Sort(subs)
	for _, sub := range subs {
		if err := p.endIndexed(ctx, sub); err != nil {
			if ctx.Err() == nil {
				p.log.ErrorContext(ctx, "ending the sessions of a removed or disabled user; trying again", "sub", sub, "error", err)
			}
			continue
		}
		b.mu.Lock()
		delete(b.ending, sub)
		b.mu.Unlock()
	}
}
