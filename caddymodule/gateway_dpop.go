package caddymodule

// DPoP (RFC 9449) in modes api and bearer: an access token bound to a key
// (cnf.jkt) passes only with the DPoP scheme and a proof of that key made
// for this request; presented as Bearer it is refused, as a stolen copy
// would be. The token's own checks are those of a bearer token, cached the
// same way; the proof is checked on every request, as each one carries a
// new proof. Proofs are remembered for their window (dpop.MaxReplayWindow)
// in this process's memory, across reloads: a proof replayed at another
// node of a cluster within that window is not caught there (documented in
// the README).

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/authgate/authgate/idp/dpop"
)

// checkDPoP checks the binding of a verified token's identity against the
// request: a bound token needs the DPoP scheme and a proof of its key; the
// DPoP scheme needs a bound token. A request that fails is answered.
func (g *Gateway) checkDPoP(w http.ResponseWriter, r *http.Request, id *identity, token string, isDPoP bool, now time.Time) (*identity, outcome) {
	switch {
	case !isDPoP && id.jkt == "":
		return id, outcomeNone
	case !isDPoP:
		return nil, g.dpopRefused(w, r, "invalid_token", "the access token is DPoP-bound: present it with the DPoP scheme and a proof", nil)
	case id.jkt == "":
		return nil, g.dpopRefused(w, r, "invalid_token", "the access token is not DPoP-bound", nil)
	}
	raw, err := dpop.FromHeader(r.Header)
	if err == nil && raw == "" {
		return nil, g.dpopRefused(w, r, dpop.ErrCodeInvalidProof, "a DPoP proof is required", nil)
	}
	var proof *dpop.Proof
	if err == nil {
		proof, err = dpop.Verify(raw, dpop.Check{Method: r.Method, URL: requestURI(r), AccessToken: token, Now: now})
	}
	if err != nil {
		return nil, g.dpopRefused(w, r, dpop.ErrCodeInvalidProof, "the DPoP proof is invalid", err)
	}
	if proof.JKT != id.jkt {
		return nil, g.dpopRefused(w, r, dpop.ErrCodeInvalidProof, "the DPoP proof is not signed by the token's key", nil)
	}
	switch g.dpopSeen.add(id.jkt, proof.ReplayKey(), now) {
	case proofReplayed:
		return nil, g.dpopRefused(w, r, dpop.ErrCodeInvalidProof, "the DPoP proof was used before", nil)
	case proofsKeyFull:
		return nil, g.dpopRefused(w, r, dpop.ErrCodeInvalidProof, "too many DPoP proofs of this key: try again later", nil)
	case proofsFull:
		return nil, g.dpopRefused(w, r, dpop.ErrCodeInvalidProof, "too many DPoP proofs: try again later", nil)
	}
	return id, outcomeNone
}

// dpopRefused answers 401 with the DPoP challenge of RFC 9449 §7.1.
func (g *Gateway) dpopRefused(w http.ResponseWriter, r *http.Request, code, description string, err error) outcome {
	if ce := g.logger.Check(zap.InfoLevel, "DPoP token refused"); ce != nil {
		fields := []zap.Field{zap.String("error_code", code), zap.String("reason", description)}
		if err != nil {
			fields = append(fields, zap.Error(err))
		}
		ce.Write(fields...)
	}
	w.Header().Set("WWW-Authenticate", dpop.Challenge(r.Host, code, description))
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": code, "error_description": description})
	return outcomeUnauthenticated
}

// requestURI is the URI the client addressed, as this server sees it: its
// scheme, Host, and the path before any rewrite of Caddy's (handle_path,
// uri strip_prefix), which a proof's htu names. The scheme is that of the
// connection, or, when Caddy found the request came from one of its
// trusted_proxies, the X-Forwarded-Proto the proxy set (a TLS-terminating
// load balancer): its last value, as Caddy's reverse_proxy reads it.
func requestURI(r *http.Request) *url.URL {
	u := &url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath}
	if r.TLS != nil {
		u.Scheme = "https"
	}
	if trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool); trusted {
		if vals := r.Header.Values("X-Forwarded-Proto"); len(vals) > 0 {
			last := vals[len(vals)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			switch last = strings.TrimSpace(last); {
			case strings.EqualFold(last, "https"):
				u.Scheme = "https"
			case strings.EqualFold(last, "http"):
				u.Scheme = "http"
			}
		}
	}
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		u.Path, u.RawPath = orig.URL.Path, orig.URL.RawPath
	}
	return u
}

// cnfJKT is the cnf.jkt of a token's claims, "" for a token with no cnf.
// ok is false for a token bound to what the gateway cannot check: a cnf
// (RFC 7800) that is not an object whose one member is a jkt string, such
// as the x5t#S256 of an mTLS-bound token (RFC 8705 §3.1). Such a token
// must not pass as a bearer token.
func cnfJKT(claims map[string]any) (jkt string, ok bool) {
	v, present := claims["cnf"]
	if !present {
		return "", true
	}
	cnf, _ := v.(map[string]any)
	jkt, _ = cnf["jkt"].(string)
	return jkt, jkt != "" && len(cnf) == 1
}

// dpopReplays holds the one replaySet of the process, shared by every
// gateway and kept across config reloads (a reload provisions the new
// gateways before it cleans up the old), so that a reload does not forget
// the proofs seen.
var dpopReplays = caddy.NewUsagePool()

const dpopReplaysKey = "dpop"

// loadReplaySet takes the gateway's share of the process's replaySet.
func (g *Gateway) loadReplaySet() {
	v, _, _ := dpopReplays.LoadOrNew(dpopReplaysKey, func() (caddy.Destructor, error) {
		return newReplaySet(dpop.MaxReplayWindow(dpop.DefaultWindow)), nil
	})
	g.dpopSeen = v.(*replaySet)
}

// Destruct implements [caddy.Destructor]: memory only, nothing to close.
func (s *replaySet) Destruct() error { return nil }

// maxSeenProofs bounds each generation of replaySet: only holders of
// valid bound tokens add to it, and past the bound their proofs are
// refused rather than forgotten (fail closed).
const maxSeenProofs = 1 << 20

// maxProofsPerKey bounds what one key (a token's cnf.jkt) may add to a
// generation of replaySet, so that the holder of one bound token and its
// key, sending fresh proofs as fast as it can, is refused alone instead
// of filling the set and locking every other DPoP client out. 4096 in a
// generation (2 minutes) is over 30 requests a second for one key; only
// maxSeenProofs/maxProofsPerKey keys at their cap fill the set.
const maxProofsPerKey = 4096

// replaySet remembers proofs for at least period: in two generations, the
// current one and the one before, swapped when the current one is period
// old. perKey counts the proofs each key added to the current generation
// (at most one entry per proof in cur, so bounded as cur is).
type replaySet struct {
	mu                sync.Mutex
	period            time.Duration
	maxAll, maxPerKey int // maxSeenProofs, maxProofsPerKey; smaller in tests
	started           time.Time
	cur, prev         map[string]struct{}
	perKey            map[string]int
}

func newReplaySet(period time.Duration) *replaySet {
	return &replaySet{period: period, maxAll: maxSeenProofs, maxPerKey: maxProofsPerKey,
		cur: make(map[string]struct{}), prev: make(map[string]struct{}), perKey: make(map[string]int)}
}

// addResult is what replaySet.add made of a proof.
type addResult int

const (
	proofNew      addResult = iota // recorded
	proofReplayed                  // seen before
	proofsKeyFull                  // its key added maxPerKey proofs to this generation
	proofsFull                     // the generation holds maxAll proofs
)

// add records the proof key of the key jkt, unless it was seen before or
// a bound is reached.
func (s *replaySet) add(jkt, key string, now time.Time) addResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch age := now.Sub(s.started); {
	case age >= 2*s.period:
		s.prev, s.cur, s.started = make(map[string]struct{}), make(map[string]struct{}), now
		s.perKey = make(map[string]int)
	case age >= s.period:
		s.prev, s.cur, s.started = s.cur, make(map[string]struct{}), now
		s.perKey = make(map[string]int)
	}
	if _, ok := s.cur[key]; ok {
		return proofReplayed
	}
	if _, ok := s.prev[key]; ok {
		return proofReplayed
	}
	n := s.perKey[jkt]
	if n >= s.maxPerKey {
		return proofsKeyFull
	}
	if len(s.cur) >= s.maxAll {
		return proofsFull
	}
	s.cur[key] = struct{}{}
	s.perKey[jkt] = n + 1
	return proofNew
}

// badToken answers a token that failed its checks with the challenge of
// the scheme it came with.
func (g *Gateway) badToken(w http.ResponseWriter, r *http.Request, isDPoP bool) outcome {
	if isDPoP {
		return g.dpopRefused(w, r, "invalid_token", "the access token is invalid or expired", nil)
	}
	return g.unauthenticated(w, r, "invalid_token")
}
