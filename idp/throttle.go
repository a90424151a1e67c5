package idp

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ThrottleLimit is how failed logins are throttled for one kind of key:
// after Free failures, each further failure doubles the wait before the
// next attempt, starting at Base and capped at Max; and each Max that
// passes without a failure forgives one. A guesser who keeps going thus
// gets one guess per Max, and one who pauses gains nothing by it.
type ThrottleLimit struct {
	Free int
	Base time.Duration
	Max  time.Duration
}

// Wait returns how long a key must wait after its failures-th failure.
func (l ThrottleLimit) Wait(failures int) time.Duration {
	n := failures - l.Free
	switch {
	case n <= 0:
		return 0
	case n > 30: // Base<<n would overflow long before
		return l.Max
	}
	return min(l.Base<<(n-1), l.Max)
}

// orDefault fills the zero fields of l from def.
func (l ThrottleLimit) orDefault(def ThrottleLimit) ThrottleLimit {
	if l.Free <= 0 {
		l.Free = def.Free
	}
	if l.Base <= 0 {
		l.Base = def.Base
	}
	if l.Max <= 0 {
		l.Max = def.Max
	}
	return l
}

// ThrottleKey is one thing that failed logins are counted against (a
// username, a client IP, ...), and its limit. Key is at most about 100
// bytes: a username is in it as a digest, since a client may send one of
// any size and bytes.
type ThrottleKey struct {
	Key   string
	Limit ThrottleLimit
}

// ThrottleStore keeps the counts of the login throttle. An attempt is
// counted as a failure before its password is checked, and taken back
// when the password was right: counting after the check would let every
// guess that arrives while the first ones are being checked through
// unthrottled. Implementations must be safe for concurrent use; a store
// shared by several processes must make Reserve atomic across all of them.
type ThrottleStore interface {
	// Reserve counts one failure against every key at now, unless one of
	// them must still wait: then it counts nothing and returns the longest
	// wait. The check and the count are one atomic step over all keys, so
	// that attempts at the same time are counted as if they came one after
	// the other.
	Reserve(ctx context.Context, now time.Time, keys []ThrottleKey) (time.Duration, error)

	// Release takes back one failure from every key, for an attempt that
	// Reserve counted at the time at and that succeeded: the keys are left
	// as if it had not been made, with no wait of its making and their
	// failures forgiven from the last failure on.
	Release(ctx context.Context, at time.Time, keys []ThrottleKey) error

	// Forget deletes every failure counted against the keys.
	Forget(ctx context.Context, keys []string) error
}

// memoryThrottle is the [ThrottleStore] of a single process.
type memoryThrottle struct {
	mu      sync.Mutex
	entries map[string]*throttleEntry
	pruned  time.Time // when the table was last pruned
}

type throttleEntry struct {
	failures int
	last     time.Time // of the last failure
	until    time.Time // no attempt before this
	forgive  time.Duration
	// last and until as they were before the latest attempt was counted,
	// for Release to put back when that attempt succeeded.
	prevLast, prevUntil time.Time
}

// maxThrottleEntries bounds the table; past it, entries that no longer
// delay anyone are dropped, at most once per pruneInterval.
const (
	maxThrottleEntries = 100_000
	pruneInterval      = time.Second
)

func newMemoryThrottle() *memoryThrottle {
	return &memoryThrottle{entries: make(map[string]*throttleEntry)}
}

// NewMemoryThrottle returns the [ThrottleStore] that a provider uses when
// its Config names none: counts in this process's memory.
func NewMemoryThrottle() ThrottleStore { return newMemoryThrottle() }

// Reserve implements [ThrottleStore].
func (t *memoryThrottle) Reserve(_ context.Context, now time.Time, keys []ThrottleKey) (time.Duration, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var longest time.Duration
	for _, k := range keys {
		if e := t.entries[k.Key]; e != nil {
			longest = max(longest, e.until.Sub(now))
		}
	}
	if longest > 0 {
		return longest, nil
	}
	if len(t.entries) >= maxThrottleEntries && now.Sub(t.pruned).Abs() >= pruneInterval {
		// At most once per pruneInterval: a table kept full of entries
		// that still delay someone (many names from many addresses) would
		// otherwise make every attempt pay for a scan of all of it. It
		// grows past the bound meanwhile, by what arrives in a second.
		t.prune(now)
		t.pruned = now
	}
	for _, k := range keys {
		e := t.entries[k.Key]
		if e == nil {
			e = &throttleEntry{}
			t.entries[k.Key] = e
		}
		e.forgiveQuiet(now, k.Limit.Max)
		e.prevLast, e.prevUntil = e.last, e.until
		e.failures++
		e.last = now
		e.forgive = k.Limit.Max
		if d := k.Limit.Wait(e.failures); d > 0 {
			e.until = now.Add(d)
		}
	}
	return 0, nil
}

// Release implements [ThrottleStore]. Were the success left counted until
// now, every right password from an address past its free failures (an
// office behind one NAT) would make the next person there wait, and keep
// the address's failures from being forgiven while people sign in.
func (t *memoryThrottle) Release(_ context.Context, at time.Time, keys []ThrottleKey) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		e := t.entries[k.Key]
		if e == nil || e.failures == 0 {
			continue
		}
		e.failures--
		if e.last.Equal(at) {
			// The latest attempt counted: back to before it.
			e.last, e.until = e.prevLast, e.prevUntil
		} else {
			// Attempts counted since waited as if this one had failed:
			// the latest of them sets the wait its count comes to without.
			e.until = e.last.Add(k.Limit.Wait(e.failures))
		}
		if k.Limit.Wait(e.failures) == 0 {
			e.until = time.Time{}
		}
	}
	return nil
}

// Forget implements [ThrottleStore].
func (t *memoryThrottle) Forget(_ context.Context, keys []string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		delete(t.entries, k)
	}
	return nil
}

// forgiveQuiet forgives one failure for each full per since the last.
func (e *throttleEntry) forgiveQuiet(now time.Time, per time.Duration) {
	if e.failures == 0 || per <= 0 {
		return
	}
	if n := now.Sub(e.last) / per; n >= time.Duration(e.failures) {
		e.failures = 0
	} else if n > 0 {
		e.failures -= int(n)
		e.last = e.last.Add(n * per)
	}
}

// prune drops the entries that delay no one and whose every failure is
// forgiven.
func (t *memoryThrottle) prune(now time.Time) {
	for k, e := range t.entries {
		if now.After(e.until) && now.Sub(e.last) >= time.Duration(e.failures)*e.forgive {
			delete(t.entries, k)
		}
	}
}

// loginAttempt is a password check that the throttle has let through.
type loginAttempt struct {
	at      time.Time     // when the throttle counted it
	forget  []string      // keys whose failures a success forgets
	release []ThrottleKey // keys that a success takes its count back from
	keys    []ThrottleKey // every key it was counted against
}

// reserveLogin counts an attempt to log in as username from the client IP
// ip, with the device cookie device (its id, if the cookie is valid and
// was set by a login as username), before its password is checked. It
// returns how long to wait instead when the throttle holds the attempt
// back.
//
// The keys follow OWASP's device cookies: failures count per username
// and client IP (strict), per client IP (against spraying many names),
// and per username from every address (much higher, against guessing
// from many addresses) — except for a browser that has logged in as that
// user before and shows its device cookie, which counts per device
// instead, so that no flood from elsewhere locks it out.
func (p *Provider) reserveLogin(ctx context.Context, username, ip, device string) (*loginAttempt, time.Duration, error) {
	// A digest, not the name: a key stays for minutes, and a name may be
	// tens of kilobytes.
	name := hashKey(strings.ToLower(username))
	ip = throttleAddr(ip)
	pair := ThrottleKey{Key: "user-ip:" + ip + " " + name, Limit: p.throttleCfg.UserIP}
	addr := ThrottleKey{Key: "ip:" + ip, Limit: p.throttleCfg.IP}
	third := ThrottleKey{Key: "user:" + name, Limit: p.throttleCfg.User}
	if device != "" {
		third = ThrottleKey{Key: "device:" + device, Limit: p.throttleCfg.Device}
	}
	now := p.now()
	wait, err := p.throttle.Reserve(ctx, now, []ThrottleKey{pair, addr, third})
	if err != nil || wait > 0 {
		return nil, wait, err
	}
	a := &loginAttempt{at: now, forget: []string{pair.Key}, release: []ThrottleKey{addr}, keys: []ThrottleKey{pair, addr, third}}
	if device != "" {
		a.forget = append(a.forget, third.Key)
	} else {
		a.release = append(a.release, third)
	}
	return a, 0, nil
}

// succeeded settles an attempt whose password was right: the failures of
// the username from this address and of the device are forgotten; the
// client IP's and the username's counts are as if the attempt had not
// been made, so that neither logging in to one's own account wipes the
// failures from one's address, nor the victim's login the failures of a
// guessing campaign against them.
func (p *Provider) succeeded(ctx context.Context, a *loginAttempt) {
	if err := p.throttle.Forget(ctx, a.forget); err != nil {
		p.log.ErrorContext(ctx, "login throttle", "error", err)
	}
	if err := p.throttle.Release(ctx, a.at, a.release); err != nil {
		p.log.ErrorContext(ctx, "login throttle", "error", err)
	}
}

// takeBack takes back the count of an attempt that was right but is not
// yet a sign-in (a password before its code): every key as if it had
// not been made, their failures before it left standing.
func (p *Provider) takeBack(ctx context.Context, a *loginAttempt) {
	if err := p.throttle.Release(ctx, a.at, a.keys); err != nil {
		p.log.ErrorContext(ctx, "login throttle", "error", err)
	}
}

// throttleAddr is the part of a client IP that the throttle counts by.
// An IPv6 client is its /64: a host or a home network gets at least that
// much (RFC 6177), so counting every address apart would give an
// attacker a fresh limit per guess. An IPv4-mapped IPv6 address is its
// IPv4 address, and a zone is dropped.
func throttleAddr(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().String()
	}
	return a.String()
}

// retryAfter is a wait in whole seconds, rounded up.
func retryAfter(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }

// waitText says a wait of seconds for the login page, in seconds up to
// two minutes and in whole minutes, rounded up, beyond. A no-break space
// joins number and unit, so that a narrow page never wraps the unit onto
// a line of its own.
func waitText(seconds int) string {
	n, unit := seconds, "second"
	if seconds > 120 {
		n, unit = (seconds+59)/60, "minute"
	}
	if n != 1 {
		unit += "s"
	}
	return strconv.Itoa(n) + "\u00a0" + unit
}
