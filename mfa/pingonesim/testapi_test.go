package pingonesim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestSimInboxJSON(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	id, st := aliceOTP(t, h)
	h.clock.Advance(time.Second)
	h.post(id, st, "device.select", selectDevice(DemoAliceEmailID))
	for _, user := range []string{"alice", DemoAliceID} {
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/_sim/inbox?user="+user, nil)
		r := h.do(req)
		var msgs []map[string]any
		if err := json.Unmarshal([]byte(r.raw), &msgs); err != nil || len(msgs) != 2 {
			t.Fatalf("inbox for %s = %s (%v)", user, r.raw, err)
		}
		if msgs[0]["type"] != "EMAIL" || msgs[1]["type"] != "SMS" {
			t.Errorf("inbox not newest first: %s", r.raw)
		}
		for _, k := range []string{"device_id", "type", "otp", "flow_id", "user", "sent_at"} {
			if _, ok := msgs[0][k]; !ok {
				t.Errorf("message lacks %q: %v", k, msgs[0])
			}
		}
		if msgs[0]["sent_at"] != "2026-03-01T10:00:01Z" || msgs[0]["user"] != "alice" || msgs[0]["flow_id"] != id {
			t.Errorf("message = %v", msgs[0])
		}
	}
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/_sim/inbox?user=nobody", nil)
	if r := h.do(req); strings.TrimSpace(r.raw) != "[]" {
		t.Errorf("unknown user's inbox = %s, want []", r.raw)
	}
}

func TestSimInboxPageListsMessagesAndPushes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	aliceOTP(t, h)
	r, st := h.start("bob", nil)
	flowID := str(r.body, "id")
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/_sim/inbox/page", nil)
	page := h.do(req)
	otp := h.sim.Inbox("alice")[0].OTP
	for _, want := range []string{otp, "/_sim/push/" + flowID + "/approve", "/_sim/push/" + flowID + "/deny", "/_sim/push/" + flowID + "/timeout",
		// carol's authenticator app shows its current code.
		h.sim.TOTP(DemoCarolTOTPID), `<time datetime="`} {
		if !strings.Contains(page.raw, want) {
			t.Errorf("inbox page lacks %q", want)
		}
	}
	// While a push waits, the page does not refresh the Approve button away
	// from under the pointer.
	if strings.Contains(page.raw, `http-equiv="refresh"`) {
		t.Error("the inbox page refreshes itself while a push is pending")
	}
	if strings.Contains(page.raw, "<script") || strings.Contains(page.raw, "http://") && strings.Contains(page.raw, "src=") {
		t.Error("inbox page loads scripts or external assets")
	}
	if ct := page.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type = %q", ct)
	}

	// The Approve button is a plain form post that redirects back to the page.
	noRedirect := *h.srv.Client()
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, err := noRedirect.PostForm(h.srv.URL+"/_sim/push/"+flowID+"/approve", url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/_sim/inbox/page" {
		t.Errorf("form approve = %d Location %q, want 303 to the page", res.StatusCode, res.Header.Get("Location"))
	}
	if got := str(h.getFlow(flowID, st).body, "status"); got != "COMPLETED" {
		t.Errorf("after the form approve: %q", got)
	}
	// Nothing pending: it refreshes again, to show what arrives.
	req, _ = http.NewRequest(http.MethodGet, h.srv.URL+"/_sim/inbox/page", nil)
	if page := h.do(req); !strings.Contains(page.raw, `http-equiv="refresh" content="3"`) {
		t.Error("the inbox page does not refresh when no push is pending")
	}
	// A second answer is a conflict, not a silent success.
	req, _ = http.NewRequest(http.MethodPost, h.srv.URL+"/_sim/push/"+flowID+"/deny", nil)
	if r := h.do(req); r.status != http.StatusConflict {
		t.Errorf("second answer = %d, want 409", r.status)
	}
}

func TestSimFaultsEndpoint(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	post := func(body string) resp {
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/_sim/faults", strings.NewReader(body))
		return h.do(req)
	}
	jwksStatus := func() (int, string) {
		req, _ := http.NewRequest(http.MethodGet, h.env()+"/as/jwks", nil)
		r := h.do(req)
		return r.status, r.header.Get("Retry-After")
	}
	if r := post(`{"op":"jwks","kind":"rate_limit","retry_after":4}`); r.status != 200 {
		t.Fatalf("set fault = %d %s", r.status, r.raw)
	}
	if st, ra := jwksStatus(); st != 429 || ra != "4" {
		t.Errorf("jwks = %d Retry-After %q, want 429 / 4", st, ra)
	}
	if r := post(`{"clear":true}`); r.status != 200 {
		t.Fatalf("clear = %d", r.status)
	}
	if st, _ := jwksStatus(); st != 200 {
		t.Errorf("after clear jwks = %d", st)
	}
	if r := post(`{"op":"jwks","kind":"latency","latency":"1ms"}`); r.status != 200 {
		t.Errorf("latency with a duration string = %d %s", r.status, r.raw)
	}
	for _, bad := range []string{`{"kind":"explode"}`, `{"kind":"latency","latency":"soon"}`, `{"op":"nope","kind":"drop"}`, `not json`} {
		if r := post(bad); r.status != 400 {
			t.Errorf("POST %s = %d, want 400", bad, r.status)
		}
	}
}

func TestSimClock(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r, st := h.start("alice", nil)
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/_sim/clock", strings.NewReader(`{"advance":"16m"}`))
	if c := h.do(req); c.status != 200 || str(c.body, "now") != "2026-03-01T10:16:00.000Z" {
		t.Fatalf("advance = %d %s", c.status, c.raw)
	}
	if got := h.getFlow(str(r.body, "id"), st).status; got != 404 {
		t.Errorf("flow after advancing 16m = %d, want 404", got)
	}

	realClock := httptestServer(t, New(Options{Tenant: DemoTenant(), SigningKey: testKey()}))
	req, _ = http.NewRequest(http.MethodPost, realClock+"/_sim/clock", strings.NewReader(`{"advance":"1m"}`))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusConflict {
		t.Errorf("clock on a real-time server = %d, want 409", res.StatusCode)
	}
}

func TestSimRootRedirectsToThePage(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := *h.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, err := c.Get(h.srv.URL + "/_sim/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/_sim/inbox/page" {
		t.Errorf("GET /_sim/ = %d %q", res.StatusCode, res.Header.Get("Location"))
	}
}
