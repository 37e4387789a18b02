package challenge

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/mfa"
	"github.com/stepgate/stepgate/proxy/ratelimit"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/session"
)

// startOnlyPingOne starts every flow at device selection without a network.
type startOnlyPingOne struct{ PingOne }

func (startOnlyPingOne) Start(_ context.Context, req mfa.StartRequest) (*mfa.Flow, *mfa.Pending, error) {
	return &mfa.Flow{ID: "flow-1", Status: mfa.StatusDeviceSelectionRequired},
		&mfa.Pending{FlowID: "flow-1", Nonce: "n", State: "s"}, nil
}

// limitsHarness is a challenge Handler with real session cookies and the
// real keyed limiters, as cmd/stepgate wires them, but small key sets.
type limitsHarness struct {
	h     *Handler
	store *session.Store
	reg   *prometheus.Registry
	now   time.Time
	lims  []*ratelimit.Limiter
}

func newLimitsHarness(t testing.TB, maxKeys int) *limitsHarness {
	t.Helper()
	now := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store, err := session.NewStore(session.Options{Keys: [][]byte{bytes.Repeat([]byte{7}, 32)}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	pages, err := NewPages("")
	if err != nil {
		t.Fatal(err)
	}
	lim := func(n int, per time.Duration) *ratelimit.Limiter {
		l, b := ratelimit.Every(n, per)
		return ratelimit.New(ratelimit.Options{Limit: l, Burst: b, MaxKeys: maxKeys, Now: clock})
	}
	perUser, perIP := lim(5, 10*time.Minute), lim(20, 10*time.Minute)
	reg := prometheus.NewRegistry()
	h, err := New(Config{
		PingOne: startOnlyPingOne{},
		Store:   store,
		RuleFor: func(string, string) rules.Rule { return rules.Rule{Path: "/admin/", Action: rules.MFA} },
		Limits:  Limits{StartPerUser: perUser, StartPerIP: perIP},
		Pages:   pages,
		Logger:  slog.New(slog.DiscardHandler),
		Metrics: metrics.New(reg, "test"),
		Now:     clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &limitsHarness{h: h, store: store, reg: reg, now: now, lims: []*ratelimit.Limiter{perUser, perIP}}
}

// start POSTs action=start for user from client, with a valid flow cookie
// and CSRF token, and returns the response.
func (x *limitsHarness) start(t testing.TB, user string, client netip.Addr) *httptest.ResponseRecorder {
	csrf := bytes.Repeat([]byte{9}, 32)
	rec := httptest.NewRecorder()
	if err := x.store.SaveFlow(rec, session.Flow{User: user, CSRF: csrf, ReturnPath: "/admin/", Created: x.now}); err != nil {
		t.Fatal(err)
	}
	cookie := rec.Result().Cookies()[0]
	form := url.Values{"csrf": {base64.RawURLEncoding.EncodeToString(csrf)}, "action": {"start"}}.Encode()
	r := httptest.NewRequest(http.MethodPost, "http://gw.example"+PathChallenge, strings.NewReader(form))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Origin", "http://gw.example")
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	r.AddCookie(cookie)
	w := httptest.NewRecorder()
	x.h.Serve(w, r, user, client)
	return w
}

// follow GETs the page a POST's 303 leads to, with the flow cookie it set,
// as a browser does.
func (x *limitsHarness) follow(t testing.TB, user string, client netip.Addr, post *httptest.ResponseRecorder) *httptest.ResponseRecorder {
	t.Helper()
	if post.Code != http.StatusSeeOther {
		t.Fatalf("POST answered %d, want 303", post.Code)
	}
	r := httptest.NewRequest(http.MethodGet, "http://gw.example"+post.Header().Get("Location"), nil)
	r.Header.Set("Accept", "text/html")
	for _, c := range post.Result().Cookies() {
		r.AddCookie(c)
	}
	w := httptest.NewRecorder()
	x.h.Serve(w, r, user, client)
	return w
}

// started reports whether a start went through: a 303 without Retry-After.
func started(w *httptest.ResponseRecorder) bool {
	return w.Code == http.StatusSeeOther && w.Header().Get("Retry-After") == ""
}

// limited reports whether a start was refused: a 303 that carries
// Retry-After and leads to the 429 page.
func (x *limitsHarness) limited(t testing.TB, user string, client netip.Addr, post *httptest.ResponseRecorder) bool {
	t.Helper()
	return post.Code == http.StatusSeeOther && post.Header().Get("Retry-After") != "" &&
		x.follow(t, user, client, post).Code == http.StatusTooManyRequests
}

func TestStartLimitsAnswer429WithRetryAfter(t *testing.T) {
	x := newLimitsHarness(t, 1000)
	alice := netip.MustParseAddr("203.0.113.1")
	for i := 0; i < 5; i++ {
		if w := x.start(t, "alice", alice); !started(w) {
			t.Fatalf("start %d: got %d, want 303", i+1, w.Code)
		}
	}
	// The refusal is a 303 (a reload never re-submits), with Retry-After
	// for scripts, to the 429 page that says the same wait.
	post := x.start(t, "alice", alice)
	if got := post.Header().Get("Retry-After"); post.Code != http.StatusSeeOther || got != "120" {
		t.Errorf("6th start: %d with Retry-After %q, want 303 with 120 (one start per 2 minutes)", post.Code, got)
	}
	w := x.follow(t, "alice", alice, post)
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("the page after the 6th start: got %d, want 429", w.Code)
	}
	if got := w.Header().Get("Retry-After"); got != "120" {
		t.Errorf("Retry-After = %q, want 120 (one start per 2 minutes)", got)
	}
	if !strings.Contains(w.Body.String(), `<p id="retry">You can try again in 2 min.</p>`) {
		t.Errorf("the 429 page does not say when to try again:\n%s", w.Body.String())
	}
	// Twenty users behind one address exhaust the per-IP bucket.
	shared := netip.MustParseAddr("198.51.100.7")
	for i := 0; i < 20; i++ {
		if w := x.start(t, "u"+strconv.Itoa(i), shared); !started(w) {
			t.Fatalf("user %d from the shared address: %d", i, w.Code)
		}
	}
	if w := x.start(t, "u-last", shared); !x.limited(t, "u-last", shared, w) {
		t.Errorf("21st start from one address: got %d, not refused", w.Code)
	}
}

// TestLimiterMemoryIsFlatUnderDistinctUsersAndIPs drives flow starts from
// distinct users at distinct addresses through the handler and its real
// limiters: once the key sets are full, the heap must stop growing with the
// number of keys (docs/design.md §8). A million requests normally; 25k under -race or
// -short.
func TestLimiterMemoryIsFlatUnderDistinctUsersAndIPs(t *testing.T) {
	const maxKeys = 1000
	total := 1_000_000
	if raceEnabled || testing.Short() {
		total = 25_000
	}
	x := newLimitsHarness(t, maxKeys)
	run := func(from, to int) {
		for i := from; i < to; i++ {
			ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			if w := x.start(t, "user-"+strconv.Itoa(i), ip); !started(w) {
				t.Fatalf("request %d: got %d (every key is new, nothing should be limited)", i, w.Code)
			}
		}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	warm := 4 * maxKeys // every key set is full and evicting from here on
	run(0, warm)
	before := heap()
	run(warm, total)
	after := heap()
	for _, l := range x.lims {
		if n := l.Len(); n > maxKeys {
			t.Errorf("limiter holds %d keys, want at most %d", n, maxKeys)
		}
	}
	// An unbounded key set would hold ~2 entries of a few hundred bytes per
	// request: several megabytes at 25k requests, hundreds at a million.
	const slack = 2 << 20
	if after > before+slack {
		t.Errorf("heap grew from %d to %d bytes over %d distinct users and IPs, want flat (within %d)",
			before, after, total-warm, slack)
	}
	t.Logf("%d distinct users and IPs: heap %d KiB after warm-up, %d KiB at the end", total, before>>10, after>>10)
}

func TestPerIPLimitKeysIPv6ByItsSlash64(t *testing.T) {
	for _, tt := range []struct{ name, addr, want string }{
		{"an IPv4 address is its own key", "203.0.113.9", "203.0.113.9"},
		{"an IPv4-mapped IPv6 address is the IPv4 address", "::ffff:203.0.113.9", "203.0.113.9"},
		{"an IPv6 address is keyed by its /64", "2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"},
		{"the zero address does not panic", "::", "::/64"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := ipKey(netip.MustParseAddr(tt.addr)); got != tt.want {
				t.Errorf("ipKey(%s) = %q, want %q", tt.addr, got, tt.want)
			}
		})
	}
	if got := ipKey(netip.Addr{}); got != "invalid IP" {
		t.Errorf("ipKey(zero Addr) = %q", got)
	}
	// Rotating through one /64 does not give fresh buckets.
	x := newLimitsHarness(t, 1000)
	for i := 0; i < 20; i++ {
		ip := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)})
		if w := x.start(t, "v6-"+strconv.Itoa(i), ip); !started(w) {
			t.Fatalf("start %d: %d", i, w.Code)
		}
	}
	rotated := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 8: 0xff, 15: 0x99})
	if w := x.start(t, "v6-last", rotated); !x.limited(t, "v6-last", rotated, w) {
		t.Errorf("21st start from another address in the same /64: got %d, not refused", w.Code)
	}
}
