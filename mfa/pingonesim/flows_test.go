package pingonesim

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func selectDevice(id string) map[string]any {
	return map[string]any{"device": map[string]string{"id": id}}
}

// aliceOTP starts alice's flow and selects her SMS device.
func aliceOTP(t *testing.T, h *harness) (id, st string) {
	t.Helper()
	r, st := h.start("alice", nil)
	id = str(r.body, "id")
	r = h.post(id, st, "device.select", selectDevice(DemoAliceSMSID))
	if got := str(r.body, "status"); got != "OTP_REQUIRED" {
		t.Fatalf("after select: status %q; body %s", got, r.raw)
	}
	return id, st
}

func wrongOTP(right string) string {
	if right == "000000" {
		return "111111"
	}
	return "000000"
}

func TestOTPCheck(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)

	t.Run("the delivered code completes the flow with otp amr", func(t *testing.T) {
		id, st := aliceOTP(t, h)
		msg := h.sim.Inbox("alice")[0]
		if msg.FlowID != id || msg.Type != "SMS" || msg.DeviceID != DemoAliceSMSID || len(msg.OTP) != 6 {
			t.Fatalf("inbox message = %+v", msg)
		}
		r := h.post(id, st, "otp.check", map[string]string{"otp": msg.OTP})
		if got := str(r.body, "status"); got != "COMPLETED" {
			t.Fatalf("status = %q; body %s", got, r.raw)
		}
		if got := str(r.body, "_embedded", "user", "id"); got != DemoAliceID {
			t.Errorf("_embedded.user.id = %q, want %q", got, DemoAliceID)
		}
		if got := str(r.body, "authorizeResponse", "state"); got != "st-123" {
			t.Errorf("authorizeResponse.state = %q", got)
		}
		c := h.parseIDToken(str(r.body, "authorizeResponse", "id_token"))
		if c["sub"] != DemoAliceID || c["aud"] != DemoClientID || c["iss"] != h.issuer() ||
			c["nonce"] != "n-0S6_WzA2Mj" || c["acr"] != DemoPolicy || c["p1.region"] != "NA1" {
			t.Errorf("claims = %v", c)
		}
		if amr, _ := c["amr"].([]any); len(amr) != 2 || amr[0] != "otp" || amr[1] != "sms" {
			t.Errorf("amr = %v, want [otp sms]", c["amr"])
		}
		if got := str(r.body, "authorizeResponse", "token_type"); got != "Bearer" {
			t.Errorf("token_type = %q", got)
		}
		info, _ := h.sim.Flow(id)
		if !info.Challenged || info.Status != "COMPLETED" {
			t.Errorf("FlowInfo = %+v", info)
		}
	})

	t.Run("a wrong code reports attempts remaining and the limit fails the flow", func(t *testing.T) {
		h := newHarness(t, nil) // the limit also blocks alice for a while
		id, st := aliceOTP(t, h)
		right := h.sim.Inbox("alice")[0].OTP
		for _, want := range []string{"2", "1", "0"} {
			r := h.post(id, st, "otp.check", map[string]string{"otp": wrongOTP(right)})
			d := detail(r)
			if r.status != 400 || str(r.body, "code") != "INVALID_DATA" || str(d, "code") != "INVALID_OTP" || str(d, "target") != "otp" {
				t.Fatalf("wrong otp: %d %s", r.status, r.raw)
			}
			if got := str(d, "innerError", "attemptsRemaining"); got != want {
				t.Errorf("attemptsRemaining = %q, want %q", got, want)
			}
		}
		r := h.getFlow(id, st)
		if got := str(r.body, "status"); got != "FAILED" {
			t.Fatalf("status after limit = %q", got)
		}
		if got := str(r.body, "error", "code"); got != "TOO_MANY_ATTEMPTS" {
			t.Errorf("error.code = %q", got)
		}
		r = h.post(id, st, "otp.check", map[string]string{"otp": right})
		if r.status != 400 || str(r.body, "code") != "REQUEST_FAILED" {
			t.Errorf("the right code after FAILED = %d %s, want 400 REQUEST_FAILED", r.status, r.raw)
		}
	})

	t.Run("re-selecting the device resends and the old code stops working", func(t *testing.T) {
		id, st := aliceOTP(t, h)
		old := h.sim.Inbox("alice")[0].OTP
		h.post(id, st, "device.select", selectDevice(DemoAliceSMSID))
		fresh := h.sim.Inbox("alice")[0].OTP
		if old == fresh {
			t.Skip("the two random codes collided (1 in a million)")
		}
		if r := h.post(id, st, "otp.check", map[string]string{"otp": old}); r.status != 400 || str(detail(r), "code") != "INVALID_OTP" {
			t.Errorf("old code = %d %s, want 400 INVALID_OTP", r.status, r.raw)
		}
		if r := h.post(id, st, "otp.check", map[string]string{"otp": fresh}); str(r.body, "status") != "COMPLETED" {
			t.Errorf("fresh code: %d %s", r.status, r.raw)
		}
	})

	t.Run("a code older than five minutes is refused", func(t *testing.T) {
		h := newHarness(t, nil)
		id, st := aliceOTP(t, h)
		h.clock.Advance(OTPLifetime + time.Second)
		r := h.post(id, st, "otp.check", map[string]string{"otp": h.sim.Inbox("alice")[0].OTP})
		if r.status != 400 || str(detail(r), "code") != "INVALID_OTP" {
			t.Errorf("expired code = %d %s, want 400 INVALID_OTP", r.status, r.raw)
		}
	})

	t.Run("an empty otp is a validation error that does not count", func(t *testing.T) {
		id, st := aliceOTP(t, h)
		r := h.post(id, st, "otp.check", map[string]string{"otp": ""})
		if r.status != 400 || str(detail(r), "code") != "REQUIRED_VALUE" {
			t.Errorf("empty otp = %d %s", r.status, r.raw)
		}
		r = h.post(id, st, "otp.check", map[string]string{"otp": wrongOTP(h.sim.Inbox("alice")[0].OTP)})
		if got := str(detail(r), "innerError", "attemptsRemaining"); got != "2" {
			t.Errorf("attemptsRemaining after an empty then a wrong code = %q, want 2", got)
		}
	})
}

func TestTOTPGraceWindows(t *testing.T) {
	t.Parallel()
	secret := DemoTOTPSecret()
	const step = 30 * time.Second
	tests := []struct {
		name    string
		windows int // 0 = PingOne's default, 5
		offset  time.Duration
		want    string
	}{
		{"the current step completes", 0, 0, "COMPLETED"},
		{"by default two steps back complete", 0, -2 * step, "COMPLETED"},
		{"by default two steps ahead complete", 0, 2 * step, "COMPLETED"},
		{"by default three steps back are refused", 0, -3 * step, "OTP_REQUIRED"},
		{"by default three steps ahead are refused", 0, 3 * step, "OTP_REQUIRED"},
		{"three windows accept the previous step", 3, -step, "COMPLETED"},
		{"three windows refuse two steps back", 3, -2 * step, "OTP_REQUIRED"},
		{"one window accepts only the current step", 1, step, "OTP_REQUIRED"},
		{"two windows add the previous step", 2, -step, "COMPLETED"},
		{"two windows do not add the next step", 2, step, "OTP_REQUIRED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(ten *Tenant) { ten.Policies[0].TOTPGraceWindows = tt.windows })
			r, st := h.start("carol", nil)
			id := str(r.body, "id")
			r = h.post(id, st, "device.select", selectDevice(DemoCarolTOTPID))
			if str(r.body, "status") != "OTP_REQUIRED" || len(h.sim.Inbox("carol")) != 0 {
				t.Fatalf("select TOTP: %s; inbox %v", r.raw, h.sim.Inbox("carol"))
			}
			code := totpAt(secret, h.clock.Now().Add(tt.offset))
			h.post(id, st, "otp.check", map[string]string{"otp": code})
			if got := str(h.getFlow(id, st).body, "status"); got != tt.want {
				t.Errorf("status = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTOTPHelperMatchesRFC6238(t *testing.T) {
	t.Parallel()
	// RFC 6238 Appendix B, SHA1, truncated to 6 digits.
	if got, want := totpAt([]byte("12345678901234567890"), time.Unix(59, 0)), "287082"; got != want {
		t.Errorf("TOTP(59) = %s, want %s", got, want)
	}
	h := newHarness(t, nil)
	if got, want := h.sim.TOTP(DemoCarolTOTPID), totpAt(DemoTOTPSecret(), t0); got != want {
		t.Errorf("Server.TOTP = %s, want %s", got, want)
	}
	if got := h.sim.TOTP(DemoAliceSMSID); got != "" {
		t.Errorf("TOTP of an SMS device = %q, want empty", got)
	}
}

func TestPush(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		answer     func(h *harness, id string)
		wantStatus string
	}{
		{"an approved push completes", func(h *harness, id string) { mustPush(h, id, PushApprove) }, "COMPLETED"},
		{"a denied push fails", func(h *harness, id string) { mustPush(h, id, PushDeny) }, "FAILED"},
		{"a push timed out by the harness reads as timed out", func(h *harness, id string) { mustPush(h, id, PushTimeout) }, "PUSH_CONFIRMATION_TIMED_OUT"},
		{"an unanswered push times out on the clock", func(h *harness, id string) { h.clock.Advance(DefaultPushTimeout) }, "PUSH_CONFIRMATION_TIMED_OUT"},
		{"a push still inside its timeout is pending", func(h *harness, id string) { h.clock.Advance(DefaultPushTimeout - time.Second) }, "PUSH_CONFIRMATION_REQUIRED"},
		{"an approval over HTTP completes", func(h *harness, id string) {
			req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/_sim/push/"+id+"/approve", nil)
			if r := h.do(req); r.status != 200 || str(r.body, "status") != "COMPLETED" {
				h.t.Fatalf("HTTP approve = %d %s", r.status, r.raw)
			}
		}, "COMPLETED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			r, st := h.start("bob", nil)
			id := str(r.body, "id")
			if got := h.sim.Inbox("bob"); len(got) != 1 || got[0].Type != "MOBILE" || got[0].OTP != "" {
				t.Errorf("push notification inbox = %+v", got)
			}
			tt.answer(h, id)
			r = h.getFlow(id, st)
			if got := str(r.body, "status"); got != tt.wantStatus {
				t.Fatalf("status = %q, want %q; body %s", got, tt.wantStatus, r.raw)
			}
			if tt.wantStatus == "COMPLETED" {
				c := h.parseIDToken(str(r.body, "authorizeResponse", "id_token"))
				if amr, _ := c["amr"].([]any); len(amr) != 2 || amr[0] != "swk" {
					t.Errorf("amr = %v, want [swk user]", c["amr"])
				}
			}
			if tt.wantStatus == "PUSH_CONFIRMATION_TIMED_OUT" {
				if str(r.body, "_links", "device.select", "href") == "" {
					t.Error("timed-out push offers no device.select link")
				}
				r = h.post(id, st, "device.select", selectDevice(DemoBobMobileID))
				if got := str(r.body, "status"); got != "PUSH_CONFIRMATION_REQUIRED" {
					t.Errorf("retry after timeout: status %q", got)
				}
			}
		})
	}
}

func mustPush(h *harness, id string, o PushOutcome) {
	h.t.Helper()
	if err := h.sim.Push(id, o); err != nil {
		h.t.Fatal(err)
	}
}

func TestPushRefusesFlowsNotWaiting(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r, _ := h.start("alice", nil)
	if err := h.sim.Push(str(r.body, "id"), PushApprove); err == nil {
		t.Error("Push on a device-selection flow succeeded")
	}
	if err := h.sim.Push("no-such-flow", PushApprove); err == nil {
		t.Error("Push on an unknown flow succeeded")
	}
	r, _ = h.start("bob", nil)
	h.clock.Advance(DefaultPushTimeout)
	if err := h.sim.Push(str(r.body, "id"), PushApprove); err == nil {
		t.Error("approving a push that already timed out succeeded")
	}
}

func TestFlowIdleExpiry(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r, st := h.start("alice", nil)
	id := str(r.body, "id")
	h.clock.Advance(14 * time.Minute)
	r = h.getFlow(id, st) // slides the window
	if r.status != 200 {
		t.Fatalf("after 14 min: %d", r.status)
	}
	if got, want := str(r.body, "expiresAt"), "2026-03-01T10:29:00.000Z"; got != want {
		t.Errorf("expiresAt after use = %q, want %q", got, want)
	}
	h.clock.Advance(14 * time.Minute)
	if r := h.getFlow(id, st); r.status != 200 {
		t.Fatalf("14 min after the last use: %d, want 200 (sliding)", r.status)
	}
	h.clock.Advance(15*time.Minute + time.Second)
	r = h.getFlow(id, st)
	if r.status != 404 || str(r.body, "code") != "NOT_FOUND" {
		t.Errorf("after idle expiry: %d %s, want 404 NOT_FOUND", r.status, r.raw)
	}
	if _, ok := h.sim.Flow(id); ok {
		t.Error("Flow() still reports an expired flow")
	}
}

func TestSTCookieIsRequired(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r, st := h.start("alice", nil)
	id := str(r.body, "id")
	_, otherST := h.start("bob", nil)
	tests := []struct {
		name string
		st   string
		want int
	}{
		{"no cookie is 401", "", 401},
		{"another flow's cookie is 401", otherST, 401},
		{"a forged cookie is 401", strings.Repeat("0", len(st)), 401},
		{"the flow's own cookie is 200", st, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.getFlow(id, tt.st)
			if r.status != tt.want {
				t.Fatalf("GET status = %d, want %d", r.status, tt.want)
			}
			if tt.want == 401 && str(r.body, "code") != "INVALID_TOKEN" {
				t.Errorf("code = %q, want INVALID_TOKEN", str(r.body, "code"))
			}
			if tt.want == 401 {
				if r := h.post(id, tt.st, "device.select", selectDevice(DemoAliceSMSID)); r.status != 401 {
					t.Errorf("POST status = %d, want 401", r.status)
				}
			}
		})
	}
	if r := h.getFlow("no-such-flow", st); r.status != 404 {
		t.Errorf("unknown flow = %d, want 404", r.status)
	}
}

func TestFlowActionDispatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r, st := h.start("alice", nil)
	id := str(r.body, "id")
	raw := func(ct, body string) resp {
		req, _ := http.NewRequest(http.MethodPost, h.env()+"/flows/"+id, strings.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		req.AddCookie(&http.Cookie{Name: "ST", Value: st})
		return h.do(req)
	}
	tests := []struct {
		name       string
		ct, body   string
		wantStatus int
		wantCode   string
		wantDetail string
	}{
		{"plain JSON is an unsupported media type", "application/json", `{}`, 415, "INVALID_REQUEST", ""},
		{"a missing content type is unsupported", "", `{}`, 415, "INVALID_REQUEST", ""},
		{"an unknown action is unsupported", "application/vnd.pingidentity.usernamePassword.check+json", `{}`, 415, "INVALID_REQUEST", ""},
		{"malformed JSON is INVALID_DATA", "application/vnd.pingidentity.device.select+json", `{"device":`, 400, "INVALID_DATA", "INVALID_VALUE"},
		{"trailing data is INVALID_DATA", "application/vnd.pingidentity.otp.check+json", `{"otp":"1"}{}`, 400, "INVALID_DATA", "INVALID_VALUE"},
		{"an action not allowed in the status is REQUEST_FAILED", "application/vnd.pingidentity.otp.check+json", `{"otp":"123456"}`, 400, "REQUEST_FAILED", "INVALID_VALUE"},
		{"an unknown device is INVALID_VALUE on device.id", "application/vnd.pingidentity.device.select+json", `{"device":{"id":"nope"}}`, 400, "INVALID_DATA", "INVALID_VALUE"},
		{"another user's device is INVALID_VALUE on device.id", "application/vnd.pingidentity.device.select+json", `{"device":{"id":"` + DemoBobMobileID + `"}}`, 400, "INVALID_DATA", "INVALID_VALUE"},
		{"a charset parameter is ignored", "application/vnd.pingidentity.device.select+json; charset=UTF-8", `{"device":{"id":"` + DemoAliceEmailID + `"}}`, 200, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := raw(tt.ct, tt.body)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", r.status, tt.wantStatus, r.raw)
			}
			if got := str(r.body, "code"); tt.wantCode != "" && got != tt.wantCode {
				t.Errorf("code = %q, want %q", got, tt.wantCode)
			}
			if got := str(detail(r), "code"); got != tt.wantDetail {
				t.Errorf("detail code = %q, want %q", got, tt.wantDetail)
			}
		})
	}
	if r := raw("application/vnd.pingidentity.device.select+json", `{"device":{"id":"`+DemoBobMobileID+`"}}`); str(detail(r), "target") != "device.id" {
		t.Errorf("detail target = %q, want device.id", str(detail(r), "target"))
	}
	big := `{"otp":"` + strings.Repeat("1", maxBody) + `"}`
	if r := raw("application/vnd.pingidentity.otp.check+json", big); r.status != 413 {
		t.Errorf("oversized body = %d, want 413", r.status)
	}
}

func TestSessionResetReturnsToTheFirstStatus(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	id, st := aliceOTP(t, h)
	r := h.post(id, st, "session.reset", map[string]any{})
	if got := str(r.body, "status"); got != "DEVICE_SELECTION_REQUIRED" {
		t.Fatalf("after reset: %q; %s", got, r.raw)
	}
	if got := str(r.body, "selectedDevice", "id"); got != "" {
		t.Errorf("selectedDevice after reset = %q", got)
	}
	done, doneST := h.start("dave", nil) // bypass: COMPLETED at once
	if r := h.post(str(done.body, "id"), doneST, "session.reset", map[string]any{}); r.status != 400 || str(r.body, "code") != "REQUEST_FAILED" {
		t.Errorf("reset of a COMPLETED flow = %d %s, want 400 REQUEST_FAILED", r.status, r.raw)
	}
}

func TestResume(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	resume := func(id, st string) resp {
		req, _ := http.NewRequest(http.MethodGet, h.env()+"/as/resume?flowId="+url.QueryEscape(id), nil)
		if st != "" {
			req.AddCookie(&http.Cookie{Name: "ST", Value: st})
		}
		return h.do(req)
	}
	id, st := aliceOTP(t, h)
	if r := resume(id, st); r.status != 400 {
		t.Errorf("resume before completion = %d, want 400", r.status)
	}
	h.post(id, st, "otp.check", map[string]string{"otp": h.sim.Inbox("alice")[0].OTP})
	if r := resume(id, ""); r.status != 401 {
		t.Errorf("resume without ST = %d, want 401", r.status)
	}
	r := resume(id, st)
	if r.status != 200 || str(r.body, "status") != "COMPLETED" || str(r.body, "authorizeResponse", "id_token") == "" {
		t.Errorf("resume = %d %s", r.status, r.raw)
	}
	if r := resume("no-such-flow", st); r.status != 404 {
		t.Errorf("resume unknown = %d, want 404", r.status)
	}
}

func TestBypassCompletesWithoutAMR(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r, _ := h.start("dave", nil)
	c := h.parseIDToken(str(r.body, "authorizeResponse", "id_token"))
	if _, ok := c["amr"]; ok {
		t.Errorf("bypass ID token has amr %v, want none", c["amr"])
	}
	info, _ := h.sim.Flow(str(r.body, "id"))
	if info.Challenged {
		t.Error("bypass flow reports Challenged")
	}
}

func TestLogsNeverCarrySecrets(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	ten := DemoTenant()
	c := NewClock(t0)
	sim := New(Options{Tenant: ten, Clock: c, SigningKey: testKey(), Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	h := &harness{t: t, sim: sim, srv: srv, clock: c}
	id, st := aliceOTP(t, h)
	otp := sim.Inbox("alice")[0].OTP
	h.post(id, st, "otp.check", map[string]string{"otp": wrongOTP(otp)})
	r := h.post(id, st, "otp.check", map[string]string{"otp": otp})
	logs := buf.String()
	if !strings.Contains(logs, id) {
		t.Fatalf("logs do not mention the flow at all: %s", logs)
	}
	for name, secret := range map[string]string{
		"otp": otp, "ST": st, "id_token": str(r.body, "authorizeResponse", "id_token"),
		"access_token": str(r.body, "authorizeResponse", "access_token"), "client secret": DemoClientSecret,
	} {
		if secret != "" && strings.Contains(logs, secret) {
			t.Errorf("logs contain the %s", name)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
