package bench_test

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"
)

// The load: small enough that `make bench` stays under a minute on two
// cores, large enough that a p99 rests on thousands of requests. Short runs
// and many rounds let the cases take turns often, so that a burst of other
// work on the machine falls on all of them. Change it with
// `go test -run '^$' -bench Proxy -benchtime 1x ./bench/ -args -load.rounds=80`.
var (
	loadWorkers   = flag.Int("load.workers", 32, "concurrent keep-alive clients of the throughput runs")
	loadTime      = flag.Duration("load.time", 250*time.Millisecond, "length of one throughput run of one case")
	loadLightTime = flag.Duration("load.light-time", 100*time.Millisecond, "length of one latency run (one client) of one case")
	loadRounds    = flag.Int("load.rounds", 32, "runs of each case, the cases taking turns")
	loadMax       = flag.Int("load.max", 500_000, "most requests of one run")
	loadProfile   = flag.String("load.cpuprofile", "", "directory to write a CPU profile of Caddy under each case to, taken after the measured rounds")
	loadProfTime  = flag.Duration("load.cpuprofile-time", 10*time.Second, "length of each CPU profile")
)

// The targets, printed beside what was measured and not asserted:
// the load generator shares the machine with Caddy, and shared machines
// are noisy.
const (
	targetGatewayRatio = 0.95
	targetBearerRatio  = 0.93
	targetP99Added     = 200 * time.Microsecond
)

// upstreamBody is what the upstream responds, and so what every request
// must get back.
var upstreamBody = []byte("ok")

// BenchmarkProxy compares a request to the upstream through plain
// reverse_proxy, through oidc_gateway with a session cookie, and through
// oidc_gateway in bearer mode with an access token: throughput, latency
// and Caddy's CPU time per request with many concurrent clients, and
// latency with a single client, where no request waits for another. A
// fourth case, plain-cookie, sends the gateway's Cookie header to a plain
// reverse_proxy that drops it as the gateway does: the difference from
// plain is what the cookie's bytes cost, the rest is the gateway's work.
// A fifth, gateway-nometrics, is the gateway with its metrics off (the
// same session cookie works there): gateway against it is what counting
// costs.
// Another session of alice's was signed out first, so that both
// gateways look requests up in a revocation list that is not empty. The
// cases take turns, round after round, so that noise from the machine
// falls on all of them alike.
//
// It runs its load once whatever b.N is; a sub-benchmark per case reports
// the results, and the table goes to standard output.
func BenchmarkProxy(b *testing.B) {
	if *loadRounds < 1 || *loadWorkers < 1 {
		b.Fatalf("-load.rounds %d and -load.workers %d: each must be at least 1", *loadRounds, *loadWorkers)
	}
	s := startServer(b)
	cookie := sessionCookie(b, s)
	token := accessToken(b, s)
	// Revocation is on, and its list is not empty.
	signOutOtherSession(b, s)

	plain := newLoadCase("plain", s.plain+"/", nil)
	plainCookie := newLoadCase("plain-cookie", s.noCookie+"/", http.Header{"Cookie": {cookie}})
	gateway := newLoadCase("gateway", s.gateway+"/", http.Header{"Cookie": {cookie}})
	gatewayNoMetrics := newLoadCase("gateway-nometrics", s.noMetric+"/", http.Header{"Cookie": {cookie}})
	bearer := newLoadCase("bearer", s.bearer+"/", http.Header{"Authorization": {"Bearer " + token}})
	cases := []*loadCase{plain, plainCookie, gateway, gatewayNoMetrics, bearer}
	comparisons := []comparison{
		{gateway, plain, "", targetGatewayRatio},
		{bearer, plain, "", targetBearerRatio},
		{plainCookie, plain, "the cookie's bytes", 0},
		{gateway, plainCookie, "the gateway's work", 0},
		{gatewayNoMetrics, plain, "the gateway without metrics", 0},
		{gateway, gatewayNoMetrics, "the gateway's metrics", 0},
	}

	// Connections, the gateway's caches and both heaps warm up first.
	for _, c := range cases {
		var warm stats
		warm.add(c.run(s, *loadWorkers, 500*time.Millisecond))
		if warm.failures > 0 {
			b.Fatalf("%s: %d of %d requests failed while warming up, first: %v",
				c.name, warm.failures, warm.requests+warm.failures, warm.firstErr)
		}
	}
	for range *loadRounds {
		for _, c := range cases {
			c.full.add(c.run(s, *loadWorkers, *loadTime))
		}
		for _, c := range cases {
			c.light.add(c.run(s, 1, *loadLightTime))
		}
	}
	for _, c := range cases {
		for _, st := range []*stats{&c.full, &c.light} {
			if st.failures > 0 {
				b.Errorf("%s: %d of %d requests failed, first: %v", c.name, st.failures, st.requests+st.failures, st.firstErr)
			}
		}
	}
	if b.Failed() {
		return
	}

	// Straight to standard output: the testing package shows a parent
	// benchmark's log only under -v, and cuts it at ten lines.
	fmt.Printf("BenchmarkProxy: %d rounds per case of %v with %d clients and of %v with 1 client; Caddy and the clients share %d CPUs.\n"+
		"gateway and plain-cookie requests carry a Cookie header of %d bytes (%d cookie(s)), bearer requests an access token of %d bytes.\n%s\n",
		*loadRounds, *loadTime, *loadWorkers, *loadLightTime, runtime.NumCPU(),
		len(cookie), strings.Count(cookie, "; ")+1, len(token), table(cases, comparisons))

	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportMetric(0, "ns/op") // the load's own metrics stand instead
			b.ReportMetric(c.full.rate(), "req/s")
			b.ReportMetric(micros(c.full.percentile(50)), "p50-µs")
			b.ReportMetric(micros(c.full.percentile(99)), "p99-µs")
			b.ReportMetric(micros(c.light.percentile(99)), "p99-1-client-µs")
			if c.full.cpuOK {
				b.ReportMetric(micros(c.full.cpuPerRequest()), "caddy-cpu-µs/req")
			}
			for _, cmp := range comparisons {
				if cmp.c != c {
					continue
				}
				b.ReportMetric(cmp.ratio(), c.name+"/"+cmp.base.name+"-ratio")
				if cmp.base == plain {
					b.ReportMetric(micros(cmp.p99Added(false)), "p99-added-µs")
					b.ReportMetric(micros(cmp.p99Added(true)), "p99-1-client-added-µs")
				}
			}
		})
	}

	if *loadProfile != "" {
		for _, c := range cases {
			path, err := c.profile(s, *loadProfile, *loadProfTime)
			if err != nil {
				b.Fatalf("profiling %s: %v", c.name, err)
			}
			fmt.Printf("BenchmarkProxy: CPU profile of Caddy under %s: %s\n", c.name, path)
		}
	}
}

// comparison sets a case against a base case.
type comparison struct {
	c, base *loadCase
	what    string  // what the difference measures, if not the case itself
	target  float64 // the target for the ratio of rates; 0: none
}

// ratio is the median over the rounds of the case's rate over the base's
// in the same round: a round that the machine slowed down for one case and
// not for the other moves it little.
func (cmp comparison) ratio() float64 {
	return quantile(roundRatios(cmp.c.full.rates, cmp.base.full.rates), 0.5)
}

// p99Added is the case's p99 latency less the base's, with many clients or
// with one.
func (cmp comparison) p99Added(oneClient bool) time.Duration {
	if oneClient {
		return cmp.c.light.percentile(99) - cmp.base.light.percentile(99)
	}
	return cmp.c.full.percentile(99) - cmp.base.full.percentile(99)
}

// loadCase is one way to reach the upstream, and what its runs measured.
type loadCase struct {
	name   string
	url    string
	header http.Header
	client *http.Client // its own, so that connections are not shared

	full  stats // many clients
	light stats // one client
}

func newLoadCase(name, url string, header http.Header) *loadCase {
	return &loadCase{
		name:   name,
		url:    url,
		header: header,
		client: &http.Client{
			Transport: &http.Transport{
				MaxIdleConnsPerHost: 4 * *loadWorkers,
				DisableCompression:  true,
				IdleConnTimeout:     time.Minute,
			},
			Timeout: 10 * time.Second,
		},
		full:  stats{cpuOK: true},
		light: stats{cpuOK: true},
	}
}

// runResult is what one run of a case measured.
type runResult struct {
	requests, failures int
	firstErr           error
	elapsed            time.Duration
	cpu                time.Duration // Caddy's
	cpuOK              bool
	ownCPU             time.Duration // the load generator's
	latencies          []time.Duration
}

// run sends requests from workers clients until d has passed or loadMax
// requests have been sent, and measures them.
func (c *loadCase) run(s *server, workers int, d time.Duration) runResult {
	return runWorkers(s, workers, *loadMax, d, c.worker)
}

// runWorkers runs worker on workers goroutines at once until d has passed
// or max requests have been sent, and measures them: their latencies, and
// the CPU that Caddy and this process spent meanwhile.
func runWorkers(s *server, workers, max int, d time.Duration, worker func(*gate, *atomic.Int64) workerResult) runResult {
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		res       runResult
		remaining atomic.Int64
	)
	remaining.Store(int64(max))
	g := &gate{open: make(chan struct{})}
	for range workers {
		wg.Go(func() {
			w := worker(g, &remaining)
			mu.Lock()
			defer mu.Unlock()
			res.requests += len(w.latencies)
			res.failures += w.failures
			if res.firstErr == nil {
				res.firstErr = w.firstErr
			}
			res.latencies = append(res.latencies, w.latencies...)
		})
	}
	cpu0, ok0 := s.cpuTime()
	own0 := ownCPUTime()
	t0 := time.Now()
	g.end = t0.Add(d)
	close(g.open)
	wg.Wait()
	res.elapsed = time.Since(t0)
	res.ownCPU = ownCPUTime() - own0
	cpu1, ok1 := s.cpuTime()
	res.cpu, res.cpuOK = cpu1-cpu0, ok0 && ok1
	return res
}

// gate starts the workers of a run together and tells them when to stop.
type gate struct {
	open chan struct{}
	end  time.Time // set before open is closed
}

// workerResult is what one worker saw in a run.
type workerResult struct {
	latencies []time.Duration
	failures  int
	firstErr  error
}

// worker sends one request after another on a keep-alive connection and
// checks each answer.
func (c *loadCase) worker(g *gate, remaining *atomic.Int64) workerResult {
	var w workerResult
	req, err := http.NewRequest(http.MethodGet, c.url, nil)
	if err != nil {
		w.fail(err)
		return w
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	var body bytes.Buffer
	w.latencies = make([]time.Duration, 0, 4096)
	<-g.open
	for remaining.Add(-1) >= 0 {
		t0 := time.Now()
		if !t0.Before(g.end) {
			break
		}
		resp, err := c.client.Do(req)
		if err != nil {
			w.fail(err)
			continue
		}
		body.Reset()
		_, err = body.ReadFrom(resp.Body)
		resp.Body.Close()
		lat := time.Since(t0)
		switch {
		case err != nil:
			w.fail(fmt.Errorf("reading the body: %w", err))
		case resp.StatusCode != http.StatusOK:
			w.fail(fmt.Errorf("status %d, body %.200q", resp.StatusCode, body.Bytes()))
		case !bytes.Equal(body.Bytes(), upstreamBody):
			w.fail(fmt.Errorf("body %.200q, want the upstream's %q", body.Bytes(), upstreamBody))
		default:
			w.latencies = append(w.latencies, lat)
		}
	}
	return w
}

func (w *workerResult) fail(err error) {
	w.failures++
	if w.firstErr == nil {
		w.firstErr = err
	}
}

// profile runs the case while Caddy's admin endpoint takes a CPU profile
// of length d, and writes the profile into dir.
func (c *loadCase) profile(s *server, dir string, d time.Duration) (string, error) {
	return profileUnder(s, dir, "caddy-"+c.name+".pprof", d, func(d time.Duration) runResult { return c.run(s, *loadWorkers, d) })
}

// profileUnder runs load while Caddy's admin endpoint takes a CPU profile
// of length d, and writes the profile into dir as name.
func profileUnder(s *server, dir, name string, d time.Duration, load func(time.Duration) runResult) (string, error) {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	// The load goes on a second longer than the profile, so that the
	// profile sees load all along.
	done := make(chan runResult, 1)
	go func() { done <- load(time.Duration(secs+1) * time.Second) }()
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", s.AdminAddr, secs))
	var body bytes.Buffer
	if err == nil {
		_, err = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d: %s", resp.StatusCode, body.Bytes())
		}
	}
	if r := <-done; r.failures > 0 && err == nil {
		err = fmt.Errorf("%d requests failed, first: %w", r.failures, r.firstErr)
	}
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	return path, os.WriteFile(path, body.Bytes(), 0o644)
}

// stats adds up the runs of a case with the same number of clients.
type stats struct {
	requests  int // answered with 200 and the upstream's body
	failures  int
	firstErr  error
	elapsed   time.Duration
	cpu       time.Duration
	cpuOK     bool
	ownCPU    time.Duration
	latencies []time.Duration // sorted
	rates     []float64       // requests per second of each run
}

func (st *stats) add(r runResult) {
	st.requests += r.requests
	st.failures += r.failures
	if st.firstErr == nil {
		st.firstErr = r.firstErr
	}
	st.elapsed += r.elapsed
	st.cpu += r.cpu
	st.cpuOK = st.cpuOK && r.cpuOK
	st.ownCPU += r.ownCPU
	st.latencies = append(st.latencies, r.latencies...)
	slices.Sort(st.latencies)
	st.rates = append(st.rates, float64(r.requests)/r.elapsed.Seconds())
}

// rate is the requests per second over all the runs.
func (st *stats) rate() float64 {
	return float64(st.requests) / st.elapsed.Seconds()
}

// percentile returns the latency that p percent of the requests took at
// most (nearest rank).
func (st *stats) percentile(p float64) time.Duration {
	if len(st.latencies) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(st.latencies)))) - 1
	return st.latencies[max(i, 0)]
}

func (st *stats) cpuPerRequest() time.Duration {
	return st.cpu / time.Duration(max(st.requests, 1))
}

func (st *stats) ownCPUPerRequest() time.Duration {
	return st.ownCPU / time.Duration(max(st.requests, 1))
}

// roundRatios returns, round by round, the rate of a run over the rate of
// the run of the same round in base, sorted.
func roundRatios(rates, base []float64) []float64 {
	r := make([]float64, 0, len(rates))
	for i := range min(len(rates), len(base)) {
		r = append(r, rates[i]/base[i])
	}
	slices.Sort(r)
	return r
}

// quantile returns the q quantile of sorted values, interpolating between
// neighbours.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	pos := q * float64(len(sorted)-1)
	i := int(pos)
	if i+1 >= len(sorted) {
		return sorted[len(sorted)-1]
	}
	return sorted[i] + (pos-float64(i))*(sorted[i+1]-sorted[i])
}

// table lays out the cases, then the comparisons next to the issue's
// targets.
func table(cases []*loadCase, comparisons []comparison) string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "case\treq/s\tp50\tp99\tCaddy CPU/req\tclient CPU/req\tp50, 1 client\tp99, 1 client\t\n")
	for _, c := range cases {
		cpu := "n/a"
		if c.full.cpuOK {
			cpu = fmtMicros(c.full.cpuPerRequest())
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", c.name, c.full.rate(),
			fmtMicros(c.full.percentile(50)), fmtMicros(c.full.percentile(99)), cpu,
			fmtMicros(c.full.ownCPUPerRequest()),
			fmtMicros(c.light.percentile(50)), fmtMicros(c.light.percentile(99)))
	}
	tw.Flush()

	sb.WriteString("\nreq/s of the rounds\n")
	tw = tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "case\tmin\tquartile 1\tmedian\tquartile 3\tmax\t\n")
	for _, c := range cases {
		r := slices.Sorted(slices.Values(c.full.rates))
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t\n", c.name,
			r[0], quantile(r, 0.25), quantile(r, 0.5), quantile(r, 0.75), r[len(r)-1])
	}
	tw.Flush()

	sb.WriteString("\n")
	tw = tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "comparison\tmeasured\ttarget\n")
	for _, cmp := range comparisons {
		r := roundRatios(cmp.c.full.rates, cmp.base.full.rates)
		target := ""
		if cmp.target != 0 {
			target = fmt.Sprintf("≥ %.2f %s", cmp.target, mark(cmp.ratio() >= cmp.target))
		}
		what := ""
		if cmp.what != "" {
			what = ": " + cmp.what
		}
		fmt.Fprintf(tw, "%s/%s req/s, median of rounds%s\t%.3f (quartiles %.3f, %.3f)\t%s\n",
			cmp.c.name, cmp.base.name, what, cmp.ratio(), quantile(r, 0.25), quantile(r, 0.75), target)
	}
	for _, cmp := range comparisons {
		if cmp.target == 0 {
			continue
		}
		for _, one := range []bool{false, true} {
			clients := fmt.Sprintf("%d clients", *loadWorkers)
			if one {
				clients = "1 client"
			}
			got := cmp.p99Added(one)
			fmt.Fprintf(tw, "%s p99 - %s p99, %s\t%s\t< %s %s\n", cmp.c.name, cmp.base.name, clients,
				fmtMicros(got), fmtMicros(targetP99Added), mark(got < targetP99Added))
		}
	}
	for _, cmp := range comparisons {
		if cmp.c.full.cpuOK && cmp.base.full.cpuOK {
			fmt.Fprintf(tw, "%s - %s Caddy CPU per request\t%s\t\n", cmp.c.name, cmp.base.name,
				fmtMicros(cmp.c.full.cpuPerRequest()-cmp.base.full.cpuPerRequest()))
		}
	}
	fmt.Fprintf(tw, "for scale, oauth2-proxy/plain req/s\t~0.38\t\n")
	tw.Flush()
	return sb.String()
}

func mark(met bool) string {
	if met {
		return "met"
	}
	return "MISSED"
}

func micros(d time.Duration) float64 {
	return float64(d) / float64(time.Microsecond)
}

func fmtMicros(d time.Duration) string {
	return fmt.Sprintf("%.1f µs", micros(d))
}
