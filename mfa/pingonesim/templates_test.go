package pingonesim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// withTemplate is a request JWT for user carrying pi.template.
func (h *harness) withTemplate(user string, tpl any) url.Values {
	return url.Values{"request": {h.token(map[string]any{"sub": user, "pi.template": tpl})}}
}

var demoVars = map[string]any{"sum": "99.50", "currency": "EUR", "recipient": "Bob's Bikes"}

func TestTemplatesRenderIntoEveryMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		user     string
		device   string // "" = the flow's first device is used as it is
		tpl      any    // nil = no pi.template
		wantText func(otp string) string
	}{
		{"an SMS without pi.template carries the normal MFA text with its code", "alice", DemoAliceSMSID, nil,
			func(otp string) string { return "Your stepgate verification code is " + otp + "." }},
		{"an SMS of a transaction shows the amount, the recipient and the code", "alice", DemoAliceSMSID,
			map[string]any{"name": "transaction", "variables": demoVars},
			func(otp string) string { return "Approve 99.50 EUR to Bob's Bikes? Code: " + otp }},
		{"an e-mail of a transaction has the subject, a blank line and the body", "alice", DemoAliceEmailID,
			map[string]any{"name": "transaction", "variables": demoVars},
			func(otp string) string {
				return "Approve 99.50 EUR to Bob's Bikes?\n\nHello alice, to approve 99.50 EUR to Bob's Bikes enter the code " + otp +
					". If you did not ask for this, do not enter it."
			}},
		{"a push of a transaction has its title and body", "bob", "",
			map[string]any{"name": "transaction", "variables": demoVars},
			func(string) string { return "Approve 99.50 EUR?\nTo Bob's Bikes. Deny if you did not ask for this." }},
		{"an unknown variant falls back to the default content", "alice", DemoAliceSMSID,
			map[string]any{"name": "transaction", "variant": "no-such-variant", "variables": demoVars},
			func(otp string) string { return "Approve 99.50 EUR to Bob's Bikes? Code: " + otp }},
		{"a missing variable stays visible as its placeholder", "alice", DemoAliceSMSID,
			map[string]any{"name": "transaction", "variables": map[string]any{"sum": "1", "currency": "EUR"}},
			func(otp string) string { return "Approve 1 EUR to ${recipient}? Code: " + otp }},
		{"a variable cannot pull in the code or override it", "alice", DemoAliceSMSID,
			map[string]any{"name": "transaction", "variables": map[string]any{"sum": "${otp}", "currency": "EUR", "recipient": "x", "otp": "000000"}},
			func(otp string) string { return "Approve ${otp} EUR to x? Code: " + otp }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, nil)
			var over url.Values
			if tt.tpl != nil {
				over = h.withTemplate(tt.user, tt.tpl)
			}
			r, st := h.start(tt.user, over)
			if tt.device != "" {
				h.post(str(r.body, "id"), st, "device.select", selectDevice(tt.device))
			}
			msgs := h.sim.Inbox(tt.user)
			if len(msgs) != 1 {
				t.Fatalf("inbox = %+v, want one message", msgs)
			}
			if want := tt.wantText(msgs[0].OTP); msgs[0].Text != want {
				t.Errorf("text = %q\nwant   %q", msgs[0].Text, want)
			}
		})
	}
}

func TestVariantsMatchCaseInsensitively(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(ten *Tenant) {
		tpl := DemoTransactionTemplate()
		tpl["Payments"] = TemplateContent{SMS: "Payment of ${sum}: ${otp}"}
		ten.Templates[TemplateTransaction] = tpl
	})
	r, st := h.start("alice", h.withTemplate("alice", map[string]any{"name": "transaction", "variant": "PAYMENTS", "variables": demoVars}))
	h.post(str(r.body, "id"), st, "device.select", selectDevice(DemoAliceSMSID))
	m := h.sim.Inbox("alice")[0]
	if want := "Payment of 99.50: " + m.OTP; m.Text != want {
		t.Errorf("text = %q, want %q", m.Text, want)
	}
}

func TestBadTemplatesAreRefusedAtAuthorize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		tpl        any
		wantTarget string
	}{
		{"an unknown template name", map[string]any{"name": "payment_approval"}, "pi.template.name"},
		{"pi.template that is not an object", "transaction", "pi.template"},
		{"a template without a name", map[string]any{"variables": demoVars}, "pi.template.name"},
		{"a variant over 100 characters", map[string]any{"name": "transaction", "variant": strings.Repeat("v", 101)}, "pi.template.variant"},
		{"a variable that is not a string", map[string]any{"name": "transaction", "variables": map[string]any{"sum": 12}}, "pi.template.variables.sum"},
		{"a variable longer than a whole message", map[string]any{"name": "transaction", "variables": map[string]any{"sum": strings.Repeat("9", 661)}}, "pi.template.variables.sum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, nil)
			r := h.authorize(h.authorizeParams("alice", h.withTemplate("alice", tt.tpl)))
			if r.status != http.StatusBadRequest || str(r.body, "code") != "INVALID_DATA" {
				t.Fatalf("status %d body %s, want 400 INVALID_DATA", r.status, r.raw)
			}
			if d := detail(r); d["target"] != tt.wantTarget || d["code"] != "INVALID_VALUE" {
				t.Errorf("detail = %v, want INVALID_VALUE at %s", d, tt.wantTarget)
			}
		})
	}
}

func TestInboxShowsTheText(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r, _ := h.start("bob", h.withTemplate("bob", map[string]any{"name": "transaction", "variables": demoVars}))
	info, _ := h.sim.Flow(str(r.body, "id"))
	if info.Template == nil || info.Template.Variables["sum"] != "99.50" {
		t.Errorf("FlowInfo.Template = %+v", info.Template)
	}
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/_sim/inbox?user=bob", nil)
	var msgs []map[string]any
	if err := json.Unmarshal([]byte(h.do(req).raw), &msgs); err != nil || len(msgs) != 1 {
		t.Fatalf("inbox: %v", err)
	}
	if msgs[0]["text"] != "Approve 99.50 EUR?\nTo Bob's Bikes. Deny if you did not ask for this." {
		t.Errorf("JSON text = %q", msgs[0]["text"])
	}
	req, _ = http.NewRequest(http.MethodGet, h.srv.URL+"/_sim/inbox/page", nil)
	page := h.do(req).raw
	// Once in the pending-push row, once in the message list; escaped.
	if n := strings.Count(page, "To Bob&#39;s Bikes. Deny if you did not ask for this."); n != 2 {
		t.Errorf("page shows the push text %d times, want 2:\n%s", n, page)
	}
}

// FuzzRender: any template text and variable value renders without panic,
// and a value's own placeholders are never expanded (a variable cannot pull
// in the code).
func FuzzRender(f *testing.F) {
	f.Add("Approve ${sum} to ${recipient}? Code: ${otp}", "${otp}")
	f.Add("${", "}")
	f.Add("${${otp}}", "x")
	f.Fuzz(func(t *testing.T, text, value string) {
		const code = "<CODE>"
		out := render(text, map[string]string{"otp": code}, map[string]string{"sum": value, "recipient": value})
		if !strings.Contains(text, "${otp}") && !strings.Contains(text+value, "<") && strings.Contains(out, code) {
			t.Errorf("render(%q, sum=%q) = %q shows the code", text, value, out)
		}
	})
}
