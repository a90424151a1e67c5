package caddymodule

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/authgate/authgate/idp"
	"github.com/authgate/authgate/idp/storetest"
)

// fakeStore is an idp.Store, and no more (the memory store is also a
// MultiPutter and a Swapper), that fails with err, if set.
type fakeStore struct {
	idp.Store
	err error
}

func (f *fakeStore) Get(ctx context.Context, key string) ([]byte, error) {
	if f.err != nil {
		return nil, f.err
	}
	return f.Store.Get(ctx, key)
}

type fakeMultiPutter struct{ *fakeStore }

func (fakeMultiPutter) PutAll(context.Context, []idp.Entry) error { return nil }

type fakeSwapper struct{ *fakeStore }

func (fakeSwapper) Swap(context.Context, string, []byte, []idp.Entry) (bool, error) {
	return true, nil
}

type fakeSwapMultiPutter struct{ *fakeStore }

func (fakeSwapMultiPutter) PutAll(context.Context, []idp.Entry) error { return nil }
func (fakeSwapMultiPutter) Swap(context.Context, string, []byte, []idp.Entry) (bool, error) {
	return true, nil
}

func histogramCount(t testing.TB, h *prometheus.HistogramVec, labels ...string) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.WithLabelValues(labels...).(prometheus.Histogram).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// TestInstrumentStoreInterfaces checks that the timing wrapper has
// exactly the optional interfaces of the store it wraps: idp takes the
// atomic Swap and the one-write PutAll only from a store that has them.
// The fakes with an idp.Adder.
type (
	fakeAdder             struct{ *fakeStore }
	fakeMultiPutAdder     struct{ fakeMultiPutter }
	fakeSwapAdder         struct{ fakeSwapper }
	fakeSwapMultiPutAdder struct{ fakeSwapMultiPutter }
)

func (fakeAdder) Add(context.Context, string, []byte, time.Duration) (bool, error) { return true, nil }
func (fakeMultiPutAdder) Add(context.Context, string, []byte, time.Duration) (bool, error) {
	return true, nil
}
func (fakeSwapAdder) Add(context.Context, string, []byte, time.Duration) (bool, error) {
	return true, nil
}
func (fakeSwapMultiPutAdder) Add(context.Context, string, []byte, time.Duration) (bool, error) {
	return true, nil
}

func TestInstrumentStoreInterfaces(t *testing.T) {
	mem := func() *fakeStore { return &fakeStore{Store: idp.NewMemoryStore(time.Now)} }
	for _, tc := range []struct {
		name           string
		store          idp.Store
		multi, swapper bool
		adder          bool
	}{
		{"plain", mem(), false, false, false},
		{"multiputter", fakeMultiPutter{mem()}, true, false, false},
		{"swapper", fakeSwapper{mem()}, false, true, false},
		{"both", fakeSwapMultiPutter{mem()}, true, true, false},
		{"adder", fakeAdder{mem()}, false, false, true},
		{"multiputter adder", fakeMultiPutAdder{fakeMultiPutter{mem()}}, true, false, true},
		{"swapper adder", fakeSwapAdder{fakeSwapper{mem()}}, false, true, true},
		{"all", fakeSwapMultiPutAdder{fakeSwapMultiPutter{mem()}}, true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := instrumentStore(tc.store, "test")
			mp, isMP := s.(idp.MultiPutter)
			sw, isSw := s.(idp.Swapper)
			ad, isAd := s.(idp.Adder)
			if isMP != tc.multi || isSw != tc.swapper || isAd != tc.adder {
				t.Fatalf("wrapper is MultiPutter %v, Swapper %v, Adder %v; want %v, %v, %v", isMP, isSw, isAd, tc.multi, tc.swapper, tc.adder)
			}
			ctx := context.Background()
			if isAd {
				before := histogramCount(t, providerCollectors.storeDuration, "test", "add")
				if ok, err := ad.Add(ctx, "a", nil, time.Minute); !ok || err != nil {
					t.Fatalf("Add = %v, %v: not passed through", ok, err)
				}
				if got := histogramCount(t, providerCollectors.storeDuration, "test", "add") - before; got != 1 {
					t.Errorf("add timed %d times, want 1", got)
				}
			}
			if isMP {
				before := histogramCount(t, providerCollectors.storeDuration, "test", "put_all")
				if err := mp.PutAll(ctx, []idp.Entry{{Key: "a", Value: []byte("1"), TTL: time.Minute}}); err != nil {
					t.Fatal(err)
				}
				if got := histogramCount(t, providerCollectors.storeDuration, "test", "put_all") - before; got != 1 {
					t.Errorf("put_all timed %d times, want 1", got)
				}
			}
			if isSw {
				before := histogramCount(t, providerCollectors.storeDuration, "test", "swap")
				if ok, err := sw.Swap(ctx, "a", nil, nil); !ok || err != nil {
					t.Fatalf("Swap = %v, %v: not passed through", ok, err)
				}
				if got := histogramCount(t, providerCollectors.storeDuration, "test", "swap") - before; got != 1 {
					t.Errorf("swap timed %d times, want 1", got)
				}
			}
		})
	}
}

// TestInstrumentStoreErrors counts failures, and not an absent key.
func TestInstrumentStoreErrors(t *testing.T) {
	f := &fakeStore{Store: idp.NewMemoryStore(time.Now)}
	s := instrumentStore(f, "test")
	ctx := context.Background()
	errs := func() float64 {
		return testutil.ToFloat64(providerCollectors.storeErrors.WithLabelValues("test", "get"))
	}
	gets := func() uint64 { return histogramCount(t, providerCollectors.storeDuration, "test", "get") }
	e0, g0 := errs(), gets()
	if _, err := s.Get(ctx, "absent"); !errors.Is(err, idp.ErrNotFound) {
		t.Fatalf("Get(absent) = %v, want ErrNotFound", err)
	}
	f.err = errors.New("disk on fire")
	if _, err := s.Get(ctx, "k"); err != f.err {
		t.Fatalf("Get error = %v, want the store's", err)
	}
	if got := errs() - e0; got != 1 {
		t.Errorf("store errors moved by %v, want 1 (not counting the absent key)", got)
	}
	if got := gets() - g0; got != 2 {
		t.Errorf("get timed %d times, want 2", got)
	}
}

// TestInstrumentStoreConformance runs the store suite through the
// wrapper of the memory store, which is a MultiPutter and a Swapper.
func TestInstrumentStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, c *storetest.Clock) idp.Store {
		return instrumentStore(idp.NewMemoryStore(c.Now), "test")
	})
}

// TestProviderEndpointMetrics times the provider's endpoints by name, the
// issuer's path first, and leaves the requests it passes on untimed.
func TestProviderEndpointMetrics(t *testing.T) {
	ctx := newTestContext(t, t.TempDir())
	p := testProvider("https://login.example.com/op")
	provision(t, ctx, p)
	count := func(endpoint string) uint64 {
		return histogramCount(t, providerCollectors.requestDuration, endpoint)
	}
	disc, jwks := count("discovery"), count("jwks")
	serve(t, p, "https://login.example.com/op"+idp.PathDiscovery)
	serve(t, p, "https://login.example.com/op"+idp.PathJWKS)
	serve(t, p, "https://login.example.com/op"+idp.PathJWKS)
	if _, passed := serve(t, p, "https://login.example.com/elsewhere"); !passed {
		t.Fatal("a path the provider does not own was not passed on")
	}
	if got := count("discovery") - disc; got != 1 {
		t.Errorf("discovery timed %d times, want 1", got)
	}
	if got := count("jwks") - jwks; got != 2 {
		t.Errorf("jwks timed %d times, want 2", got)
	}
	n, err := testutil.GatherAndCount(ctx.GetMetricsRegistry(), "authgate_provider_request_duration_seconds")
	if err != nil || n == 0 {
		t.Errorf("provider endpoint histogram not on the config's registry: %d series, %v", n, err)
	}
}
