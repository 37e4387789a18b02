package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
	"github.com/stepgate/stepgate/proxy/rules"
)

// startCommand runs `stepgate <args>` in-process until the test ends and
// returns what it printed once want appears on stderr.
func startCommand(t *testing.T, want string, args ...string) (stdout, stderr *syncBuffer) {
	t.Helper()
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, nil, stdout, stderr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%v returned %v", args, err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String()+stdout.String(), want) {
		select {
		case err := <-done:
			t.Fatalf("%v exited early: %v\n%s%s", args, err, stdout, stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v never printed %q:\n%s%s", args, want, stdout, stderr)
		}
		time.Sleep(10 * time.Millisecond) // the command's output is the event; poll it with a deadline
	}
	return stdout, stderr
}

func TestDemoModeStepsUpThroughTheStandInIdP(t *testing.T) {
	entry, inbox, _ := startDemo(t)

	jar, _ := cookiejar.New(nil)
	b := &browser{t: t, base: entry[1], Client: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if r := b.get("/"); r.StatusCode != http.StatusOK || !strings.Contains(r.Body, "X-Forwarded-User") {
		t.Fatalf("demo app home: %d", r.StatusCode)
	}
	r := b.follow(b.get("/admin/"))
	r = b.follow(b.post("action", "start"))
	ids := deviceIDs(r.Body)
	if len(ids) == 0 {
		t.Fatalf("alice is offered no device: %s", r.Body)
	}
	b.follow(b.post("action", "select", "device", ids[0]))
	resp, err := http.Get(inbox[1] + "/_sim/inbox?user=alice")
	if err != nil {
		t.Fatal(err)
	}
	var msgs []struct{ OTP string }
	err = json.NewDecoder(resp.Body).Decode(&msgs)
	resp.Body.Close()
	if err != nil || len(msgs) == 0 {
		t.Fatalf("inbox: %v %v", msgs, err)
	}
	if r := b.post("action", "otp", "otp", msgs[0].OTP); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("OTP: %d %s", r.StatusCode, r.Body)
	}
	r = b.get("/admin/")
	if r.StatusCode != http.StatusOK || !strings.Contains(r.Body, "X-Stepgate-User") || !strings.Contains(r.Body, `&#34;acr&#34;: &#34;MFA-Only&#34;`) {
		t.Fatalf("admin page after step-up: %d\n%s", r.StatusCode, r.Body)
	}

	// dave has no device: PingOne bypasses MFA and the demo must refuse it.
	dave := &browser{t: t, base: entry[1], Client: &http.Client{Jar: mustJar(t), Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	dave.Client.Jar.SetCookies(mustURL(t, entry[1]), []*http.Cookie{{Name: "demo_user", Value: "dave"}})
	dave.follow(dave.get("/admin/"))
	if r := dave.submit("action", "start"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("dave's bypass: %d, want 403", r.StatusCode)
	}
}

func TestSimulateModeServesTheDemoTenant(t *testing.T) {
	stdout, _ := startCommand(t, "inbox:", "simulate", "-addr", "127.0.0.1:0")
	base := regexp.MustCompile(`on (http://127\.0\.0\.1:\d+)`).FindStringSubmatch(stdout.String())
	if base == nil {
		t.Fatalf("simulate did not print its address:\n%s", stdout)
	}
	resp, err := http.Get(base[1] + "/6f1c2a4e-0d7b-4c1e-9a52-3b8f0e6d2c11/as/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Issuer string `json:"issuer"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || doc.Issuer != base[1]+"/6f1c2a4e-0d7b-4c1e-9a52-3b8f0e6d2c11/as" {
		t.Fatalf("discovery issuer %q (%v)", doc.Issuer, err)
	}
	// The simulator's clock runs with the wall clock (a stopped clock would
	// reject the gateway's tokens minutes after start), and /_sim/clock
	// still moves it.
	resp, err = http.Post(base[1]+"/_sim/clock", "application/json", strings.NewReader(`{"advance":"1m"}`))
	if err != nil {
		t.Fatal(err)
	}
	var clk struct{ Now time.Time }
	_ = json.NewDecoder(resp.Body).Decode(&clk)
	resp.Body.Close()
	if lead := clk.Now.Sub(time.Now()); resp.StatusCode != http.StatusOK || lead < 50*time.Second || lead > 70*time.Second {
		t.Fatalf("/_sim/clock: %d, clock leads the wall clock by %v, want about 1m", resp.StatusCode, lead)
	}
}

func mustJar(t *testing.T) http.CookieJar {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return jar
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// startDemo runs `stepgate demo` on free ports until the test ends, waits
// until it is ready, and returns the entry (stand-in IdP), inbox and admin
// base URLs it printed.
func startDemo(t *testing.T) (entry, inbox, admin []string) {
	t.Helper()
	_, stderr := startCommand(t, "Press Ctrl-C", "demo", "-idp-addr", "127.0.0.1:0", "-sim-addr", "127.0.0.1:0",
		"-app-addr", "127.0.0.1:0", "-proxy-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-log-level", "warn")
	out := stderr.String()
	entry = regexp.MustCompile(`open\s+(http://127\.0\.0\.1:\d+)/`).FindStringSubmatch(out)
	inbox = regexp.MustCompile(`inbox\s+(http://127\.0\.0\.1:\d+)/_sim/inbox/page`).FindStringSubmatch(out)
	admin = regexp.MustCompile(`metrics\s+(http://127\.0\.0\.1:\d+)/metrics`).FindStringSubmatch(out)
	if entry == nil || inbox == nil || admin == nil || !strings.Contains(out, "/payments/") {
		t.Fatalf("demo did not print its URLs:\n%s", out)
	}
	waitStatus(t, admin[1]+"/readyz", http.StatusOK, 10*time.Second)
	return entry, inbox, admin
}

func TestDemoPaymentIsApprovedWithTheAmountInTheSMS(t *testing.T) {
	entry, inbox, _ := startDemo(t)
	b := &browser{t: t, base: entry[1], Client: &http.Client{Jar: mustJar(t), Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if r := b.get("/payments/"); r.StatusCode != http.StatusOK || !strings.Contains(r.Body, `action="/payments/transfer"`) {
		t.Fatalf("payments page: %d %s", r.StatusCode, r.Body)
	}
	r := b.postForm("/payments/transfer", url.Values{"amount": {"500"}, "currency": {"EUR"}, "payee": {"ACME GmbH"}})
	r = b.follow(r)
	if !strings.Contains(r.Body, "<dt>Payee</dt><dd>ACME GmbH</dd>") {
		t.Fatalf("approval page: %s", r.Body)
	}
	r = b.follow(b.post("action", "start"))
	b.follow(b.post("action", "select", "device", deviceIDs(r.Body)[0]))
	resp, err := http.Get(inbox[1] + "/_sim/inbox?user=alice")
	if err != nil {
		t.Fatal(err)
	}
	var msgs []struct{ OTP, Text string }
	err = json.NewDecoder(resp.Body).Decode(&msgs)
	resp.Body.Close()
	if err != nil || len(msgs) == 0 || !strings.Contains(msgs[0].Text, "500 EUR to ACME GmbH") {
		t.Fatalf("inbox: %+v %v", msgs, err)
	}
	r = b.post("action", "otp", "otp", msgs[0].OTP)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/payments/transfer" {
		t.Fatalf("OTP: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	r = b.follow(r)
	if r.StatusCode != http.StatusOK || !strings.Contains(r.Body, "500 EUR to ACME GmbH, as alice") {
		t.Fatalf("after approval: %d %s", r.StatusCode, r.Body)
	}
}

// The demo's payment page says the sentence the demo tenant's SMS says: the
// rule's message is the template's text before the code.
func TestDemoPaymentPageSaysWhatTheSMSSays(t *testing.T) {
	set, err := rules.Parse("demo", demoRules, rules.Defaults{Action: rules.Allow})
	if err != nil {
		t.Fatal(err)
	}
	r := set.Match("POST", "/payments/transfer")
	sms := pingonesim.DemoTransactionTemplate()[pingonesim.DefaultVariant].SMS
	if r.Template != pingonesim.TemplateTransaction || r.Message == "" || !strings.HasPrefix(sms, r.Message+" Code: ") {
		t.Errorf("demo rule template %q message %q; the demo SMS reads %q", r.Template, r.Message, sms)
	}
}

func TestDemoAppSaysWhoSteppedUpAndOffersForgetOnlyThen(t *testing.T) {
	app := httptest.NewServer(demoApp())
	t.Cleanup(app.Close)
	get := func(h map[string]string) string {
		req, _ := http.NewRequest(http.MethodGet, app.URL+"/admin/", nil)
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := app.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	plain := get(nil)
	if strings.Contains(plain, "Forget the step-up") {
		t.Error("Forget the step-up is offered without a step-up")
	}
	up := get(map[string]string{"X-Stepgate-Id-Token": "a.e30.c", "X-Stepgate-User": "alice",
		"X-Stepgate-Amr": "otp", "X-Stepgate-Auth-Time": "1764067320"})
	if !strings.Contains(up, "Stepped up as alice via a one-time code at 10:42 UTC") || !strings.Contains(up, "Forget the step-up") {
		t.Errorf("stepped-up page lacks the line or the Forget button:\n%s", up)
	}
}
