package proxy

import (
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
