package ratelimit

import (
	"crypto/sha256"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// clock is a manual clock; tests advance it instead of sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestEvery(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		per       time.Duration
		wantLimit rate.Limit
		wantBurst int
	}{
		{"five per ten minutes is one every two minutes with a burst of five", 5, 10 * time.Minute, rate.Every(2 * time.Minute), 5},
		{"one per second is a rate of one", 1, time.Second, 1, 1},
		{"zero per period admits nothing", 0, time.Minute, 0, 0},
		{"a zero period admits everything", 3, 0, rate.Inf, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotLimit, gotBurst := Every(tt.n, tt.per)
			if gotLimit != tt.wantLimit || gotBurst != tt.wantBurst {
				t.Errorf("Every(%d, %v) = %v, %d; want %v, %d", tt.n, tt.per, gotLimit, gotBurst, tt.wantLimit, tt.wantBurst)
			}
		})
	}
}

// step is one call to Allow after advancing the clock.
type step struct {
	advance   time.Duration
	key       string
	wantOK    bool
	wantRetry time.Duration
}

func TestAllow(t *testing.T) {
	fivePer10m, burst5 := Every(5, 10*time.Minute)
	allowed := func(key string) step { return step{key: key, wantOK: true} }
	tests := []struct {
		name  string
		limit rate.Limit
		burst int
		steps []step
	}{
		{
			name: "a new key gets the whole burst and then waits for one interval", limit: fivePer10m, burst: burst5,
			steps: []step{allowed("u"), allowed("u"), allowed("u"), allowed("u"), allowed("u"),
				{key: "u", wantOK: false, wantRetry: 2 * time.Minute}},
		},
		{
			name: "a token comes back after its interval and only one", limit: fivePer10m, burst: burst5,
			steps: []step{allowed("u"), allowed("u"), allowed("u"), allowed("u"), allowed("u"),
				{advance: 2 * time.Minute, key: "u", wantOK: true},
				{key: "u", wantOK: false, wantRetry: 2 * time.Minute}},
		},
		{
			name: "retry after shrinks as time passes", limit: fivePer10m, burst: burst5,
			steps: []step{allowed("u"), allowed("u"), allowed("u"), allowed("u"), allowed("u"),
				{advance: 90 * time.Second, key: "u", wantOK: false, wantRetry: 30 * time.Second}},
		},
		{
			name: "retry after is rounded up to a whole second and never below one", limit: fivePer10m, burst: burst5,
			steps: []step{allowed("u"), allowed("u"), allowed("u"), allowed("u"), allowed("u"),
				{advance: 2*time.Minute - 300*time.Millisecond, key: "u", wantOK: false, wantRetry: time.Second}},
		},
		{
			name: "a fractional wait is rounded up", limit: 0.3, burst: 1,
			steps: []step{allowed("u"), {key: "u", wantOK: false, wantRetry: 4 * time.Second}},
		},
		{
			name: "keys do not share a bucket", limit: 1, burst: 1,
			steps: []step{allowed("alice"), {key: "alice", wantOK: false, wantRetry: time.Second}, allowed("bob")},
		},
		{
			name: "an infinite rate admits everything", limit: rate.Inf, burst: 0,
			steps: []step{allowed("u"), allowed("u"), allowed("u")},
		},
		{
			name: "a zero burst refuses everything with the maximum wait", limit: 1, burst: 0,
			steps: []step{{key: "u", wantOK: false, wantRetry: maxRetryAfter}},
		},
		{
			name: "a zero rate never refills", limit: 0, burst: 1,
			steps: []step{allowed("u"), {advance: 1000 * time.Hour, key: "u", wantOK: false, wantRetry: maxRetryAfter}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			l := New(Options{Limit: tt.limit, Burst: tt.burst, MaxKeys: 10, Now: c.Now})
			for i, s := range tt.steps {
				c.Advance(s.advance)
				gotOK, gotRetry := l.Allow(s.key)
				if gotOK != s.wantOK || gotRetry != s.wantRetry {
					t.Fatalf("step %d: Allow(%q) = %v, %v; want %v, %v", i, s.key, gotOK, gotRetry, s.wantOK, s.wantRetry)
				}
			}
		})
	}
}

func TestEvictionForgetsTheLeastRecentlyUsedKey(t *testing.T) {
	c := newClock()
	l := New(Options{Limit: rate.Every(time.Hour), Burst: 1, MaxKeys: 2, Now: c.Now})
	for _, k := range []string{"a", "b"} {
		if ok, _ := l.Allow(k); !ok {
			t.Fatalf("first Allow(%q) refused", k)
		}
	}
	// Touch a, so b is now the least recently used; c evicts b.
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("second Allow(a) admitted; want refused")
	}
	if ok, _ := l.Allow("c"); !ok {
		t.Fatal("first Allow(c) refused")
	}
	if got, want := l.Len(), 2; got != want {
		t.Fatalf("Len() = %d, want %d", got, want)
	}
	// a was kept (still empty); b was forgotten (starts full again).
	if ok, _ := l.Allow("a"); ok {
		t.Error("Allow(a) after eviction of b admitted; a should have been kept with an empty bucket")
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Error("Allow(b) refused; b should have been evicted and start with a full bucket")
	}
}

func TestLenNeverExceedsMaxKeys(t *testing.T) {
	for _, maxKeys := range []int{1, 7, 511, 512, 5000} {
		t.Run(fmt.Sprintf("MaxKeys=%d", maxKeys), func(t *testing.T) {
			l := New(Options{Limit: 1, Burst: 1, MaxKeys: maxKeys, Now: newClock().Now})
			for i := range 3 * maxKeys {
				l.Allow(fmt.Sprint("key-", i))
				if got := l.Len(); got > maxKeys {
					t.Fatalf("after %d keys Len() = %d, want <= %d", i+1, got, maxKeys)
				}
			}
			if got := l.Len(); got != maxKeys {
				t.Errorf("after %d keys Len() = %d, want exactly %d (every slot used)", 3*maxKeys, got, maxKeys)
			}
		})
	}
}

func TestLongKeys(t *testing.T) {
	l := New(Options{Limit: rate.Every(time.Hour), Burst: 1, MaxKeys: 10, Now: newClock().Now})
	long1 := strings.Repeat("x", 1000) + "1"
	long2 := strings.Repeat("x", 1000) + "2"
	sum := sha256.Sum256([]byte(long1))

	if ok, _ := l.Allow(long1); !ok {
		t.Fatal("first Allow(long1) refused")
	}
	if ok, _ := l.Allow(long1); ok {
		t.Error("second Allow(long1) admitted; a long key must still be limited")
	}
	if ok, _ := l.Allow(long2); !ok {
		t.Error("Allow(long2) refused; long keys that differ only at the end must not share a bucket")
	}
	if ok, _ := l.Allow(string(sum[:])); !ok {
		t.Error("Allow(digest of long1) refused; a short key equal to a digest must not share the long key's bucket")
	}
	for i := range l.shards {
		for k := range l.shards[i].m {
			if len(k.s) > maxKeyLen {
				t.Errorf("stored key of %d bytes; want at most %d", len(k.s), maxKeyLen)
			}
		}
	}
}

func TestConcurrentCallersShareOneBucket(t *testing.T) {
	// With the clock stopped, however many goroutines ask, each key admits
	// exactly its burst.
	const burst, goroutines, perGoroutine = 50, 8, 200
	l := New(Options{Limit: 1, Burst: burst, MaxKeys: 1000, Now: newClock().Now})
	keys := []string{"alice", "bob", "10.0.0.1"}
	var admitted [3]atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perGoroutine {
				k := (g + i) % len(keys)
				if ok, _ := l.Allow(keys[k]); ok {
					admitted[k].Add(1)
				}
				l.Allow(fmt.Sprint("churn-", g, "-", i))
				_ = l.Len()
			}
		})
	}
	wg.Wait()
	for i, k := range keys {
		if got := admitted[i].Load(); got != burst {
			t.Errorf("key %q admitted %d times, want %d", k, got, burst)
		}
	}
}

func TestMemoryIsBoundedByMaxKeysNotByKeyCount(t *testing.T) {
	if testing.Short() {
		t.Skip("pushes a million keys")
	}
	const maxKeys, distinct = 1000, 1_000_000
	// Generous per-entry budget: an entry, a rate.Limiter, map slots and a
	// ~40-byte key are a few hundred bytes. A limiter that remembered every
	// key would need hundreds of megabytes.
	const perKey, slack = 1024, 1 << 20

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	l := New(Options{Limit: 1, Burst: 1, MaxKeys: maxKeys, Now: newClock().Now})
	for i := range distinct {
		k := fmt.Sprintf("203.0.113.%d-padded-to-look-like-a-real-key", i)
		if i >= distinct-2*maxKeys {
			// The last keys, the ones that stay, are sliced out of a
			// 4 KiB header-sized string, as a parsed header value would
			// be: the limiter must keep only the key's bytes alive.
			k = (k + strings.Repeat(" ", 4096))[:len(k)]
		}
		l.Allow(k)
	}
	after := heap()
	runtime.KeepAlive(l)

	grown := int64(after) - int64(before)
	if limit := int64(maxKeys*perKey + slack); grown > limit {
		t.Errorf("heap grew by %d bytes after %d distinct keys; want <= %d (proportional to MaxKeys=%d)", grown, distinct, limit, maxKeys)
	}
	if got := l.Len(); got != maxKeys {
		t.Errorf("Len() = %d, want %d", got, maxKeys)
	}
	t.Logf("heap grew by %d bytes for MaxKeys=%d after %d distinct keys", grown, maxKeys, distinct)
}

func BenchmarkAllow(b *testing.B) {
	b.Run("known key", func(b *testing.B) {
		l := New(Options{Limit: 1e9, Burst: 1 << 30, MaxKeys: 10_000, Now: time.Now})
		b.ReportAllocs()
		for b.Loop() {
			l.Allow("alice")
		}
	})
	b.Run("known keys in parallel", func(b *testing.B) {
		l := New(Options{Limit: 1e9, Burst: 1 << 30, MaxKeys: 10_000, Now: time.Now})
		keys := make([]string, 1000)
		for i := range keys {
			keys[i] = fmt.Sprint("user-", i)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				l.Allow(keys[i%len(keys)])
				i++
			}
		})
	})
	b.Run("new key evicting an old one", func(b *testing.B) {
		l := New(Options{Limit: 1, Burst: 5, MaxKeys: 10_000, Now: time.Now})
		keys := make([]string, 100_000)
		for i := range keys {
			keys[i] = fmt.Sprint("198.51.100.", i)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			l.Allow(keys[i%len(keys)])
			i++
		}
	})
}
