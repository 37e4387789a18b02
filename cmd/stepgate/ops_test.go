package main

// Operability (docs/design.md §10): the metrics a real step-up moves, the admin-only
// endpoints, readiness tied to PingOne's signing keys, and log hygiene.

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

// opsRun is what opsScenario did and collected: every secret that passed
// through the gateway, so the log can be searched for each.
type opsRun struct {
	otps    []string // delivered by the simulator, and the wrong one typed
	idToken string
	cookies []string // every cookie value any browser held
	csrf    []string
}

// opsScenario drives the traffic that docs/design.md §10 metrics and audit events
// describe: an allow request, a full SMS step-up followed by a stepped-up
// request, a wrong OTP on another flow, and flow starts until one is
// rate-limited.
func opsScenario(t *testing.T, s *stack) opsRun {
	t.Helper()
	var run opsRun
	proxyURL, _ := url.Parse(s.Proxy)
	keepCookies := func(b *browser) {
		for _, c := range b.Client.Jar.Cookies(proxyURL) {
			run.cookies = append(run.cookies, c.Value)
		}
		if b.csrf != "" {
			run.csrf = append(run.csrf, b.csrf)
		}
	}

	// An allow path.
	if r := s.browser("alice").get("/public/"); r.StatusCode != http.StatusOK {
		t.Fatalf("allow path: got %d, want 200", r.StatusCode)
	}

	// A wrong OTP (before alice's step-up, so the browser holds a pending
	// flow cookie whose value we can collect).
	w := s.browser("alice")
	w.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(w.follow(w.post("action", "start")).Body)
	if len(ids) == 0 {
		t.Fatal("no devices offered")
	}
	w.follow(w.post("action", "select", "device", ids[0]))
	wrong := wrongCode(s.latestOTP("alice"))
	if r := w.submit("action", "otp", "otp", wrong); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong OTP: got %d, want 401", r.StatusCode)
	}
	run.otps = append(run.otps, wrong)
	keepCookies(w)

	// A full step-up and a stepped-up request.
	b := s.stepUpAlice("/admin/")
	keepCookies(b)
	if r := b.get("/admin/"); r.StatusCode != http.StatusOK {
		t.Fatalf("stepped-up request: got %d, want 200", r.StatusCode)
	}
	run.idToken = s.LastRequest().Header.Get("X-Stepgate-Id-Token")
	if run.idToken == "" {
		t.Fatal("upstream got no ID token after the step-up")
	}
	keepCookies(b)

	// Flow starts for bob until the per-user limit (5 per 10 min) answers 429.
	limited := false
	for i := 0; i < 6 && !limited; i++ {
		bb := s.browser("bob")
		bb.get("/.stepgate/challenge?return=/admin/")
		r := bb.post("action", "start")
		if r.StatusCode == http.StatusSeeOther && r.Header.Get("Retry-After") != "" {
			r = bb.follow(r) // refused: the 429 page
		}
		keepCookies(bb)
		switch r.StatusCode {
		case http.StatusSeeOther:
		case http.StatusTooManyRequests:
			limited = true
		default:
			t.Fatalf("start %d for bob: got %d, want 303 or 429", i+1, r.StatusCode)
		}
	}
	if !limited {
		t.Fatal("six flow starts for one user were never rate-limited")
	}

	// A PingOne bypass (dave has no device) is an mfa.failed; a request
	// without identity on an mfa path and a refused path are audited too.
	d := s.browser("dave")
	d.get("/.stepgate/challenge?return=/admin/")
	if r := d.submit("action", "start"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("dave's bypass: got %d, want 403", r.StatusCode)
	}
	keepCookies(d)
	if r := s.browser("").get("/admin/"); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no identity on an mfa path: got %d, want 401", r.StatusCode)
	}
	if r := s.browser("alice").get("/a/%2e%2e/admin/"); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("encoded dot-dot path: got %d, want 400", r.StatusCode)
	}

	for _, m := range s.Sim.Inbox("alice") {
		run.otps = append(run.otps, m.OTP)
	}
	for _, m := range s.Sim.Inbox("bob") {
		if m.OTP != "" {
			run.otps = append(run.otps, m.OTP)
		}
	}
	return run
}

// scrape fetches and parses a Prometheus text exposition.
func scrape(t *testing.T, u string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: got %d", u, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metricValue sums the samples of a family whose labels include want
// (counter and gauge values, histogram sample counts).
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	var sum float64
	found := false
next:
	for _, m := range f.GetMetric() {
		for k, v := range want {
			match := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					match = true
				}
			}
			if !match {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum, found
}

func TestMetricsMoveAfterARealStepUp(t *testing.T) {
	s := newStack(t)
	before := scrape(t, s.Admin+"/metrics")
	opsScenario(t, s)
	after := scrape(t, s.Admin+"/metrics")

	tests := []struct {
		name    string
		family  string
		labels  map[string]string
		atLeast float64 // increase over the scenario
	}{
		{"allow requests are counted by decision and code", "stepgate_requests_total", map[string]string{"decision": "allow", "code": "200"}, 1},
		{"stepped-up requests are counted", "stepgate_requests_total", map[string]string{"decision": "stepped_up", "code": "200"}, 1},
		{"challenge redirects are counted", "stepgate_requests_total", map[string]string{"decision": "mfa_required", "code": "302"}, 1},
		{"request durations are observed per decision", "stepgate_request_duration_seconds", map[string]string{"decision": "stepped_up"}, 1},
		{"started challenges are counted", "stepgate_challenges_total", map[string]string{"event": "started"}, 2},
		{"completed challenges are counted", "stepgate_challenges_total", map[string]string{"event": "completed"}, 1},
		{"failed challenges (a PingOne bypass) are counted", "stepgate_challenges_total", map[string]string{"event": "failed"}, 1},
		{"requests without identity are counted", "stepgate_requests_total", map[string]string{"decision": "no_identity", "code": "401"}, 1},
		{"refused paths are counted", "stepgate_requests_total", map[string]string{"decision": "rejected", "code": "400"}, 1},
		{"right OTPs are counted", "stepgate_otp_checks_total", map[string]string{"result": "ok"}, 1},
		{"wrong OTPs are counted", "stepgate_otp_checks_total", map[string]string{"result": "wrong"}, 1},
		{"PingOne authorize calls are counted with their status", "stepgate_pingone_requests_total", map[string]string{"op": "authorize", "code": "200"}, 2},
		{"PingOne call latency is observed per operation", "stepgate_pingone_request_duration_seconds", map[string]string{"op": "authorize"}, 2},
		{"a rate-limited start is counted by limit", "stepgate_rate_limited_total", map[string]string{"limit": "start_user"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := metricValue(after, tt.family, tt.labels)
			if !ok {
				t.Fatalf("%s%v missing from /metrics", tt.family, tt.labels)
			}
			was, _ := metricValue(before, tt.family, tt.labels)
			if got-was < tt.atLeast {
				t.Errorf("%s%v moved by %v, want at least %v", tt.family, tt.labels, got-was, tt.atLeast)
			}
		})
	}

	t.Run("build info is 1 and names the version", func(t *testing.T) {
		got, ok := metricValue(after, "stepgate_build_info", map[string]string{"version": currentVersion().Version})
		if !ok || got != 1 {
			t.Errorf("stepgate_build_info{version=%q} = %v (present %v), want 1", currentVersion().Version, got, ok)
		}
	})
	t.Run("Go and process collectors are registered", func(t *testing.T) {
		for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_start_time_seconds", "process_resident_memory_bytes"} {
			if _, ok := after[name]; !ok {
				t.Errorf("%s missing", name)
			}
		}
	})
	t.Run("no label value carries a path, a user or an address", func(t *testing.T) {
		for name, f := range after {
			for _, m := range f.GetMetric() {
				for _, lp := range m.GetLabel() {
					v := lp.GetValue()
					_, ipErr := netip.ParseAddr(v)
					_, apErr := netip.ParseAddrPort(v)
					if strings.Contains(v, "/") || ipErr == nil || apErr == nil ||
						strings.Contains(v, "alice") || strings.Contains(v, "bob") || strings.Contains(v, "127.0.0.1") {
						t.Errorf("%s{%s=%q}: label value names a path, user or address", name, lp.GetName(), v)
					}
				}
			}
		}
	})
}

func TestAdminEndpointsAreOnlyOnTheAdminListener(t *testing.T) {
	// The upstream answers 404 to everything, so a 404 from the proxy
	// listener together with the upstream having seen the request proves
	// the path was forwarded, not served by stepgate.
	s := newStack(t, withUpstream(http.NotFoundHandler()))
	for _, path := range []string{"/metrics", "/healthz", "/readyz", "/debug/pprof/"} {
		t.Run("the proxy listener forwards "+path+" to the app", func(t *testing.T) {
			n := len(s.Requests())
			resp, err := http.Get(s.Proxy + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("got %d, want the app's 404", resp.StatusCode)
			}
			if strings.Contains(string(body), "stepgate_") || strings.Contains(string(body), "ready") {
				t.Errorf("proxy listener served stepgate's own endpoint: %.200s", body)
			}
			if len(s.Requests()) != n+1 || s.LastRequest().RequestURI != path {
				t.Errorf("upstream did not receive %s", path)
			}
		})
	}

	adminStatus := func(t *testing.T, base, path string) int {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	t.Run("the admin listener serves metrics, liveness and readiness", func(t *testing.T) {
		for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
			if got := adminStatus(t, s.Admin, path); got != http.StatusOK {
				t.Errorf("admin %s: got %d, want 200", path, got)
			}
		}
	})
	t.Run("pprof is off by default", func(t *testing.T) {
		if got := adminStatus(t, s.Admin, "/debug/pprof/"); got != http.StatusNotFound {
			t.Errorf("admin /debug/pprof/: got %d, want 404", got)
		}
	})
	t.Run("STEPGATE_PPROF=true serves pprof on the admin listener only", func(t *testing.T) {
		p := newStack(t, withUpstream(http.NotFoundHandler()), withEnv("STEPGATE_PPROF", "true"))
		if got := adminStatus(t, p.Admin, "/debug/pprof/"); got != http.StatusOK {
			t.Errorf("admin /debug/pprof/: got %d, want 200", got)
		}
		if got := adminStatus(t, p.Admin, "/debug/pprof/cmdline"); got != http.StatusOK {
			t.Errorf("admin /debug/pprof/cmdline: got %d, want 200", got)
		}
		if got := adminStatus(t, p.Proxy, "/debug/pprof/"); got != http.StatusNotFound {
			t.Errorf("proxy /debug/pprof/: got %d, want the app's 404", got)
		}
	})
}

// startUnready runs serve with the stack's default environment against the
// PingOne handler sim, without waiting for readiness (newStack waits). It
// returns the admin URL.
func startUnready(t *testing.T, sim http.Handler, clock *pingonesim.Clock) string {
	t.Helper()
	simSrv := httptest.NewServer(sim)
	t.Cleanup(simSrv.Close)
	up := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(up.Close)
	tenant := pingonesim.DemoTenant()
	env := map[string]string{
		"STEPGATE_UPSTREAM":              up.URL,
		"STEPGATE_PINGONE_AUTH_BASE":     simSrv.URL,
		"STEPGATE_PINGONE_ENV_ID":        tenant.EnvID,
		"STEPGATE_PINGONE_CLIENT_ID":     tenant.Apps[0].ClientID,
		"STEPGATE_PINGONE_CLIENT_SECRET": tenant.Apps[0].Secret,
		"STEPGATE_PINGONE_TIMEOUT":       "2s",
		"STEPGATE_COOKIE_KEYS":           testKey,
		"STEPGATE_COOKIE_SECURE":         "false",
		"STEPGATE_SHUTDOWN_DRAIN":        "0s",
		"STEPGATE_SHUTDOWN_TIMEOUT":      "5s",
		"STEPGATE_RULES":                 "/admin/ mfa",
	}
	_, admin := serveForTest(t, env, clock.Now, io.Discard)
	return admin
}

func TestReadinessFollowsPingOneSigningKeys(t *testing.T) {
	clock := pingonesim.NewClock(time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC))
	sim := pingonesim.New(pingonesim.Options{Tenant: pingonesim.DemoTenant(), Clock: clock})
	sim.SetFault(pingonesim.Fault{Op: "jwks", Kind: "status", Status: http.StatusServiceUnavailable})
	// failed is closed once the simulator has answered a JWKS request with
	// the fault, so the test knows stepgate tried and was refused.
	failed := make(chan struct{})
	var once sync.Once
	admin := startUnready(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sim.ServeHTTP(w, r)
		if strings.HasSuffix(r.URL.Path, "/as/jwks") {
			once.Do(func() { close(failed) })
		}
	}), clock)

	select {
	case <-failed:
	case <-time.After(10 * time.Second):
		t.Fatal("stepgate never asked PingOne for its signing keys")
	}
	// Live, but not ready, and the 503 says why.
	if code, body := pollStatus(t, admin+"/healthz", http.StatusOK, 5*time.Second); code != http.StatusOK {
		t.Fatalf("/healthz: got %d %q, want 200 while keys are missing", code, body)
	}
	resp, err := http.Get(admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "signing keys") {
		t.Fatalf("/readyz with JWKS failing: got %d %q, want 503 naming the signing keys", resp.StatusCode, body)
	}

	// PingOne recovers: the background loader retries and readiness follows.
	sim.ClearFaults()
	if code, body := pollStatus(t, admin+"/readyz", http.StatusOK, 10*time.Second); code != http.StatusOK {
		t.Fatalf("/readyz after JWKS recovered: got %d %q, want 200", code, body)
	}
}

// secretPattern matches s as a whole token in the log (OTPs are short
// digit strings; a bare substring test could hit an unrelated number).
func secretPattern(s string) *regexp.Regexp {
	return regexp.MustCompile(`(^|[^0-9A-Za-z_\-])` + regexp.QuoteMeta(s) + `($|[^0-9A-Za-z_\-])`)
}

func TestLogsCarryAuditEventsButNoSecrets(t *testing.T) {
	s := newStack(t) // log level debug: the most that is ever written
	run := opsScenario(t, s)
	logs := s.Logs.String()

	if len(run.otps) < 3 || run.idToken == "" || len(run.cookies) < 2 || len(run.csrf) < 2 {
		t.Fatalf("scenario collected too little to check: %d otps, token %v, %d cookies, %d csrf",
			len(run.otps), run.idToken != "", len(run.cookies), len(run.csrf))
	}
	secrets := map[string][]string{
		"client secret": {s.Env["STEPGATE_PINGONE_CLIENT_SECRET"]},
		"cookie key":    {testKey},
		"cookie value":  run.cookies,
		"CSRF token":    run.csrf,
		"OTP":           run.otps,
	}
	// The whole ID token, and its payload and signature on their own in
	// case something logs a part (the header is shared by every JWT).
	parts := strings.Split(run.idToken, ".")
	if len(parts) != 3 {
		t.Fatalf("ID token has %d parts", len(parts))
	}
	secrets["ID token"] = []string{run.idToken, parts[1], parts[2]}
	for kind, values := range secrets {
		for _, v := range values {
			if v == "" {
				t.Errorf("empty %s collected", kind)
				continue
			}
			if secretPattern(v).MatchString(logs) {
				t.Errorf("log contains a %s (%d chars)", kind, len(v))
			}
		}
	}

	t.Run("every access line names user and client address", func(t *testing.T) {
		n := 0
		for _, line := range strings.Split(logs, "\n") {
			var m map[string]any
			if jsonUnmarshal(line, &m) != nil || m["msg"] != "request" {
				continue
			}
			n++
			for _, k := range []string{"method", "path", "status", "decision", "user", "client_ip", "duration", "duration_ms"} {
				if _, ok := m[k]; !ok {
					t.Errorf("access line without %s: %s", k, line)
				}
			}
			if m["client_ip"] != "127.0.0.1" {
				t.Errorf("access line client_ip = %v, want 127.0.0.1", m["client_ip"])
			}
		}
		if n < 10 {
			t.Errorf("%d access lines, want one per request (at least 10)", n)
		}
	})

	tests := []struct {
		event string
		user  string // "" = any of alice, bob, dave
		extra []string
	}{
		{"mfa.started", "", []string{"rule"}},
		{"mfa.device_selected", "alice", []string{"device_type"}},
		{"mfa.otp_failed", "alice", nil},
		{"mfa.completed", "alice", []string{"acr", "amr"}},
		{"mfa.rate_limited", "bob", []string{"limit"}},
		{"mfa.failed", "dave", []string{"reason"}},
	}
	for _, tt := range tests {
		t.Run("the audit event "+tt.event+" names user, client address and flow", func(t *testing.T) {
			evs := s.Logs.Events(tt.event)
			if len(evs) == 0 {
				t.Fatalf("no %s event", tt.event)
			}
			for _, ev := range evs {
				wantUser := ev["user"] == tt.user || tt.user == "" && (ev["user"] == "alice" || ev["user"] == "bob" || ev["user"] == "dave")
				if !wantUser || ev["client_ip"] != "127.0.0.1" {
					t.Errorf("%s: user=%v client_ip=%v, want %s 127.0.0.1", tt.event, ev["user"], ev["client_ip"], tt.user)
				}
				if _, ok := ev["flow_id"]; !ok {
					t.Errorf("%s without a flow_id field: %v", tt.event, ev)
				}
				for _, k := range tt.extra {
					if v, ok := ev[k]; !ok || v == "" {
						t.Errorf("%s without %s: %v", tt.event, k, ev)
					}
				}
			}
		})
	}
	// Refusals before any flow exists carry no flow id, but still say who
	// (as far as known) and from where.
	for _, event := range []string{"identity.rejected", "request.rejected"} {
		t.Run("the audit event "+event+" names the client address and reason", func(t *testing.T) {
			evs := s.Logs.Events(event)
			if len(evs) == 0 {
				t.Fatalf("no %s event", event)
			}
			for _, ev := range evs {
				if _, ok := ev["user"]; !ok || ev["client_ip"] != "127.0.0.1" || ev["reason"] == "" || ev["reason"] == nil {
					t.Errorf("%s: %v, want user, client_ip 127.0.0.1 and a reason", event, ev)
				}
			}
		})
	}
	t.Run("events of one flow share its flow id", func(t *testing.T) {
		completed := s.Logs.Events("mfa.completed")[0]["flow_id"]
		if completed == "" {
			t.Fatal("mfa.completed has an empty flow_id")
		}
		found := false
		for _, ev := range s.Logs.Events("mfa.started") {
			found = found || ev["flow_id"] == completed
		}
		if !found {
			t.Errorf("no mfa.started with the completed flow's id %v", completed)
		}
	})
}
