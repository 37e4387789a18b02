package main

// End-to-end tests of phone approvals (approve rules with api=decoupled,
// docs/design.md §18, issue 24) through the simulator: a program's request is
// held, stepgate pushes to the user's phone itself, and the program polls
// until the upstream's answer comes back, once.

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
	"github.com/stepgate/stepgate/store/redistest"
)

const phoneRules = `POST /api/payments approve api=decoupled title="Send a payment" ` +
	`show=Amount:json./amount,Payee:json./payee/name template=transaction ` +
	`vars=sum:json./amount,currency:json./currency,recipient:json./payee/name ` +
	`message="Approve ${sum} ${currency} to ${recipient}?" ttl=2m; ` +
	`DELETE /users/ approve api=decoupled show=User:path; ` +
	`POST /api/url-payments approve show=Amount:json./amount`

func newPhoneStack(t *testing.T, opts ...stackOption) (*stack, *bodyRecorder) {
	t.Helper()
	up := &bodyRecorder{}
	opts = append([]stackOption{withUpstream(up), withEnv("STEPGATE_RULES", phoneRules)}, opts...)
	return newStack(t, opts...), up
}

// apiAnswer is a response to a program, with its JSON decoded when it is
// JSON.
type apiAnswer struct {
	Status int
	Header http.Header
	Body   string
	JSON   map[string]any
}

func (a apiAnswer) str(k string) string { s, _ := a.JSON[k].(string); return s }

// apiCall sends what a program sends: JSON, no cookies, the identity
// header of the trusted proxy in front.
func apiCall(t testing.TB, base, user, method, path, body string, header ...string) apiAnswer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if user != "" {
		req.Header.Set("X-Forwarded-User", user)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	c := &http.Client{Timeout: 60 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := apiAnswer{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
	_ = json.Unmarshal(b, &a.JSON)
	return a
}

// payByPhone posts alice's JSON payment as user and wants the 202.
func payByPhone(t *testing.T, s *stack, user string, header ...string) apiAnswer {
	t.Helper()
	a := apiCall(t, s.Proxy, user, "POST", "/api/payments", apiPaymentBody, header...)
	if a.Status != http.StatusAccepted {
		t.Fatalf("POST /api/payments as %s: %d %s, want 202", user, a.Status, a.Body)
	}
	loc := a.Header.Get("Location")
	if !strings.HasPrefix(loc, "/.stepgate/approvals/") || a.str("poll_url") != loc {
		t.Fatalf("Location %q, poll_url %q: want /.stepgate/approvals/{id} in both", loc, a.str("poll_url"))
	}
	return a
}

// pushFlow is the flow id of the newest push or message sent to user.
func pushFlow(t *testing.T, s *stack, user string) string {
	t.Helper()
	msgs := s.Sim.Inbox(user)
	if len(msgs) == 0 {
		t.Fatalf("nothing was sent to %s", user)
	}
	return msgs[0].FlowID
}

func TestPhoneApprovalByPushForwardsOnceThenIsGone(t *testing.T) {
	s, up := newPhoneStack(t)
	a := payByPhone(t, s, "bob")
	loc := a.Header.Get("Location")
	if got := a.Header.Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After = %q, want 2", got)
	}
	if a.str("status") != "pending" || a.str("method") != "push" || a.str("message") != "Approve 250.00 EUR to ACME GmbH?" ||
		a.str("title") != "Send a payment" || a.str("expires_at") != s.Clock.Now().Add(2*time.Minute).UTC().Format(time.RFC3339) ||
		!strings.HasPrefix(a.str("approval_url"), "/.stepgate/challenge?approval=") {
		t.Errorf("202 body = %s", a.Body)
	}
	if _, ok := a.JSON["number"]; ok {
		t.Errorf("a number to match without number matching: %s", a.Body)
	}
	// The push names the payment, as the rule's message says.
	msg := s.Sim.Inbox("bob")[0]
	if msg.Type != "MOBILE" || !strings.Contains(msg.Text, "Approve 250.00 EUR?") {
		t.Errorf("push = %+v", msg)
	}
	if n := len(up.all()); n != 0 {
		t.Fatalf("upstream got %d requests before approval", n)
	}
	if p := apiCall(t, s.Proxy, "bob", "GET", loc, ""); p.Status != http.StatusAccepted || p.str("status") != "pending" {
		t.Fatalf("poll before the phone answered: %d %s", p.Status, p.Body)
	}

	if err := s.Sim.Push(msg.FlowID, pingonesim.PushApprove); err != nil {
		t.Fatal(err)
	}
	p := apiCall(t, s.Proxy, "bob", "GET", loc, "")
	if p.Status != http.StatusOK || p.Body != "upstream did POST /api/payments with "+apiPaymentBody ||
		p.Header.Get("Stepgate-Approval-Status") != "forwarded" {
		t.Fatalf("poll after approval: %d %q %v", p.Status, p.Body, p.Header)
	}
	got := up.all()
	if len(got) != 1 || got[0].ContentType != "application/json" || len(got[0].Approval) != 64 || got[0].User != "bob" {
		t.Fatalf("upstream got %+v, want the approved POST once with its digest", got)
	}
	// A second GET, the same poll replayed, a retry of the original: the
	// request is never sent again.
	for range 2 {
		if p := apiCall(t, s.Proxy, "bob", "GET", loc, ""); p.Status != http.StatusGone || p.str("error") != "approval_used" {
			t.Fatalf("poll after forwarding: %d %s, want 410 approval_used", p.Status, p.Body)
		}
	}
	if n := up.count("POST", "/api/payments"); n != 1 {
		t.Fatalf("forwarded %d times", n)
	}
	for _, e := range []string{"approval.requested", "approval.pushed", "approval.approved", "approval.forwarded"} {
		if got := s.Logs.Events(e); len(got) != 1 {
			t.Errorf("%s events = %d, want 1", e, len(got))
		} else if d, _ := got[0]["digest"].(string); d != got[0]["digest"] || len(d) != 64 {
			t.Errorf("%s without the digest: %v", e, got[0])
		}
	}
	id := strings.TrimPrefix(loc, "/.stepgate/approvals/")
	if logs := s.Logs.String(); strings.Contains(logs, "ACME") || strings.Contains(logs, id[23:]) {
		t.Error("a value of the held request or the poll URL's key reached the logs")
	}
}

func TestPhoneApprovalOutcomes(t *testing.T) {
	tests := []struct {
		name       string
		answer     func(t *testing.T, s *stack, flowID string)
		wantStatus int
		wantError  string
		wantEvent  string
	}{
		{"a push denied on the phone is 403 approval_denied", func(t *testing.T, s *stack, id string) {
			if err := s.Sim.Push(id, pingonesim.PushDeny); err != nil {
				t.Fatal(err)
			}
		}, http.StatusForbidden, "approval_denied", "approval.denied"},
		{"a push nobody answers is 408 approval_timed_out", func(t *testing.T, s *stack, id string) {
			if err := s.Sim.Push(id, pingonesim.PushTimeout); err != nil {
				t.Fatal(err)
			}
		}, http.StatusRequestTimeout, "approval_timed_out", "approval.timed_out"},
		{"an approval past its ttl is 408 approval_expired", func(t *testing.T, s *stack, id string) {
			s.Clock.Advance(2*time.Minute + time.Second)
		}, http.StatusRequestTimeout, "approval_expired", "approval.expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, up := newPhoneStack(t)
			loc := payByPhone(t, s, "bob").Header.Get("Location")
			tt.answer(t, s, pushFlow(t, s, "bob"))
			for range 2 { // the answer stands, and is recorded once
				p := apiCall(t, s.Proxy, "bob", "GET", loc, "")
				if p.Status != tt.wantStatus || p.str("error") != tt.wantError {
					t.Fatalf("poll: %d %s, want %d %s", p.Status, p.Body, tt.wantStatus, tt.wantError)
				}
			}
			if n := len(up.all()); n != 0 {
				t.Fatalf("upstream got %d requests", n)
			}
			if n := len(s.Logs.Events(tt.wantEvent)); n != 1 {
				t.Errorf("%s events = %d, want 1", tt.wantEvent, n)
			}
			// A late approval on the phone changes nothing.
			_ = s.Sim.Push(pushFlow(t, s, "bob"), pingonesim.PushApprove)
			if p := apiCall(t, s.Proxy, "bob", "GET", loc, ""); p.Status != tt.wantStatus {
				t.Fatalf("poll after a late approval: %d %s", p.Status, p.Body)
			}
			if n := len(up.all()); n != 0 {
				t.Fatalf("upstream got %d requests after a late approval", n)
			}
		})
	}
}

func TestPhoneApprovalPollsAreTheOwnersAlone(t *testing.T) {
	s, up := newPhoneStack(t)
	loc := payByPhone(t, s, "bob").Header.Get("Location")
	ref := strings.TrimPrefix(loc, "/.stepgate/approvals/")
	id, key := ref[:22], ref[23:]
	other := "AAAAAAAAAAAAAAAAAAAAAA"
	if id == other {
		other = "BBBBBBBBBBBBBBBBBBBBBB"
	}
	// Another first character, always a base64url one: flipping a bit and
	// falling back to 'A' gave the real key back when it began with 'A'.
	flipped := []byte(key)
	if flipped[0] == 'A' {
		flipped[0] = 'B'
	} else {
		flipped[0] = 'A'
	}
	tests := []struct{ name, user, path string }{
		{"another user's poll of a real approval", "alice", loc},
		{"a guessed id with the right key", "bob", "/.stepgate/approvals/" + other + "." + key},
		{"the right id with a guessed key", "bob", "/.stepgate/approvals/" + id + "." + string(flipped)},
		{"the id alone", "bob", "/.stepgate/approvals/" + id},
		{"a malformed reference", "bob", "/.stepgate/approvals/not-a-reference"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is a 404", func(t *testing.T) {
			for _, m := range []string{"GET", "DELETE"} {
				if p := apiCall(t, s.Proxy, tt.user, m, tt.path, ""); p.Status != http.StatusNotFound || p.str("error") != "not_found" {
					t.Fatalf("%s: %d %s, want 404", m, p.Status, p.Body)
				}
			}
			if p := apiCall(t, s.Proxy, tt.user, "POST", tt.path, `{"otp":"123456"}`); p.Status != http.StatusNotFound {
				t.Fatalf("POST: %d %s, want 404", p.Status, p.Body)
			}
		})
	}
	if p := apiCall(t, s.Proxy, "", "GET", loc, ""); p.Status != http.StatusUnauthorized {
		t.Errorf("a poll without identity: %d, want 401", p.Status)
	}
	// Another user cannot cancel it either: bob's approval still goes through.
	if err := s.Sim.Push(pushFlow(t, s, "bob"), pingonesim.PushApprove); err != nil {
		t.Fatal(err)
	}
	if p := apiCall(t, s.Proxy, "alice", "GET", loc, ""); p.Status != http.StatusNotFound {
		t.Fatalf("alice's poll of bob's approved request: %d, want 404 (and no forward)", p.Status)
	}
	if n := len(up.all()); n != 0 {
		t.Fatalf("another user's poll forwarded the request (%d)", n)
	}
	if p := apiCall(t, s.Proxy, "bob", "GET", loc, ""); p.Status != http.StatusOK {
		t.Fatalf("bob's poll: %d %s", p.Status, p.Body)
	}
}

func TestPhoneApprovalNumberMatching(t *testing.T) {
	for _, mode := range []string{"", pingonesim.NumberMatchingSelect, pingonesim.NumberMatchingEnter} {
		name := "off"
		if mode != "" {
			name = mode
		}
		t.Run(name, func(t *testing.T) {
			s, up := newPhoneStack(t, withTenant(func(tn *pingonesim.Tenant) { tn.Policies[0].NumberMatching = mode }))
			a := payByPhone(t, s, "bob", "Prefer", "wait=30") // never waits before the number is shown
			number := a.str("number")
			if (mode == "") != (number == "") {
				t.Fatalf("number = %q with number matching %q: %s", number, mode, a.Body)
			}
			flow := pushFlow(t, s, "bob")
			if mode == "" {
				if err := s.Sim.Push(flow, pingonesim.PushApprove); err != nil {
					t.Fatal(err)
				}
			} else if err := s.Sim.PushNumber(flow, number); err != nil {
				t.Fatal(err)
			}
			if p := apiCall(t, s.Proxy, "bob", "GET", a.Header.Get("Location"), ""); p.Status != http.StatusOK {
				t.Fatalf("poll after the number was matched: %d %s", p.Status, p.Body)
			}
			if n := len(up.all()); n != 1 {
				t.Fatalf("forwarded %d times", n)
			}
		})
	}
	t.Run("a wrong number is a denial", func(t *testing.T) {
		s, up := newPhoneStack(t, withTenant(func(tn *pingonesim.Tenant) { tn.Policies[0].NumberMatching = pingonesim.NumberMatchingEnter }))
		a := payByPhone(t, s, "bob")
		wrong := "10"
		if a.str("number") == wrong {
			wrong = "11"
		}
		if err := s.Sim.PushNumber(pushFlow(t, s, "bob"), wrong); err != nil {
			t.Fatal(err)
		}
		if p := apiCall(t, s.Proxy, "bob", "GET", a.Header.Get("Location"), ""); p.Status != http.StatusForbidden || p.str("error") != "approval_denied" {
			t.Fatalf("poll: %d %s", p.Status, p.Body)
		}
		if n := len(up.all()); n != 0 {
			t.Fatalf("forwarded %d times", n)
		}
	})
}

func TestPhoneApprovalByCodeWhenThereIsNoPushDevice(t *testing.T) {
	s, up := newPhoneStack(t)
	a := payByPhone(t, s, "alice")
	loc := a.Header.Get("Location")
	if a.str("method") != "sms" || a.str("otp_url") != loc || a.str("device") == "" {
		t.Fatalf("202 for a user without push: %s", a.Body)
	}
	msg := s.Sim.Inbox("alice")[0]
	if msg.Type != "SMS" || !strings.Contains(msg.Text, "Approve 250.00 EUR to ACME GmbH?") {
		t.Errorf("SMS = %+v", msg)
	}
	for _, tt := range []struct{ body, want string }{
		{`{"otp":"12a456"}`, "otp_format"},
		{`not json`, "bad_request"},
	} {
		if p := apiCall(t, s.Proxy, "alice", "POST", loc, tt.body); p.Status != http.StatusBadRequest || p.str("error") != tt.want {
			t.Fatalf("POST %s: %d %s, want 400 %s", tt.body, p.Status, p.Body, tt.want)
		}
	}
	wrong := "000000"
	if msg.OTP == wrong {
		wrong = "111111"
	}
	p := apiCall(t, s.Proxy, "alice", "POST", loc, `{"otp":"`+wrong+`"}`)
	if p.Status != http.StatusBadRequest || p.str("error") != "otp_wrong" || p.JSON["attempts_remaining"] != float64(2) {
		t.Fatalf("a wrong code: %d %s", p.Status, p.Body)
	}
	p = apiCall(t, s.Proxy, "alice", "POST", loc, `{"otp":"`+msg.OTP[:3]+" "+msg.OTP[3:]+`"}`)
	if p.Status != http.StatusOK || p.Body != "upstream did POST /api/payments with "+apiPaymentBody {
		t.Fatalf("the right code: %d %s", p.Status, p.Body)
	}
	if p := apiCall(t, s.Proxy, "alice", "POST", loc, `{"otp":"`+msg.OTP+`"}`); p.Status != http.StatusGone {
		t.Fatalf("the code again: %d %s, want 410", p.Status, p.Body)
	}
	if n := len(up.all()); n != 1 {
		t.Fatalf("forwarded %d times", n)
	}
	if strings.Contains(s.Logs.String(), `"`+msg.OTP+`"`) || strings.Contains(s.Logs.String(), wrong) {
		t.Error("a code reached the logs")
	}
}

func TestPhoneApprovalCodesAreLimitedAndLocked(t *testing.T) {
	s, up := newPhoneStack(t)
	loc := payByPhone(t, s, "alice").Header.Get("Location")
	code := s.Sim.Inbox("alice")[0].OTP
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	var p apiAnswer
	for i := range 3 {
		p = apiCall(t, s.Proxy, "alice", "POST", loc, `{"otp":"`+wrong+`"}`)
		if i < 2 && p.Status != http.StatusBadRequest {
			t.Fatalf("wrong code %d: %d %s", i+1, p.Status, p.Body)
		}
	}
	if p.Status != http.StatusForbidden || p.str("error") != "approval_failed" {
		t.Fatalf("the third wrong code: %d %s, want 403 approval_failed", p.Status, p.Body)
	}
	if p := apiCall(t, s.Proxy, "alice", "POST", loc, `{"otp":"`+code+`"}`); p.Status != http.StatusForbidden {
		t.Fatalf("the right code after the lock: %d %s", p.Status, p.Body)
	}
	if n := len(up.all()); n != 0 {
		t.Fatalf("forwarded %d times", n)
	}
	// The per-user code limit binds across approvals (STEPGATE_LIMIT_OTP_PER_USER).
	s2, _ := newPhoneStack(t, withEnv("STEPGATE_LIMIT_OTP_PER_USER", "1"))
	loc = payByPhone(t, s2, "alice").Header.Get("Location")
	apiCall(t, s2.Proxy, "alice", "POST", loc, `{"otp":"`+wrong+`"}`)
	if p := apiCall(t, s2.Proxy, "alice", "POST", loc, `{"otp":"`+wrong+`"}`); p.Status != http.StatusTooManyRequests || p.Header.Get("Retry-After") == "" {
		t.Fatalf("a code over the per-user limit: %d %s", p.Status, p.Body)
	}
}

func TestPhoneApprovalCancelBeatsALaterApproval(t *testing.T) {
	s, up := newPhoneStack(t)
	loc := payByPhone(t, s, "bob").Header.Get("Location")
	flow := pushFlow(t, s, "bob")
	if p := apiCall(t, s.Proxy, "bob", "DELETE", loc, ""); p.Status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", p.Status, p.Body)
	}
	_ = s.Sim.Push(flow, pingonesim.PushApprove) // the phone answers after the cancel
	for _, m := range []string{"GET", "DELETE"} {
		if p := apiCall(t, s.Proxy, "bob", m, loc, ""); p.Status != http.StatusGone || p.str("error") != "approval_cancelled" {
			t.Fatalf("%s after cancel: %d %s, want 410 approval_cancelled", m, p.Status, p.Body)
		}
	}
	if n := len(up.all()); n != 0 {
		t.Fatalf("a cancelled request was forwarded (%d)", n)
	}
	if n := len(s.Logs.Events("approval.cancelled")); n != 1 {
		t.Errorf("approval.cancelled events = %d", n)
	}
	// Cancelling after the forward is too late, and says so.
	loc = payByPhone(t, s, "bob").Header.Get("Location")
	_ = s.Sim.Push(pushFlow(t, s, "bob"), pingonesim.PushApprove)
	apiCall(t, s.Proxy, "bob", "GET", loc, "")
	if p := apiCall(t, s.Proxy, "bob", "DELETE", loc, ""); p.Status != http.StatusGone || p.str("error") != "approval_used" {
		t.Fatalf("DELETE after forwarding: %d %s, want 410 approval_used", p.Status, p.Body)
	}
}

func TestPhoneApprovalPollFloodIsRefused(t *testing.T) {
	s, _ := newPhoneStack(t)
	loc := payByPhone(t, s, "bob").Header.Get("Location")
	var last apiAnswer
	for range 12 {
		if last = apiCall(t, s.Proxy, "bob", "GET", loc, ""); last.Status == http.StatusTooManyRequests {
			break
		}
	}
	if last.Status != http.StatusTooManyRequests || last.Header.Get("Retry-After") == "" {
		t.Fatalf("12 polls at once: last %d, want 429 with Retry-After", last.Status)
	}
	before := s.Sim.Requests()
	apiCall(t, s.Proxy, "bob", "GET", loc, "")
	if s.Sim.Requests() != before {
		t.Error("a refused poll still read the flow at PingOne")
	}
	// The pace refills on the clock.
	s.Clock.Advance(3 * time.Second)
	if p := apiCall(t, s.Proxy, "bob", "GET", loc, ""); p.Status != http.StatusAccepted {
		t.Fatalf("a poll after Retry-After: %d", p.Status)
	}
}

func TestPhoneApprovalWaitsWithPreferWait(t *testing.T) {
	t.Run("on a poll", func(t *testing.T) {
		s, up := newPhoneStack(t)
		loc := payByPhone(t, s, "bob").Header.Get("Location")
		done := make(chan apiAnswer, 1)
		go func() { done <- apiCall(t, s.Proxy, "bob", "GET", loc, "", "Prefer", "wait=30") }()
		if err := s.Sim.Push(pushFlow(t, s, "bob"), pingonesim.PushApprove); err != nil {
			t.Fatal(err)
		}
		if p := <-done; p.Status != http.StatusOK || !strings.HasPrefix(p.Body, "upstream did POST") {
			t.Fatalf("waiting poll: %d %s", p.Status, p.Body)
		}
		if n := len(up.all()); n != 1 {
			t.Fatalf("forwarded %d times", n)
		}
	})
	t.Run("on the request itself", func(t *testing.T) {
		s, up := newPhoneStack(t)
		sent := s.Sim.Subscribe()
		done := make(chan apiAnswer, 1)
		go func() {
			done <- apiCall(t, s.Proxy, "bob", "POST", "/api/payments", apiPaymentBody, "Prefer", "respond-async, wait=30")
		}()
		if err := s.Sim.Push((<-sent).FlowID, pingonesim.PushApprove); err != nil {
			t.Fatal(err)
		}
		p := <-done
		if p.Status != http.StatusOK || p.Body != "upstream did POST /api/payments with "+apiPaymentBody {
			t.Fatalf("the request that waited: %d %s", p.Status, p.Body)
		}
		if n := len(up.all()); n != 1 {
			t.Fatalf("forwarded %d times", n)
		}
		if got := s.LastRequest().Header.Get("Prefer"); got != "respond-async" {
			t.Errorf("upstream Prefer = %q, want the wait preference removed", got)
		}
	})
	t.Run("a denial ends the wait", func(t *testing.T) {
		s, _ := newPhoneStack(t)
		sent := s.Sim.Subscribe()
		done := make(chan apiAnswer, 1)
		go func() {
			done <- apiCall(t, s.Proxy, "bob", "POST", "/api/payments", apiPaymentBody, "Prefer", "wait=30")
		}()
		if err := s.Sim.Push((<-sent).FlowID, pingonesim.PushDeny); err != nil {
			t.Fatal(err)
		}
		if p := <-done; p.Status != http.StatusForbidden || p.str("error") != "approval_denied" {
			t.Fatalf("the request that waited: %d %s", p.Status, p.Body)
		}
	})
}

func TestPhoneApprovalFallsBackToABrowserWithoutAPhoneMethod(t *testing.T) {
	s, up := newPhoneStack(t)
	// carol has an authenticator app and a security key: the app's code
	// works without a browser, so she is asked for it.
	a := payByPhone(t, s, "carol")
	if a.str("method") != "totp" {
		t.Fatalf("carol: %s", a.Body)
	}
	// An api=url rule keeps today's answer.
	p := apiCall(t, s.Proxy, "bob", "POST", "/api/url-payments", apiPaymentBody)
	if p.Status != http.StatusUnauthorized || p.str("error") != "approval_required" {
		t.Fatalf("api=url: %d %s", p.Status, p.Body)
	}
	// The approval URL in the 202 works in a browser too, and the poll
	// then forwards what the browser approved.
	a = payByPhone(t, s, "alice")
	alice := s.browser("alice")
	r := alice.follow(alice.get(a.str("approval_url")))
	r = alice.follow(alice.post("action", "start"))
	alice.follow(alice.post("action", "select", "device", deviceIDs(r.Body)[0]))
	if r := alice.post("action", "otp", "otp", s.latestOTP("alice")); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("OTP in the browser: %d", r.StatusCode)
	}
	if p := apiCall(t, s.Proxy, "alice", "GET", a.Header.Get("Location"), ""); p.Status != http.StatusOK {
		t.Fatalf("poll after approval in a browser: %d %s", p.Status, p.Body)
	}
	if n := up.count("POST", "/api/payments"); n != 1 {
		t.Fatalf("forwarded %d times", n)
	}
}

func TestPhoneApprovalAcrossTwoReplicasOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	stacks := redisStacks(t, srv, 2, "STEPGATE_RULES", phoneRules)
	t.Run("polled alternately, forwarded once", func(t *testing.T) {
		a := payByPhone(t, stacks[0], "bob")
		loc := a.Header.Get("Location")
		for i := range 4 { // every replica reads the state the other wrote
			if p := apiCall(t, stacks[i%2].Proxy, "bob", "GET", loc, ""); p.Status != http.StatusAccepted || p.str("method") != "push" {
				t.Fatalf("poll %d on replica %d: %d %s", i, i%2, p.Status, p.Body)
			}
		}
		if p := apiCall(t, stacks[1].Proxy, "alice", "GET", loc, ""); p.Status != http.StatusNotFound {
			t.Fatalf("another user's poll on the other replica: %d", p.Status)
		}
		if err := stacks[0].Sim.Push(pushFlow(t, stacks[0], "bob"), pingonesim.PushApprove); err != nil {
			t.Fatal(err)
		}
		if p := apiCall(t, stacks[1].Proxy, "bob", "GET", loc, ""); p.Status != http.StatusOK {
			t.Fatalf("poll on replica 1 after approval: %d %s", p.Status, p.Body)
		}
		if p := apiCall(t, stacks[0].Proxy, "bob", "GET", loc, ""); p.Status != http.StatusGone {
			t.Fatalf("poll on replica 0 after the forward on 1: %d %s", p.Status, p.Body)
		}
	})
	t.Run("racing polls on both replicas forward once", func(t *testing.T) {
		a := payByPhone(t, stacks[1], "bob")
		loc := a.Header.Get("Location")
		if err := stacks[0].Sim.Push(pushFlow(t, stacks[0], "bob"), pingonesim.PushApprove); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		statuses := make(chan int, 8)
		for i := range 8 {
			wg.Go(func() { statuses <- apiCall(t, stacks[i%2].Proxy, "bob", "GET", loc, "").Status })
		}
		wg.Wait()
		close(statuses)
		ok := 0
		for st := range statuses {
			switch st {
			case http.StatusOK:
				ok++
			case http.StatusAccepted, http.StatusGone, http.StatusTooManyRequests:
			default:
				t.Errorf("a racing poll answered %d", st)
			}
		}
		if ok != 1 {
			t.Fatalf("%d polls got the upstream's answer, want exactly 1", ok)
		}
	})
	forwarded := 0
	for _, s := range stacks {
		for _, q := range s.Requests() {
			if q.Method == "POST" && q.RequestURI == "/api/payments" {
				forwarded++
			}
		}
	}
	if forwarded != 2 {
		t.Fatalf("two approvals reached the upstreams %d times, want 2", forwarded)
	}
	t.Run("a waiting client on one replica learns of a forward on the other", func(t *testing.T) {
		a := payByPhone(t, stacks[0], "bob")
		loc := a.Header.Get("Location")
		done := make(chan apiAnswer, 1)
		go func() { done <- apiCall(t, stacks[0].Proxy, "bob", "GET", loc, "", "Prefer", "wait=30") }()
		waitGauge(t, stacks[0], "stepgate_approvals_waiting", 1)
		if err := stacks[0].Sim.Push(pushFlow(t, stacks[0], "bob"), pingonesim.PushApprove); err != nil {
			t.Fatal(err)
		}
		other := apiCall(t, stacks[1].Proxy, "bob", "GET", loc, "")
		waited := <-done
		if other.Status != http.StatusOK || waited.Status != http.StatusGone || waited.str("error") != "approval_used" {
			t.Fatalf("poll on 1: %d, waiting poll on 0: %d %s; want the 200 on 1 and a 410 approval_used on 0", other.Status, waited.Status, waited.Body)
		}
	})
}

// waitGauge polls a gauge on s's /metrics until it reads want: the
// observable sign that a client is waiting inside stepgate.
func waitGauge(t *testing.T, s *stack, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for promCounter(t, s.Admin, name, nil) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s never reached %v", name, want)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

func TestPhoneApprovalCheckConfigSaysTheMemoryStoreIsOneReplica(t *testing.T) {
	env := validEnv()
	env["STEPGATE_RULES"] = phoneRules
	out, _, err := runWith(t, env, "-check-config")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"api=decoupled", "2 approve rule(s) with api=decoupled and STEPGATE_STORE=memory: a poll URL works only on the replica"} {
		if !strings.Contains(out, want) {
			t.Errorf("-check-config lacks %q:\n%s", want, out)
		}
	}
	env["STEPGATE_APPROVE_WAIT_MAX"] = "11m"
	if _, _, err := runWith(t, env, "-check-config"); err == nil || !strings.Contains(err.Error(), "APPROVE_WAIT_MAX") {
		t.Errorf("a wait bound of 11m: %v", err)
	}
}

func TestPhoneApprovalWaitingClientIsAnsweredAtShutdown(t *testing.T) {
	base, up := newPhoneStack(t)
	env := maps.Clone(base.Env)
	c, err := loadConfig(environOf(env))
	if err != nil {
		t.Fatal(err)
	}
	set, err := c.validate(os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	pl, _ := net.Listen("tcp", "127.0.0.1:0")
	al, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- serve(ctx, c, set, &syncBuffer{}, &serveOptions{listeners: listeners{proxy: pl, admin: al}}, base.Clock.Now)
	}()
	s := &stack{t: t, Sim: base.Sim, Clock: base.Clock, Proxy: "http://" + pl.Addr().String(), Admin: "http://" + al.Addr().String(), Logs: &syncBuffer{}}
	s.waitReady()

	loc := payByPhone(t, s, "bob").Header.Get("Location")
	done := make(chan apiAnswer, 1)
	go func() { done <- apiCall(t, s.Proxy, "bob", "GET", loc, "", "Prefer", "wait=600") }()
	waitGauge(t, s, "stepgate_approvals_waiting", 1)
	cancel() // SIGTERM
	p := <-done
	if p.Status != http.StatusAccepted || p.str("status") != "pending" {
		t.Fatalf("a waiting client at shutdown: %d %v %s, want the 202 at once", p.Status, p.Header, p.Body)
	}
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if n := len(up.all()); n != 0 {
		t.Fatalf("forwarded %d", n)
	}
	// The approval lives on in the store: on the memory store that is
	// this process's, gone with it; on Redis another replica answers.
}

func TestApproveCallWaitsForThePushAndPrintsTheUpstreamsAnswer(t *testing.T) {
	s, up := newPhoneStack(t)
	sent := s.Sim.Subscribe()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- runApproveCall(context.Background(), []string{"-H", "X-Forwarded-User: bob", "-d", apiPaymentBody,
			"POST", s.Proxy + "/api/payments"}, strings.NewReader(""), &stdout, &stderr)
	}()
	if err := s.Sim.Push((<-sent).FlowID, pingonesim.PushApprove); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("approve-call: %v\n%s", err, stderr.String())
	}
	if got := stdout.String(); got != "upstream did POST /api/payments with "+apiPaymentBody {
		t.Errorf("stdout = %q", got)
	}
	for _, want := range []string{"held for approval: Approve 250.00 EUR to ACME GmbH?", "a push was sent", "approved; the upstream answered 200"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if n := len(up.all()); n != 1 {
		t.Fatalf("forwarded %d times", n)
	}
}

func TestApproveCallAsksForTheCode(t *testing.T) {
	s, up := newPhoneStack(t)
	sent := s.Sim.Subscribe()
	pr, pw := io.Pipe()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- runApproveCall(context.Background(), []string{"-H", "X-Forwarded-User: alice", "-d", apiPaymentBody,
			"POST", s.Proxy + "/api/payments"}, pr, &stdout, &stderr)
	}()
	code := (<-sent).OTP
	io.WriteString(pw, "999999\n") // a wrong one first: asked again
	io.WriteString(pw, code+"\n")
	if err := <-done; err != nil {
		t.Fatalf("approve-call: %v\n%s", err, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "upstream did POST") || !strings.Contains(stderr.String(), "a code was sent (sms") ||
		!strings.Contains(stderr.String(), "that code is not right") {
		t.Errorf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
	if n := len(up.all()); n != 1 {
		t.Fatalf("forwarded %d times", n)
	}
}

func TestApproveCallCancelsWhenInterrupted(t *testing.T) {
	s, up := newPhoneStack(t)
	sent := s.Sim.Subscribe()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- runApproveCall(ctx, []string{"-H", "X-Forwarded-User: alice", "-d", apiPaymentBody,
			"POST", s.Proxy + "/api/payments"}, strings.NewReader(""), &stdout, &stderr)
	}()
	flow := (<-sent).FlowID
	// No code on stdin: approve-call fails and withdraws the approval.
	if err := <-done; err == nil {
		t.Fatal("approve-call without a code succeeded")
	}
	cancel()
	if !strings.Contains(stderr.String(), "approval cancelled") {
		t.Errorf("stderr = %q", stderr.String())
	}
	if n := len(s.Logs.Events("approval.cancelled")); n != 1 {
		t.Errorf("approval.cancelled = %d", n)
	}
	_ = flow
	if n := len(up.all()); n != 0 {
		t.Fatalf("forwarded %d", n)
	}
}

func TestPhoneApprovalForUsersThePhoneCannotServe(t *testing.T) {
	s, up := newPhoneStack(t, withTenant(func(tn *pingonesim.Tenant) {
		for i := range tn.Users {
			if tn.Users[i].Username == "carol" { // a security key only
				tn.Users[i].Devices = tn.Users[i].Devices[1:]
				tn.Users[i].DeviceSelection = ""
			}
		}
	}))
	a := apiCall(t, s.Proxy, "carol", "POST", "/api/payments", apiPaymentBody)
	if a.Status != http.StatusUnauthorized || a.str("reason") != "browser_required" || !strings.HasPrefix(a.str("approval_url"), "/.stepgate/challenge?approval=") {
		t.Fatalf("a user with a security key only: %d %s, want the 401 with the browser's approval_url", a.Status, a.Body)
	}
	// dave has no method: PingOne's policy lets him through (bypass),
	// which never counts as an approval.
	a = apiCall(t, s.Proxy, "dave", "POST", "/api/payments", apiPaymentBody)
	if a.Status != http.StatusForbidden || a.str("error") != "approval_failed" {
		t.Fatalf("a PingOne bypass: %d %s, want 403 approval_failed", a.Status, a.Body)
	}
	if n := len(up.all()); n != 0 {
		t.Fatalf("forwarded %d", n)
	}
	// HEAD never polls: its answer would lose the upstream's body.
	loc := payByPhone(t, s, "bob").Header.Get("Location")
	if a := apiCall(t, s.Proxy, "bob", "HEAD", loc, ""); a.Status != http.StatusMethodNotAllowed {
		t.Fatalf("HEAD: %d", a.Status)
	}
}

// A user's flow starts are one budget, spent on the challenge page or by
// the phone flow alike: without Redis each was once a budget of its own.
func TestPhoneApprovalSharesTheUsersStartBudgetWithThePage(t *testing.T) {
	s, _ := newPhoneStack(t, withEnv("STEPGATE_LIMIT_STARTS_PER_USER", "1", "STEPGATE_LIMIT_WINDOW", "1m"))
	payByPhone(t, s, "alice") // the phone flow's start
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/")
	r := b.post("action", "start")
	if r.StatusCode == http.StatusSeeOther && r.Header.Get("Retry-After") != "" {
		r = b.follow(r) // refused: the 429 page
	}
	if r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a page start after the phone flow's, within one start per window: %d, want 429", r.StatusCode)
	}
}

// An application's own 202 (it queued the payment) is its answer to the
// approved request, not stepgate's "poll again": approve-call prints it
// and stops, instead of polling an approval already used.
func TestApproveCallPrintsAnUpstreams202AndStops(t *testing.T) {
	queued := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "queued")
	})
	s := newStack(t, withUpstream(queued), withEnv("STEPGATE_RULES", phoneRules))
	sent := s.Sim.Subscribe()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- runApproveCall(context.Background(), []string{"-H", "X-Forwarded-User: bob", "-d", apiPaymentBody,
			"POST", s.Proxy + "/api/payments"}, strings.NewReader(""), &stdout, &stderr)
	}()
	if err := s.Sim.Push((<-sent).FlowID, pingonesim.PushApprove); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("approve-call: %v\n%s", err, stderr.String())
	}
	if stdout.String() != "queued" || !strings.Contains(stderr.String(), "approved; the upstream answered 202") {
		t.Errorf("stdout %q, stderr:\n%s\nwant the upstream's 202 and its body", stdout.String(), stderr.String())
	}
}
