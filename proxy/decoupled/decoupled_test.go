package decoupled

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/mfa"
	"github.com/stepgate/stepgate/proxy/approve"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/store"
)

// fakePingOne answers every flow with a push waiting, until decide.
type fakePingOne struct {
	mu     sync.Mutex
	n      int
	status map[string]mfa.Status
	reads  int
	now    func() time.Time
}

func newFakePingOne(now func() time.Time) *fakePingOne {
	return &fakePingOne{status: map[string]mfa.Status{}, now: now}
}

func (f *fakePingOne) flow(id string) *mfa.Flow {
	return &mfa.Flow{ID: id, Status: f.status[id], SelectedDeviceID: "d1",
		Devices: []mfa.Device{{ID: "d1", Type: "MOBILE"}}}
}

func (f *fakePingOne) Start(context.Context, mfa.StartRequest) (*mfa.Flow, *mfa.Pending, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	id := fmt.Sprintf("flow-%d", f.n)
	f.status[id] = mfa.StatusPushConfirmationRequired
	return f.flow(id), &mfa.Pending{FlowID: id, Challenged: true}, nil
}

func (f *fakePingOne) Read(_ context.Context, p *mfa.Pending) (*mfa.Flow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.flow(p.FlowID), nil
}

func (f *fakePingOne) SelectDevice(_ context.Context, p *mfa.Pending, _ string) (*mfa.Flow, error) {
	return f.Read(context.Background(), p)
}

func (f *fakePingOne) CheckOTP(context.Context, *mfa.Pending, mfa.Secret) (*mfa.Flow, error) {
	return nil, &mfa.Error{Kind: mfa.KindInvalid}
}

func (f *fakePingOne) Reset(context.Context, *mfa.Pending) (*mfa.Flow, error) { return nil, nil }

func (f *fakePingOne) Complete(context.Context, *mfa.Pending, *mfa.Flow) (*mfa.Result, error) {
	return &mfa.Result{AuthTime: f.now(), MFA: true}, nil
}

func (f *fakePingOne) decide(id string, s mfa.Status) {
	f.mu.Lock()
	f.status[id] = s
	f.mu.Unlock()
}

type harness struct {
	svc  *Service
	gate *approve.Gate
	p1   *fakePingOne
	rule rules.Rule
	now  func() time.Time
}

var epoch = time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	now := func() time.Time { return epoch }
	st := store.NewMemory(store.MemoryOptions{Now: now, MaxEntries: 1 << 20, MaxBytes: 1 << 30})
	gate := approve.New(st, [][]byte{[]byte("test digest key")}, 0, now)
	set, err := rules.Parse("t", "DELETE /users/ approve api=decoupled show=User:path ttl=5m", rules.Defaults{Action: rules.Allow, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p1 := newFakePingOne(now)
	cfg.PingOne, cfg.Gate, cfg.Now = p1, gate, now
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Metrics = metrics.New(prometheus.NewRegistry(), "test")
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return &harness{svc: svc, gate: gate, p1: p1, rule: set.Match("DELETE", "/users/42"), now: now}
}

// begin holds DELETE /users/{n} for bob and starts its phone approval; it
// returns the poll path.
func (h *harness) begin(t testing.TB, n int) string {
	t.Helper()
	path := fmt.Sprintf("/users/%d", n)
	r := httptest.NewRequest(http.MethodDelete, path, nil)
	q := &approve.Request{User: "bob", Method: http.MethodDelete, Path: path, Match: path}
	ref, held, err := h.gate.Hold(context.Background(), q, r, h.rule, true)
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.svc.Begin(w, r, ref, held, netip.MustParseAddr("192.0.2.1"), noForward(t))
	if w.Code != http.StatusAccepted {
		t.Fatalf("begin: %d %s", w.Code, w.Body)
	}
	return w.Header().Get("Location")
}

func noForward(t testing.TB) ForwardFunc {
	return func(http.ResponseWriter, *http.Request, *approve.Held) { t.Error("forwarded") }
}

func (h *harness) poll(t testing.TB, loc string, wait string, fwd ForwardFunc) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, loc, nil)
	if wait != "" {
		r.Header.Set("Prefer", "wait="+wait)
	}
	w := httptest.NewRecorder()
	h.svc.Serve(w, r, "bob", netip.MustParseAddr("192.0.2.1"), fwd)
	return w
}

func TestWaitsOverTheBoundAreAnsweredAtOnce(t *testing.T) {
	h := newHarness(t, Config{MaxWaiters: 1, CheckEvery: time.Hour})
	loc := h.begin(t, 1)
	first := make(chan int, 1)
	go func() { first <- h.poll(t, loc, "600", noForward(t)).Code }()
	for h.svc.Waiting() != 1 {
		runtime.Gosched() // the first waiter registers
	}
	// A second client over the bound: the 202 at once, as if it had not
	// asked to wait.
	if w := h.poll(t, h.begin(t, 2), "600", noForward(t)); w.Code != http.StatusAccepted || w.Header().Get("Location") == "" {
		t.Fatalf("a wait over the bound: %d %s", w.Code, w.Body)
	}
	h.svc.Close()
	if code := <-first; code != http.StatusAccepted {
		t.Fatalf("the waiter at Close: %d", code)
	}
}

func TestAWaiterIsWokenByADecisionAndForwardsOnce(t *testing.T) {
	h := newHarness(t, Config{CheckEvery: time.Millisecond})
	loc := h.begin(t, 1)
	var forwarded sync.WaitGroup
	forwarded.Add(1)
	fwd := func(w http.ResponseWriter, _ *http.Request, held *approve.Held) {
		defer forwarded.Done()
		w.WriteHeader(http.StatusNoContent)
	}
	done := make(chan *httptest.ResponseRecorder, 3)
	for range 3 {
		go func() { done <- h.poll(t, loc, "600", fwd) }()
	}
	for h.svc.Waiting() != 3 {
		runtime.Gosched()
	}
	h.p1.decide("flow-1", mfa.StatusCompleted)
	codes := map[int]int{}
	for range 3 {
		codes[(<-done).Code]++
	}
	forwarded.Wait()
	if codes[http.StatusNoContent] != 1 || codes[http.StatusNoContent]+codes[http.StatusGone]+codes[http.StatusAccepted] != 3 {
		t.Fatalf("three waiters on one approval answered %v, want the upstream's answer once", codes)
	}
}

func TestPreferWait(t *testing.T) {
	tests := []struct {
		name, prefer string
		want         time.Duration
	}{
		{"no preference does not wait", "", 0},
		{"wait=N waits N seconds", "wait=10", 10 * time.Second},
		{"a wait longer than the bound is cut to it", "wait=3600", time.Minute},
		{"wait among other preferences", "respond-async, wait=5", 5 * time.Second},
		{"a quoted value", `wait="7"`, 7 * time.Second},
		{"a negative wait does not wait", "wait=-1", 0},
		{"a malformed wait does not wait", "wait=soon", 0},
		{"the name is case-insensitive", "Wait=3", 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.prefer != "" {
				r.Header.Set("Prefer", tt.prefer)
			}
			if got := preferWait(r, time.Minute); got != tt.want {
				t.Fatalf("preferWait(%q) = %v, want %v", tt.prefer, got, tt.want)
			}
		})
	}
}

// BenchmarkWaitingClients holds 10,000 clients waiting (Prefer: wait) on
// 10,000 pending approvals and reports what they cost this package beyond
// each client's own goroutine (which net/http gives every connection
// anyway): goroutines and heap bytes per waiting client. Run it with
// -benchtime=1x.
func BenchmarkWaitingClients(b *testing.B) {
	const n = 10_000
	for b.Loop() {
		h := newHarness(b, Config{MaxWaiters: n})
		locs := make([]string, n)
		for i := range locs {
			locs[i] = h.begin(b, i)
		}
		g0 := runtime.NumGoroutine()

		// The clients' own goroutines, parked before they call in, are
		// the baseline: what a connection costs without stepgate.
		start := make(chan struct{})
		var wg sync.WaitGroup
		codes := make(chan int, n)
		for _, loc := range locs {
			wg.Go(func() {
				<-start
				codes <- h.poll(b, loc, "600", noForward(b)).Code
			})
		}
		runtime.GC()
		var parked runtime.MemStats
		runtime.ReadMemStats(&parked)
		g1 := runtime.NumGoroutine()
		close(start)
		for h.svc.Waiting() != n {
			time.Sleep(time.Millisecond)
		}
		runtime.GC()
		var waiting runtime.MemStats
		runtime.ReadMemStats(&waiting)
		g2 := runtime.NumGoroutine()
		b.ReportMetric(float64(g2-g1)/n, "goroutines/waiter")
		b.ReportMetric(float64(int64(waiting.HeapInuse)-int64(parked.HeapInuse))/n, "heap-B/waiter")
		b.ReportMetric(float64(int64(waiting.StackInuse)-int64(parked.StackInuse))/n, "stack-B/waiter")
		b.ReportMetric(float64(g2-g0), "goroutines-total")

		h.svc.Close() // shutdown: every waiter answers at once
		wg.Wait()
		close(codes)
		for c := range codes {
			if c != http.StatusAccepted {
				b.Fatalf("a waiter answered %d at Close", c)
			}
		}
		if w := h.svc.Waiting(); w != 0 {
			b.Fatalf("%d waiters left", w)
		}
	}
}

func TestDropWaitKeepsOtherPreferences(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"wait=10", ""},
		{"respond-async, wait=10", "respond-async"},
		{"wait;x=1, return=minimal", "return=minimal"}, // a wait with a parameter and no value
		{"WAIT = 5 ,handling=lenient", "handling=lenient"},
		{"waiting=1", "waiting=1"},
	} {
		h := http.Header{"Prefer": {tt.in}}
		DropWait(h)
		if got := h.Get("Prefer"); got != tt.want {
			t.Errorf("DropWait(%q) leaves %q, want %q", tt.in, got, tt.want)
		}
	}
}
