package proxy

// Hot-path benchmarks (docs/design.md §13). The gateway is measured over an in-memory
// upstream (a RoundTripper that returns a fixed 1 KiB response), next to a
// bare httputil.ReverseProxy over the same transport, so the ratio of the
// two is computed in one run on one machine:
//
//	go test -run '^$' -bench . -benchmem ./proxy/
//
// BenchmarkGatewayBareProxy is the floor; BenchmarkGatewayAllow and
// BenchmarkGatewaySteppedUp must stay close to it (≤ ~5 µs more).

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/proxy/clientip"
	"github.com/stepgate/stepgate/proxy/identity"
	"github.com/stepgate/stepgate/proxy/reqpath"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/session"
)

var benchEpoch = time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)

// memTransport answers every request with the same 1 KiB body, without a
// network, so the benchmark measures the proxies and nothing else.
type memTransport struct {
	body []byte
	last *http.Request // the latest outbound request, for sanity checks
}

func (t *memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.last = r
	if r.Body != nil {
		r.Body.Close()
	}
	return &http.Response{
		StatusCode:    http.StatusOK,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"text/plain"}},
		ContentLength: int64(len(t.body)),
		Body:          io.NopCloser(bytes.NewReader(t.body)),
		Request:       r,
	}, nil
}

// nopChallenger answers with fixed statuses; the challenge itself is not on
// the hot path.
type nopChallenger struct{}

func (nopChallenger) Serve(w http.ResponseWriter, _ *http.Request, _ string, _ netip.Addr) {
	w.WriteHeader(http.StatusOK)
}
func (nopChallenger) Require(w http.ResponseWriter, _ *http.Request, _ rules.Rule) {
	w.Header().Set("Location", "/.stepgate/challenge")
	w.WriteHeader(http.StatusFound)
}
func (nopChallenger) Error(w http.ResponseWriter, _ *http.Request, status int, _ string) {
	w.WriteHeader(status)
}
func (nopChallenger) RequireApproval(w http.ResponseWriter, _ *http.Request, _ rules.Rule, _, _ string) {
	w.WriteHeader(http.StatusSeeOther)
}
func (nopChallenger) IsAPI(*http.Request) bool { return false }

// sinkWriter is a ResponseWriter that keeps nothing but its header map, which
// it clears between requests, like a server connection would reuse it.
type sinkWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *sinkWriter) Header() http.Header { return w.h }
func (w *sinkWriter) WriteHeader(c int)   { w.code = c }
func (w *sinkWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	return len(p), nil
}
func (w *sinkWriter) reset() {
	clear(w.h)
	w.code, w.n = 0, 0
}

type benchEnv struct {
	gw        *Gateway
	bare      *httputil.ReverseProxy
	transport *memTransport
	store     *session.Store
	cookie    string // the step-up cookie, name=value
}

// newBenchEnv builds the gateway as cmd/stepgate wires it, with a real
// session store and a real sealed step-up cookie carrying a 1 KiB ID token.
func newBenchEnv(b testing.TB, level slog.Level) *benchEnv {
	b.Helper()
	now := func() time.Time { return benchEpoch }
	store, err := session.NewStore(session.Options{Keys: [][]byte{bytes.Repeat([]byte{7}, 32)}, Now: now})
	if err != nil {
		b.Fatal(err)
	}
	ck, err := store.StepUpCookie(session.StepUp{
		ID: "2b7f3c1e9a0d4e5f8a6b7c8d9e0f1a2b", User: "alice", Subject: "5a4f3e2d-1c0b-4a9f-8e7d-6c5b4a3f2e1d",
		AuthTime: benchEpoch.Add(-time.Minute), ACR: "MFA-Only", AMR: []string{"otp", "sms"},
		IDToken:     ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0." + strings.Repeat("eyJzdWIiOiJ1In0", 80))[:1024],
		TokenExpiry: benchEpoch.Add(time.Hour),
	})
	if err != nil {
		b.Fatal(err)
	}
	set, err := rules.Parse("bench", "/admin/ mfa max_age=15m; /api/ mfa; /blocked deny",
		rules.Defaults{Action: rules.Allow, MaxAge: time.Hour, ACR: "MFA-Only"})
	if err != nil {
		b.Fatal(err)
	}
	prefixes, err := clientip.ParseCIDRs("127.0.0.1/32,::1/128")
	if err != nil {
		b.Fatal(err)
	}
	up, _ := url.Parse("http://app.internal:8082")
	tr := &memTransport{body: bytes.Repeat([]byte("x"), 1024)}
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: level}))
	var access io.Writer // as cmd/stepgate wires it: access lines at info
	if level <= slog.LevelInfo {
		access = io.Discard
	}
	gw, err := New(Config{
		AccessLog:      access,
		Upstream:       up,
		Transport:      tr,
		Rules:          set,
		ClientIP:       clientip.New(prefixes),
		Identity:       identity.NewHeader("X-Forwarded-User"),
		StepUps:        store,
		Challenge:      nopChallenger{},
		IdentityHeader: "X-Forwarded-User",
		Logger:         log,
		Metrics:        metrics.New(prometheus.NewRegistry(), "bench"),
		Now:            now,
		FlushInterval:  0,
		// As cmd/stepgate wires it (STEPGATE_UPSTREAM_TIMEOUT's default).
		ResponseHeaderTimeout: 60 * time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	bare := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(up); pr.SetXForwarded() },
		Transport:     tr,
		FlushInterval: -1,
	}
	return &benchEnv{gw: gw, bare: bare, transport: tr, store: store, cookie: ck.Name + "=" + ck.Value}
}

// request is a typical browser request from a trusted front proxy.
func (e *benchEnv) request(path string, stepUp bool) *http.Request {
	r, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://gw.example"+path, nil)
	r.RequestURI = path
	r.RemoteAddr = "127.0.0.1:54321"
	h := r.Header
	h.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
	h.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	h.Set("Accept-Language", "en-GB,en;q=0.5")
	h.Set("Accept-Encoding", "gzip, deflate, br")
	h.Set("X-Forwarded-For", "203.0.113.7")
	h.Set("X-Forwarded-Proto", "https")
	h.Set("X-Forwarded-User", "alice")
	cookie := "theme=dark; _ga=GA1.2.123456789.1700000000; lang=en"
	if stepUp {
		cookie = "theme=dark; _ga=GA1.2.123456789.1700000000; " + e.cookie + "; lang=en"
	}
	h.Set("Cookie", cookie)
	return r
}

// cpuPerOp reports cpu-ns/op when the returned func runs after the loop.
func cpuPerOp(b *testing.B) func() {
	cpu := processCPU()
	return func() {
		if cpu > 0 && b.N > 0 {
			b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
		}
	}
}

func runHandler(b *testing.B, h http.Handler, r *http.Request, wantCode int) {
	b.Helper()
	w := &sinkWriter{h: http.Header{}}
	h.ServeHTTP(w, r)
	if w.code != wantCode && !(w.code == 0 && wantCode == http.StatusOK) {
		b.Fatalf("status = %d, want %d", w.code, wantCode)
	}
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		w.reset()
		h.ServeHTTP(w, r)
	}
}

func BenchmarkGatewayBareProxy(b *testing.B) {
	e := newBenchEnv(b, slog.LevelInfo)
	runHandler(b, e.bare, e.request("/admin/report", true), http.StatusOK)
}

// benchLevels are the log levels the whole-handler benchmarks run at: info
// (the default, with access lines) and warn (without).
var benchLevels = []struct {
	name  string
	level slog.Level
}{{"log=info", slog.LevelInfo}, {"log=warn", slog.LevelWarn}}

func BenchmarkGatewayAllow(b *testing.B) {
	for _, lv := range benchLevels {
		b.Run(lv.name, func(b *testing.B) {
			e := newBenchEnv(b, lv.level)
			runHandler(b, e.gw, e.request("/home/index.html", false), http.StatusOK)
		})
	}
}

func BenchmarkGatewaySteppedUp(b *testing.B) {
	for _, lv := range benchLevels {
		b.Run(lv.name, func(b *testing.B) {
			e := newBenchEnv(b, lv.level)
			r := e.request("/admin/report", true)
			runHandler(b, e.gw, r, http.StatusOK)
			out := e.transport.last
			if out.Header.Get(HeaderUser) != "alice" || strings.Contains(out.Header.Get("Cookie"), "stepgate") {
				b.Fatalf("upstream saw user %q, cookie %q", out.Header.Get(HeaderUser), out.Header.Get("Cookie"))
			}
		})
	}
}

// BenchmarkGatewayChallenge is an mfa path without a step-up: the answer is
// the redirect to the challenge (the challenge page itself is not measured).
func BenchmarkGatewayChallenge(b *testing.B) {
	e := newBenchEnv(b, slog.LevelInfo)
	runHandler(b, e.gw, e.request("/admin/report", false), http.StatusFound)
}

// The stages of the pipeline on the same request, to see where time goes.

func BenchmarkStageNormalise(b *testing.B) {
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		if _, err := reqpath.Parse(http.MethodGet, "/admin/reports/2026/q3.html?x=1"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStageStripSpoofable(b *testing.B) {
	e := newBenchEnv(b, slog.LevelInfo)
	r := e.request("/admin/report", true)
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		stripSpoofable(r.Header, "X-Stepgate-Id-Token", []string{"X-Forwarded-User"})
	}
}

func BenchmarkStageIdentity(b *testing.B) {
	e := newBenchEnv(b, slog.LevelInfo)
	r := e.request("/admin/report", true)
	id := identity.NewHeader("X-Forwarded-User")
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		if u, err := id.User(r, true); err != nil || u != "alice" {
			b.Fatal(u, err)
		}
	}
}

func BenchmarkStageRuleMatch(b *testing.B) {
	e := newBenchEnv(b, slog.LevelInfo)
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		if e.gw.cfg.LiveRules.Load().Match(http.MethodGet, "/admin/report").Action != rules.MFA {
			b.Fatal("not mfa")
		}
	}
}

func BenchmarkStageStepUpCookie(b *testing.B) {
	e := newBenchEnv(b, slog.LevelInfo)
	r := e.request("/admin/report", true)
	rule := e.gw.cfg.LiveRules.Load().Match(http.MethodGet, "/admin/report")
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		su, ok := e.store.Lookup(r)
		if !ok || !e.gw.fresh(su, "alice", rule) {
			b.Fatal("no fresh step-up")
		}
	}
}

// BenchmarkStageRewrite is the header work done on the outbound request:
// forwarded headers, cookie stripping and the step-up headers.
func BenchmarkStageRewrite(b *testing.B) {
	e := newBenchEnv(b, slog.LevelInfo)
	in := e.request("/admin/report", true)
	su, ok := e.store.Lookup(in)
	if !ok {
		b.Fatal("no step-up")
	}
	p, _ := reqpath.Parse(in.Method, in.RequestURI)
	fw := &forward{path: p, client: netip.MustParseAddr("203.0.113.7"), trusted: true, stepUp: su}
	in = in.WithContext(context.WithValue(in.Context(), forwardKey{}, fw))
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		out := in.Clone(in.Context())
		out.Header.Del("X-Forwarded-For")
		e.gw.rewrite(&httputil.ProxyRequest{In: in, Out: out})
	}
}

func BenchmarkStageRewriteCloneOnly(b *testing.B) {
	e := newBenchEnv(b, slog.LevelInfo)
	in := e.request("/admin/report", true)
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		out := in.Clone(in.Context())
		out.Header.Del("X-Forwarded-For")
	}
}

func BenchmarkStageMetrics(b *testing.B) {
	e := newBenchEnv(b, slog.LevelInfo)
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		e.gw.rm.observe(decisionStepUp, 200, 100*time.Microsecond)
	}
}

// BenchmarkStageAccessLog is one access line, encoded by hand, into
// io.Discard (the real cost adds the batched write to stdout).
func BenchmarkStageAccessLog(b *testing.B) {
	e := newBenchEnv(b, slog.LevelInfo)
	r := e.request("/admin/report", true)
	client := netip.MustParseAddr("203.0.113.7")
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		e.gw.access.write(&accessEntry{time: benchEpoch, method: r.Method, path: logPath(r), status: 200,
			decision: decisionStepUp, user: "alice", client: client, duration: time.Millisecond})
	}
}

// BenchmarkStageAccessLogSlog is the same line through slog's JSON
// handler, as it was written before the hand encoder: the comparison.
func BenchmarkStageAccessLogSlog(b *testing.B) {
	e := newBenchEnv(b, slog.LevelInfo)
	r := e.request("/admin/report", true)
	client := netip.MustParseAddr("203.0.113.7")
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		e.gw.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method),
			slog.String("path", logPath(r)),
			slog.Int("status", 200),
			slog.String("decision", decisionStepUp),
			slog.String("user", "alice"),
			slog.String("client_ip", addrString(client)),
			slog.Duration("duration", time.Millisecond))
	}
}

// BenchmarkGatewayLoopback runs the real servers and transports on
// loopback (client → gateway → upstream, all in this process), for
// profiling what the in-memory benchmarks cannot see: connection handling,
// header parsing and writing.
func BenchmarkGatewayLoopback(b *testing.B) {
	body := bytes.Repeat([]byte("a"), 1024)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(body)
	}))
	defer up.Close()
	upURL, _ := url.Parse(up.URL)
	tr := &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	for _, tc := range []struct {
		name   string
		path   string
		stepUp bool
		bare   bool
	}{
		{"bare", "/admin/report", true, true},
		{"allow", "/home/index.html", false, false},
		{"stepped-up", "/admin/report", true, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := newBenchEnv(b, slog.LevelWarn)
			e.gw.cfg.Upstream = upURL
			e.gw.proxy.Transport = tr
			var h http.Handler = e.gw
			if tc.bare {
				h = &httputil.ReverseProxy{
					Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(upURL); pr.SetXForwarded() },
					Transport: tr,
				}
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			tmpl := e.request(tc.path, tc.stepUp)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
			defer client.CloseIdleConnections()
			b.ReportAllocs()
			defer cpuPerOp(b)()
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
				req.Header = tmpl.Header
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

// BenchmarkCheck is the decision a front door asks for (docs/design.md
// §16), in process: a forward-auth sub-request from nginx for alice's
// stepped-up mfa path, answered with the six step-up headers. Next to
// BenchmarkGatewaySteppedUp it shows what the doors cost without proxying.
func BenchmarkCheck(b *testing.B) {
	e := newBenchEnv(b, slog.LevelInfo)
	r := e.request("/admin/users", true)
	ctx := context.Background()
	b.ReportAllocs()
	done := cpuPerOp(b)
	for b.Loop() {
		a := e.gw.Check(ctx, Request{Method: "GET", Target: "/admin/users?tab=2", Host: "app.example",
			Header: r.Header.Clone(), Peer: "127.0.0.1:54321"}, StyleNginx, nil)
		if !a.OK || a.Header.Get(HeaderUser) != "alice" {
			b.Fatalf("not allowed with headers: %+v", a)
		}
	}
	done()
}
