package main

// The end-to-end harness: a PingOne simulator, a recording upstream and the
// real stepgate (serve, as main runs it) on loopback, sharing one clock that
// tests advance instead of sleeping.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

// testKey and testKey2 are fixed cookie keys (32 bytes each, base64).
var (
	testKey  = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	testKey2 = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32))
)

// simKey is one RSA signing key for every simulator in this test binary:
// generating a 2048-bit key per stack costs up to a second under -race.
var simKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// upstreamRequest is what the upstream received.
type upstreamRequest struct {
	Method, RequestURI string
	Header             http.Header
}

// stack is one running test deployment.
type stack struct {
	t        testing.TB
	Clock    *pingonesim.Clock
	Sim      *pingonesim.Server
	SimURL   string
	Upstream *httptest.Server
	Proxy    string // http://127.0.0.1:port
	Admin    string
	Signals  string // the signals listener's base URL, with STEPGATE_SIGNALS_LISTEN
	Env      map[string]string
	Logs     *syncBuffer

	mu   sync.Mutex
	reqs []upstreamRequest
}

// stackOption adjusts the environment (or the simulator) before start.
type stackOption func(*stackConfig)

type stackConfig struct {
	env      map[string]string
	tenant   pingonesim.Tenant
	upstream http.Handler
	sim      *pingonesim.Server // share a simulator between gateways
	clock    *pingonesim.Clock
	simURL   string
	reload   *reloadHooks
}

func withEnv(kv ...string) stackOption {
	return func(c *stackConfig) {
		for i := 0; i+1 < len(kv); i += 2 {
			c.env[kv[i]] = kv[i+1]
		}
	}
}

func withUpstream(h http.Handler) stackOption { return func(c *stackConfig) { c.upstream = h } }

// withTenant changes the simulator's tenant before it starts.
func withTenant(change func(*pingonesim.Tenant)) stackOption {
	return func(c *stackConfig) { change(&c.tenant) }
}

// withSim makes the gateway use an existing simulator (for several replicas).
func withSim(s *stack) stackOption {
	return func(c *stackConfig) { c.sim, c.clock, c.simURL = s.Sim, s.Clock, s.SimURL }
}

// newStack starts simulator, upstream and stepgate; everything stops at the
// end of the test.
func newStack(t testing.TB, opts ...stackOption) *stack {
	t.Helper()
	tenant := pingonesim.DemoTenant()
	cfg := &stackConfig{tenant: tenant, env: map[string]string{
		"STEPGATE_PINGONE_ENV_ID":        tenant.EnvID,
		"STEPGATE_PINGONE_CLIENT_ID":     tenant.Apps[0].ClientID,
		"STEPGATE_PINGONE_CLIENT_SECRET": tenant.Apps[0].Secret,
		"STEPGATE_PINGONE_ACR_VALUES":    "MFA-Only",
		"STEPGATE_PINGONE_TIMEOUT":       "10s", // generous: CI machines are loaded; fault tests set their own
		"STEPGATE_COOKIE_KEYS":           testKey,
		"STEPGATE_COOKIE_SECURE":         "false",
		"STEPGATE_RULES":                 "/admin/ mfa max_age=15m; /api/ mfa; /blocked deny; POST /forms/ mfa",
		"STEPGATE_LISTEN":                "127.0.0.1:0",
		"STEPGATE_ADMIN_LISTEN":          "127.0.0.1:0",
		"STEPGATE_SHUTDOWN_DRAIN":        "0s",
		"STEPGATE_SHUTDOWN_TIMEOUT":      "5s",
		"STEPGATE_LOG_LEVEL":             "debug",
	}}
	for _, o := range opts {
		o(cfg)
	}
	s := &stack{t: t, Logs: &syncBuffer{}, Env: cfg.env}
	// Every audit line a stack wrote must fit docs/audit.schema.json and
	// map to a sound OCSF event (registered first, so it runs after the
	// gateway has stopped).
	t.Cleanup(func() { checkAuditLines(t, s.Logs.String()); checkOCSFLines(t, s.Logs.String()) })

	if cfg.sim != nil {
		s.Sim, s.Clock, s.SimURL = cfg.sim, cfg.clock, cfg.simURL
	} else {
		s.Clock = pingonesim.NewClock(time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC))
		s.Sim = pingonesim.New(pingonesim.Options{Tenant: cfg.tenant, Clock: s.Clock, SigningKey: simKey()})
		simSrv := httptest.NewServer(s.Sim)
		t.Cleanup(simSrv.Close)
		s.SimURL = simSrv.URL
	}
	if _, ok := cfg.env["STEPGATE_PINGONE_AUTH_BASE"]; !ok {
		cfg.env["STEPGATE_PINGONE_AUTH_BASE"] = s.SimURL
	}

	up := cfg.upstream
	if up == nil {
		up = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "upstream saw %s %s", r.Method, r.RequestURI)
		})
	}
	s.Upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.reqs = append(s.reqs, upstreamRequest{Method: r.Method, RequestURI: r.RequestURI, Header: r.Header.Clone()})
		s.mu.Unlock()
		up.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Upstream.Close)
	if _, ok := cfg.env["STEPGATE_UPSTREAM"]; !ok {
		cfg.env["STEPGATE_UPSTREAM"] = s.Upstream.URL
	}

	o := &serveOptions{}
	if cfg.reload != nil {
		o = cfg.reload.options(environOf(cfg.env))
	}
	if cfg.env["STEPGATE_SIGNALS_LISTEN"] != "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		o.signals = ln
		s.Signals = "http://" + ln.Addr().String()
	}
	s.Proxy, s.Admin = serveForTestWith(t, cfg.env, s.Clock.Now, s.Logs, o)
	s.waitReady()
	return s
}

// waitReady polls /readyz: the keys load in the background at start.
func (s *stack) waitReady() {
	s.t.Helper()
	if code, body := pollStatus(s.t, s.Admin+"/readyz", http.StatusOK, 10*time.Second); code != http.StatusOK {
		s.t.Fatalf("stepgate not ready (%d %s); logs:\n%s", code, body, s.Logs.String())
	}
}

// serveForTest runs serve on loopback with env until the test ends, logging
// to logs, and returns the proxy and admin base URLs (not waiting for
// readiness). The listen addresses in env are ignored: always 127.0.0.1:0.
func serveForTest(t testing.TB, env map[string]string, now func() time.Time, logs io.Writer) (proxyURL, adminURL string) {
	t.Helper()
	return serveForTestWith(t, env, now, logs, &serveOptions{})
}

// serveForTestWith is serveForTest with serve's options (reload hooks);
// its listeners are replaced by loopback ones.
func serveForTestWith(t testing.TB, env map[string]string, now func() time.Time, logs io.Writer, o *serveOptions) (proxyURL, adminURL string) {
	t.Helper()
	c, err := loadConfig(environOf(env))
	if err != nil {
		t.Fatalf("load config: %v", err)
	}
	set, err := c.validate(os.ReadFile)
	if err != nil {
		t.Fatalf("validate config: %v", err)
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	o.proxy, o.admin = pl, al
	go func() { done <- serve(ctx, c, set, logs, o, now) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v", err)
		}
	})
	return "http://" + pl.Addr().String(), "http://" + al.Addr().String()
}

// pollStatus polls u until it answers want or within passes, and returns
// the last status and body. What is polled (readiness, a background key
// loader) changes asynchronously, so polling with a deadline is the
// synchronisation.
func pollStatus(t testing.TB, u string, want int, within time.Duration) (int, string) {
	t.Helper()
	deadline := time.Now().Add(within)
	var code int
	var body string
	for {
		resp, err := http.Get(u)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			code, body = resp.StatusCode, string(b)
			if code == want {
				return code, body
			}
		}
		if time.Now().After(deadline) {
			return code, body
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitStatus is pollStatus that fails the test on a timeout.
func waitStatus(t testing.TB, u string, want int, within time.Duration) {
	t.Helper()
	if code, _ := pollStatus(t, u, want, within); code != want {
		t.Fatalf("%s: last status %d, want %d within %v", u, code, want, within)
	}
}

// Requests returns what the upstream received so far.
func (s *stack) Requests() []upstreamRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]upstreamRequest(nil), s.reqs...)
}

// LastRequest is the latest upstream request; it fails the test if none.
func (s *stack) LastRequest() upstreamRequest {
	s.t.Helper()
	r := s.Requests()
	if len(r) == 0 {
		s.t.Fatal("upstream received nothing")
	}
	return r[len(r)-1]
}

// browser is a cookie-keeping client that behaves like a browser
// navigating: Accept text/html, no automatic redirects, Origin on POSTs.
type browser struct {
	t      testing.TB
	s      *stack
	base   string
	user   string      // sent as X-Forwarded-User (we are a trusted peer)
	header http.Header // optional: more headers on every request
	Client *http.Client
	csrf   string
}

func (s *stack) browser(user string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: s.t, s: s, base: s.Proxy, user: user, Client: &http.Client{
		Jar:           jar,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// response is a read response.
type response struct {
	*http.Response
	Body string
}

func (b *browser) do(req *http.Request) response {
	b.t.Helper()
	if b.user != "" {
		req.Header.Set("X-Forwarded-User", b.user)
	}
	for k, v := range b.header {
		req.Header[k] = v
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "text/html,application/xhtml+xml")
	}
	resp, err := b.Client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if m := csrfField.FindStringSubmatch(string(body)); m != nil {
		b.csrf = m[1]
	}
	return response{Response: resp, Body: string(body)}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) get(path string) response {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.base+path, nil)
	return b.do(req)
}

// post submits a challenge form with the page's CSRF token.
func (b *browser) post(fields ...string) response {
	b.t.Helper()
	form := url.Values{"csrf": {b.csrf}}
	for i := 0; i+1 < len(fields); i += 2 {
		form.Set(fields[i], fields[i+1])
	}
	return b.postForm("/.stepgate/challenge", form)
}

func (b *browser) postForm(path string, form url.Values) response {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", b.base)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	return b.do(req)
}

// submit posts a challenge form as a browser does: every answer to a POST
// is a 303 (so a reload or Back never re-submits it, issue 16), which
// submit follows to the page that shows the outcome.
func (b *browser) submit(fields ...string) response {
	b.t.Helper()
	r := b.post(fields...)
	if r.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("POST %v answered %d, want 303: %s", fields, r.StatusCode, r.Body)
	}
	return b.follow(r)
}

// follow GETs a redirect's Location.
func (b *browser) follow(r response) response {
	b.t.Helper()
	loc := r.Header.Get("Location")
	if loc == "" {
		b.t.Fatalf("no Location in %d response: %s", r.StatusCode, r.Body)
	}
	return b.get(loc)
}

// deviceIDs lists the device radio buttons on a page.
func deviceIDs(body string) []string {
	var ids []string
	for _, m := range deviceField.FindAllStringSubmatch(body, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

var deviceField = regexp.MustCompile(`name="device" value="([^"]+)"`)

// latestOTP reads the newest code the simulator delivered to user.
func (s *stack) latestOTP(user string) string {
	s.t.Helper()
	msgs := s.Sim.Inbox(user)
	if len(msgs) == 0 {
		s.t.Fatalf("no message delivered to %s", user)
	}
	return msgs[0].OTP
}

// passChallenge walks the challenge page as a person would, from r (the
// page, or a redirect to it): start, the first device offered, the code the
// simulator delivered. It returns the answer to the code.
func (b *browser) passChallenge(s *stack, r response) response {
	b.t.Helper()
	for (r.StatusCode == http.StatusFound || r.StatusCode == http.StatusSeeOther) &&
		strings.HasPrefix(r.Header.Get("Location"), "/.stepgate/") {
		r = b.follow(r)
	}
	if !strings.Contains(r.Body, `data-state="start"`) {
		b.t.Fatalf("challenge page not in start state (%d): %s", r.StatusCode, r.Body)
	}
	r = b.follow(b.post("action", "start"))
	ids := deviceIDs(r.Body)
	if len(ids) < 1 {
		b.t.Fatalf("no devices offered: %s", r.Body)
	}
	r = b.follow(b.post("action", "select", "device", ids[0]))
	if !strings.Contains(r.Body, `data-state="otp"`) {
		b.t.Fatalf("not on OTP page: %s", r.Body)
	}
	return b.post("action", "otp", "otp", s.latestOTP(b.user))
}

// stepUpAlice runs a complete SMS step-up for alice through the page and
// returns her browser, stepped up, with the upstream path requested.
func (s *stack) stepUpAlice(path string) *browser {
	s.t.Helper()
	b := s.browser("alice")
	r := b.get(path)
	if r.StatusCode != http.StatusFound {
		s.t.Fatalf("GET %s: got %d, want 302", path, r.StatusCode)
	}
	r = b.passChallenge(s, r)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != path {
		s.t.Fatalf("OTP: got %d to %q, want 303 to %q: %s", r.StatusCode, r.Header.Get("Location"), path, r.Body)
	}
	return b
}

// getStatus sends one GET to u with exactly the headers given (no cookie
// jar, redirects not followed) and returns the status.
func getStatus(t testing.TB, u string, h http.Header) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header = h
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// syncBuffer collects logs written concurrently.
type syncBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	wake chan struct{} // closed by the next Write (waitEvent)
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
	return b.buf.Write(p)
}

// waitEvent waits, woken by each write, for the first audit line of
// event; within only turns a hang into a failure.
func (b *syncBuffer) waitEvent(t testing.TB, event string, within time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(within)
	for {
		b.mu.Lock()
		if b.wake == nil {
			b.wake = make(chan struct{})
		}
		wake := b.wake
		b.mu.Unlock()
		if ev := b.Events(event); len(ev) > 0 {
			return ev[0]
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("no %s audit line within %v; log:\n%s", event, within, b.String())
		}
	}
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Events returns the decoded JSON log lines with msg "audit" and the event.
func (b *syncBuffer) Events(event string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "audit" && m["event"] == event {
			out = append(out, m)
		}
	}
	return out
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func pingonePush(o string) pingonesim.PushOutcome { return pingonesim.PushOutcome(o) }
