package main

// Approve rules in a real Chromium (docs/design.md §14): the payment form of
// the demo app, held, shown on the challenge page, approved by SMS code
// (with and without JavaScript) or by a security key, and forwarded once.

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

// postsTo counts the POSTs the upstream received at uri.
func postsTo(s *stack, uri string) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Method == "POST" && r.RequestURI == uri {
			n++
		}
	}
	return n
}

// sendPayment submits the demo app's payment form and checks the approval
// page that follows says what is being approved.
func (tb *browserTab) sendPayment() {
	tb.t.Helper()
	tb.navigate("/payments/")
	tb.click(`form[action="/payments/transfer"] button[type="submit"]`)
	tb.state("start")
	got := tb.text("#approval")
	for _, want := range []string{"POST", "/payments/transfer", "Amount", "500", "Currency", "EUR", "Payee", "ACME GmbH"} {
		if !strings.Contains(got, want) {
			tb.t.Errorf("approval summary %q lacks %q", got, want)
		}
	}
	if title := evalJS[string](tb, "document.title"); !strings.HasPrefix(title, "Send a payment") {
		tb.t.Errorf("title %q is not the rule's title", title)
	}
	if got, want := tb.text("#approval-message"), "Approve 500 EUR to ACME GmbH?"; got != want {
		tb.t.Errorf("the page's sentence is %q, want the SMS's %q", got, want)
	}
	if q := evalJS[string](tb, "location.search"); q != "" {
		tb.t.Errorf("the approval page URL keeps a query %q (the reference must not stay in history)", q)
	}
	if n := postsTo(tb.s, "/payments/transfer"); n != 0 {
		tb.t.Fatalf("the payment reached the upstream %d times before approval", n)
	}
}

// assertPaid checks the browser ended on the upstream's answer to the held
// POST, at the original URL, and that a reload does not send it again.
func (tb *browserTab) assertPaid() {
	tb.t.Helper()
	tb.waitPath("/payments/transfer", 10*time.Second)
	if got := tb.text("#done"); !strings.Contains(got, "500 EUR to ACME GmbH") {
		tb.t.Errorf("after approval the page says %q", got)
	}
	tb.call(chromedp.Reload())
	tb.waitPath("/payments/transfer", 10*time.Second)
	if n := postsTo(tb.s, "/payments/transfer"); n != 1 {
		tb.t.Errorf("the approved payment reached the upstream %d times, want once", n)
	}
}

func TestApprovalInChromium(t *testing.T) {
	browser := startChromium(t)
	newApprovalStack := func(t *testing.T) *stack {
		return newStack(t, withUpstream(demoActions(demoApp())), withEnv("STEPGATE_RULES", demoRules))
	}

	for _, js := range []bool{true, false} {
		name := "a payment approved by SMS code is shown, named in the SMS and sent once"
		if !js {
			name += " (JavaScript off)"
		}
		t.Run(name, func(t *testing.T) {
			s := newApprovalStack(t)
			tb := openTab(t, browser, s, "alice")
			if !js {
				tb.scriptsOff()
				tb.name += "-nojs"
			}
			tb.sendPayment()
			tb.screenshot("approve-start")
			tb.click(`button[value="start"]`)
			tb.state("devices")
			tb.click(`main[data-state="devices"] button[name="device"][value="` + pingonesim.DemoAliceSMSID + `"]`)
			tb.state("otp")
			if got := tb.text("#approval"); !strings.Contains(got, "ACME GmbH") {
				t.Errorf("the OTP page no longer says what is approved: %q", got)
			}
			tb.screenshot("approve-otp")
			msg := s.Sim.Inbox("alice")[0]
			if page := tb.text("#approval-message"); !strings.HasPrefix(msg.Text, page+" ") {
				t.Errorf("the SMS says %q, want the page's sentence %q", msg.Text, page)
			}
			tb.typeInto("#otp", msg.OTP)
			tb.submit(chromedp.KeyEvent(kb.Enter))
			tb.assertPaid()
			tb.screenshot("approve-done")
		})
	}

	t.Run("a payment approved with a security key is sent once", func(t *testing.T) {
		s := newApprovalStack(t)
		tb := openTab(t, browser, s, "carol")
		tb.plugInSecurityKey(true)
		tb.sendPayment()
		tb.click(`button[value="start"]`)
		tb.state("devices")
		tb.click(`main[data-state="devices"] button[name="device"][value="` + pingonesim.DemoCarolFIDO2ID + `"]`)
		tb.state("assertion")
		if got := tb.text("#approval"); !strings.Contains(got, "ACME GmbH") {
			t.Errorf("the security-key page does not say what is approved (it is the only place): %q", got)
		}
		tb.click("#assertion-button")
		tb.assertPaid()
	})
}
