package pingonesim

import (
	"testing"
	"time"
)

// wrongOnce posts one wrong code to alice's flow.
func wrongOnce(h *harness, id, st string) resp {
	return h.post(id, st, "otp.check", map[string]string{"otp": wrongOTP(h.sim.Inbox("alice")[0].OTP)})
}

func TestWrongOTPsAcrossFlowsBlockTheUser(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(ten *Tenant) { ten.Policies[0].OTPCoolDown = 5 * time.Minute })
	// Two wrong codes in one flow, one in the next: the third wrong code
	// of the user blocks her, although neither flow reached its own limit.
	id, st := aliceOTP(t, h)
	wrongOnce(h, id, st)
	wrongOnce(h, id, st)
	id2, st2 := aliceOTP(t, h)
	r := wrongOnce(h, id2, st2)
	if got := str(detail(r), "innerError", "attemptsRemaining"); got != "0" {
		t.Errorf("attemptsRemaining at the user's limit = %q, want 0", got)
	}
	if got := str(h.getFlow(id2, st2).body, "status"); got != "FAILED" {
		t.Errorf("flow that reached the user's limit is %q, want FAILED", got)
	}
	sent := len(h.sim.Inbox("alice"))

	t.Run("selecting an OTP device in the cool-down sends nothing and answers LIMIT_EXCEEDED", func(t *testing.T) {
		h.clock.Advance(5*time.Minute - time.Second)
		r, st := h.start("alice", nil)
		id := str(r.body, "id")
		r = h.post(id, st, "device.select", selectDevice(DemoAliceEmailID))
		if r.status != 400 || str(detail(r), "code") != "LIMIT_EXCEEDED" || str(detail(r), "target") != "device.id" {
			t.Errorf("select in cool-down = %d %s", r.status, r.raw)
		}
		if got := str(h.getFlow(id, st).body, "status"); got != "DEVICE_SELECTION_REQUIRED" {
			t.Errorf("status after a refused select = %q", got)
		}
		if n := len(h.sim.Inbox("alice")); n != sent {
			t.Errorf("%d messages sent in the cool-down", n-sent)
		}
	})
	t.Run("otp.check of a flow opened before the block is refused without counting", func(t *testing.T) {
		// id's flow (one wrong code left) was opened before the block.
		r := h.post(id, st, "otp.check", map[string]string{"otp": h.sim.Inbox("alice")[len(h.sim.Inbox("alice"))-1].OTP})
		if r.status != 400 || str(detail(r), "code") != "LIMIT_EXCEEDED" {
			t.Errorf("otp.check in cool-down = %d %s", r.status, r.raw)
		}
	})
	t.Run("after the cool-down codes are sent and accepted again", func(t *testing.T) {
		h.clock.Advance(time.Second)
		id, st := aliceOTP(t, h)
		r := h.post(id, st, "otp.check", map[string]string{"otp": h.sim.Inbox("alice")[0].OTP})
		if got := str(r.body, "status"); got != "COMPLETED" {
			t.Errorf("after the cool-down: %d %s", r.status, r.raw)
		}
	})
}

func TestCoolDownBlocksTheDefaultDeviceAtAuthorize(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(ten *Tenant) { ten.Users[0].DeviceSelection = DefaultToFirst })
	for range DefaultOTPFailureCount {
		r, st := h.start("alice", nil)
		wrongOnce(h, str(r.body, "id"), st)
	}
	r, _ := h.start("alice", nil)
	if str(r.body, "status") != "FAILED" || str(r.body, "error", "code") != "LIMIT_EXCEEDED" {
		t.Errorf("authorize in cool-down = %s, want FAILED with LIMIT_EXCEEDED", r.raw)
	}
	h.clock.Advance(DefaultOTPCoolDown)
	if r, _ := h.start("alice", nil); str(r.body, "status") != "OTP_REQUIRED" {
		t.Errorf("authorize after the default 2 min cool-down = %s", r.raw)
	}
}

func TestARightCodeResetsTheUsersCount(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	id, st := aliceOTP(t, h)
	wrongOnce(h, id, st)
	wrongOnce(h, id, st)
	h.post(id, st, "otp.check", map[string]string{"otp": h.sim.Inbox("alice")[0].OTP})
	id, st = aliceOTP(t, h)
	r := wrongOnce(h, id, st)
	if got := str(detail(r), "innerError", "attemptsRemaining"); got != "2" || str(detail(r), "code") != "INVALID_OTP" {
		t.Errorf("after a success the next wrong code = %s, want INVALID_OTP with 2 left", r.raw)
	}
}

func TestNegativeCoolDownNeverBlocksTheUser(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(ten *Tenant) { ten.Policies[0].OTPCoolDown = -1 })
	for range 2 * DefaultOTPFailureCount {
		id, st := aliceOTP(t, h)
		wrongOnce(h, id, st)
	}
}

func TestPushLimit(t *testing.T) {
	t.Parallel()
	// Four denials and one timeout within ten minutes block bob's push for
	// thirty minutes; the fifth is counted when the timeout is noticed.
	h := newHarness(t, nil)
	for range DefaultPushLimitCount - 1 {
		r, _ := h.start("bob", nil)
		mustPush(h, str(r.body, "id"), PushDeny)
		h.clock.Advance(time.Minute)
	}
	r, st := h.start("bob", nil)
	h.clock.Advance(DefaultPushTimeout)
	if got := str(h.getFlow(str(r.body, "id"), st).body, "status"); got != "PUSH_CONFIRMATION_TIMED_OUT" {
		t.Fatalf("status = %q", got)
	}
	r, st = h.start("bob", nil)
	if str(r.body, "status") != "FAILED" || str(r.body, "error", "code") != "LIMIT_EXCEEDED" {
		t.Fatalf("authorize with push blocked = %s", r.raw)
	}
	pushes := len(h.sim.Inbox("bob"))
	h.clock.Advance(DefaultPushLimitDuration - time.Second)
	if r, _ := h.start("bob", nil); str(r.body, "status") != "FAILED" {
		t.Errorf("push unblocked before 30 min: %s", r.raw)
	}
	if n := len(h.sim.Inbox("bob")); n != pushes {
		t.Errorf("%d pushes sent while blocked", n-pushes)
	}
	h.clock.Advance(time.Second)
	if r, _ := h.start("bob", nil); str(r.body, "status") != "PUSH_CONFIRMATION_REQUIRED" {
		t.Errorf("push still blocked after 30 min: %s", r.raw)
	}
}

func TestPushFailuresOutsideTheWindowDoNotCount(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	for range 2 * DefaultPushLimitCount {
		r, _ := h.start("bob", nil)
		mustPush(h, str(r.body, "id"), PushDeny)
		h.clock.Advance(DefaultPushLimitWindow / (DefaultPushLimitCount - 1))
	}
	if r, _ := h.start("bob", nil); str(r.body, "status") != "PUSH_CONFIRMATION_REQUIRED" {
		t.Errorf("denials spread over more than the window blocked push: %s", r.raw)
	}
}
