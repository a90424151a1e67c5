package bench_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/authgate/authgate/internal/caddytest"
	"github.com/authgate/authgate/internal/redistest"
)

// The token load: 8 clients, as in the figures; rounds short
// enough that the cases take turns often, few enough that the whole
// benchmark stays well under two minutes.
var (
	tokenWorkers = flag.Int("token.workers", 8, "concurrent clients of the token endpoint")
	tokenTime    = flag.Duration("token.time", 400*time.Millisecond, "length of one run of one case")
	tokenRounds  = flag.Int("token.rounds", 8, "runs of each case, the cases taking turns")
	tokenMax     = flag.Int("token.max", 200_000, "most requests of one run")
	tokenProfile = flag.String("token.cpuprofile", "", "directory to write a CPU profile of Caddy under each case to, taken after the measured rounds for -load.cpuprofile-time")
)

// The targets: a grant's CPU per token at most this many times the
// cost of the signatures it makes; refresh on the default store (bolt) at
// least this many times as fast as on Caddy's storage, and on Redis at
// least this fraction of the default store's.
const (
	targetFloorRatio   = 1.2
	targetBoltStorage  = 2.0
	targetRedisDefault = 0.8
)

const (
	serviceSecret = "bench-service-secret"
	serviceEnv    = "AUTHGATE_BENCH_SERVICE_SECRET"
)

// Providers that sign access tokens with RS256 (the default) or ES256, ID
// tokens RS256 on all, on the default store (a bbolt file), on Caddy's
// storage (`store storage`) and on Redis.
var tokenConfig = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	storage file_system {{.Storage}}
	persist_config off
	grace_period 1s
}

{{.Bare}} {
	bind 127.0.0.1
	header Content-Type application/json
	respond "{\"access_token\":\"{{.BareToken}}\",\"token_type\":\"Bearer\",\"expires_in\":3600}" 200
}
{{range .Issuers}}
{{.URL}} {
	bind 127.0.0.1
	oidc_provider {{.URL}} {
		access_token_alg {{.Alg}}{{if .Store}}
		store {{.Store}}{{end}}
		client service {
			secret {env.{{$.SecretEnv}}}
			client_credentials
			password_grant
			offline_access
			scopes openid profile api
		}
		user alice {
			password_hash {{$.Hash}}
			claim name "Alice Smith"
			claim email AliceSmith@email.com
		}
		api_scope api
		api_resource bench-api api
	}
}
{{end}}`))

// tokenCase is one grant against one provider, and what its runs measured.
type tokenCase struct {
	name    string
	issuer  string
	form    url.Values        // the request; refresh_token is set per worker
	refresh bool              // rotate a refresh token per worker
	algs    []string          // the signatures each token response makes
	tokens  chan string       // refresh tokens between runs, one per worker
	client  *http.Client      // its own connections
	full    stats             // as BenchmarkProxy's
	floor   time.Duration     // signing floor per response, summed over rounds
	floorN  int               // rounds measured
	sample  map[string][]byte // payloads of a real response's tokens, by alg
}

// BenchmarkToken measures the provider's token endpoint under
// client_credentials and under refresh with rotation, each with RS256 and
// with ES256 access tokens: tokens per second with 8 clients, Caddy's CPU
// per token from /proc, and the signing floor measured in this process in
// the same rounds (the CPU time go-jose takes to sign the same claims with
// the same key types), so that CPU per token is reported as a ratio to
// what the signatures alone cost.
func BenchmarkToken(b *testing.B) {
	if *tokenRounds < 1 || *tokenWorkers < 1 {
		b.Fatalf("-token.rounds %d and -token.workers %d: each must be at least 1", *tokenRounds, *tokenWorkers)
	}
	hash, err := aliceHash()
	if err != nil {
		b.Fatalf("hashing password: %v", err)
	}
	// Redis as a node of a cluster would run it, its append-only file
	// synced every second (not at every write, as the bolt store syncs).
	rds := redistest.Start(b, "--appendonly", "yes", "--appendfsync", "everysec")
	c := caddytest.New(b, serviceEnv+"="+serviceSecret)
	port := func() string { return fmt.Sprintf("http://127.0.0.1:%d", caddytest.FreePort(b)) }
	bare := port()
	type issuer struct{ URL, Alg, Store string }
	var issuers []issuer
	newIssuer := func(alg, store string) string {
		issuers = append(issuers, issuer{port(), alg, store})
		return issuers[len(issuers)-1].URL
	}
	redisStore := "redis {\n\t\t\taddress " + rds.Addr + "\n\t\t}"
	rs, es := newIssuer("RS256", ""), newIssuer("ES256", "")
	rsStorage, esStorage := newIssuer("RS256", "storage"), newIssuer("ES256", "storage")
	rsRedis, esRedis := newIssuer("RS256", redisStore), newIssuer("ES256", redisStore)
	c.WriteConfig(b, tokenConfig, map[string]any{
		"Admin":     c.AdminAddr,
		"Storage":   c.Storage,
		"SecretEnv": serviceEnv,
		"Hash":      string(hash),
		"Issuers":   issuers,
		"Bare":      bare,
		"BareToken": strings.Repeat("x", 600), // about an ES256 access token
	})
	for _, is := range issuers {
		c.Ready = append(c.Ready, is.URL+"/.well-known/openid-configuration")
	}
	c.Start(b)
	s := &server{Caddy: c}

	cc := url.Values{"grant_type": {"client_credentials"}, "scope": {"api"}}
	rt := url.Values{"grant_type": {"refresh_token"}}
	cases := []*tokenCase{
		newTokenCase("bare POST (respond)", bare, cc, false),
		newTokenCase("client_credentials RS256", rs, cc, false, "RS256"),
		newTokenCase("client_credentials ES256", es, cc, false, "ES256"),
		newTokenCase("refresh RS256+RS256 bolt", rs, rt, true, "RS256", "RS256"),
		newTokenCase("refresh RS256+ES256 bolt", es, rt, true, "RS256", "ES256"),
		newTokenCase("refresh RS256+RS256 storage", rsStorage, rt, true, "RS256", "RS256"),
		newTokenCase("refresh RS256+ES256 storage", esStorage, rt, true, "RS256", "ES256"),
		newTokenCase("refresh RS256+RS256 redis", rsRedis, rt, true, "RS256", "RS256"),
		newTokenCase("refresh RS256+ES256 redis", esRedis, rt, true, "RS256", "ES256"),
	}
	byName := map[string]*tokenCase{}
	for _, tc := range cases {
		byName[tc.name] = tc
	}
	for _, tc := range cases {
		if tc.refresh {
			tc.login(b)
		}
		tc.takeSample(b)
	}
	signers := newFloorSigners(b)

	for _, tc := range cases {
		var warm stats
		warm.add(tc.run(s, 300*time.Millisecond))
		if warm.failures > 0 {
			b.Fatalf("%s: %d of %d requests failed while warming up, first: %v",
				tc.name, warm.failures, warm.requests+warm.failures, warm.firstErr)
		}
	}
	for range *tokenRounds {
		for _, tc := range cases {
			tc.full.add(tc.run(s, *tokenTime))
			tc.floor += signers.floor(b, tc)
			tc.floorN++
		}
	}
	for _, tc := range cases {
		if tc.full.failures > 0 {
			b.Errorf("%s: %d of %d requests failed, first: %v", tc.name, tc.full.failures,
				tc.full.requests+tc.full.failures, tc.full.firstErr)
		}
	}
	if b.Failed() {
		return
	}

	fmt.Printf("BenchmarkToken: %d rounds per case of %v with %d clients; Caddy and the clients share %d CPUs.\n"+
		"stores: bolt, the default (a bbolt file, every commit synced); storage, Caddy's file_system storage (`store storage`);\n"+
		"redis, a local redis-server (`store redis`, appendfsync everysec).\n"+
		"signing floor: go-jose signing the same claims with the same key types in this process, single-threaded, measured in every round;\n"+
		"bare POST: the same request to a Caddy site that only responds, for what HTTP alone costs Caddy.\n%s\n%s\n",
		*tokenRounds, *tokenTime, *tokenWorkers, runtime.NumCPU(), tokenTable(cases), storeTable(byName))

	for _, tc := range cases {
		b.Run(strings.ReplaceAll(tc.name, " ", "_"), func(b *testing.B) {
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(tc.full.rate(), "tokens/s")
			if tc.full.cpuOK {
				b.ReportMetric(micros(tc.full.cpuPerRequest()), "caddy-cpu-µs/token")
			}
			if len(tc.algs) > 0 {
				b.ReportMetric(micros(tc.floorPerToken()), "floor-µs/token")
				if tc.full.cpuOK {
					b.ReportMetric(tc.floorRatio(), "cpu/floor")
				}
			}
		})
	}

	if *tokenProfile != "" {
		for _, tc := range cases {
			path, err := tc.profile(s, *tokenProfile, *loadProfTime)
			if err != nil {
				b.Fatalf("profiling %s: %v", tc.name, err)
			}
			fmt.Printf("BenchmarkToken: CPU profile of Caddy under %s: %s\n", tc.name, path)
		}
	}
}

// profile runs the case while Caddy's admin endpoint takes a CPU profile
// of length d, and writes the profile into dir.
func (tc *tokenCase) profile(s *server, dir string, d time.Duration) (string, error) {
	name := "caddy-token-" + strings.NewReplacer(" ", "-", "+", "-").Replace(tc.name) + ".pprof"
	return profileUnder(s, dir, name, d, func(d time.Duration) runResult { return tc.run(s, d) })
}

func newTokenCase(name, issuer string, form url.Values, refresh bool, algs ...string) *tokenCase {
	return &tokenCase{
		name:    name,
		issuer:  issuer,
		form:    form,
		refresh: refresh,
		algs:    algs,
		tokens:  make(chan string, *tokenWorkers),
		client: &http.Client{
			Transport: &http.Transport{MaxIdleConnsPerHost: 4 * *tokenWorkers, IdleConnTimeout: time.Minute},
			Timeout:   10 * time.Second,
		},
		full: stats{cpuOK: true},
	}
}

// login gets each worker a refresh token of its own with the password
// grant: every refresh rotates it, so workers cannot share one.
func (tc *tokenCase) login(b *testing.B) {
	b.Helper()
	for range *tokenWorkers {
		tr, err := tc.post(url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {password},
			"scope": {"openid profile offline_access"}})
		if err != nil {
			b.Fatalf("%s: password grant: %v", tc.name, err)
		}
		if tr.RefreshToken == "" {
			b.Fatalf("%s: password grant: no refresh token", tc.name)
		}
		tc.tokens <- tr.RefreshToken
	}
}

// takeSample makes one request of the case and keeps the payloads of the
// tokens it returns, for the signing floor to sign the same claims.
func (tc *tokenCase) takeSample(b *testing.B) {
	b.Helper()
	form := tc.form
	var rt string
	if tc.refresh {
		rt = <-tc.tokens
		form = withToken(form, rt)
	}
	tr, err := tc.post(form)
	if err != nil {
		b.Fatalf("%s: %v", tc.name, err)
	}
	if tc.refresh {
		tc.tokens <- tr.RefreshToken
	}
	tc.sample = map[string][]byte{}
	for _, tok := range []string{tr.IDToken, tr.AccessToken} {
		if tok == "" || len(tc.algs) == 0 {
			continue
		}
		parts := strings.Split(tok, ".")
		hdr, err1 := base64.RawURLEncoding.DecodeString(parts[0])
		payload, err2 := base64.RawURLEncoding.DecodeString(parts[1])
		var h struct {
			Alg string `json:"alg"`
		}
		if err := errors.Join(err1, err2, json.Unmarshal(hdr, &h)); err != nil {
			b.Fatalf("%s: reading a token %.40q: %v", tc.name, tok, err)
		}
		tc.sample[h.Alg] = payload
	}
	for _, alg := range tc.algs {
		if tc.sample[alg] == nil {
			b.Fatalf("%s: the response has no %s token", tc.name, alg)
		}
	}
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token"`
}

func withToken(form url.Values, rt string) url.Values {
	f := make(url.Values, len(form)+1)
	for k, v := range form {
		f[k] = v
	}
	f.Set("refresh_token", rt)
	return f
}

// post sends one token request as the service client.
func (tc *tokenCase) post(form url.Values) (tokenResponse, error) {
	var tr tokenResponse
	req, err := http.NewRequest(http.MethodPost, tc.issuer+"/connect/token", strings.NewReader(form.Encode()))
	if err != nil {
		return tr, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("service", serviceSecret)
	resp, err := tc.client.Do(req)
	if err != nil {
		return tr, err
	}
	var body bytes.Buffer
	_, err = body.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil {
		return tr, fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return tr, fmt.Errorf("status %d, body %.200q", resp.StatusCode, body.Bytes())
	}
	if err := json.Unmarshal(body.Bytes(), &tr); err != nil {
		return tr, err
	}
	if tr.AccessToken == "" {
		return tr, errors.New("no access token")
	}
	return tr, nil
}

// run sends token requests from the case's workers until d has passed or
// tokenMax requests have been sent.
func (tc *tokenCase) run(s *server, d time.Duration) runResult {
	return runWorkers(s, *tokenWorkers, *tokenMax, d, tc.worker)
}

func (tc *tokenCase) worker(g *gate, remaining *atomic.Int64) workerResult {
	var w workerResult
	var rt string
	if tc.refresh {
		rt = <-tc.tokens
		// The token goes back for the next run, rotated or not: a failed
		// refresh is counted, and the next one fails the same way.
		defer func() { tc.tokens <- rt }()
	}
	w.latencies = make([]time.Duration, 0, 1024)
	<-g.open
	for remaining.Add(-1) >= 0 {
		t0 := time.Now()
		if !t0.Before(g.end) {
			break
		}
		form := tc.form
		if tc.refresh {
			form = withToken(form, rt)
		}
		tr, err := tc.post(form)
		if err != nil {
			w.fail(err)
			continue
		}
		if tc.refresh {
			if tr.RefreshToken == "" || tr.RefreshToken == rt || tr.IDToken == "" {
				w.fail(errors.New("refresh: no new refresh token or no ID token"))
				continue
			}
			rt = tr.RefreshToken
		}
		w.latencies = append(w.latencies, time.Since(t0))
	}
	return w
}

// floorSigners sign with keys of the provider's types: RSA 2048 and P-256.
type floorSigners map[string]jose.Signer

func newFloorSigners(b *testing.B) floorSigners {
	b.Helper()
	rsaKey, err1 := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, err2 := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := errors.Join(err1, err2); err != nil {
		b.Fatal(err)
	}
	s := floorSigners{}
	for alg, key := range map[string]any{"RS256": rsaKey, "ES256": ecKey} {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: jose.JSONWebKey{Key: key, KeyID: "k"}},
			(&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			b.Fatal(err)
		}
		s[alg] = signer
	}
	return s
}

// floorTime is how long each measurement of the floor signs for.
const floorTime = 60 * time.Millisecond

// floor measures the CPU time of signing the case's tokens once, as the
// provider does (claims to JSON, sign, serialize), on one goroutine of
// this otherwise idle process.
func (fs floorSigners) floor(b *testing.B, tc *tokenCase) time.Duration {
	b.Helper()
	if len(tc.algs) == 0 {
		return 0
	}
	claims := map[string]map[string]any{}
	for alg, payload := range tc.sample {
		var m map[string]any
		if err := json.Unmarshal(payload, &m); err != nil {
			b.Fatal(err)
		}
		claims[alg] = m
	}
	cpu0 := ownCPUTime()
	t0 := time.Now()
	n := 0
	for ; n < 100_000 && (n < 4 || time.Since(t0) < floorTime); n++ {
		for _, alg := range tc.algs {
			if _, err := jwt.Signed(fs[alg]).Claims(claims[alg]).Serialize(); err != nil {
				b.Fatal(err)
			}
		}
	}
	return (ownCPUTime() - cpu0) / time.Duration(n)
}

func (tc *tokenCase) floorPerToken() time.Duration {
	return tc.floor / time.Duration(max(tc.floorN, 1))
}

func (tc *tokenCase) floorRatio() float64 {
	return float64(tc.full.cpuPerRequest()) / float64(tc.floorPerToken())
}

// beyondHTTP is the CPU per token less what Caddy spends on a bare POST
// answered by respond, over the signing floor: what the provider costs
// beyond HTTP, relative to its signatures.
func (tc *tokenCase) beyondHTTP(bare *tokenCase) float64 {
	return float64(tc.full.cpuPerRequest()-bare.full.cpuPerRequest()) / float64(tc.floorPerToken())
}

func tokenTable(cases []*tokenCase) string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "case\ttokens/s\tp50\tp99\tCaddy CPU/token\tsigning floor\tCPU/floor\t(CPU-bare)/floor\tCaddy cores\tclient cores\ttarget\t\n")
	bare := cases[0]
	for _, tc := range cases {
		st := &tc.full
		cpu, ratio, beyond, cores, target := "n/a", "", "", "n/a", ""
		if st.cpuOK {
			cpu = fmtMicros(st.cpuPerRequest())
			cores = fmt.Sprintf("%.2f", st.cpu.Seconds()/st.elapsed.Seconds())
			if len(tc.algs) > 0 {
				ratio = fmt.Sprintf("%.2f", tc.floorRatio())
				beyond = fmt.Sprintf("%.2f", tc.beyondHTTP(bare))
				target = fmt.Sprintf("≤ %.1f %s", targetFloorRatio, mark(tc.floorRatio() <= targetFloorRatio))
			}
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t\n", tc.name, st.rate(),
			fmtMicros(st.percentile(50)), fmtMicros(st.percentile(99)), cpu, fmtMicros(tc.floorPerToken()),
			ratio, beyond, cores, st.ownCPU.Seconds()/st.elapsed.Seconds(), target)
	}
	tw.Flush()

	sb.WriteString("\ntokens/s of the rounds\n")
	tw = tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "case\tmin\tquartile 1\tmedian\tquartile 3\tmax\t\n")
	for _, tc := range cases {
		r := slices.Sorted(slices.Values(tc.full.rates))
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t\n", tc.name,
			r[0], quantile(r, 0.25), quantile(r, 0.5), quantile(r, 0.75), r[len(r)-1])
	}
	tw.Flush()
	return sb.String()
}

// storeTable compares the refresh cases of the stores, same signatures,
// same run: throughput ratios against the targets.
func storeTable(cases map[string]*tokenCase) string {
	var sb strings.Builder
	sb.WriteString("refresh throughput by store\n")
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "signatures\tbolt/storage\ttarget\tredis/bolt\ttarget\t\n")
	for _, sig := range []string{"RS256+RS256", "RS256+ES256"} {
		bolt := cases["refresh "+sig+" bolt"].full.rate()
		storage := cases["refresh "+sig+" storage"].full.rate()
		redis := cases["refresh "+sig+" redis"].full.rate()
		fmt.Fprintf(tw, "%s\t%.2f\t≥ %.1f %s\t%.2f\t≥ %.1f %s\t\n", sig,
			bolt/storage, targetBoltStorage, mark(bolt/storage >= targetBoltStorage),
			redis/bolt, targetRedisDefault, mark(redis/bolt >= targetRedisDefault))
	}
	tw.Flush()
	return sb.String()
}
