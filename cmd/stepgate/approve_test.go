package main

// End-to-end tests of approve rules (docs/design.md §14) through
// the simulator: what is held, shown, sent to PingOne and forwarded, and
// the attacks an approval must stand up to.

import (
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

const approveTestRules = "/admin/ mfa max_age=15m; " +
	`POST /payments/transfer approve title="Send a payment" show=Amount:form.amount,Currency:form.currency,Payee:form.payee ` +
	`template=transaction vars=sum:form.amount,currency:form.currency,recipient:form.payee ` +
	`message="Approve ${sum} ${currency} to ${recipient}?" ttl=2m; ` +
	"POST /api/payments approve show=Amount:json./amount,Payee:json./payee/name template=transaction " +
	"vars=sum:json./amount,currency:json./currency,recipient:json./payee/name; " +
	"DELETE /users/ approve show=User:path"

// bodyRecorder is an upstream that records every request with its body.
type bodyRecorder struct {
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Method, URI, Body, ContentType, Approval, User string
}

func (u *bodyRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.reqs = append(u.reqs, recorded{r.Method, r.RequestURI, string(b), r.Header.Get("Content-Type"),
		r.Header.Get("X-Stepgate-Approval"), r.Header.Get("X-Forwarded-User")})
	u.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, "upstream did "+r.Method+" "+r.RequestURI+" with "+string(b))
}

// count is the number of requests with this method and URI.
func (u *bodyRecorder) count(method, uri string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, r := range u.reqs {
		if r.Method == method && r.URI == uri {
			n++
		}
	}
	return n
}

func (u *bodyRecorder) all() []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recorded(nil), u.reqs...)
}

func newApproveStack(t *testing.T, opts ...stackOption) (*stack, *bodyRecorder) {
	t.Helper()
	up := &bodyRecorder{}
	opts = append([]stackOption{withUpstream(up), withEnv("STEPGATE_RULES", approveTestRules)}, opts...)
	return newStack(t, opts...), up
}

var transfer = url.Values{"amount": {"500"}, "currency": {"EUR"}, "payee": {"ACME GmbH"}}

// send posts a same-origin form to path, as the app's own page would.
func (b *browser) send(path string, form url.Values) response {
	b.t.Helper()
	return b.postForm(path, form)
}

func TestApprovalByBrowserIsShownSentToPingOneAndForwardedOnce(t *testing.T) {
	s, up := newApproveStack(t)
	b := s.browser("alice")

	r := b.send("/payments/transfer", transfer)
	// The reference holds the held request's key: it goes into the sealed
	// flow cookie, never into a URL an access log or the history keeps.
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/.stepgate/challenge" {
		t.Fatalf("POST: got %d to %q, want 303 to the approval page without the reference in its URL", r.StatusCode, r.Header.Get("Location"))
	}
	if n := len(up.all()); n != 0 {
		t.Fatalf("upstream got %d requests before approval", n)
	}
	r = b.follow(r)
	// The rule's title heads the page; its message is the SMS's sentence
	// with the same values; method and path are a detail line.
	for _, want := range []string{"<h1>Send a payment</h1>",
		`<p class="approval-message" id="approval-message">Approve <strong>500</strong> <strong>EUR</strong> to <strong>ACME GmbH</strong>?</p>`,
		`Request: <span class="approval-method">POST</span> <span class="approval-path">/payments/transfer</span>`,
		"You have 2 minutes to approve this.", "<dt>Amount</dt><dd>500</dd>",
		"<dt>Currency</dt><dd>EUR</dd>", "<dt>Payee</dt><dd>ACME GmbH</dd>"} {
		if !strings.Contains(r.Body, want) {
			t.Errorf("approval page lacks %q:\n%s", want, r.Body)
		}
	}

	r = b.passChallenge(s, r)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/payments/transfer" {
		t.Fatalf("OTP: got %d to %q, want 303 to the original URL: %s", r.StatusCode, r.Header.Get("Location"), r.Body)
	}
	// PingOne was asked with the transaction template, and the SMS names
	// the amount and the payee.
	msg := s.Sim.Inbox("alice")[0]
	if want := "Approve 500 EUR to ACME GmbH? Code: " + msg.OTP; msg.Text != want {
		t.Errorf("SMS text = %q, want %q", msg.Text, want)
	}
	if fi, _ := s.Sim.Flow(msg.FlowID); fi.Prompt != "login" || fi.Template == nil || fi.Template.Name != "transaction" {
		t.Errorf("flow = %+v, want prompt=login and template transaction", fi)
	}
	if n := len(up.all()); n != 0 {
		t.Fatalf("upstream got %d requests before the browser came back", n)
	}

	// The browser's GET of the original URL gets the held POST's answer.
	r = b.follow(r)
	// What is forwarded is stepgate's canonical encoding of what it parsed
	// (docs/design.md §14.2): a space is %20, not +.
	canonical := strings.ReplaceAll(transfer.Encode(), "+", "%20")
	if r.StatusCode != http.StatusOK || r.Body != "upstream did POST /payments/transfer with "+canonical {
		t.Fatalf("after approval: %d %q", r.StatusCode, r.Body)
	}
	got := up.all()
	if len(got) != 1 || got[0].Method != "POST" || got[0].Body != canonical ||
		got[0].ContentType != "application/x-www-form-urlencoded" || len(got[0].Approval) != 64 {
		t.Fatalf("upstream got %+v, want exactly the approved POST once with its digest", got)
	}
	if !strings.Contains(r.Header.Get("Cache-Control")+strings.Join(r.Header.Values("Set-Cookie"), ";"), "stepgate-approved=;") {
		t.Errorf("the approved-request cookie was not cleared: %v", r.Header.Values("Set-Cookie"))
	}

	// Reload, Back: plain GETs now; the POST is never sent again.
	for range 3 {
		b.get("/payments/transfer")
	}
	if n := up.count("POST", "/payments/transfer"); n != 1 {
		t.Fatalf("the approved POST reached the upstream %d times", n)
	}
	// Submitting the same form again is a new action: a new approval.
	r = b.send("/payments/transfer", transfer)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/.stepgate/challenge" {
		t.Fatalf("re-submit: got %d, want a fresh approval", r.StatusCode)
	}
	if n := up.count("POST", "/payments/transfer"); n != 1 {
		t.Fatalf("a re-submitted approved request was forwarded (%d)", n)
	}
	if got := promCounter(t, s.Admin, "stepgate_approvals_total", lbl("event", "forwarded")); got != 1 {
		t.Errorf("approvals forwarded = %v, want 1", got)
	}
	if got := len(s.Logs.Events("approval.approved")); got != 1 {
		t.Errorf("approval.approved events = %d, want 1", got)
	}
	if strings.Contains(s.Logs.String(), "ACME") {
		t.Error("a value of the held request reached the logs")
	}
}

func TestApprovalPageEscapesAndCutsWhatTheRequestSays(t *testing.T) {
	s, _ := newApproveStack(t)
	b := s.browser("alice")
	evil := url.Values{"amount": {strings.Repeat("9", 300)}, "currency": {"<b>EUR</b>"}, "payee": {"ACME GmbH"}}
	r := b.follow(b.send("/payments/transfer", evil))
	if strings.Contains(r.Body, "<b>EUR</b>") || !strings.Contains(r.Body, "&lt;b&gt;EUR&lt;/b&gt;") {
		t.Errorf("markup from the request reached the page unescaped")
	}
	if !strings.Contains(r.Body, "<dd>"+strings.Repeat("9", 200)+"…</dd>") || strings.Contains(r.Body, strings.Repeat("9", 201)) {
		t.Errorf("a 300-character value was not cut at 200")
	}
	// A character a person cannot see is refused before anything is held
	// or sent to PingOne: the page would show ACME, the app store EMCA.
	evil["payee"] = []string{"ACME\u202eHmbG"}
	r = b.send("/payments/transfer", evil)
	if r.StatusCode != http.StatusBadRequest || strings.Contains(r.Body, "\u202e") || !strings.Contains(r.Body, "cannot be approved") {
		t.Errorf("a bidirectional override: %d %s", r.StatusCode, r.Body)
	}
	if n := len(s.Sim.Inbox("alice")); n != 0 {
		t.Errorf("PingOne was asked %d times about a refused request", n)
	}
}

func TestApprovalByPushNamesTheAmountInThePush(t *testing.T) {
	s, up := newApproveStack(t)
	b := s.browser("bob")
	r := b.follow(b.send("/payments/transfer", transfer))
	r = b.follow(b.post("action", "start"))
	if !strings.Contains(r.Body, `data-state="push"`) {
		t.Fatalf("not waiting for a push: %s", r.Body)
	}
	msg := s.Sim.Inbox("bob")[0]
	if !strings.Contains(msg.Text, "Approve 500 EUR?") || !strings.Contains(msg.Text, "To ACME GmbH.") {
		t.Errorf("push text = %q, want the amount and payee", msg.Text)
	}
	if err := s.Sim.Push(msg.FlowID, pingonesim.PushApprove); err != nil {
		t.Fatal(err)
	}
	r = b.get("/.stepgate/challenge")
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/payments/transfer" {
		t.Fatalf("after push: %d to %q", r.StatusCode, r.Header.Get("Location"))
	}
	b.follow(r)
	if n := up.count("POST", "/payments/transfer"); n != 1 {
		t.Fatalf("forwarded %d times, want 1", n)
	}
}

func TestApprovalForAnAPIClientPassesOneIdenticalRetryOnly(t *testing.T) {
	s, up := newApproveStack(t)
	body := `{"amount":"250.00","currency":"EUR","payee":{"name":"ACME GmbH","iban":"DE00"}}`
	call := func(user, method, path, ctype, body string) *http.Response {
		req, _ := http.NewRequest(method, s.Proxy+path, strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("X-Forwarded-User", user)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	req, _ := http.NewRequest("POST", s.Proxy+"/api/payments?x=1", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-User", "alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var answer struct {
		ApprovalURL string `json:"approval_url"`
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_ = jsonUnmarshal(string(raw), &answer)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(raw), `"error":"approval_required"`) ||
		!strings.HasPrefix(answer.ApprovalURL, "/.stepgate/challenge?approval=") ||
		!strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="insufficient_user_authentication"`) {
		t.Fatalf("API call: %d %s %v", resp.StatusCode, raw, resp.Header)
	}

	// Bob cannot approve (or read) alice's request.
	bob := s.browser("bob")
	if r := bob.get(answer.ApprovalURL); r.StatusCode != http.StatusForbidden || strings.Contains(r.Body, "ACME") {
		t.Fatalf("bob opening alice's approval: %d %s", r.StatusCode, r.Body)
	}

	alice := s.browser("alice")
	r := alice.follow(alice.get(answer.ApprovalURL))
	if !strings.Contains(r.Body, "<dd>250.00</dd>") || !strings.Contains(r.Body, "<dd>ACME GmbH</dd>") {
		t.Fatalf("approval page: %s", r.Body)
	}
	r = alice.passChallenge(s, r)
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("OTP: %d %s", r.StatusCode, r.Body)
	}
	if r = alice.follow(r); !strings.Contains(r.Body, "Approved") {
		t.Fatalf("after approval: %s", r.Body)
	}

	// Nothing but the identical request passes, and it passes once.
	others := []struct{ name, user, method, path, ctype, body string }{
		{"another amount", "alice", "POST", "/api/payments?x=1", "application/json", strings.Replace(body, "250.00", "2500.00", 1)},
		{"another payee", "alice", "POST", "/api/payments?x=1", "application/json", strings.Replace(body, "ACME", "EVIL", 1)},
		{"another query", "alice", "POST", "/api/payments?x=2", "application/json", body},
		{"no query", "alice", "POST", "/api/payments", "application/json", body},
		{"another content type", "alice", "POST", "/api/payments?x=1", "text/plain", body},
		{"another user", "bob", "POST", "/api/payments?x=1", "application/json", body},
	}
	for _, o := range others {
		// 401: held anew; 400: refused (a JSON value shown from a body
		// that is not application/json).
		if resp := call(o.user, o.method, o.path, o.ctype, o.body); resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: got %d, want 401 or 400 (the approval must not pass it)", o.name, resp.StatusCode)
		}
	}
	if resp := call("alice", "POST", "/api/payments?x=1", "application/json", body); resp.StatusCode != http.StatusOK {
		t.Fatalf("identical retry: got %d, want 200", resp.StatusCode)
	}
	if resp := call("alice", "POST", "/api/payments?x=1", "application/json", body); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("second identical retry: got %d, want 401 (single use)", resp.StatusCode)
	}
	if n := up.count("POST", "/api/payments?x=1"); n != 1 {
		t.Fatalf("upstream got the approved request %d times", n)
	}
}

func TestApprovalRefusesWhatMustNeverReachPingOne(t *testing.T) {
	s, up := newApproveStack(t, withEnv("STEPGATE_APPROVE_MAX_BODY", "1024"))
	post := func(h http.Header, body string) *http.Response {
		req, _ := http.NewRequest("POST", s.Proxy+"/payments/transfer", strings.NewReader(body))
		req.Header = h
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-User", "alice")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	before := s.Sim.Requests()
	tests := []struct {
		name string
		h    http.Header
		body string
		want int
	}{
		{"a cross-site form post (Sec-Fetch-Site)", http.Header{"Sec-Fetch-Site": {"cross-site"}, "Accept": {"text/html"}}, transfer.Encode(), http.StatusForbidden},
		{"a post from a foreign Origin", http.Header{"Origin": {"https://evil.example"}, "Accept": {"text/html"}}, transfer.Encode(), http.StatusForbidden},
		{"a body over STEPGATE_APPROVE_MAX_BODY", http.Header{"Accept": {"text/html"}}, "amount=" + strings.Repeat("9", 2000), http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		if resp := post(tt.h, tt.body); resp.StatusCode != tt.want {
			t.Errorf("%s: got %d, want %d", tt.name, resp.StatusCode, tt.want)
		}
	}
	if n := s.Sim.Requests() - before; n != 0 {
		t.Errorf("refused requests made %d calls to PingOne", n)
	}
	if n := len(up.all()); n != 0 {
		t.Errorf("refused requests reached the upstream %d times", n)
	}
	if got := promCounter(t, s.Admin, "stepgate_approvals_total", lbl("event", "refused")); got != 3 {
		t.Errorf("approvals refused = %v, want 3", got)
	}
}

func TestAStepUpNeverStandsInForAnApproval(t *testing.T) {
	s, up := newApproveStack(t)
	b := s.stepUpAlice("/admin/")
	r := b.send("/payments/transfer", transfer)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/.stepgate/challenge" {
		t.Fatalf("stepped-up POST: got %d %q, want the approval page", r.StatusCode, r.Header.Get("Location"))
	}
	if n := up.count("POST", "/payments/transfer"); n != 0 {
		t.Fatal("a step-up cookie let an approve-rule request through")
	}
	// And an approval does not make a step-up: /admin/ still asks.
	b2 := s.browser("alice")
	r = b2.passChallenge(s, b2.send("/payments/transfer", transfer))
	b2.follow(r)
	if r := b2.get("/admin/"); r.StatusCode != http.StatusFound {
		t.Fatalf("after an approval, /admin/ answered %d, want 302 to the challenge", r.StatusCode)
	}
}

func TestAnExpiredApprovalSaysSoAndForwardsNothing(t *testing.T) {
	s, up := newApproveStack(t)
	b := s.browser("alice")
	r := b.follow(b.send("/payments/transfer", transfer))
	r = b.follow(b.post("action", "start"))
	r = b.follow(b.post("action", "select", "device", deviceIDs(r.Body)[0]))
	s.Clock.Advance(2*time.Minute + time.Second) // the rule's ttl
	r = b.post("action", "otp", "otp", s.latestOTP("alice"))
	if r.StatusCode != http.StatusSeeOther { // like every POST outcome: a reload must not re-submit
		t.Fatalf("late OTP: %d, want 303", r.StatusCode)
	}
	r = b.follow(r)
	if r.StatusCode != http.StatusGone || !strings.Contains(r.Body, "This approval has expired") {
		t.Fatalf("late OTP: %d %s", r.StatusCode, r.Body)
	}
	if r = b.get(r.Request.URL.RequestURI()); r.StatusCode != http.StatusGone {
		t.Errorf("reloading the expired page: %d, want the same page", r.StatusCode)
	}
	b.get("/payments/transfer")
	if n := up.count("POST", "/payments/transfer"); n != 0 {
		t.Fatal("an expired approval was forwarded")
	}
}

func TestABypassedCompletionNeverApproves(t *testing.T) {
	s, up := newApproveStack(t)
	b := s.browser("dave") // no device: the demo policy bypasses MFA
	r := b.follow(b.send("/payments/transfer", transfer))
	r = b.post("action", "start")
	for r.StatusCode == http.StatusSeeOther {
		r = b.follow(r)
	}
	if r.StatusCode != http.StatusForbidden || !strings.Contains(r.Body, "No MFA method") {
		t.Fatalf("bypass: %d %s", r.StatusCode, r.Body)
	}
	b.get("/payments/transfer")
	if n := up.count("POST", "/payments/transfer"); n != 0 {
		t.Fatal("a bypass approved a request")
	}
}

func TestAnApprovedRequestIsForwardedOnceWhenTabsRace(t *testing.T) {
	s, up := newApproveStack(t)
	b := s.browser("alice")
	r := b.passChallenge(s, b.send("/payments/transfer", transfer))
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("OTP: %d", r.StatusCode)
	}
	// Every tab holds the same cookie and fetches the original URL at once.
	u, _ := url.Parse(s.Proxy)
	cookies := b.Client.Jar.Cookies(u)
	var wg sync.WaitGroup
	var posts atomic.Int32
	for range 8 {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", s.Proxy+"/payments/transfer", nil)
			req.Header.Set("X-Forwarded-User", "alice")
			for _, c := range cookies {
				req.AddCookie(c)
			}
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.HasPrefix(string(body), "upstream did POST") {
				posts.Add(1)
			}
		})
	}
	wg.Wait()
	if n := up.count("POST", "/payments/transfer"); n != 1 || posts.Load() != 1 {
		t.Fatalf("forwarded %d times (%d tabs saw it), want once", n, posts.Load())
	}
}

func TestADeleteApprovalShowsThePathAndForwardsTheDelete(t *testing.T) {
	s, up := newApproveStack(t)
	b := s.browser("alice")
	req, _ := http.NewRequest("DELETE", s.Proxy+"/users/42", nil)
	req.Header.Set("Origin", s.Proxy)
	req.Header.Set("Accept", "application/json")
	r := b.do(req)
	var answer struct {
		ApprovalURL string `json:"approval_url"`
	}
	_ = jsonUnmarshal(r.Body, &answer)
	if r.StatusCode != http.StatusUnauthorized || answer.ApprovalURL == "" {
		t.Fatalf("DELETE: %d %s", r.StatusCode, r.Body)
	}
	page := b.follow(b.get(answer.ApprovalURL))
	if !strings.Contains(page.Body, `<span class="approval-method">DELETE</span>`) || !strings.Contains(page.Body, "<dt>User</dt><dd>/users/42</dd>") {
		t.Fatalf("approval page: %s", page.Body)
	}
	b.passChallenge(s, page)
	req, _ = http.NewRequest("DELETE", s.Proxy+"/users/42", nil)
	req.Header.Set("Origin", s.Proxy)
	req.Header.Set("Accept", "application/json")
	if r := b.do(req); r.StatusCode != http.StatusOK {
		t.Fatalf("retry after approval: %d %s", r.StatusCode, r.Body)
	}
	if n := up.count("DELETE", "/users/42"); n != 1 {
		t.Fatalf("DELETE forwarded %d times", n)
	}
}

func TestApprovalOfAStalledOrBrokenBodyIsTheClientsError(t *testing.T) {
	s, up := newApproveStack(t, withEnv("STEPGATE_BODY_IDLE_TIMEOUT", "300ms"))
	before := s.Sim.Requests()
	tests := []struct {
		name, raw string
		want      int
	}{
		{"a body that stalls", "POST /payments/transfer HTTP/1.1\r\nHost: x\r\nX-Forwarded-User: alice\r\n" +
			"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\namount=5", http.StatusRequestTimeout},
		{"a broken chunked body", "POST /payments/transfer HTTP/1.1\r\nHost: x\r\nX-Forwarded-User: alice\r\n" +
			"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\namount=5\r\n0\r\n\r\n", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, br := rawDial(t, s.Proxy, tt.raw)
			resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("got %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
	if n := s.Sim.Requests() - before; n != 0 || len(up.all()) != 0 {
		t.Errorf("bad bodies led to %d PingOne calls and %d upstream requests", n, len(up.all()))
	}
}

// flowCookie is the browser's current flow cookie (a copy an attacker or a
// second tab could keep).
func flowCookie(t *testing.T, b *browser) *http.Cookie {
	t.Helper()
	u, _ := url.Parse(b.base)
	for _, c := range b.Client.Jar.Cookies(u) {
		if c.Name == "stepgate-flow" {
			return c
		}
	}
	t.Fatal("no flow cookie")
	return nil
}

const apiPaymentBody = `{"amount":"250.00","currency":"EUR","payee":{"name":"ACME GmbH"}}`

// payByAPI posts the JSON payment as alice's API client would and returns
// the status and, when held, the approval URL to hand to her.
func payByAPI(t *testing.T, proxy string) (status int, approvalURL string) {
	t.Helper()
	req, _ := http.NewRequest("POST", proxy+"/api/payments", strings.NewReader(apiPaymentBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-User", "alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var a struct {
		ApprovalURL string `json:"approval_url"`
	}
	_ = jsonUnmarshal(string(raw), &a)
	return resp.StatusCode, a.ApprovalURL
}

func TestACompletedApprovalFlowNeverApprovesTwice(t *testing.T) {
	s, up := newApproveStack(t)
	call := func() int { code, _ := payByAPI(t, s.Proxy); return code }
	_, approvalURL := payByAPI(t, s.Proxy)
	if approvalURL == "" {
		t.Fatal("the first call was not held")
	}
	alice := s.browser("alice")
	r := alice.follow(alice.get(approvalURL))
	r = alice.follow(alice.post("action", "start"))
	alice.follow(alice.post("action", "select", "device", deviceIDs(r.Body)[0]))
	kept := flowCookie(t, alice) // the flow cookie just before the completion
	if r := alice.post("action", "otp", "otp", s.latestOTP("alice")); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("OTP: %d", r.StatusCode)
	}
	if call() != http.StatusOK {
		t.Fatal("the approved retry did not pass")
	}
	// The kept flow cookie reads PingOne's completed flow again (same ID
	// token, within its 5 minutes): it must not approve the request again.
	replayer := s.browser("alice")
	u, _ := url.Parse(s.Proxy)
	replayer.Client.Jar.SetCookies(u, []*http.Cookie{kept})
	replayer.get("/.stepgate/challenge")
	if got := call(); got != http.StatusUnauthorized {
		t.Fatalf("after replaying the completed flow the request answered %d, want 401 (approved once only)", got)
	}
	if n := up.count("POST", "/api/payments"); n != 1 {
		t.Fatalf("the request was forwarded %d times", n)
	}
}

func TestACancelledApprovalIsDroppedAndNeverSent(t *testing.T) {
	s, up := newApproveStack(t)
	b := s.browser("alice")
	r := b.follow(b.send("/payments/transfer", transfer))
	r = b.follow(b.post("action", "start"))
	b.follow(b.post("action", "select", "device", deviceIDs(r.Body)[0]))
	if r := b.post("action", "cancel"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("cancel: %d", r.StatusCode)
	}
	// The user then steps up for an admin page: that flow is a step-up, and
	// it must not send the payment.
	b.stepUp(t, s, "/admin/")
	if n := up.count("POST", "/payments/transfer"); n != 0 {
		t.Fatalf("a cancelled payment was forwarded %d times", n)
	}
	if ev := s.Logs.Events("approval.cancelled"); len(ev) != 1 {
		t.Errorf("approval.cancelled events = %d, want 1", len(ev))
	}
}

func TestAStepUpForAnotherPageSupersedesAPendingApproval(t *testing.T) {
	s, up := newApproveStack(t)
	b := s.browser("alice")
	b.follow(b.send("/payments/transfer", transfer)) // approval page, not started
	b.stepUp(t, s, "/admin/")
	b.get("/payments/transfer")
	if n := up.count("POST", "/payments/transfer"); n != 0 {
		t.Fatalf("a step-up sent the pending payment (%d)", n)
	}
}

// stepUp completes a step-up for path by SMS from a fresh redirect.
func (b *browser) stepUp(t *testing.T, s *stack, path string) {
	t.Helper()
	r := b.get(path)
	if r.StatusCode != http.StatusFound {
		t.Fatalf("GET %s: %d, want 302", path, r.StatusCode)
	}
	r = b.follow(r)
	if strings.Contains(r.Body, `id="approval"`) {
		t.Fatalf("the step-up page shows an approval: %s", r.Body)
	}
	r = b.passChallenge(s, r)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != path {
		t.Fatalf("OTP: %d to %q, want 303 to %s", r.StatusCode, r.Header.Get("Location"), path)
	}
	if r = b.follow(r); r.StatusCode != http.StatusOK {
		t.Fatalf("after step-up: %d", r.StatusCode)
	}
}

func TestAmbiguousValuesAreRefusedBeforePingOne(t *testing.T) {
	s, up := newApproveStack(t)
	before := s.Sim.Requests()
	post := func(path, ctype, body string, h map[string]string) int {
		req, _ := http.NewRequest("POST", s.Proxy+path, strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("X-Forwarded-User", "alice")
		req.Header.Set("Accept", "application/json")
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	form := "application/x-www-form-urlencoded"
	tests := []struct {
		name, path, ctype, body string
		h                       map[string]string
	}{
		{"a repeated form field", "/payments/transfer", form, "amount=1&currency=EUR&payee=A&amount=1000", nil},
		{"a form field repeated in another case", "/payments/transfer", form, "amount=1&currency=EUR&payee=A&Amount=1000", nil},
		{"JSON keys equal ignoring case", "/api/payments", "application/json", `{"amount":"1","Amount":"1000","payee":{"name":"A"}}`, nil},
		{"JSON keys repeated in a nested object", "/api/payments", "application/json", `{"amount":"1","payee":{"name":"A","name":"B"}}`, nil},
		{"a compressed body", "/payments/transfer", form, "amount=1", map[string]string{"Content-Encoding": "gzip"}},
	}
	for _, tt := range tests {
		if got := post(tt.path, tt.ctype, tt.body, tt.h); got != http.StatusBadRequest {
			t.Errorf("%s: got %d, want 400", tt.name, got)
		}
	}
	if n := s.Sim.Requests() - before; n != 0 || len(up.all()) != 0 {
		t.Errorf("ambiguous requests made %d PingOne calls and %d upstream requests", n, len(up.all()))
	}
	// A field the rule does not name may repeat (checkboxes do).
	if got := post("/payments/transfer", form, "amount=1&currency=EUR&payee=A&tag=x&tag=y", nil); got != http.StatusUnauthorized {
		t.Errorf("an unnamed repeated field: got %d, want 401 (held)", got)
	}
}

func TestTheApprovedRequestIsReplayedOnlyOnTheBrowsersOwnReturn(t *testing.T) {
	s, up := newApproveStack(t)
	b := s.browser("alice")
	if r := b.passChallenge(s, b.send("/payments/transfer", transfer)); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("OTP: %d", r.StatusCode)
	}
	for _, h := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, // a link on another site
		{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "no-cors"}, // an image or a prefetch
	} {
		req, _ := http.NewRequest("GET", s.Proxy+"/payments/transfer", nil)
		for k, v := range h {
			req.Header.Set(k, v)
		}
		b.do(req)
	}
	req, _ := http.NewRequest("HEAD", s.Proxy+"/payments/transfer", nil)
	b.do(req)
	b.get("/payments/transfer?x=1") // another query
	if n := up.count("POST", "/payments/transfer"); n != 0 {
		t.Fatalf("a GET that is not the browser's own return replayed the payment (%d)", n)
	}
	req, _ = http.NewRequest("GET", s.Proxy+"/payments/transfer", nil)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	if r := b.do(req); !strings.HasPrefix(r.Body, "upstream did POST") || up.count("POST", "/payments/transfer") != 1 {
		t.Fatalf("the browser's return did not get the payment's answer: %d %q", r.StatusCode, r.Body)
	}
}

func TestOneUserCannotHoldWithoutBound(t *testing.T) {
	s, _ := newApproveStack(t, withEnv("STEPGATE_LIMIT_STARTS_PER_USER", "2")) // holds: 4 per window
	codes := []int{}
	for i := range 6 {
		req, _ := http.NewRequest("POST", s.Proxy+"/payments/transfer", strings.NewReader("amount="+strconv.Itoa(i)+"&currency=EUR&payee=A"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-User", "mallory")
		req.Header.Set("Accept", "application/json")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	if want := []int{401, 401, 401, 401, 429, 429}; !slices.Equal(codes, want) {
		t.Fatalf("answers %v, want %v", codes, want)
	}
}

func TestALinkWithAForeignOrStaleApprovalLeavesTheFlowInProgressAlone(t *testing.T) {
	s, _ := newApproveStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	b.follow(b.post("action", "start"))
	before := flowCookie(t, b).Value
	for _, ref := range []string{"garbage", "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} {
		if r := b.get("/.stepgate/challenge?approval=" + ref); r.StatusCode != http.StatusGone {
			t.Errorf("approval=%s: %d, want 410", ref, r.StatusCode)
		}
	}
	if after := flowCookie(t, b).Value; after != before {
		t.Error("a link with a bad approval reference changed the flow in progress")
	}
}

// TestARevocationEndsTheUsersHeldRequests: a revocation (here POST /revoke;
// a PingOne webhook or a shared signal takes the same path) ends the
// user's pending approvals as well as their step-ups: a payment held before
// it is neither approved nor forwarded, even when the user then passes the
// challenge.
func TestARevocationEndsTheUsersHeldRequests(t *testing.T) {
	s, up := newApproveStack(t, withEnv("STEPGATE_ADMIN_TOKEN", testAdminToken))
	b := s.browser("alice")
	r := b.follow(b.send("/payments/transfer", transfer))
	if !strings.Contains(r.Body, "Send a payment") {
		t.Fatalf("not held: %d %s", r.StatusCode, r.Body)
	}
	s.Clock.Advance(2 * time.Second) // the revocation comes after the hold
	if code, body := revoke(t, s, testAdminToken, `{"user":"alice"}`); code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, body)
	}
	s.Clock.Advance(2 * time.Second)
	r = b.passChallenge(s, r)
	for i := 0; i < 3 && (r.StatusCode == http.StatusSeeOther || r.StatusCode == http.StatusFound); i++ {
		r = b.follow(r)
	}
	if r.StatusCode != http.StatusGone || !strings.Contains(r.Body, "has expired") {
		t.Errorf("after the challenge: %d, want the 410 expired page: %s", r.StatusCode, r.Body)
	}
	if n := up.count("POST", "/payments/transfer"); n != 0 {
		t.Fatalf("a request held before its user was revoked reached the upstream %d times", n)
	}
	if got := len(s.Logs.Events("approval.approved")); got != 0 {
		t.Errorf("approval.approved events = %d, want 0", got)
	}
	// A new request after the revocation is held and approved as usual.
	r = b.follow(b.send("/payments/transfer", transfer))
	b.follow(b.passChallenge(s, r))
	if n := up.count("POST", "/payments/transfer"); n != 1 {
		t.Fatalf("a payment held after the revocation was forwarded %d times, want 1", n)
	}
}
