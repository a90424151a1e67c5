package idp

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// TestMemoryThrottlePruneRate: a table full of entries that still delay
// someone is scanned for prunable ones at most once a second, not on every
// attempt: otherwise an attacker who keeps it full (many usernames from
// many addresses) makes every login pay for a scan of the whole table.
func TestMemoryThrottlePruneRate(t *testing.T) {
	ctx := context.Background()
	start := time.Unix(1_700_000_000, 0)
	live := ThrottleLimit{Free: 0, Base: time.Hour, Max: time.Hour}
	th := newMemoryThrottle()
	for i := range maxThrottleEntries {
		th.entries["live:"+strconv.Itoa(i)] = &throttleEntry{failures: 1, last: start, until: start.Add(time.Hour), forgive: time.Hour}
	}
	// stale is an entry a prune would drop: no wait, every failure forgiven.
	stale := func() {
		th.entries["stale"] = &throttleEntry{failures: 1, last: start.Add(-2 * time.Hour), forgive: time.Minute}
	}
	stale()
	if _, err := th.Reserve(ctx, start, []ThrottleKey{{Key: "a", Limit: live}}); err != nil {
		t.Fatal(err)
	}
	if th.entries["stale"] != nil {
		t.Fatal("the first attempt on a full table did not prune it")
	}
	stale()
	for i := range 100 {
		th.Reserve(ctx, start.Add(time.Duration(i)*time.Millisecond), []ThrottleKey{{Key: "b" + strconv.Itoa(i), Limit: live}})
	}
	if th.entries["stale"] == nil {
		t.Fatal("attempts within a second of a prune pruned again")
	}
	th.Reserve(ctx, start.Add(time.Second), []ThrottleKey{{Key: "c", Limit: live}})
	if th.entries["stale"] != nil {
		t.Error("an attempt a second after the last prune did not prune")
	}
}

func TestWaitText(t *testing.T) {
	for _, tt := range []struct {
		seconds int
		want    string
	}{
		{1, "1\u00a0second"},
		{4, "4\u00a0seconds"},
		{120, "120\u00a0seconds"},
		{121, "3\u00a0minutes"},
		{900, "15\u00a0minutes"},
	} {
		if got := waitText(tt.seconds); got != tt.want {
			t.Errorf("waitText(%d) = %q, want %q", tt.seconds, got, tt.want)
		}
	}
}
