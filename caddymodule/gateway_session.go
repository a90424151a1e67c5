package caddymodule

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/securecookie"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/caddyserver/caddy/v2"
)

// randReader is the source of every secret the gateway makes.
var randReader = rand.Reader

// session is a gateway login, kept in the session cookie: who the user is
// and the tokens to act for them. Short JSON names keep the cookie small.
//
// It keeps the user's claims from the ID token, not the ID token itself
// (unless sign_out_id_token_hint needs it), and the access token only for
// pass_access_token: every byte here is read on every request. A session
// over its cookie budget keeps only the claims the gateway uses.
type session struct {
	ID           string         `json:"i"` // random per login; keys refresh deduplication
	Subject      string         `json:"s"`
	Claims       map[string]any `json:"c,omitempty"`
	AccessToken  string         `json:"a,omitempty"`
	RefreshToken string         `json:"r,omitempty"`
	IDToken      string         `json:"t,omitempty"`
	Expiry       int64          `json:"e,omitempty"` // access token expiry, unix seconds; 0: unknown
	Created      int64          `json:"n"`
	Binding      string         `json:"b"`           // the gateways that may open it: sessionBinding of issuer and client_id
	SID          string         `json:"d,omitempty"` // the provider's session (the ID token's sid), for back-channel logout

	claims map[string]any // the user's claims read from IDToken, when Claims is empty
}

// userClaims returns the user's claims: Claims, or those of the ID token
// (verified at login; the cookie around it is authenticated).
func (s *session) userClaims() map[string]any {
	if s.Claims != nil {
		return s.Claims
	}
	if s.claims == nil {
		s.claims = idTokenClaims(s.IDToken)
	}
	return s.claims
}

// idTokenClaims reads the user claims of a JWT's payload, without the
// claims about the token itself.
func idTokenClaims(token string) map[string]any {
	claims := map[string]any{}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return claims
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(payload, &claims) != nil {
		return map[string]any{}
	}
	for _, c := range protocolClaims {
		delete(claims, c)
	}
	delete(claims, "sub")
	return claims
}

// protocolClaims are ID token claims about the token, not the user: they
// are not kept in the session.
var protocolClaims = []string{"iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "azp", "jti", "sid", "auth_time", "amr", "acr"}

// chunkSize keeps each cookie well under browsers' 4096-byte limit for
// name, value and attributes together.
const chunkSize = 3800

// maxChunks bounds how many cookies one session may take: three chunks
// leave room in the request header limits of Caddy (and most servers)
// for the site's other cookies.
const maxChunks = 3

// sessionBudget is the most an encoded session may take.
const sessionBudget = chunkSize * maxChunks

var errSessionTooLarge = errors.New("the session does not fit in its cookies even without the ID token")

// sessionBinding names the gateways that may open a session: those of one
// issuer and client_id, which share a login (the per-route policy pattern)
// while any other gateway, whatever its keys, treats the session as none.
// 72 bits of SHA-256 tell a Caddy's few gateways apart in 12 characters of
// cookie.
func sessionBinding(issuer, clientID string) string {
	// An issuer is a URL, which holds no NUL: the pair is unambiguous.
	sum := sha256.Sum256([]byte(issuer + "\x00" + clientID))
	return base64.RawURLEncoding.EncodeToString(sum[:9])
}

// errForeignCookie is a cookie another gateway made: one of another issuer
// or client_id, under the same cookie name on the same host. It is no
// session here, but it is not ours to clear either.
var errForeignCookie = errors.New("the cookie belongs to another gateway (another issuer or client_id)")

// sessionCodec encrypts (AES-256-CTR) and authenticates (HMAC-SHA256)
// sessions and flow state with gorilla/securecookie: the first key pair
// encodes, every pair decodes. The keys are derived for one issuer and
// client_id, so no other gateway can open what it seals, even with the
// same session key.
//
// A value is "<tag>.<sealed>", the tag being the sessionBinding in the
// clear: it only tells another gateway's cookie (left alone) from a
// tampered or outdated one of ours (cleared). What is accepted rests on
// the keys and the binding sealed in the session, never on the tag.
type sessionCodec struct {
	tag  string
	keys atomic.Pointer[sessionKeys] // nil until a shared key is loaded

	// shared, when not nil, loads the session key that every node shares
	// (gateway_store.go), at the first use rather than in Provision.
	shared *sharedSessionKey
}

// sessionKeys are the securecookie codecs of a sessionCodec's keys.
type sessionKeys struct {
	codecs []securecookie.Codec
	first  *securecookie.SecureCookie
}

func newSessionCodec(secrets []string, issuer, clientID string, maxAge time.Duration) (*sessionCodec, error) {
	c := &sessionCodec{tag: sessionBinding(issuer, clientID)}
	k, err := newSessionKeys(secrets, issuer, clientID, maxAge)
	if err != nil {
		return nil, err
	}
	c.keys.Store(k)
	return c, nil
}

func newSessionKeys(secrets []string, issuer, clientID string, maxAge time.Duration) (*sessionKeys, error) {
	k := new(sessionKeys)
	for i, s := range secrets {
		if len(s) < 16 {
			return nil, fmt.Errorf("oidc_gateway: session key %d is shorter than 16 characters", i+1)
		}
		hashKey, err := deriveKey(s, "session hash", issuer, clientID, 32)
		if err != nil {
			return nil, err
		}
		blockKey, err := deriveKey(s, "session block", issuer, clientID, 32)
		if err != nil {
			return nil, err
		}
		sc := securecookie.New(hashKey, blockKey)
		sc.MaxAge(int(maxAge / time.Second))
		sc.MaxLength(0) // the budget is checked by encodeSession; readers stop at maxChunks
		sc.SetSerializer(securecookie.JSONEncoder{})
		// securecookie reports a bad key only at its first Encode.
		if _, err := sc.Encode("probe", "probe"); err != nil {
			return nil, fmt.Errorf("oidc_gateway: session key %d: %w", i+1, err)
		}
		k.codecs = append(k.codecs, sc)
	}
	k.first = k.codecs[0].(*securecookie.SecureCookie)
	return k, nil
}

// loaded returns the codec's keys, loading the shared key first if need be.
func (c *sessionCodec) loaded() (*sessionKeys, error) {
	if k := c.keys.Load(); k != nil {
		return k, nil
	}
	return c.shared.load(c)
}

func (c *sessionCodec) encode(name string, v any) (string, error) {
	k, err := c.loaded()
	if err != nil {
		return "", err
	}
	sealed, err := k.first.Encode(name, v)
	if err != nil {
		return "", err
	}
	return c.tag + "." + sealed, nil
}

// decode opens a value that encode made; errForeignCookie if another
// gateway made it.
func (c *sessionCodec) decode(name, value string, dst any) error {
	// securecookie's output is base64url, without '.'.
	tag, sealed, ok := strings.Cut(value, ".")
	switch {
	case !ok:
		return errors.New("the cookie has no gateway tag")
	case tag != c.tag:
		return errForeignCookie
	}
	k, err := c.loaded()
	if err != nil {
		return err
	}
	return securecookie.DecodeMulti(name, sealed, dst, k.codecs...)
}

// readSessionCookie returns the session cookie's value, its chunks joined,
// or "" when there is none. It reads the Cookie header once, rather than
// once per chunk as r.Cookie would.
func readSessionCookie(r *http.Request, name string) string {
	var chunks [maxChunks]string
	for _, line := range r.Header["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok || !strings.HasPrefix(k, name) {
				continue
			}
			switch i := chunkIndex(k[len(name):]); {
			case i < 0:
			case chunks[i] == "":
				chunks[i] = v // the first of duplicate names wins, as with r.Cookie
			}
		}
	}
	if len(chunks[0]) < chunkSize {
		return chunks[0]
	}
	n := 1
	for n < maxChunks && chunks[n] != "" && len(chunks[n-1]) >= chunkSize {
		n++
	}
	return strings.Join(chunks[:n], "")
}

// chunkIndex maps the suffix of a session cookie's name to its chunk: ""
// is 0, "_1" is 1, ...; -1 for anything else.
func chunkIndex(suffix string) int {
	if suffix == "" {
		return 0
	}
	if len(suffix) != 2 || suffix[0] != '_' || suffix[1] < '1' || suffix[1] >= '0'+maxChunks {
		return -1
	}
	return int(suffix[1] - '0')
}

// sessionCookies splits an encoded session over the cookie and its chunks,
// and expires chunks the request carries that the new value does not need.
func (g *Gateway) sessionCookies(r *http.Request, value string) []*http.Cookie {
	var out []*http.Cookie
	for i := 0; len(value) > 0 || i == 0; i++ {
		n := min(chunkSize, len(value))
		name := g.cookieName
		if i > 0 {
			name += "_" + strconv.Itoa(i)
		}
		out = append(out, g.cookie(r, name, value[:n], int(g.lifetime/time.Second)))
		value = value[n:]
		if n < chunkSize {
			break
		}
	}
	for i := len(out); i < maxChunks; i++ {
		name := g.cookieName + "_" + strconv.Itoa(i)
		if _, err := r.Cookie(name); err == nil {
			out = append(out, g.cookie(r, name, "", -1))
		}
	}
	return out
}

// clearSessionCookies expires the session cookie and all its chunks.
func (g *Gateway) clearSessionCookies(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, g.cookie(r, g.cookieName, "", -1))
	for i := 1; i < maxChunks; i++ {
		name := g.cookieName + "_" + strconv.Itoa(i)
		if _, err := r.Cookie(name); err == nil {
			http.SetCookie(w, g.cookie(r, name, "", -1))
		}
	}
}

// encodeSession encodes s for its cookies. A session over the budget
// drops the ID token and keeps only the claims the gateway uses; the
// session actually encoded is returned with its value.
func (g *Gateway) encodeSession(s *session) (string, *session, error) {
	lean := *s
	lean.Claims = s.userClaims()
	lean.Binding = g.binding
	if !g.PassAccessToken {
		// Only pass_access_token needs the access token itself: its expiry
		// times refreshes, and the refresh token renews it.
		lean.AccessToken = ""
	}
	if !g.SignOutIDTokenHint {
		lean.IDToken = ""
	}
	s = &lean
	value, err := g.codec.encode(g.cookieName, s)
	if err != nil {
		return "", nil, fmt.Errorf("encoding session cookie: %w", err)
	}
	if len(value) <= sessionBudget {
		return value, s, nil
	}
	slim := *s
	slim.Claims = make(map[string]any)
	for name, v := range s.userClaims() {
		if g.keptClaims[name] {
			slim.Claims[name] = v
		}
	}
	slim.IDToken, slim.claims = "", nil
	if value, err = g.codec.encode(g.cookieName, &slim); err != nil {
		return "", nil, fmt.Errorf("encoding session cookie: %w", err)
	}
	if len(value) > sessionBudget {
		return "", nil, errSessionTooLarge
	}
	g.logger.Warn("session too large for its cookies: ID token left out (no id_token_hint at sign-out), only the claims in use kept",
		zap.String("sub", s.Subject), zap.Int("bytes", len(value)))
	return value, &slim, nil
}

// writeSession encodes s into the response's cookies.
func (g *Gateway) writeSession(w http.ResponseWriter, r *http.Request, s *session) error {
	value, _, err := g.encodeSession(s)
	if err != nil {
		return err
	}
	for _, c := range g.sessionCookies(r, value) {
		http.SetCookie(w, c)
	}
	return nil
}

func (g *Gateway) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	c := &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     g.Cookie.Path,
		Domain:   g.Cookie.Domain,
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   g.secureCookie(r),
		SameSite: http.SameSiteLaxMode,
	}
	switch strings.ToLower(g.Cookie.SameSite) {
	case "strict":
		c.SameSite = http.SameSiteStrictMode
	case "none":
		c.SameSite = http.SameSiteNoneMode
		c.Secure = true // browsers drop SameSite=None cookies without Secure
	}
	return c
}

// secureCookie: Secure unless the site is plain http on loopback, where
// browsers would drop a Secure cookie and there is no network to protect.
func (g *Gateway) secureCookie(r *http.Request) bool {
	switch g.Cookie.Secure {
	case "always":
		return true
	case "never":
		return false
	}
	if r.TLS != nil {
		return true
	}
	return !isLoopbackHost(r.Host)
}

func isLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// identity is what a request's session or bearer token says about the
// user, with everything the hot path needs computed once: header values
// and claim strings for placeholders.
type identity struct {
	token   string // the access token, for pass_access_token
	subject string
	email   string
	claims  map[string]any
	headers []headerValue
	expires time.Time // the identity is not to be used from here on
	ends    time.Time // the session's absolute end, or the bearer token's exp
	raw     string    // the exact cookie or token it was decoded from
	bearer  bool      // it came from an Authorization: Bearer token
	jkt     string    // a bearer token's cnf.jkt: the DPoP key it is bound to

	// What revocations are looked up by, for a session's identity (none
	// for a bearer token's): computed once, when the cookie is opened.
	sessionID string
	sidKey    string // scopedKey(issuer, sid), or "" without a sid
	subKey    string // scopedKey(issuer, sub)
	created   int64  // when the session was made, Unix seconds

	// The placeholders, made once: subject and email as the replacer
	// keeps them, and the provider of http.auth.user.claim.*.
	subjectValue, emailValue any
	placeholders             caddy.ReplacerFunc

	// The identity assertion last made for it, reused while it has more
	// than half its lifetime left (see assertionSigner.assertionFor).
	assertion atomic.Pointer[signedAssertion]
}

type headerValue struct {
	name, value string
}

// claimString renders a claim for a header or placeholder: strings as they
// are, lists joined by commas, anything else in its JSON-ish text form.
func claimString(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case []any:
		parts := make([]string, 0, len(v))
		for _, e := range v {
			parts = append(parts, claimString(e))
		}
		return strings.Join(parts, ",")
	case []string:
		return strings.Join(v, ",")
	case bool:
		return strconv.FormatBool(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return fmt.Sprint(v)
	}
}

// newIdentity computes the identity of a subject with claims.
func (g *Gateway) newIdentity(subject string, claims map[string]any) *identity {
	id := &identity{subject: subject, claims: claims}
	id.email, _ = claims["email"].(string)
	id.subjectValue, id.emailValue = subject, id.email
	id.placeholders = func(key string) (any, bool) {
		name, ok := strings.CutPrefix(key, "http.auth.user.claim.")
		if !ok {
			return nil, false
		}
		if name == "sub" {
			return id.subjectValue, true
		}
		v, ok := claims[name]
		if !ok {
			return "", true
		}
		return claimString(v), true
	}
	add := func(name, value string) {
		switch {
		case value == "":
		case !httpguts.ValidHeaderFieldValue(value):
			// The proxy would fail the request; cutting the value down
			// could make it read as someone else's. Not sent, like a
			// claim the user does not have.
			if ce := g.logger.Check(zap.WarnLevel, "claim not sent upstream: it holds a control character"); ce != nil {
				ce.Write(zap.String("header", name), zap.String("sub", subject))
			}
		default:
			id.headers = append(id.headers, headerValue{name, value})
		}
	}
	add("X-Auth-Request-User", subject)
	add("X-Auth-Request-Email", id.email)
	add("X-Auth-Request-Preferred-Username", claimString(claims["preferred_username"]))
	add("X-Auth-Request-Groups", claimString(claims["groups"]))
	names := make([]string, 0, len(g.Headers))
	for h := range g.Headers {
		names = append(names, h)
	}
	slices.Sort(names)
	for _, h := range names {
		claim := g.Headers[h]
		if claim == "sub" {
			add(h, subject)
			continue
		}
		add(h, claimString(claims[claim]))
	}
	return id
}

// sessionCache maps the exact bytes of a session cookie or bearer token to
// the identity already decoded and verified from them, so that repeated
// requests skip decryption and signature checks. It is bounded; an entry
// is used only until its identity's expiry.
type sessionCache struct {
	seed    maphash.Seed
	max     int
	mu      sync.RWMutex
	entries map[uint64]*identity
}

func newSessionCache(max int) *sessionCache {
	return &sessionCache{seed: maphash.MakeSeed(), max: max, entries: make(map[uint64]*identity)}
}

func (c *sessionCache) get(raw string, now time.Time) *identity {
	h := maphash.String(c.seed, raw)
	c.mu.RLock()
	id := c.entries[h]
	c.mu.RUnlock()
	// The full comparison makes a hash collision a miss, never another
	// user's identity.
	if id == nil || id.raw != raw || !now.Before(id.expires) {
		return nil
	}
	return id
}

func (c *sessionCache) put(id *identity) {
	h := maphash.String(c.seed, id.raw)
	c.mu.Lock()
	if len(c.entries) >= c.max {
		// Evict an arbitrary entry: map order is random, so no pattern of
		// requests can pin the cache.
		for k := range c.entries {
			delete(c.entries, k)
			break
		}
	}
	c.entries[h] = id
	c.mu.Unlock()
}

func (c *sessionCache) remove(raw string) {
	h := maphash.String(c.seed, raw)
	c.mu.Lock()
	if id := c.entries[h]; id != nil && id.raw == raw {
		delete(c.entries, h)
	}
	c.mu.Unlock()
}
