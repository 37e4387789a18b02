package main

// End-to-end tests of phone approvals (approve rules with api=decoupled,
// docs/design.md §18, issue 24) through the simulator: a program's request is
// held, stepgate pushes to the user's phone itself, and the program polls
// until the upstream's answer comes back, once.

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
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
