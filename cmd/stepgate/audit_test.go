package main

// The audit gaps of issue 25, each closed end to end: what a SIEM needs to
// tie one decision to the next is on the line that records it.

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
	"github.com/stepgate/stepgate/proxy/challenge"
)

func TestAPushTimeOutIsAuditedAndCountedOnce(t *testing.T) {
	s := newStack(t)
	b := s.browser("bob") // bob's first method is a push
	b.follow(b.get("/admin/"))
	r := b.follow(b.post("action", "start"))
	if !strings.Contains(r.Body, `data-state="push"`) {
		t.Fatalf("after start: not the push page: %s", r.Body)
	}
	if err := s.Sim.Push(startedFlowID(t, s, 0), pingonesim.PushTimeout); err != nil {
		t.Fatal(err)
	}
	// The page's poll sees it, then the page, then a reload: one record.
	b.get("/.stepgate/challenge/status")
	s.Clock.Advance(2 * time.Second) // the poll limit runs on the gateway's clock
	if r := b.get("/.stepgate/challenge"); !strings.Contains(r.Body, `data-state="push_timeout"`) {
		t.Fatalf("not the time-out page: %s", r.Body)
	}
	s.Clock.Advance(2 * time.Second)
	b.get("/.stepgate/challenge")

	ev := s.Logs.Events("mfa.failed")
	if len(ev) != 1 || ev[0]["reason"] != challenge.FailPushTimedOut || ev[0]["user"] != "bob" || ev[0]["flow_id"] == "" {
		t.Fatalf("mfa.failed events = %v, want one push_timed_out for bob's flow", ev)
	}
	if got := promCounter(t, s.Admin, "stepgate_challenges_total", lbl("event", "failed")); got != 1 {
		t.Errorf("challenges failed = %v, want 1", got)
	}
}

func TestAnExpiredApprovalNamesItsDigestPathAndID(t *testing.T) {
	s, _ := newApproveStack(t)
	b := s.browser("alice")
	r := b.follow(b.send("/payments/transfer", transfer))
	r = b.follow(b.post("action", "start"))
	b.follow(b.post("action", "select", "device", deviceIDs(r.Body)[0]))
	s.Clock.Advance(2*time.Minute + time.Second) // the rule's ttl
	b.follow(b.post("action", "otp", "otp", s.latestOTP("alice")))

	req := s.Logs.Events("approval.required")
	exp := s.Logs.Events("approval.expired")
	if len(req) != 1 || len(exp) != 1 {
		t.Fatalf("approval.required %d, approval.expired %d, want 1 each", len(req), len(exp))
	}
	for _, k := range []string{"digest", "path", "approval_id"} {
		if exp[0][k] == nil || exp[0][k] == "" || exp[0][k] != req[0][k] {
			t.Errorf("approval.expired %s = %v, want approval.required's %v", k, exp[0][k], req[0][k])
		}
	}
	if exp[0]["path"] != "/payments/transfer" || exp[0]["method"] != "POST" || exp[0]["flow_id"] == "" {
		t.Errorf("approval.expired = %v, want POST /payments/transfer and the flow id", exp[0])
	}
}

func TestTheAccessLineOfAnApprovedPaymentNamesTheHeldPOST(t *testing.T) {
	s, _ := newApproveStack(t)
	b := s.browser("alice")
	r := b.passChallenge(s, b.send("/payments/transfer", transfer))
	if r = b.follow(r); !strings.HasPrefix(r.Body, "upstream did POST") {
		t.Fatalf("after approval: %d %q", r.StatusCode, r.Body)
	}
	var approved []map[string]any
	for _, line := range strings.Split(s.Logs.String(), "\n") {
		var m map[string]any
		if jsonUnmarshal(line, &m) == nil && m["msg"] == "request" && m["decision"] == "approved" {
			approved = append(approved, m)
		}
	}
	if len(approved) != 1 || approved[0]["method"] != "POST" || approved[0]["path"] != "/payments/transfer" {
		t.Fatalf("access lines of the approved request = %v, want one saying POST /payments/transfer (what the app received)", approved)
	}
}

func TestTwoIdenticalPaymentsAreToldApartByTheirApprovalIDs(t *testing.T) {
	s, up := newApproveStack(t)
	first, second := s.browser("alice"), s.browser("alice") // two tabs' worth of cookies
	// Both are held; the second is approved and forwarded first. (One
	// approval forwards one request: each is approved just before its
	// forward, as an identical request may use an unused approval.)
	held1 := first.send("/payments/transfer", transfer)
	held2 := second.send("/payments/transfer", transfer)
	second.follow(second.passChallenge(s, held2))
	first.follow(first.passChallenge(s, held1))
	if n := up.count("POST", "/payments/transfer"); n != 2 {
		t.Fatalf("forwarded %d payments, want both", n)
	}
	req, appr, fwd := s.Logs.Events("approval.required"), s.Logs.Events("approval.approved"), s.Logs.Events("approval.forwarded")
	if len(req) != 2 || len(appr) != 2 || len(fwd) != 2 {
		t.Fatalf("required %d approved %d forwarded %d, want 2 each", len(req), len(appr), len(fwd))
	}
	if req[0]["digest"] != req[1]["digest"] {
		t.Fatal("identical payments should share a digest (the premise of this test)")
	}
	id := func(m map[string]any) string { v, _ := m["approval_id"].(string); return v }
	if id(req[0]) == "" || id(req[0]) == id(req[1]) {
		t.Fatalf("approval ids %q %q, want two distinct ones", id(req[0]), id(req[1]))
	}
	// Each approval and forward names its held request, in the other
	// order than they were held.
	if id(appr[0]) != id(req[1]) || id(appr[1]) != id(req[0]) || appr[0]["flow_id"] == "" {
		t.Errorf("approved = %v, want the held requests' ids and flow ids", appr)
	}
	if id(fwd[0]) != id(req[1]) || id(fwd[1]) != id(req[0]) {
		t.Errorf("forwarded ids %q %q, want %q %q", id(fwd[0]), id(fwd[1]), id(req[1]), id(req[0]))
	}
	// The id, never the reference: its key opens the held request.
	for _, c := range append(first.Client.Jar.Cookies(mustURL(t, s.Proxy)), second.Client.Jar.Cookies(mustURL(t, s.Proxy))...) {
		if len(c.Value) > 20 && strings.Contains(s.Logs.String(), c.Value) {
			t.Errorf("cookie %s reached the logs", c.Name)
		}
	}
	if strings.Contains(s.Logs.String(), id(req[0])+".") {
		t.Error("an approval reference (id.key) reached the logs")
	}
}

func TestAnAPIRetryNamesTheApprovalItUsed(t *testing.T) {
	s, _ := newApproveStack(t)
	_, approvalURL := payByAPI(t, s.Proxy)
	alice := s.browser("alice")
	r := alice.follow(alice.get(approvalURL))
	if r = alice.passChallenge(s, r); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("OTP: %d", r.StatusCode)
	}
	if code, _ := payByAPI(t, s.Proxy); code != http.StatusOK {
		t.Fatalf("retry: %d", code)
	}
	req, fwd := s.Logs.Events("approval.required"), s.Logs.Events("approval.forwarded")
	if len(req) != 1 || len(fwd) != 1 || fwd[0]["approval_id"] == nil || fwd[0]["approval_id"] != req[0]["approval_id"] {
		t.Fatalf("required %v, forwarded %v: want the forward to name the held request's id", req, fwd)
	}
}

func TestMFAFailedReasonsAreCodes(t *testing.T) {
	s, _ := newApproveStack(t)
	b := s.browser("dave") // no device: the demo policy bypasses MFA
	r := b.follow(b.send("/payments/transfer", transfer))
	r = b.post("action", "start")
	for r.StatusCode == http.StatusSeeOther {
		r = b.follow(r)
	}
	ev := s.Logs.Events("mfa.failed")
	if len(ev) != 1 || ev[0]["reason"] != challenge.FailNoMFAStep || ev[0]["detail"] == "" {
		t.Fatalf("mfa.failed = %v, want reason %s with a detail", ev, challenge.FailNoMFAStep)
	}
}
