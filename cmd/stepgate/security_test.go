package main

// The security regression suite (issue 5): one test per attack, each named
// for the class of flaw it guards against — the families of advisories that
// oauth2-proxy, Pomerium, Authelia, Oathkeeper and Traefik forward-auth have
// shipped. Every test runs the real gateway (newStack) and fails if the
// defence it names is removed. Cases already covered by gateway_test.go are
// not repeated here; see SECURITY.md for the map.

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

// pingoneBobDevice is bob's push device in the demo tenant.
const pingoneBobDevice = pingonesim.DemoBobMobileID

func pingoneFault(op, kind string, status, retryAfter int) pingonesim.Fault {
	return pingonesim.Fault{Op: op, Kind: kind, Status: status, RetryAfter: retryAfter}
}

// cookie returns the browser's current cookie named name ("" if none).
func (b *browser) cookie(name string) string {
	u, _ := url.Parse(b.base)
	for _, c := range b.Client.Jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// setCookie replaces a cookie in the browser's jar.
func (b *browser) setCookie(name, value string) {
	u, _ := url.Parse(b.base)
	b.Client.Jar.SetCookies(u, []*http.Cookie{{Name: name, Value: value, Path: "/"}})
}

// rawExchange sends raw bytes to the proxy listener and returns the response
// with its body read.
func rawExchange(t *testing.T, base, raw string) (int, http.Header, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, string(body)
}

// metric reads one sample from the admin listener's /metrics, 0 if absent.
func (s *stack) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get(s.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

// mustBeChallenged asserts that an mfa path answers with the challenge (302)
// for this browser and that the upstream saw nothing new.
func mustBeChallenged(t *testing.T, s *stack, b *browser, path string) {
	t.Helper()
	before := len(s.Requests())
	if r := b.get(path); r.StatusCode != http.StatusFound {
		t.Errorf("GET %s: got %d, want 302 to the challenge", path, r.StatusCode)
	}
	if n := len(s.Requests()); n != before {
		t.Errorf("GET %s reached the upstream without a step-up", path)
	}
}

// ---------------------------------------------------------------------------
// Path confusion (docs/design.md §2): the decision and the upstream must agree on the
// path. Forms already in TestRefusedPathFormsAnswer400 are not repeated.

func TestPathConfusion_EncodedDotSegmentsInEveryCase(t *testing.T) {
	s := newStack(t)
	assertAllRefused(t, s,
		"/public/%2E%2E/admin/", "/public/.%2e/admin/", "/public/%2e./admin/", "/public/%2E./admin/",
		"/admin/%2E", "/public/%252e%252e/admin/", "/public/..%2fadmin/", "/public/%2e%2e%5cadmin/",
		"/.stepgate/../admin/", "/.stepgate/assets/%2e%2e/%2e%2e/admin/", "/public/%C0%AE%C0%AE/admin/",
	)
	if n := len(s.Logs.Events("request.rejected")); n == 0 {
		t.Errorf("no request.rejected audit events")
	}
}

func TestPathConfusion_EncodedLettersStillMatchTheRule(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	// %61 is "a": the rule sees /admin/, so the step-up is required.
	mustBeChallenged(t, s, b, "/%61dmin/")
	mustBeChallenged(t, s, b, "/%61%64%6D%69%6E/users")
	stepped := s.stepUpAlice("/admin/")
	if r := stepped.get("/%61dmin/x"); r.StatusCode != 200 {
		t.Fatalf("stepped-up GET /%%61dmin/x: %d", r.StatusCode)
	}
	if got := s.LastRequest().RequestURI; got != "/%61dmin/x" {
		t.Errorf("upstream got %q, want the exact bytes that were matched", got)
	}
}

func TestPathConfusion_MixedCaseOnCaseInsensitiveApp(t *testing.T) {
	s := newStack(t, withEnv("STEPGATE_CASE_INSENSITIVE_PATHS", "true"))
	b := s.browser("alice")
	for _, p := range []string{"/ADMIN/", "/Admin/users", "/aDmIn", "/%41DMIN/", "/FORMS/x"} {
		t.Run(p, func(t *testing.T) {
			if p == "/FORMS/x" { // POST-only rule
				req, _ := http.NewRequest("POST", s.Proxy+p, strings.NewReader("a=b"))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				if r := b.do(req); r.StatusCode != http.StatusSeeOther {
					t.Errorf("POST %s: got %d, want 303 to the challenge", p, r.StatusCode)
				}
				return
			}
			mustBeChallenged(t, s, b, p)
		})
	}
	// The reserved prefix is never proxied, in any case.
	for _, p := range []string{"/.STEPGATE/challenge", "/.StepGate/x"} {
		b.get(p)
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("upstream received %d requests for mixed-case mfa or reserved paths", n)
	}
}

func TestPathConfusion_QueryStringThatLooksLikeAPath(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	for _, target := range []string{"/public?/../admin/", "/public?x=/admin/&y=..%2f..%2fadmin", "/public?%2e%2e/admin/"} {
		t.Run(target, func(t *testing.T) {
			if r := b.get(target); r.StatusCode != 200 {
				t.Fatalf("got %d, want 200 (the query never takes part in rules)", r.StatusCode)
			}
			if got := s.LastRequest().RequestURI; got != target {
				t.Errorf("upstream got %q, want %q", got, target)
			}
		})
	}
	mustBeChallenged(t, s, b, "/admin/?/public")
	mustBeChallenged(t, s, b, "/admin?x=/public/")
}

func TestPathConfusion_FragmentAndNulInTheTarget(t *testing.T) {
	s := newStack(t)
	assertAllRefused(t, s, "/public#/../admin/", "/public%23/admin/", "/admin/%00", "/public%00/../admin/", "/admin%00.css")
}

func TestPathConfusion_SemicolonPathParameters(t *testing.T) {
	s := newStack(t)
	assertAllRefused(t, s, "/admin;jsessionid=x/", "/public;/../admin/", "/public/..;/admin/", "/admin/;", "/public%3B/admin")
}

func TestPathConfusion_AbsoluteFormAndAuthorityFormTargets(t *testing.T) {
	s := newStack(t)
	host := strings.TrimPrefix(s.Proxy, "http://")
	for _, line := range []string{
		"GET http://" + host + "/admin/ HTTP/1.1", "GET HTTP://" + host + "/public HTTP/1.1",
		"GET https://evil.example/public HTTP/1.1", "GET admin/ HTTP/1.1", "CONNECT " + host + " HTTP/1.1",
		"GET * HTTP/1.1",
	} {
		t.Run(line, func(t *testing.T) {
			status, _, _ := rawExchange(t, s.Proxy, line+"\r\nHost: "+host+"\r\nX-Forwarded-User: alice\r\n\r\n")
			if status != http.StatusBadRequest {
				t.Errorf("got %d, want 400", status)
			}
		})
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("upstream received %d non-origin-form requests", n)
	}
}

func TestPathConfusion_OverlongPath(t *testing.T) {
	s := newStack(t)
	for _, target := range []string{
		"/public/" + strings.Repeat("a", 9000),
		"/public?" + strings.Repeat("q", 9000),
		"/admin/" + strings.Repeat("%41", 3000),
	} {
		status, _, _ := rawExchange(t, s.Proxy, "GET "+target+" HTTP/1.1\r\nHost: x\r\nX-Forwarded-User: alice\r\n\r\n")
		if status != http.StatusBadRequest && status != http.StatusRequestURITooLong && status != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%d-byte target: got %d, want a 4xx refusal", len(target), status)
		}
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("upstream received %d overlong requests", n)
	}
}

// ---------------------------------------------------------------------------
// Forwarded-header trust (docs/design.md §4, §6).

func TestForwardedHeaderTrust_UntrustedPeerCannotSteerTheUpstream(t *testing.T) {
	s := newStack(t, withEnv("STEPGATE_TRUSTED_PROXIES", "10.9.9.9/32"))
	req, _ := http.NewRequest("GET", s.Proxy+"/public", nil)
	for k, v := range map[string]string{
		"X-Forwarded-For": "10.9.9.9, 203.0.113.9", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
		"X-Forwarded-Prefix": "/admin", "X-Forwarded-Uri": "/admin/", "X-Forwarded-Port": "443",
		"Forwarded": "for=203.0.113.9;host=evil.example;proto=https", "X-Original-Url": "/admin/",
		"X-Rewrite-Url": "/admin/", "X-Real-Ip": "203.0.113.9", "True-Client-Ip": "203.0.113.9",
		"X_Forwarded_Host": "evil.example", "X-Forwarded-User": "admin",
	} {
		req.Header[k] = []string{v}
	}
	req.Header.Set("Accept", "text/html")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("got %d", resp.StatusCode)
	}
	h := s.LastRequest().Header
	host := strings.TrimPrefix(s.Proxy, "http://")
	for name, want := range map[string]string{
		"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": host, "X-Forwarded-Proto": "http", "X-Real-Ip": "127.0.0.1",
		"X-Forwarded-Prefix": "", "X-Forwarded-Uri": "", "X-Forwarded-Port": "", "Forwarded": "",
		"X-Original-Url": "", "X-Rewrite-Url": "", "True-Client-Ip": "", "X-Forwarded-User": "",
	} {
		if got := strings.Join(h.Values(name), ","); got != want {
			t.Errorf("upstream %s = %q, want %q", name, got, want)
		}
	}
	if _, ok := h["X_Forwarded_Host"]; ok {
		t.Errorf("upstream received X_Forwarded_Host from an untrusted peer")
	}
	// The same headers on an mfa path still get no identity: 401, never the upstream.
	req.URL.Path = "/admin/"
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("mfa path from an untrusted peer: %d, want 401", resp.StatusCode)
	}
	// The audit event is written before the answer, so it can be read now.
	if ev := s.Logs.Events("identity.rejected"); len(ev) != 1 || ev[0]["client_ip"] != "127.0.0.1" {
		t.Errorf("identity.rejected events = %v, want one with the TCP peer as client_ip", ev)
	}
}

func TestForwardedHeaderTrust_RewriteHeadersNeverChangeTheDecision(t *testing.T) {
	s := newStack(t) // loopback is a trusted proxy here: the headers are still ignored
	b := s.browser("alice")
	for _, name := range []string{"X-Original-URL", "X-Rewrite-URL", "X-Forwarded-Uri", "X-Forwarded-Prefix"} {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", s.Proxy+"/admin/", nil)
			req.Header.Set(name, "/public")
			if r := b.do(req); r.StatusCode != http.StatusFound {
				t.Errorf("/admin/ with %s: /public: got %d, want 302", name, r.StatusCode)
			}
		})
	}
	req, _ := http.NewRequest("GET", s.Proxy+"/public", nil)
	req.Header.Set("X-Original-URL", "/admin/")
	req.Header.Set("X-Rewrite-URL", "/admin/")
	b.do(req)
	h := s.LastRequest().Header
	if h.Get("X-Original-Url") != "" || h.Get("X-Rewrite-Url") != "" {
		t.Errorf("upstream received a rewrite header it could route by: %v", h)
	}
	if n := len(s.Requests()); n != 1 {
		t.Errorf("upstream received %d requests, want only /public", n)
	}
}

func TestForwardedHeaderTrust_MalformedXFFFallsBackToThePeer(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	for _, xff := range []string{"not-an-ip", "203.0.113.9:80:x", "203.0.113.9,,", "203.0.113.9, nonsense", "[::1", "999.1.1.1"} {
		t.Run(xff, func(t *testing.T) {
			req, _ := http.NewRequest("GET", s.Proxy+"/public", nil)
			req.Header.Set("X-Forwarded-For", xff)
			b.do(req)
			if got := s.LastRequest().Header.Get("X-Real-Ip"); got != "127.0.0.1" {
				t.Errorf("X-Real-Ip = %q, want the peer 127.0.0.1", got)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Identity headers (docs/design.md §4, §6).

func TestIdentityHeaders_DuplicatedOrJoinedIdentityIsRefused(t *testing.T) {
	s := newStack(t)
	for _, tt := range []struct {
		name   string
		header http.Header
	}{
		{"two values", http.Header{"X-Forwarded-User": {"alice", "bob"}}},
		{"a comma-joined value", http.Header{"X-Forwarded-User": {"bob, alice"}}},
		{"a control character", http.Header{"X-Forwarded-User": {"alice\tbob"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.header.Set("Accept", "text/html")
			if status := getStatus(t, s.Proxy+"/admin/", tt.header); status != http.StatusUnauthorized {
				t.Errorf("got %d, want 401", status)
			}
		})
	}
}

func TestIdentityHeaders_VariantSpellingNeverReachesUpstream(t *testing.T) {
	s := newStack(t)
	b := s.stepUpAlice("/admin/")
	req, _ := http.NewRequest("GET", s.Proxy+"/admin/", nil)
	req.Header["X_Forwarded_User"] = []string{"admin"}
	req.Header["X.Forwarded.User"] = []string{"admin"}
	req.Header["x-forwarded_user"] = []string{"admin"}
	if r := b.do(req); r.StatusCode != 200 {
		t.Fatalf("got %d", r.StatusCode)
	}
	for name, v := range s.LastRequest().Header {
		if strings.Contains(strings.Join(v, ","), "admin") && name != "X-Forwarded-For" {
			t.Errorf("upstream received %s: %v", name, v)
		}
	}
}

func TestIdentityHeaders_ConnectionHeaderCannotDropVerifiedHeaders(t *testing.T) {
	s := newStack(t)
	b := s.stepUpAlice("/admin/")
	req, _ := http.NewRequest("GET", s.Proxy+"/admin/", nil)
	req.Header.Set("Connection", "X-Stepgate-Id-Token, X-Stepgate-Subject, X-Stepgate-User, X-Stepgate-Auth-Time, X-Stepgate-Acr, X-Stepgate-Amr, Cookie")
	if r := b.do(req); r.StatusCode != 200 {
		t.Fatalf("got %d", r.StatusCode)
	}
	h := s.LastRequest().Header
	for _, name := range []string{"X-Stepgate-Id-Token", "X-Stepgate-Subject", "X-Stepgate-User", "X-Stepgate-Auth-Time", "X-Stepgate-Acr", "X-Stepgate-Amr"} {
		if h.Get(name) == "" {
			t.Errorf("upstream lost %s through Connection:", name)
		}
	}
	if h.Get("X-Stepgate-User") != "alice" {
		t.Errorf("X-Stepgate-User = %q", h.Get("X-Stepgate-User"))
	}
}

func TestIdentityHeaders_DuplicatedStepUpCookie(t *testing.T) {
	s := newStack(t)
	b := s.stepUpAlice("/admin/")
	valid := b.cookie("stepgate")
	for _, cookie := range []string{"stepgate=" + valid + "; stepgate=x", "stepgate=x; stepgate=" + valid} {
		status := getStatus(t, s.Proxy+"/admin/", http.Header{
			"X-Forwarded-User": {"alice"}, "Accept": {"text/html"}, "Cookie": {cookie}})
		if status != http.StatusFound {
			t.Errorf("two step-up cookies: got %d, want 302 (ambiguous means absent)", status)
		}
	}
}

// ---------------------------------------------------------------------------
// Step-up cookie (docs/design.md §5). Tampered, truncated, oversized, retired-key and
// other-user cookies are in gateway_test.go.

func TestStepUpCookie_ExpiredIDToken(t *testing.T) {
	s := newStack(t, withEnv("STEPGATE_MFA_MAX_AGE", "24h"))
	b := s.stepUpAlice("/api/x") // default max_age: 24h, the ID token lives 1h
	api := func() int {
		req, _ := http.NewRequest("GET", s.Proxy+"/api/x", nil)
		req.Header.Set("Accept", "application/json")
		return b.do(req).StatusCode
	}
	s.Clock.Advance(58 * time.Minute)
	if got := api(); got != 200 {
		t.Fatalf("58 min after step-up: %d, want 200", got)
	}
	s.Clock.Advance(3 * time.Minute)
	if got := api(); got != http.StatusUnauthorized {
		t.Errorf("after the ID token expired: %d, want 401 step_up_required", got)
	}
}

func TestStepUpCookie_FlowCookieValueUsedAsStepUpCookie(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	flow := b.cookie("stepgate-flow")
	if flow == "" {
		t.Fatal("no flow cookie")
	}
	b.setCookie("stepgate", flow) // same key, other cookie name: must not open
	mustBeChallenged(t, s, b, "/admin/")
}

func TestStepUpCookie_ReplayedFlowCookieDoesNotExtendFreshness(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(b.follow(b.post("action", "start")).Body)
	b.follow(b.post("action", "select", "device", ids[0]))
	pending := b.cookie("stepgate-flow")
	if r := b.post("action", "otp", "otp", s.latestOTP("alice")); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("OTP: %d", r.StatusCode)
	}
	// Three minutes later the kept pending-flow cookie is played back; the
	// completed flow still answers with the same ID token.
	s.Clock.Advance(3 * time.Minute)
	b.setCookie("stepgate-flow", pending)
	b.get("/.stepgate/challenge")
	s.Clock.Advance(12*time.Minute + 30*time.Second)
	mustBeChallenged(t, s, b, "/admin/") // 15.5 min after the only MFA; max_age=15m
}

// ---------------------------------------------------------------------------
// The challenge (docs/design.md §7). CSRF, GET-start and bypass are in gateway_test.go.

func TestChallenge_FlowCookieFromAnotherUsersFlow(t *testing.T) {
	s := newStack(t)
	bob := s.browser("bob")
	bob.get("/.stepgate/challenge?return=/admin/")
	bob.follow(bob.post("action", "start"))
	flowID := s.Logs.Events("mfa.started")[0]["flow_id"].(string)
	if err := s.Sim.Push(flowID, pingonePush("approve")); err != nil {
		t.Fatal(err)
	}
	// Alice's browser plays bob's approved flow cookie.
	alice := s.browser("alice")
	alice.setCookie("stepgate-flow", bob.cookie("stepgate-flow"))
	if st := statusJSON(t, alice); st["status"] != "NONE" {
		t.Errorf("status with another user's flow = %v, want NONE", st)
	}
	alice.csrf = bob.csrf
	if r := alice.submit("action", "select", "device", pingoneBobDevice); r.StatusCode != http.StatusForbidden {
		t.Errorf("action on another user's flow: %d, want 403", r.StatusCode)
	}
	alice.get("/.stepgate/challenge")
	if alice.cookie("stepgate") != "" {
		t.Fatal("alice got a step-up cookie from bob's flow")
	}
	mustBeChallenged(t, s, alice, "/admin/")
}

func TestChallenge_DeviceIDFromAnotherUser(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	b.follow(b.post("action", "start"))
	r := b.submit("action", "select", "device", pingoneBobDevice)
	if r.StatusCode < 400 {
		t.Errorf("selecting bob's device in alice's flow: %d, want a 4xx", r.StatusCode)
	}
	if n := len(s.Sim.Inbox("bob")); n != 0 {
		t.Errorf("bob received %d messages from alice's flow", n)
	}
	if b.cookie("stepgate") != "" {
		t.Error("a step-up cookie was issued")
	}
}

func TestChallenge_OTPBruteForceIsRateLimitedPerUser(t *testing.T) {
	// PingOne's own per-user cool-down (3 wrong codes) is switched off so
	// that stepgate's limit is what stops the guessing.
	s := newStack(t, withTenant(func(ten *pingonesim.Tenant) { ten.Policies[0].OTPCoolDown = -1 }))
	checks, limited := 0, false
	for flow := 0; flow < 6 && !limited; flow++ {
		b := s.browser("alice")
		b.get("/.stepgate/challenge?return=/admin/")
		ids := deviceIDs(b.follow(b.post("action", "start")).Body)
		if len(ids) == 0 {
			t.Fatalf("flow %d did not start", flow)
		}
		b.follow(b.post("action", "select", "device", ids[0]))
		for i := 0; i < 5; i++ {
			r := b.submit("action", "otp", "otp", wrongCode(s.latestOTP("alice")))
			if r.StatusCode == http.StatusTooManyRequests {
				if ra, _ := strconv.Atoi(r.Header.Get("Retry-After")); ra < 1 {
					t.Errorf("429 without a usable Retry-After: %q", r.Header.Get("Retry-After"))
				}
				limited = true
				break
			}
			checks++
			if r.StatusCode == http.StatusForbidden { // PingOne's own attempt limit failed the flow
				break
			}
		}
	}
	if !limited || checks != 10 {
		t.Fatalf("limited=%v after %d checks, want a 429 after exactly 10", limited, checks)
	}
	if got := s.metric(t, `stepgate_rate_limited_total{limit="otp_user"}`); got != 1 {
		t.Errorf("rate-limited metric = %v, want 1", got)
	}
	if ev := s.Logs.Events("mfa.rate_limited"); len(ev) != 1 || ev[0]["limit"] != "otp_user" || ev[0]["user"] != "alice" {
		t.Errorf("audit events = %v", ev)
	}
}

func TestChallenge_SMSPumpingByRepeatedStarts(t *testing.T) {
	s := newStack(t)
	var last response
	for i := 0; i < 6; i++ {
		b := s.browser("bob") // every start sends bob a push
		b.get("/.stepgate/challenge?return=/admin/")
		last = b.submit("action", "start")
	}
	if last.StatusCode != http.StatusTooManyRequests || last.Header.Get("Retry-After") == "" {
		t.Fatalf("6th start in 10 min: %d Retry-After %q, want 429 with Retry-After", last.StatusCode, last.Header.Get("Retry-After"))
	}
	if n := len(s.Logs.Events("mfa.started")); n != 5 {
		t.Errorf("%d flows started, want 5", n)
	}
	if got := s.metric(t, `stepgate_rate_limited_total{limit="start_user"}`); got != 1 {
		t.Errorf("rate-limited metric = %v, want 1", got)
	}
	// The bucket refills: one start every 2 minutes.
	s.Clock.Advance(2 * time.Minute)
	b := s.browser("bob")
	b.get("/.stepgate/challenge?return=/admin/")
	if r := b.post("action", "start"); r.StatusCode != http.StatusSeeOther {
		t.Errorf("start after the refill: %d", r.StatusCode)
	}
}

func TestChallenge_SMSPumpingByRepeatedResends(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(b.follow(b.post("action", "start")).Body)
	// "Send a new code" has the page's 30 s cool-down, and page loads have
	// their own limit; selecting the device again (without loading the
	// page in between) is what each send would cost a pumping script, and
	// the per-user send limit must stop it.
	var r response
	for i := 0; i < 30; i++ {
		if r = b.post("action", "select", "device", ids[0]); r.Header.Get("Retry-After") != "" {
			break
		}
	}
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Retry-After") == "" {
		t.Fatalf("30 sends: last answer %d, want a 303 to the 429 page with Retry-After", r.StatusCode)
	}
	if page := b.follow(r); page.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the page after the refusal: %d, want 429", page.StatusCode)
	}
	if n := len(s.Sim.Inbox("alice")); n > 10 {
		t.Errorf("%d codes sent in one flow, want at most 10", n)
	}
	if got := s.metric(t, `stepgate_rate_limited_total{limit="send_user"}`); got < 1 {
		t.Errorf("send_user rate-limited metric = %v", got)
	}
	// Resends are bounded too: inside the cool-down none is sent.
	before := len(s.Sim.Inbox("alice"))
	for range 5 {
		b.post("action", "resend")
	}
	if n := len(s.Sim.Inbox("alice")); n != before {
		t.Errorf("%d codes sent by resends inside the cool-down", n-before)
	}
}

// ---------------------------------------------------------------------------
// Abuse limits (docs/design.md §8) beyond the per-user ones above.

func TestAbuseLimit_FlowStartsPerIPIgnoreSpoofedXFFEntries(t *testing.T) {
	s := newStack(t)
	var last response
	for i := 0; i < 21; i++ {
		// Loopback is a trusted proxy that appended 203.0.113.7; the client
		// rotates what it put in front, and its user, to dodge the limits.
		b := s.browser("u" + strconv.Itoa(i))
		req, _ := http.NewRequest("GET", s.Proxy+"/.stepgate/challenge?return=/admin/", nil)
		req.Header.Set("X-Forwarded-For", "198.51.100."+strconv.Itoa(i)+", 203.0.113.7")
		b.do(req)
		form := url.Values{"csrf": {b.csrf}, "action": {"start"}}
		req, _ = http.NewRequest("POST", s.Proxy+"/.stepgate/challenge", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", s.Proxy)
		req.Header.Set("X-Forwarded-For", "198.51.100."+strconv.Itoa(i)+", 203.0.113.7")
		last = b.follow(b.do(req))
	}
	if last.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("21st start from one client IP: %d, want 429", last.StatusCode)
	}
	ev := s.Logs.Events("mfa.rate_limited")
	if len(ev) != 1 || ev[0]["limit"] != "start_ip" || ev[0]["client_ip"] != "203.0.113.7" {
		t.Errorf("audit events = %v", ev)
	}
}

func TestAbuseLimit_StatusPollsPerFlow(t *testing.T) {
	s := newStack(t)
	b := s.browser("bob")
	b.get("/.stepgate/challenge?return=/admin/")
	b.follow(b.post("action", "start"))
	var codes []int
	var retry string
	for i := 0; i < 5; i++ {
		req, _ := http.NewRequest("GET", s.Proxy+"/.stepgate/challenge/status", nil)
		req.Header.Set("Accept", "application/json")
		r := b.do(req)
		codes = append(codes, r.StatusCode)
		if r.StatusCode == http.StatusTooManyRequests {
			retry = r.Header.Get("Retry-After")
		}
	}
	if codes[2] != 200 || codes[3] != http.StatusTooManyRequests || retry == "" {
		t.Fatalf("poll codes = %v, Retry-After %q; want 3 answered (burst) then 429 with Retry-After", codes, retry)
	}
	s.Clock.Advance(time.Second)
	if st := statusJSON(t, b); st["status"] != "PUSH_CONFIRMATION_REQUIRED" {
		t.Errorf("after a second: %v", st)
	}
	if got := s.metric(t, `stepgate_rate_limited_total{limit="poll_flow"}`); got != 2 {
		t.Errorf("poll_flow metric = %v, want 2", got)
	}
}

func TestAbuseLimit_PingOneRetryAfterIsHonoured(t *testing.T) {
	s := newStack(t)
	s.Sim.SetFault(pingoneFault("authorize", "rate_limit", 0, 7))
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	r := b.submit("action", "start")
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "7" {
		t.Fatalf("PingOne 429: got %d Retry-After %q, want 429 and 7", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if got := s.metric(t, `stepgate_rate_limited_total{limit="pingone"}`); got != 1 {
		t.Errorf("pingone rate-limited metric = %v", got)
	}
	mustBeChallenged(t, s, b, "/admin/")
}

// ---------------------------------------------------------------------------
// Fail closed (docs/design.md §1, §10): no failure ever becomes an allow on an mfa path.

func TestFailClosed_PingOneDown(t *testing.T) {
	s := newStack(t)
	s.Sim.SetFault(pingoneFault("", "status", 503, 0))
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	if r := b.submit("action", "start"); r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Errorf("start with PingOne down: %d Retry-After %q, want 503 with Retry-After", r.StatusCode, r.Header.Get("Retry-After"))
	}
	mustBeChallenged(t, s, b, "/admin/")
	if r := b.get("/public"); r.StatusCode != 200 {
		t.Errorf("allow path with PingOne down: %d", r.StatusCode)
	}
}

func TestFailClosed_MalformedPingOneJSON(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(b.follow(b.post("action", "start")).Body)
	s.Sim.SetFault(pingoneFault("flows", "malformed", 0, 0))
	r := b.submit("action", "select", "device", ids[0])
	if r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("malformed PingOne answer: %d, want 503", r.StatusCode)
	}
	if b.cookie("stepgate") != "" {
		t.Error("a step-up cookie was issued")
	}
	mustBeChallenged(t, s, b, "/admin/")
}

func TestFailClosed_PingOneJWKSUnreachable(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(b.follow(b.post("action", "start")).Body)
	b.follow(b.post("action", "select", "device", ids[0]))
	// PingOne signs with a key the gateway has not seen, and its JWKS is down.
	s.Sim.RotateKey()
	s.Sim.SetFault(pingoneFault("jwks", "status", 500, 0))
	r := b.post("action", "otp", "otp", s.latestOTP("alice"))
	if r.Header.Get("Location") == "/admin/" || b.cookie("stepgate") != "" {
		t.Fatalf("completion with an unverifiable ID token: %d to %q, step-up issued", r.StatusCode, r.Header.Get("Location"))
	}
	r = b.follow(r)
	if r.StatusCode != http.StatusForbidden && r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("got %d, want 403 or 503", r.StatusCode)
	}
	mustBeChallenged(t, s, b, "/admin/")
}

func TestFailClosed_AdminEndpointsNeverOnTheProxyListener(t *testing.T) {
	s := newStack(t, withEnv("STEPGATE_PPROF", "true"))
	b := s.browser("alice")
	for _, p := range []string{"/metrics", "/healthz", "/readyz", "/debug/pprof/", "/debug/pprof/cmdline"} {
		r := b.get(p)
		if strings.Contains(r.Body, "stepgate_requests_total") || strings.Contains(r.Body, "go_goroutines") ||
			!strings.HasPrefix(r.Body, "upstream saw GET "+p) {
			t.Errorf("GET %s on the proxy listener was answered by stepgate: %d %.80q", p, r.StatusCode, r.Body)
		}
	}
	resp, err := http.Get(s.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("admin /metrics: %d", resp.StatusCode)
	}
}

func TestIdentityHeaders_DuplicatedFramingHeadersAreRefused(t *testing.T) {
	s := newStack(t)
	for _, tt := range []struct{ name, raw string }{
		{"two Host headers", "GET /admin/ HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nX-Forwarded-User: alice\r\n\r\n"},
		{"two different Content-Length headers", "POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc"},
		{"a header line without a colon", "GET /public HTTP/1.1\r\nHost: x\r\nX-Forwarded-User alice\r\n\r\n"},
		{"a space before the colon", "GET /public HTTP/1.1\r\nHost: x\r\nX-Forwarded-User : alice\r\n\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if status, _, _ := rawExchange(t, s.Proxy, tt.raw); status != http.StatusBadRequest {
				t.Errorf("got %d, want 400", status)
			}
		})
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("upstream received %d ambiguous requests", n)
	}
}

// assertAllRefused sends each raw request target (as alice, from a trusted
// peer) and wants 400 for every one and nothing at the upstream.
func assertAllRefused(t *testing.T, s *stack, targets ...string) {
	t.Helper()
	for _, target := range targets {
		t.Run(target, func(t *testing.T) {
			status, _, _ := rawExchange(t, s.Proxy, "GET "+target+" HTTP/1.1\r\nHost: x\r\nX-Forwarded-User: alice\r\n\r\n")
			if status != http.StatusBadRequest {
				t.Errorf("got %d, want 400", status)
			}
		})
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("upstream received %d refused requests", n)
	}
}
