package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/proxy/ratelimit"
	"github.com/stepgate/stepgate/store"
	"github.com/stepgate/stepgate/store/redistest"
)

// TestMemoryFlatUnderAMillionClients sends a million requests, each from a
// distinct client IP and user, through the gateway (allow and mfa paths)
// and through the five challenge limiters configured as cmd/stepgate wires
// them (20,000 keys each), and checks that the heap after the limiters
// fill up stays flat, and the process's resident set with it: nothing on
// the request path keeps per-client state beyond those bounded limiters
// (docs/design.md §13).
//
// It takes about 15 s, so it is skipped under -short, and under the race
// detector (which adds nothing to a memory bound and makes it minutes)
// unless STEPGATE_SOAK=1; .ci/run runs it in a step of its own without
// -race:
//
//	go test -run TestMemoryFlat -v ./proxy/
func TestMemoryFlatUnderAMillionClients(t *testing.T) {
	if testing.Short() || (raceEnabled && os.Getenv("STEPGATE_SOAK") != "1") {
		t.Skip("sends a million requests; run without -race and -short")
	}
	const total = 1_000_000
	e := newBenchEnv(t, slog.LevelWarn)
	const maxKeys = 20_000 // as in cmd/stepgate build
	now := func() time.Time { return benchEpoch }
	limiter := func(n int, per time.Duration) *ratelimit.Limiter {
		l, b := ratelimit.Every(n, per)
		return ratelimit.New(ratelimit.Options{Limit: l, Burst: b, MaxKeys: maxKeys, Now: now})
	}
	startPerUser, startPerIP := limiter(5, 10*time.Minute), limiter(20, 10*time.Minute)
	otpPerUser, sendPerUser := limiter(10, 10*time.Minute), limiter(10, 10*time.Minute)
	pollPerFlow := ratelimit.New(ratelimit.Options{Limit: 1, Burst: 3, MaxKeys: maxKeys, Now: now})

	allow := e.request("/home/index.html", false)
	mfa := e.request("/admin/report", false)
	w := &sinkWriter{h: http.Header{}}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	var baseline, baseRSS uint64
	// Every limiter is full after 20,000 clients; their maps settle (a Go
	// map keeps some room from deleted entries) well before 250,000.
	const checkpoint = 250_000
	for i := range total {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff)
		if i >= 1<<24 {
			ip = "2001:db8::" + strconv.FormatInt(int64(i), 16)
		}
		user := "user" + strconv.Itoa(i)
		r := allow
		if i%2 == 1 {
			r = mfa
		}
		r.Header["X-Forwarded-For"] = []string{ip}
		r.Header["X-Forwarded-User"] = []string{user}
		w.reset()
		e.gw.ServeHTTP(w, r)
		if w.code != http.StatusOK && w.code != http.StatusFound && w.code != 0 {
			t.Fatalf("request %d: status %d", i, w.code)
		}
		startPerIP.Allow(ip)
		startPerUser.Allow(user)
		otpPerUser.Allow(user)
		sendPerUser.Allow(user)
		pollPerFlow.Allow("flow-" + user)
		if i+1 == checkpoint {
			baseline = heap()
			baseRSS = vmRSS(t)
		}
	}
	final := heap()
	rss := vmRSS(t)
	grown := int64(final) - int64(baseline)
	t.Logf("%d clients: heap %.1f MiB after %d, %.1f MiB after %d (%+.1f MiB); RSS %.1f MiB → %.1f MiB",
		total, float64(baseline)/(1<<20), checkpoint, float64(final)/(1<<20), total, float64(grown)/(1<<20),
		float64(baseRSS)/(1<<20), float64(rss)/(1<<20))
	// Five full limiters hold 100,000 keys; between the checkpoint and the
	// end, 750,000 clients are new, so anything kept per client would add
	// tens of MiB. Allow a little for GC timing.
	if grown > 8<<20 {
		t.Errorf("heap grew by %.1f MiB between %d and %d distinct clients; want flat (≤ 8 MiB)", float64(grown)/(1<<20), checkpoint, total)
	}
	// The process as the kernel sees it: the runtime may keep freed pages,
	// so the bound is looser than the heap's, and still far below what
	// 750,000 clients' worth of state would take.
	if rss > baseRSS+16<<20 {
		t.Errorf("RSS grew from %.1f MiB to %.1f MiB between %d and %d distinct clients; want flat (≤ 16 MiB)",
			float64(baseRSS)/(1<<20), float64(rss)/(1<<20), checkpoint, total)
	}
	for name, l := range map[string]*ratelimit.Limiter{"start/user": startPerUser, "start/ip": startPerIP, "poll/flow": pollPerFlow} {
		if l.Len() > maxKeys {
			t.Errorf("%s limiter holds %d keys, want ≤ %d", name, l.Len(), maxKeys)
		}
	}
	runtime.KeepAlive([]any{startPerUser, startPerIP, otpPerUser, sendPerUser, pollPerFlow})
}

// vmRSS is this process's resident set in bytes, from /proc.
func vmRSS(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatalf("resident set: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// TestMemoryFlatWithTheRedisStore is the same question with
// STEPGATE_STORE=redis: limits go to a real redis-server, the revocation
// view is fed by it, and for part of the run Redis is killed so every limit
// falls back to the replica's own bounded limiter. What the process keeps
// per client (fallback limiters, revocation view, connection pool) must
// stay bounded: the heap after the fallback limiters fill does not grow.
// Skipped under -race and -short like the test above.
func TestMemoryFlatWithTheRedisStore(t *testing.T) {
	if testing.Short() || (raceEnabled && os.Getenv("STEPGATE_SOAK") != "1") {
		t.Skip("sends 150,000 requests; run without -race and -short")
	}
	srv := redistest.Start(t)
	rs, err := store.NewRedis(store.RedisOptions{URL: srv.URL(), Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	view := store.NewRevocations(store.RevocationsOptions{MaxStaleness: time.Hour, Now: func() time.Time { return benchEpoch }})
	sync := rs.Revocations(view, store.RedisRevocationsOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sync.Run(ctx) }()
	defer func() { cancel(); <-done }()

	e := newBenchEnv(t, slog.LevelWarn)
	e.gw.cfg.Revocations = viewCheck{view}
	const maxKeys = 20_000 // as in cmd/stepgate build
	now := func() time.Time { return benchEpoch }
	limiter := func(name string, n int) store.Limiter {
		l, b := ratelimit.Every(n, 10*time.Minute)
		local := ratelimit.New(ratelimit.Options{Limit: l, Burst: b, MaxKeys: maxKeys, Now: now})
		return rs.Limiter(name, n, 10*time.Minute, local)
	}
	startPerUser, startPerIP := limiter("start_user", 5), limiter("start_ip", 20)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	mfa := e.request("/admin/report", true)
	w := &sinkWriter{h: http.Header{}}
	client := 0
	clients := func(n int) {
		for range n {
			client++
			ip := fmt.Sprintf("10.%d.%d.%d", client>>16&0xff, client>>8&0xff, client&0xff)
			user := "user" + strconv.Itoa(client)
			mfa.Header["X-Forwarded-For"] = []string{ip}
			w.reset()
			e.gw.ServeHTTP(w, mfa)
			startPerIP.Allow(ip)
			startPerUser.Allow(user)
			if client%1000 == 0 { // a revocation now and then, as logouts make
				_ = sync.Revoke(context.Background(), store.Revocation{Session: "s" + strconv.Itoa(client)})
			}
		}
	}
	clients(30_000) // Redis up
	srv.Kill()
	clients(30_000) // Redis down: the fallback limiters fill to their bound
	baseline := heap()
	clients(60_000) // still down
	srv.Restart()
	clients(30_000) // back
	final := heap()
	grown := int64(final) - int64(baseline)
	t.Logf("%d clients with the Redis store: heap %.1f MiB → %.1f MiB (%+.1f MiB) over the last 90,000; %d revocations kept",
		client, float64(baseline)/(1<<20), float64(final)/(1<<20), float64(grown)/(1<<20), view.Len())
	if grown > 8<<20 {
		t.Errorf("heap grew by %.1f MiB over 90,000 new clients with the Redis store; want flat (≤ 8 MiB)", float64(grown)/(1<<20))
	}
	runtime.KeepAlive([]any{startPerUser, startPerIP, view, e})
}
