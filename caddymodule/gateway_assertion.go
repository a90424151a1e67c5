package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/authgate/authgate/idp"
)

// GatewayAssertion makes the gateway send the upstream a short-lived JWT
// that it signs, the identity assertion, so that an upstream that may be
// reached without the gateway can check that a request came through it,
// and for whom. Its claims: iss, aud, sub, email and groups (when the
// session has them), iat and exp; its header: alg, kid and typ
// "authgate-assertion+jwt". The public keys are at
// /.well-known/authgate/jwks.json on the gateway's site.
type GatewayAssertion struct {
	// Header is the request header that carries the assertion. Whatever
	// it is, a client's X-Authgate-Assertion and Header are deleted
	// before the request goes on. Default: X-Authgate-Assertion.
	Header string `json:"header,omitempty"`

	// Issuer is the assertion's iss. Default: the origin of the request's
	// site, scheme://host[:port] (the port only when not the scheme's
	// default), as the browser addressed it. Set it for a site that
	// answers any host name, whose Host header the client chooses.
	Issuer string `json:"issuer,omitempty"`

	// Audience is the assertion's aud, what the upstream checks to be its
	// own name. Default: the issuer, so that an assertion made for one
	// site is refused by the upstreams of the others.
	Audience string `json:"audience,omitempty"`

	// Lifetime is how long an assertion is valid, from 1s to 10m. The
	// gateway reuses an assertion for a session while more than half of
	// its lifetime is left. Default: 60s.
	Lifetime caddy.Duration `json:"lifetime,omitempty"`

	// Alg is the signature algorithm, ES256 or RS256. Default: ES256
	// (a signature costs a tenth of RS256's, and the keys are small).
	Alg string `json:"alg,omitempty"`
}

// Defaults and bounds of the identity assertion.
const (
	// AssertionJWKSPath is where a gateway with an identity assertion
	// serves its public keys, on every site it protects.
	AssertionJWKSPath = "/.well-known/authgate/jwks.json"
	// AssertionType is the typ header of an assertion (RFC 8725 §3.11:
	// explicit typing), so that a verifier can never take another JWT
	// for one, nor an assertion for an ID or access token.
	AssertionType = "authgate-assertion+jwt"

	defaultAssertionHeader   = "X-Authgate-Assertion"
	defaultAssertionLifetime = 60 * time.Second
	maxAssertionLifetime     = 10 * time.Minute
)

// assertionSchedule is the rotation of the assertion keys: the provider's
// period and pre-publication, and a retention that outlasts the longest
// assertion.
var assertionSchedule = rotationSchedule{
	rotate: true, period: defaultRotationPeriod, publishAhead: defaultPublishAhead,
	retention: maxAssertionLifetime + retentionMargin,
}

// validate checks the options of a.
func (a *GatewayAssertion) validate() error {
	switch a.Alg {
	case "", idp.ES256, idp.RS256:
	default:
		return fmt.Errorf("identity_assertion: alg %q is not ES256 or RS256", a.Alg)
	}
	if l := time.Duration(a.Lifetime); l != 0 && (l < time.Second || l > maxAssertionLifetime) {
		return fmt.Errorf("identity_assertion: lifetime %s is not between 1s and %s", l, maxAssertionLifetime)
	}
	if a.Header != "" && !httpguts.ValidHeaderFieldName(a.Header) {
		return fmt.Errorf("identity_assertion: header %q is not a header name", a.Header)
	}
	if a.Issuer != "" {
		if u, err := url.Parse(a.Issuer); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("identity_assertion: issuer %q is not an absolute http(s) URL", a.Issuer)
		}
	}
	return nil
}

// assertionSigner is a gateway's identity assertion, provisioned.
type assertionSigner struct {
	header   string // canonical
	issuer   string // "": the request's origin
	audience string // "": the issuer
	lifetime time.Duration
	keys     *assertionKeys
	poolKey  string
}

// assertionClaims are the claims of an assertion.
type assertionClaims struct {
	Issuer   string   `json:"iss"`
	Audience string   `json:"aud"`
	Subject  string   `json:"sub"`
	Email    string   `json:"email,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	IssuedAt int64    `json:"iat"`
	Expiry   int64    `json:"exp"`
}

// signedAssertion is an assertion made for an identity, kept with it (in
// the session cache) and reused until renewAt, for requests to the same
// host.
type signedAssertion struct {
	token   string
	host    string // the request's Host it was made for, when the issuer is the request's
	tls     bool
	renewAt time.Time
}

// errAssertionKeysUnavailable: the assertion keys could not be loaded from
// the store; the request is answered 503.
var errAssertionKeysUnavailable = errors.New("the identity assertion keys could not be loaded")

// provisionAssertion sets up g.assertion from g.IdentityAssertion, taking
// its share of the process's key ring for the store and algorithm. Keys
// are loaded at the first request that needs them.
func (g *Gateway) provisionAssertion(ctx caddy.Context) error {
	a := g.IdentityAssertion
	if a == nil {
		return nil
	}
	if err := a.validate(); err != nil {
		return fmt.Errorf("oidc_gateway: %w", err)
	}
	s := &assertionSigner{
		header: http.CanonicalHeaderKey(a.Header), issuer: a.Issuer, audience: a.Audience,
		lifetime: time.Duration(a.Lifetime),
	}
	if s.header == "" {
		s.header = defaultAssertionHeader
	}
	if s.lifetime == 0 {
		s.lifetime = defaultAssertionLifetime
	}
	if s.audience == "" && s.issuer != "" {
		s.audience = s.issuer
	}
	alg := a.Alg
	if alg == "" {
		alg = idp.ES256
	}
	file := "assertion_keys_" + strings.ToLower(alg) + ".json"
	var (
		poolKey string
		newKeys func() (*assertionKeys, error)
	)
	switch storage := contextStorage(ctx); {
	case g.Store != nil && g.Store.Redis != nil:
		r, key, err := loadRedis(g.Store.Redis, g.logger)
		if err != nil {
			return err
		}
		poolKey = "assertion redis " + key + " " + alg
		created := false
		newKeys = func() (*assertionKeys, error) {
			created = true
			k := newAssertionKeys(newRedisKeyStore(r), "gateway/"+file, alg, g.logger)
			k.release = func() { _, _ = redisPool.Delete(key) }
			return k, nil
		}
		defer func() {
			if !created {
				_, _ = redisPool.Delete(key)
			}
		}()
	case storage != nil:
		poolKey = "assertion storage " + storageIdentity(storage) + " " + alg
		newKeys = func() (*assertionKeys, error) {
			return newAssertionKeys(storage, "authgate/gateway/"+file, alg, g.logger), nil
		}
	default:
		poolKey = "assertion local " + alg
		newKeys = func() (*assertionKeys, error) {
			return newAssertionKeys(&localKeyStore{values: make(map[string][]byte)}, file, alg, g.logger), nil
		}
	}
	k, _, err := assertionKeyPool.LoadOrNew(poolKey, func() (caddy.Destructor, error) { return newKeys() })
	if err != nil {
		return err
	}
	s.keys, s.poolKey = k.(*assertionKeys), poolKey
	g.assertion = s
	return nil
}

// cleanupAssertion releases g's share of its key ring.
func (g *Gateway) cleanupAssertion() error {
	if g.assertion == nil || g.assertion.poolKey == "" {
		return nil
	}
	_, err := assertionKeyPool.Delete(g.assertion.poolKey)
	g.assertion.poolKey = ""
	return err
}

// assertionFor returns the assertion of id for r: the one kept with id if
// it was made for the same host and has more than half its lifetime left,
// else a new one, kept for the next requests.
func (s *assertionSigner) assertionFor(r *http.Request, id *identity, now time.Time) (string, error) {
	tls := r.TLS != nil
	if a := id.assertion.Load(); a != nil && now.Before(a.renewAt) && (s.issuer != "" || (a.host == r.Host && a.tls == tls)) {
		return a.token, nil
	}
	ks, err := s.keys.current()
	if err != nil {
		return "", err
	}
	iss, aud := s.issuer, s.audience
	if iss == "" {
		iss = siteOrigin(r.Host, tls)
		aud = iss
	}
	exp := now.Add(s.lifetime)
	if !id.ends.IsZero() && id.ends.Before(exp) {
		exp = id.ends // a bearer token's or session's end
	}
	c := assertionClaims{
		Issuer: iss, Audience: aud, Subject: id.subject, Email: id.email,
		Groups: claimStrings(id.claims["groups"]), IssuedAt: now.Unix(), Expiry: exp.Unix(),
	}
	token, err := jwt.Signed(ks.signer).Claims(c).Serialize()
	if err != nil {
		return "", fmt.Errorf("signing identity assertion: %w", err)
	}
	id.assertion.Store(&signedAssertion{token: token, host: r.Host, tls: tls, renewAt: now.Add(exp.Sub(now) / 2)})
	return token, nil
}

// serveJWKS answers GET and HEAD of AssertionJWKSPath with the public
// keys: public, cacheable for a time well within the pre-publication of a
// new key, so that a verifier that caches it by HTTP's rules has a key
// before it signs.
func (s *assertionSigner) serveJWKS(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return caddyhttp.Error(http.StatusMethodNotAllowed, errors.New("the assertion JWKS takes GET or HEAD"))
	}
	ks, err := s.keys.current()
	if err != nil {
		w.Header().Set("Retry-After", "5")
		return caddyhttp.Error(http.StatusServiceUnavailable, err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/jwk-set+json")
	h.Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(assertionSchedule.jwksMaxAge()/time.Second)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(ks.jwks)
	}
	return nil
}

// siteOrigin is the origin of a request's site: scheme://host[:port],
// the host in lower case and the port only if not the scheme's default.
func siteOrigin(host string, tls bool) string {
	scheme, defaultPort := "http", "80"
	if tls {
		scheme, defaultPort = "https", "443"
	}
	host = strings.ToLower(host)
	if h, port, err := net.SplitHostPort(host); err == nil && port == defaultPort {
		host = h
		if strings.Contains(h, ":") {
			host = "[" + h + "]"
		}
	}
	return scheme + "://" + host
}

// claimStrings returns a claim that is a list of strings, or one string,
// as a list; anything else as none.
func claimStrings(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []string:
		return v
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// assertionKeyPool holds the assertion key rings of this process, one per
// store and algorithm, shared by every gateway that uses them and kept
// across reloads.
var assertionKeyPool = caddy.NewUsagePool()

// assertionKeys is a ring of assertion signing keys in a key store,
// rotated by a keyRotation as the provider's signing keys are: published
// a day before they sign, signing for a month, published until every
// assertion they signed has expired, one node rotating for all.
type assertionKeys struct {
	rot     *keyRotation
	set     atomic.Pointer[assertionKeySet]
	release func() // of the store's share, or nil

	mu     sync.Mutex // what follows: one load at a time
	failed time.Time  // of the last failed load
	stop   context.CancelFunc
	done   chan struct{}
}

// assertionKeySet is the keys of now: the signer and the JWKS.
type assertionKeySet struct {
	signer jose.Signer
	jwks   []byte
}

func newAssertionKeys(store keyStore, key, alg string, logger *zap.Logger) *assertionKeys {
	rot := newKeyRotation(store, key, nil, assertionSchedule, logger.With(zap.String("keys", "identity assertion")))
	rot.algs = []string{alg}
	return &assertionKeys{rot: rot}
}

// current returns the keys of now, loading them (and starting their
// rotation) the first time. After a failed load, requests fail at once
// for a second rather than each waiting on a store that is down.
func (k *assertionKeys) current() (*assertionKeySet, error) {
	if s := k.set.Load(); s != nil {
		return s, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if s := k.set.Load(); s != nil {
		return s, nil
	}
	if time.Since(k.failed) < sharedKeyRetry {
		return nil, errAssertionKeysUnavailable
	}
	ctx, cancel := context.WithTimeout(context.Background(), firstLoadTimeout)
	defer cancel()
	keys, err := k.rot.init(ctx)
	if err == nil {
		err = k.SetKeys(keys)
	}
	if err != nil {
		k.failed = time.Now()
		return nil, fmt.Errorf("%w: %w", errAssertionKeysUnavailable, err)
	}
	k.rot.mu.Lock()
	k.rot.target = k
	k.rot.mu.Unlock()
	runCtx, stop := context.WithCancel(context.Background())
	k.stop, k.done = stop, make(chan struct{})
	go func() {
		defer close(k.done)
		k.rot.run(runCtx)
	}()
	return k.set.Load(), nil
}

// SetKeys makes the keys of now those of keys: the first signs, all are
// published. The rotation calls it when they change.
func (k *assertionKeys) SetKeys(keys []idp.SigningKey) error {
	if len(keys) == 0 {
		return errors.New("no identity assertion key")
	}
	first := keys[0]
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.SignatureAlgorithm(first.Alg), Key: jose.JSONWebKey{Key: first.Key, KeyID: first.ID}},
		(&jose.SignerOptions{}).WithType(AssertionType))
	if err != nil {
		return fmt.Errorf("identity assertion key %s: %w", first.ID, err)
	}
	var set jose.JSONWebKeySet
	for _, key := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: key.Key.Public(), KeyID: key.ID, Algorithm: key.Alg, Use: "sig"})
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return err
	}
	k.set.Store(&assertionKeySet{signer: signer, jwks: jwks})
	return nil
}

// Destruct stops the rotation and releases the store.
func (k *assertionKeys) Destruct() error {
	k.mu.Lock()
	stop, done := k.stop, k.done
	k.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	if k.release != nil {
		k.release()
	}
	return nil
}

// localKeyStore keeps keys in this process only, for a gateway
// provisioned without a configuration (tests).
type localKeyStore struct {
	mu     sync.Mutex
	values map[string][]byte
}

func (s *localKeyStore) Load(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.values[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return v, nil
}

func (s *localKeyStore) Store(_ context.Context, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[key] = value
	return nil
}

func (s *localKeyStore) Lock(context.Context, string) error   { return nil }
func (s *localKeyStore) Unlock(context.Context, string) error { return nil }

var _ keySetter = (*assertionKeys)(nil)
