package redisstore

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/internal/redistest"
)

// noLimit counts and never holds back.
var noLimit = idp.ThrottleLimit{Free: 1 << 30, Base: time.Second, Max: time.Second}

// BenchmarkStore times Put, Get and Take, and a login's throttle Reserve,
// on the in-memory store and on a real redis-server over loopback, one
// caller at a time and from 8 goroutines at once. Each Redis figure also
// reports x-memory, its time per call over the memory store's in the same
// run: what a round trip costs against no I/O at all.
func BenchmarkStore(b *testing.B) {
	srv := redistest.Start(b)
	ctx := context.Background()
	value := make([]byte, 300) // about a code's record
	type backend struct {
		name     string
		store    idp.Store
		throttle idp.ThrottleStore
	}
	mem := idp.NewMemoryStore(nil)
	b.Cleanup(func() { mem.Close() })
	rs := newStore(b, srv.Addr, Options{PoolSize: 16})
	backends := []backend{
		{"memory", mem, idp.NewMemoryThrottle()},
		{"redis", rs, rs},
	}
	var n atomic.Int64 // makes keys unique across runs of one benchmark
	key := func() string { return "code/bench-" + strconv.FormatInt(n.Add(1), 10) }
	ops := []struct {
		name string
		prep func(s idp.Store, k string) // before the timer, per call
		run  func(be backend, k string) error
	}{
		{"Put", nil, func(be backend, k string) error { return be.store.Put(ctx, k, value, time.Minute) }},
		{"Get", nil, func(be backend, _ string) error { _, err := be.store.Get(ctx, "code/get"); return err }},
		{"Take", func(s idp.Store, k string) { s.Put(ctx, k, value, time.Minute) },
			func(be backend, k string) error { _, err := be.store.Take(ctx, k); return err }},
		// A login's three keys, of 1000 users, with limits that never
		// hold anyone back: the memory throttle scans its whole table on
		// every call once it holds 100,000 live entries, which a key per
		// call would measure instead.
		{"Reserve", nil, func(be backend, k string) error {
			user := " " + k[len(k)-3:] // the last 3 digits of a counter
			_, err := be.throttle.Reserve(ctx, time.Now(), []idp.ThrottleKey{
				{Key: "user-ip:192.0.2.1" + user, Limit: noLimit},
				{Key: "ip:192.0.2.1", Limit: noLimit},
				{Key: "user:" + user, Limit: noLimit},
			})
			return err
		}},
	}
	memNs := map[string]float64{}
	for _, op := range ops {
		for _, parallel := range []bool{false, true} {
			name := op.name
			if parallel {
				name += "/parallel"
			}
			for _, be := range backends {
				if err := be.store.Put(ctx, "code/get", value, time.Hour); err != nil {
					b.Fatal(err)
				}
				b.Run(name+"/"+be.name, func(b *testing.B) {
					keys := make([]string, b.N)
					for i := range keys {
						keys[i] = key()
						if op.prep != nil {
							op.prep(be.store, keys[i])
						}
					}
					var next atomic.Int64
					b.ResetTimer()
					if parallel {
						b.SetParallelism(4) // 4 × GOMAXPROCS goroutines; 8 on 2 cores
						b.RunParallel(func(pb *testing.PB) {
							for pb.Next() {
								if err := op.run(be, keys[next.Add(1)-1]); err != nil {
									b.Error(err)
									return
								}
							}
						})
					} else {
						for i := range b.N {
							if err := op.run(be, keys[i]); err != nil {
								b.Fatal(err)
							}
						}
					}
					ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
					if be.name == "memory" {
						memNs[name] = ns
					} else if m := memNs[name]; m > 0 {
						b.ReportMetric(ns/m, "x-memory")
					}
				})
			}
		}
	}
}
