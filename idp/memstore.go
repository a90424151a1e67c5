package idp

import (
	"bytes"
	"context"
	"sync"
	"time"
)

// MemoryStore is a [Store] in this process's memory, for tests, benchmarks
// and single-process use. Expired entries are removed when read and by a
// sweep every minute; Close stops the sweep.
type MemoryStore struct {
	now func() time.Time

	mu      sync.Mutex
	entries map[string]memEntry

	stop chan struct{}
	once sync.Once
}

type memEntry struct {
	value   []byte
	expires time.Time
}

// NewMemoryStore returns an empty store. now may be nil for time.Now.
func NewMemoryStore(now func() time.Time) *MemoryStore {
	if now == nil {
		now = time.Now
	}
	s := &MemoryStore{now: now, entries: make(map[string]memEntry), stop: make(chan struct{})}
	go s.sweepEvery(time.Minute)
	return s
}

// Put implements [Store].
func (s *MemoryStore) Put(_ context.Context, key string, value []byte, ttl time.Duration) error {
	v := append([]byte(nil), value...)
	s.mu.Lock()
	s.entries[key] = memEntry{value: v, expires: s.now().Add(ttl)}
	s.mu.Unlock()
	return nil
}

// PutAll implements [MultiPutter].
func (s *MemoryStore) PutAll(_ context.Context, entries []Entry) error {
	now := s.now()
	s.mu.Lock()
	for _, e := range entries {
		s.entries[e.Key] = memEntry{value: append([]byte(nil), e.Value...), expires: now.Add(e.TTL)}
	}
	s.mu.Unlock()
	return nil
}

// Swap implements [Swapper].
func (s *MemoryStore) Swap(_ context.Context, key string, old []byte, entries []Entry) (bool, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key]
	if !ok || !now.Before(e.expires) || !bytes.Equal(e.value, old) {
		return false, nil
	}
	delete(s.entries, key)
	for _, e := range entries {
		s.entries[e.Key] = memEntry{value: append([]byte(nil), e.Value...), expires: now.Add(e.TTL)}
	}
	return true, nil
}

// Add implements [Adder].
func (s *MemoryStore) Add(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[key]; ok && now.Before(e.expires) {
		return false, nil
	}
	s.entries[key] = memEntry{value: append([]byte(nil), value...), expires: now.Add(ttl)}
	return true, nil
}

// Get implements [Store].
func (s *MemoryStore) Get(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key]
	if !ok {
		return nil, ErrNotFound
	}
	if !s.now().Before(e.expires) {
		delete(s.entries, key)
		return nil, ErrNotFound
	}
	return append([]byte(nil), e.value...), nil
}

// Take implements [Store].
func (s *MemoryStore) Take(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key]
	if !ok {
		return nil, ErrNotFound
	}
	delete(s.entries, key)
	if !s.now().Before(e.expires) {
		return nil, ErrNotFound
	}
	return e.value, nil
}

// Delete implements [Store].
func (s *MemoryStore) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	delete(s.entries, key)
	s.mu.Unlock()
	return nil
}

// Len reports how many entries, expired or not, the store holds.
func (s *MemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// Sweep removes every expired entry.
func (s *MemoryStore) Sweep() {
	now := s.now()
	s.mu.Lock()
	for k, e := range s.entries {
		if !now.Before(e.expires) {
			delete(s.entries, k)
		}
	}
	s.mu.Unlock()
}

// Close stops the background sweep.
func (s *MemoryStore) Close() error {
	s.once.Do(func() { close(s.stop) })
	return nil
}

func (s *MemoryStore) sweepEvery(d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

var (
	_ Store       = (*MemoryStore)(nil)
	_ MultiPutter = (*MemoryStore)(nil)
	_ Swapper     = (*MemoryStore)(nil)
	_ Adder       = (*MemoryStore)(nil)
)
