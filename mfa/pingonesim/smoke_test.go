package pingonesim

import "testing"

func TestSmokeSMSFlowCompletes(t *testing.T) {
	h := newHarness(t, nil)
	r, st := h.start("alice", nil)
	if got := str(r.body, "status"); got != "DEVICE_SELECTION_REQUIRED" {
		t.Fatalf("status = %q, body %s", got, r.raw)
	}
	id := str(r.body, "id")
	r = h.post(id, st, "device.select", map[string]any{"device": map[string]string{"id": DemoAliceSMSID}})
	if got := str(r.body, "status"); got != "OTP_REQUIRED" {
		t.Fatalf("status = %q, body %s", got, r.raw)
	}
	otp := h.sim.Inbox("alice")[0].OTP
	r = h.post(id, st, "otp.check", map[string]string{"otp": otp})
	if got := str(r.body, "status"); got != "COMPLETED" {
		t.Fatalf("status = %q, body %s", got, r.raw)
	}
	c := h.parseIDToken(str(r.body, "authorizeResponse", "id_token"))
	t.Logf("%s\n%v", r.raw, c)
}
