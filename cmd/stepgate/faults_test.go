package main

// PingOne faults seen through the whole gateway (issue 8, docs/design.md §10): for
// each fault the simulator injects, the page and status the user gets, the
// metrics and log lines an operator sees, that users stepped up before the
// fault keep working, that no mfa path is ever served without a step-up,
// and that the gateway recovers by itself once PingOne does.

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

// faultStackEnv keeps the PingOne timeout short so a latency fault costs
// the test well under a second of real time.
var faultStackEnv = withEnv("STEPGATE_PINGONE_TIMEOUT", "400ms")

// assertNothingUnsteppedReachedMFAPaths fails if the upstream ever saw a
// request to an mfa path without the verified step-up headers.
func assertNothingUnsteppedReachedMFAPaths(t *testing.T, s *stack) {
	t.Helper()
	for _, r := range s.Requests() {
		mfaPath := strings.HasPrefix(r.RequestURI, "/admin") || strings.HasPrefix(r.RequestURI, "/api/")
		if mfaPath && r.Header.Get("X-Stepgate-Subject") == "" {
			t.Errorf("upstream served mfa path %s without a step-up", r.RequestURI)
		}
	}
}

// assertOthersAreChallenged checks that users without a step-up get the
// challenge (browser 302, API 401), never the page.
func assertOthersAreChallenged(t *testing.T, s *stack) {
	t.Helper()
	if r := s.browser("bob").get("/admin/"); r.StatusCode != http.StatusFound {
		t.Errorf("bob's GET /admin/ during the fault: got %d, want 302", r.StatusCode)
	}
	api := s.browser("bob")
	req, _ := http.NewRequest(http.MethodGet, s.Proxy+"/api/orders", nil)
	req.Header.Set("Accept", "application/json")
	if r := api.do(req); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("bob's API call during the fault: got %d, want 401", r.StatusCode)
	}
}

// finishSMSStepUp completes alice's step-up from the device page a start
// redirected to.
func finishSMSStepUp(t *testing.T, s *stack, b *browser, startAnswer response) {
	t.Helper()
	if startAnswer.StatusCode != http.StatusSeeOther {
		t.Fatalf("start: got %d, want 303: %s", startAnswer.StatusCode, startAnswer.Body)
	}
	r := b.follow(startAnswer)
	ids := deviceIDs(r.Body)
	if len(ids) == 0 {
		t.Fatalf("no devices offered: %s", r.Body)
	}
	r = b.follow(b.post("action", "select", "device", ids[0]))
	if !strings.Contains(r.Body, `data-state="otp"`) {
		t.Fatalf("not on the OTP page: %s", r.Body)
	}
	r = b.post("action", "otp", "otp", s.latestOTP("alice"))
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/admin/" {
		t.Fatalf("OTP: got %d to %q, want 303 to /admin/: %s", r.StatusCode, r.Header.Get("Location"), r.Body)
	}
	if r := b.get("/admin/"); r.StatusCode != http.StatusOK {
		t.Fatalf("protected page after the step-up: got %d", r.StatusCode)
	}
}

func TestPingOneFaultsWhenAChallengeStarts(t *testing.T) {
	const unavailable = "The verification service is not reachable right now"
	for _, tt := range []struct {
		name           string
		fault          pingonesim.Fault
		wantStatus     int
		wantRetryAfter string
		wantMessage    string
		wantCode       string // stepgate_pingone_requests_total{op="authorize"} code label
		wantKind       string // the "pingone error" log line's kind
		// afterClear runs once the fault is cleared, before the retry.
		afterClear func(t *testing.T, s *stack, b *browser)
	}{
		{
			name:           "latency above the PingOne timeout shows the unavailable page",
			fault:          pingonesim.Fault{Op: "authorize", Kind: "latency", Latency: 5 * time.Second},
			wantStatus:     http.StatusServiceUnavailable,
			wantRetryAfter: "30", wantMessage: unavailable, wantCode: "0", wantKind: "unavailable",
		},
		{
			name:           "a 5xx shows the unavailable page",
			fault:          pingonesim.Fault{Op: "authorize", Kind: "status", Status: http.StatusBadGateway},
			wantStatus:     http.StatusServiceUnavailable,
			wantRetryAfter: "30", wantMessage: unavailable, wantCode: "502", wantKind: "unavailable",
		},
		{
			name:           "malformed JSON shows the unavailable page",
			fault:          pingonesim.Fault{Op: "authorize", Kind: "malformed"},
			wantStatus:     http.StatusServiceUnavailable,
			wantRetryAfter: "30", wantMessage: unavailable, wantCode: "200", wantKind: "unavailable",
		},
		{
			name:           "a dropped connection shows the unavailable page",
			fault:          pingonesim.Fault{Op: "authorize", Kind: "drop"},
			wantStatus:     http.StatusServiceUnavailable,
			wantRetryAfter: "30", wantMessage: unavailable, wantCode: "0", wantKind: "unavailable",
		},
		{
			name:           "a 429 passes PingOne's Retry-After on and blocks calls until it passes",
			fault:          pingonesim.Fault{Op: "authorize", Kind: "rate_limit", RetryAfter: 7},
			wantStatus:     http.StatusTooManyRequests,
			wantRetryAfter: "7", wantMessage: "Too many attempts", wantCode: "429", wantKind: "rate_limited",
			afterClear: func(t *testing.T, s *stack, b *browser) {
				// PingOne said wait 7 s: until then stepgate answers 429
				// itself and sends PingOne nothing.
				before := s.Sim.Requests()
				if r := b.submit("action", "start"); r.StatusCode != http.StatusTooManyRequests {
					t.Errorf("start inside PingOne's Retry-After: got %d, want 429", r.StatusCode)
				}
				if got := s.Sim.Requests(); got != before {
					t.Errorf("PingOne got %d requests inside its Retry-After, want none", got-before)
				}
				s.Clock.Advance(8 * time.Second)
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t, faultStackEnv)
			stepped := s.stepUpAlice("/admin/")

			s.Sim.SetFault(tt.fault)
			b := s.browser("alice") // alice on another device, not stepped up
			if r := b.get("/admin/"); r.StatusCode != http.StatusFound {
				t.Fatalf("GET /admin/ without a step-up: got %d, want 302", r.StatusCode)
			}
			b.get("/.stepgate/challenge?return=/admin/")
			r := b.submit("action", "start")
			if r.StatusCode != tt.wantStatus {
				t.Fatalf("start during the fault: got %d, want %d: %s", r.StatusCode, tt.wantStatus, r.Body)
			}
			if got := r.Header.Get("Retry-After"); got != tt.wantRetryAfter {
				t.Errorf("Retry-After: got %q, want %q", got, tt.wantRetryAfter)
			}
			if !strings.Contains(r.Body, `data-state="error"`) || !strings.Contains(r.Body, tt.wantMessage) {
				t.Errorf("page does not say %q: %s", tt.wantMessage, r.Body)
			}
			if got := r.Header.Get("Cache-Control"); !strings.Contains(got, "no-store") {
				t.Errorf("error page Cache-Control: got %q, want no-store", got)
			}

			if r := stepped.get("/admin/"); r.StatusCode != http.StatusOK {
				t.Errorf("user stepped up before the fault: got %d, want 200", r.StatusCode)
			}
			if r := s.browser("alice").get("/public/"); r.StatusCode != http.StatusOK {
				t.Errorf("allow path during the fault: got %d, want 200", r.StatusCode)
			}
			assertOthersAreChallenged(t, s)

			if got := promCounter(t, s.Admin, "stepgate_pingone_requests_total", lbl("op", "authorize", "code", tt.wantCode)); got < 1 {
				t.Errorf(`stepgate_pingone_requests_total{op="authorize",code=%q}: got %v, want ≥ 1`, tt.wantCode, got)
			}
			if got := promCounter(t, s.Admin, "stepgate_challenges_total", lbl("event", "started")); got != 1 {
				t.Errorf("challenges started: got %v, want 1 (only the step-up before the fault)", got)
			}
			var logged bool
			for _, l := range jsonLogLines(s.Logs.String(), "pingone error") {
				if l["kind"] == tt.wantKind && l["user"] == "alice" && l["level"] == "WARN" {
					logged = true
				}
			}
			if !logged {
				t.Errorf("no WARN \"pingone error\" line with kind %q; logs:\n%s", tt.wantKind, s.Logs.String())
			}
			if tt.wantKind == "rate_limited" && len(s.Logs.Events("mfa.rate_limited")) == 0 {
				t.Error("no mfa.rate_limited audit event for PingOne's 429")
			}

			// PingOne recovers; the same page, posted again, goes on.
			s.Sim.ClearFaults()
			if tt.afterClear != nil {
				tt.afterClear(t, s, b)
			}
			finishSMSStepUp(t, s, b, b.post("action", "start"))
			assertNothingUnsteppedReachedMFAPaths(t, s)
		})
	}
}

func TestPingOneFaultsInTheMiddleOfAFlow(t *testing.T) {
	// The flow is started and the code delivered; PingOne then fails the
	// code check. The same flow (and the same code) must go through once
	// PingOne is back, because nothing about the flow is lost on our side.
	for _, tt := range []struct {
		name       string
		fault      pingonesim.Fault
		wantStatus int
		wantCode   string
	}{
		{"a 503 on the code check", pingonesim.Fault{Op: "flows", Kind: "status", Status: 503}, http.StatusServiceUnavailable, "503"},
		{"a dropped connection on the code check", pingonesim.Fault{Op: "flows", Kind: "drop"}, http.StatusServiceUnavailable, "0"},
		{"latency on the code check", pingonesim.Fault{Op: "flows", Kind: "latency", Latency: 5 * time.Second}, http.StatusServiceUnavailable, "0"},
		{"a 429 on the code check", pingonesim.Fault{Op: "flows", Kind: "rate_limit", RetryAfter: 3}, http.StatusTooManyRequests, "429"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t, faultStackEnv)
			b := s.browser("alice")
			b.get("/.stepgate/challenge?return=/admin/")
			ids := deviceIDs(b.follow(b.post("action", "start")).Body)
			if len(ids) == 0 {
				t.Fatal("no devices offered")
			}
			if r := b.follow(b.post("action", "select", "device", ids[0])); !strings.Contains(r.Body, `data-state="otp"`) {
				t.Fatalf("not on the OTP page: %s", r.Body)
			}
			otp := s.latestOTP("alice")

			s.Sim.SetFault(tt.fault)
			r := b.submit("action", "otp", "otp", otp)
			if r.StatusCode != tt.wantStatus {
				t.Fatalf("OTP during the fault: got %d, want %d: %s", r.StatusCode, tt.wantStatus, r.Body)
			}
			if r.Header.Get("Retry-After") == "" {
				t.Error("no Retry-After on the fault page")
			}
			if r := b.get("/admin/"); r.StatusCode == http.StatusOK {
				t.Fatal("protected page served after a failed code check")
			}
			if got := promCounter(t, s.Admin, "stepgate_pingone_requests_total", lbl("op", "otp_check", "code", tt.wantCode)); got < 1 {
				t.Errorf(`stepgate_pingone_requests_total{op="otp_check",code=%q}: got %v, want ≥ 1`, tt.wantCode, got)
			}
			if got := promCounter(t, s.Admin, "stepgate_otp_checks_total", lbl("result", "error")); got != 1 {
				t.Errorf(`stepgate_otp_checks_total{result="error"}: got %v, want 1`, got)
			}

			s.Sim.ClearFaults()
			s.Clock.Advance(5 * time.Second) // past any Retry-After
			r = b.post("action", "otp", "otp", otp)
			if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/admin/" {
				t.Fatalf("same code after recovery: got %d to %q, want 303 to /admin/: %s",
					r.StatusCode, r.Header.Get("Location"), r.Body)
			}
			if r := b.get("/admin/"); r.StatusCode != http.StatusOK {
				t.Errorf("protected page after recovery: got %d", r.StatusCode)
			}
			assertNothingUnsteppedReachedMFAPaths(t, s)
		})
	}
}

func TestPingOneSigningKeyRotation(t *testing.T) {
	s := newStack(t)
	before := s.stepUpAlice("/admin/")

	// PingOne publishes a new key and signs with it at once. stepgate saw
	// the JWKS at start (on its clock); an unknown kid refetches at most
	// once a minute, so a minute on, the new kid is fetched and accepted.
	oldRequests := promCounter(t, s.Admin, "stepgate_pingone_requests_total", lbl("op", "jwks"))
	s.Sim.RotateKey()
	s.Sim.RetireOldKeys()
	s.Clock.Advance(61 * time.Second)
	after := s.stepUpAlice("/admin/")
	if got := promCounter(t, s.Admin, "stepgate_pingone_requests_total", lbl("op", "jwks")); got != oldRequests+1 {
		t.Errorf("JWKS fetches after rotation: got %v, want %v (one refetch for the new kid)", got, oldRequests+1)
	}
	for name, b := range map[string]*browser{"stepped up before the rotation": before, "stepped up after": after} {
		if r := b.get("/admin/"); r.StatusCode != http.StatusOK {
			t.Errorf("%s: got %d, want 200 (the cookie is the proof; no key needed)", name, r.StatusCode)
		}
	}

	// A second rotation inside the minute: the unknown kid may not cause
	// another fetch, so the completion fails closed, with a page that
	// offers a fresh start; once the minute has passed the same user gets
	// through.
	s.Sim.RotateKey()
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(b.follow(b.post("action", "start")).Body)
	b.follow(b.post("action", "select", "device", ids[0]))
	r := b.submit("action", "otp", "otp", s.latestOTP("alice"))
	if r.StatusCode < 400 {
		t.Fatalf("completion signed by a key not fetchable yet: got %d, want a refusal", r.StatusCode)
	}
	if r.StatusCode != http.StatusForbidden || !strings.Contains(r.Body, "could not be confirmed") {
		t.Errorf("unknown kid inside the refetch limit: got %d, want 403 verification_failed: %s", r.StatusCode, r.Body)
	}
	if got := promCounter(t, s.Admin, "stepgate_challenges_total", lbl("event", "failed")); got != 1 {
		t.Errorf(`stepgate_challenges_total{event="failed"}: got %v, want 1`, got)
	}
	if r := b.get("/admin/"); r.StatusCode == http.StatusOK {
		t.Fatal("protected page served after a refused ID token")
	}
	s.Clock.Advance(61 * time.Second)
	finishSMSStepUp(t, s, b, b.post("action", "start"))
	assertNothingUnsteppedReachedMFAPaths(t, s)
}

// startWithoutWaiting runs the real gateway (serve) like newStack, against
// an existing simulator, but returns before it is ready: for a PingOne that
// is unreachable at start.
func startWithoutWaiting(t *testing.T, base *stack) (proxyURL, adminURL string, logs *syncBuffer) {
	t.Helper()
	env := map[string]string{}
	for k, v := range base.Env {
		env[k] = v
	}
	env["STEPGATE_UPSTREAM"] = base.Upstream.URL
	logs = &syncBuffer{}
	proxyURL, adminURL = serveForTest(t, env, base.Clock.Now, logs)
	return proxyURL, adminURL, logs
}

func TestJWKSUnreachableAtStartFailsClosedAndRecovers(t *testing.T) {
	base := newStack(t) // the simulator and upstream; its own gateway is not used
	base.Sim.SetFault(pingonesim.Fault{Op: "jwks", Kind: "status", Status: http.StatusServiceUnavailable})
	proxyURL, admin, logs := startWithoutWaiting(t, base)

	waitStatus(t, admin+"/healthz", http.StatusOK, 5*time.Second)
	// The loader has tried (and failed) once it logs so.
	deadline := time.Now().Add(5 * time.Second)
	for len(jsonLogLines(logs.String(), "signing keys not loaded yet")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no key-loading failure logged:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitStatus(t, admin+"/readyz", http.StatusServiceUnavailable, time.Second)

	// A user who completes MFA at PingOne while the keys cannot be fetched
	// gets no step-up: the ID token cannot be verified.
	b := base.browser("alice")
	b.base = proxyURL
	if r := b.get("/admin/"); r.StatusCode != http.StatusFound {
		t.Fatalf("GET /admin/: got %d, want 302", r.StatusCode)
	}
	b.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(b.follow(b.post("action", "start")).Body)
	if len(ids) == 0 {
		t.Fatal("no devices offered")
	}
	b.follow(b.post("action", "select", "device", ids[0]))
	// The ID token cannot be verified while PingOne's JWKS is unreachable:
	// refused, with the "try again later" page; the flow is kept, not failed.
	r := b.submit("action", "otp", "otp", base.latestOTP("alice"))
	if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(r.Body, "not reachable") {
		t.Errorf("completion without signing keys: got %d, want 503 unavailable (refused, try later): %s", r.StatusCode, r.Body)
	}
	if got := promCounter(t, admin, "stepgate_challenges_total", lbl("event", "failed")); got != 0 {
		t.Errorf(`stepgate_challenges_total{event="failed"}: got %v, want 0 (a transient fault)`, got)
	}
	if got := promCounter(t, admin, "stepgate_pingone_requests_total", lbl("op", "jwks", "code", "503")); got < 1 {
		t.Errorf(`stepgate_pingone_requests_total{op="jwks",code="503"}: got %v, want ≥ 1`, got)
	}
	if len(jsonLogLines(logs.String(), "pingone error")) == 0 {
		t.Error("no \"pingone error\" log line for the unverifiable token")
	}
	if r := b.get("/admin/"); r.StatusCode == http.StatusOK {
		t.Fatal("protected page served although the ID token could not be verified")
	}

	// PingOne's JWKS comes back: the background loader retries, readiness
	// follows, and a step-up goes through without a restart.
	base.Sim.ClearFaults()
	waitStatus(t, admin+"/readyz", http.StatusOK, 10*time.Second)
	// The same user, reloading the page, finishes the flow that was kept.
	if r := b.get("/.stepgate/challenge"); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/admin/" {
		t.Fatalf("reload after recovery: got %d to %q, want 303 to /admin/: %s", r.StatusCode, r.Header.Get("Location"), r.Body)
	}
	if r := b.get("/admin/"); r.StatusCode != http.StatusOK {
		t.Fatalf("protected page after recovery: %d", r.StatusCode)
	}
	b2 := base.browser("alice")
	b2.base = proxyURL
	b2.get("/.stepgate/challenge?return=/admin/")
	finishSMSStepUp(t, base, b2, b2.post("action", "start"))
	assertNothingUnsteppedReachedMFAPaths(t, base)
}
