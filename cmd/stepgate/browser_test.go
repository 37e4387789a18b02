package main

// Real-browser end-to-end tests of the challenge page (issue 6): Debian's
// Chromium, driven over the DevTools protocol by chromedp, walks the page the
// way a person does — on a phone-sized screen, by keyboard, with and without
// JavaScript, with a virtual security key — against the PingOne simulator, a
// demo upstream and the real gateway, all on loopback.
//
// Every browserTab also watches for what a person would not see but must not happen:
// console errors, uncaught exceptions, CSP violations and requests to any
// host but loopback. Screenshots of each state at 390×844 and 1280×800 land
// in $STEPGATE_ARTIFACTS (default testdata-artifacts/browser at the
// repository root, which git ignores).

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

// chromiumPath finds a browser. Without one the suite skips loudly, except in
// CI (CI=true), where a missing browser is a failure: .ci/run installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("STEPGATE_CHROMIUM"); p != "" {
		t.Logf("browser tests run in %s", p)
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome", "chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			t.Logf("browser tests run in %s", p)
			return p
		}
	}
	msg := "NO CHROMIUM FOUND: the real-browser tests of the challenge page did NOT run. " +
		"Install it (Debian: apt-get install chromium) or set STEPGATE_CHROMIUM to a Chrome/Chromium binary."
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip("\n\n******** " + msg + " ********\n")
	return ""
}

// startChromium runs one headless Chromium with a fresh profile for the whole
// test; each scenario opens its own browser context (cookies, storage) in it.
func startChromium(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath(t)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("disable-client-side-phishing-detection", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	return bctx
}

// artifactDir is where screenshots go; never committed.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("STEPGATE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "testdata-artifacts")
	}
	dir = filepath.Join(dir, "browser")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts: %v", err)
	}
	return dir
}

// browserTab is one browser browserTab in its own browser context, pointed at a stand-in
// IdP in front of the stack's gateway.
type browserTab struct {
	t    *testing.T
	ctx  context.Context
	s    *stack
	base string // http://localhost:<idp port>
	name string // scenario, for screenshot names

	mu       sync.Mutex
	problems []string
	noScript bool          // JavaScript is turned off in this tab
	polls    int           // answered push polls, ever
	statusOK chan struct{} // answered push polls since the page last changed
}

// openTab signs the browser in as user at a stand-in IdP (demo.go's
// standInIdP: it sets X-Forwarded-User from the demo_user cookie) and
// starts watching the console and the network. The IdP listens on
// 127.0.0.1 and is browsed as localhost, because WebAuthn needs a host name
// and the demo tenant's RP ID is localhost.
func openTab(t *testing.T, browser context.Context, s *stack, user string) *browserTab {
	t.Helper()
	idp := httptest.NewServer(standInIdP(strings.TrimPrefix(s.Proxy, "http://")))
	t.Cleanup(idp.Close)
	u, _ := url.Parse(idp.URL)
	tb := &browserTab{
		t: t, s: s, base: "http://localhost:" + u.Port(),
		name:     regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(strings.TrimPrefix(t.Name(), "TestChallengePageInChromium/")), "-"),
		statusOK: make(chan struct{}, 64),
	}
	tctx, cancelTab := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	ctx, cancel := context.WithTimeout(tctx, 60*time.Second)
	t.Cleanup(func() { cancel(); cancelTab() })
	tb.ctx = ctx
	if err := chromedp.Listen(ctx, tb.watch); err != nil {
		t.Fatalf("listen: %v", err)
	}
	tb.call(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		// CSP violations are not always console messages; make each one
		// an error the watcher sees. CDP-injected scripts are exempt from
		// the page's CSP, so this does not itself need a nonce.
		if _, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
			Source: `document.addEventListener("securitypolicyviolation", function (e) {
				console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber);
			});`,
		}); err != nil {
			return err
		}
		// A background browserTab has no focus, and autofocus only works in a
		// focused page.
		if _, err := cdp.Call(ctx, tg, emulation.SetFocusEmulationEnabled, emulation.SetFocusEmulationEnabledParams{Enabled: true}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, network.SetCookie, network.SetCookieParams{Name: "demo_user", Value: user, URL: tb.base + "/"})
		return err
	}))
	tb.phone()
	t.Cleanup(tb.assertClean)
	return tb
}

// watch runs on chromedp's event loop: it must only record.
func (tb *browserTab) watch(ev any) {
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert || ev.Type == runtime.ConsoleAPICalledTypeWarning {
			var parts []string
			for _, a := range ev.Args {
				if len(a.Value) > 0 {
					parts = append(parts, string(a.Value))
				} else {
					parts = append(parts, a.Description)
				}
			}
			tb.problem("console.%s: %s", ev.Type, strings.Join(parts, " "))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil {
			text += " " + d.Exception.Description
		}
		tb.problem("uncaught exception at %s:%d: %s", d.URL, d.LineNumber, text)
	case *log.EventEntryAdded:
		e := ev.Entry
		// The browser logs every 4xx/5xx document as a failed resource.
		// The challenge page answers wrong codes, expiry and outages with
		// such statuses on purpose; each scenario checks those pages.
		if e.Source == log.EntrySourceNetwork && isChallengeDocument(e.URL) {
			return
		}
		if e.Level == log.EntryLevelError || e.Source == log.EntrySourceSecurity || e.Level == log.EntryLevelWarning {
			tb.problem("browser log (%s/%s) %s: %s", e.Source, e.Level, e.URL, e.Text)
		}
	case *network.EventRequestWillBeSent:
		if !loopbackURL(ev.Request.URL) {
			tb.problem("request to a non-loopback host: %s", ev.Request.URL)
		}
	case *network.EventResponseReceived:
		if strings.HasSuffix(stripQuery(ev.Response.URL), "/.stepgate/challenge/status") {
			tb.mu.Lock()
			tb.polls++
			tb.mu.Unlock()
			select {
			case tb.statusOK <- struct{}{}:
			default:
			}
		}
	}
}

func isChallengeDocument(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && u.Path == "/.stepgate/challenge"
}

func stripQuery(raw string) string {
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		return raw[:i]
	}
	return raw
}

// loopbackURL accepts the browser's own schemes and loopback hosts only.
func loopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "data", "about", "blob", "chrome", "devtools":
		return true
	}
	h := u.Hostname()
	return h == "localhost" || h == "127.0.0.1" || h == "::1"
}

func (tb *browserTab) problem(format string, args ...any) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.problems = append(tb.problems, fmt.Sprintf(format, args...))
}

func (tb *browserTab) assertClean() {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	for _, p := range tb.problems {
		tb.t.Errorf("browser: %s", p)
	}
}

// call runs browser steps or fails the test.
func (tb *browserTab) call(steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, steps...); err != nil {
		tb.t.Fatalf("browser: %v\npage: %s\nlogs:\n%s", err, tb.describe(), tb.s.Logs.String())
	}
}

// eval evaluates a JavaScript expression in the page.
func evalJS[T any](tb *browserTab, expr string) T {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v\npage: %s", expr, err, tb.describe())
	}
	return v
}

// describe is the page URL and text, for failure messages.
func (tb *browserTab) describe() string {
	ctx, cancel := context.WithTimeout(tb.ctx, 2*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	return loc + "\n" + text
}

// navigate loads path and returns the document's status.
func (tb *browserTab) navigate(path string) int64 {
	tb.t.Helper()
	resp, err := chromedp.Run(tb.ctx, chromedp.NavigateResponse(tb.base+path))
	if err != nil {
		tb.t.Fatalf("navigate %s: %v", path, err)
	}
	return resp.Status
}

// submit runs steps that submit a form and waits for the page they lead to;
// it returns that document's response.
func (tb *browserTab) submit(steps ...chromedp.Action[chromedp.Void]) *network.Response {
	tb.t.Helper()
	resp, err := chromedp.RunResponse(tb.ctx, steps...)
	if err != nil {
		tb.t.Fatalf("submit: %v\npage: %s\nlogs:\n%s", err, tb.describe(), tb.s.Logs.String())
	}
	return resp
}

// click clicks the element and waits for the resulting page.
func (tb *browserTab) click(sel string) *network.Response {
	tb.t.Helper()
	return tb.submit(chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// key presses keys on the focused element and waits for the resulting page.
func (tb *browserTab) keyNavigate(keys string) *network.Response {
	tb.t.Helper()
	return tb.submit(chromedp.KeyEvent(keys))
}

// state waits for the challenge page in a state and checks its accessibility.
func (tb *browserTab) state(want string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`main[data-state="`+want+`"]`))); err != nil {
		tb.t.Fatalf("page not in state %q: %v\npage: %s\nlogs:\n%s", want, err, tb.describe(), tb.s.Logs.String())
	}
	// Polls answered before this page do not count for waitPoll.
	for len(tb.statusOK) > 0 {
		<-tb.statusOK
	}
	tb.assertAccessible()
}

// waitPath waits until the page at path has loaded, however it got there
// (a redirect, the push poll's script or a meta refresh).
func (tb *browserTab) waitPath(path string, within time.Duration) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, within)
	defer cancel()
	var err error
	for ctx.Err() == nil {
		// A navigation destroys the page the poll runs in; poll again in
		// the new one until it is the page we want.
		_, err = chromedp.Run(ctx, chromedp.Poll[bool](
			fmt.Sprintf(`location.pathname === %q && document.readyState === "complete"`, path),
			chromedp.WithPollingInterval(50*time.Millisecond)))
		if err == nil {
			break
		}
	}
	if err != nil {
		tb.t.Fatalf("did not arrive at %s within %v: %v\npage: %s\nlogs:\n%s", path, within, err, tb.describe(), tb.s.Logs.String())
	}
}

func (tb *browserTab) text(sel string) string {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
	if err != nil {
		tb.t.Fatalf("text of %s: %v\npage: %s", sel, err, tb.describe())
	}
	return v
}

// focused describes the focused element: its id, else its action value,
// else its name.
func (tb *browserTab) focused() string {
	tb.t.Helper()
	return evalJS[string](tb, `(function (e) { return e ? (e.id || e.value || e.name || e.textContent.trim()) : ""; })(document.activeElement)`)
}

// typeInto focuses the field by clicking it, as a person would, and types.
func (tb *browserTab) typeInto(sel, text string) {
	tb.t.Helper()
	tb.call(chromedp.SendKeys(chromedp.CSS(sel), text, chromedp.NodeVisible))
}

// scriptsOff turns JavaScript off in the tab, as a person may.
func (tb *browserTab) scriptsOff() {
	tb.noScript = true
	tb.call(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	}))
}

// phone and desktop set the viewport the issue names.
func (tb *browserTab) phone() {
	tb.call(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
}

func (tb *browserTab) desktop() {
	tb.call(chromedp.EmulateViewport(1280, 800))
}

// screenshot saves the current page at 390×844 and 1280×800 and checks
// that neither layout overflows sideways. It leaves the browserTab phone-sized.
func (tb *browserTab) screenshot(state string) {
	tb.t.Helper()
	dir := artifactDir(tb.t)
	for _, vp := range []struct {
		name string
		set  func()
	}{{"390x844", tb.phone}, {"1280x800", tb.desktop}} {
		vp.set()
		if over := evalJS[string](tb, `(function () {
			if (!document.querySelector("main[data-state]")) return ""; // not our page
			var d = document.documentElement, out = [];
			if (d.scrollWidth > innerWidth) out.push("page is " + d.scrollWidth + "px wide in a " + innerWidth + "px viewport");
			var m = document.querySelector("main");
			if (m && m.getBoundingClientRect().right > innerWidth + 0.5) out.push("main sticks out to " + m.getBoundingClientRect().right);
			return out.join("; ");
		})()`); over != "" {
			tb.t.Errorf("%s at %s: %s", state, vp.name, over)
		}
		png, err := chromedp.Run(tb.ctx, chromedp.CaptureScreenshot())
		if err != nil {
			tb.t.Fatalf("screenshot: %v", err)
		}
		file := filepath.Join(dir, tb.name+"--"+state+"--"+vp.name+".png")
		if err := os.WriteFile(file, png, 0o644); err != nil {
			tb.t.Fatalf("screenshot: %v", err)
		}
	}
	tb.phone()
}

// assertAccessible checks what a person with a screen reader or keyboard
// needs on every stepgate page: a language, a title, one heading, a visible
// label for every field, a name for every control, touch-sized targets,
// errors in an alert or live region, and focus on the page's first control.
func (tb *browserTab) assertAccessible() {
	tb.t.Helper()
	// Browsers apply autofocus at the next rendering step, after the page
	// is visible: wait for it (bounded) before judging focus.
	ctx, cancel := context.WithTimeout(tb.ctx, 3*time.Second)
	_, _ = chromedp.Run(ctx, chromedp.Poll[bool](
		`(function (a) { return !a || document.activeElement === a; })(document.querySelector("main [autofocus]"))`,
		chromedp.WithPollingInterval(20*time.Millisecond)))
	cancel()
	problems := evalJS[[]string](tb, `(function () {
		var p = [], d = document;
		if (!d.documentElement.lang) p.push("html has no lang");
		if (!d.title.trim()) p.push("no title");
		if (d.querySelectorAll("h1").length !== 1) p.push(d.querySelectorAll("h1").length + " h1 elements, want 1");
		var shown = function (e) { var r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
		d.querySelectorAll("input:not([type=hidden]), select, textarea").forEach(function (e) {
			var l = e.labels && e.labels[0];
			if (!l || !l.textContent.trim()) p.push("field " + (e.id || e.name) + " has no label");
			else if (!shown(l)) p.push("label of " + (e.id || e.name) + " is not visible");
		});
		d.querySelectorAll("button, a[href]").forEach(function (e) {
			if (!shown(e)) return;
			if (!e.textContent.trim() && !e.getAttribute("aria-label")) p.push("a control has no name");
			var r = e.getBoundingClientRect();
			if (r.height < 24 || r.width < 24) p.push("control '" + e.textContent.trim() + "' is " + r.width + "x" + r.height + "px");
		});
		d.querySelectorAll(".error, #message").forEach(function (e) {
			if (e.hidden) return;
			if (e.getAttribute("role") !== "alert" && !e.closest("[aria-live],[role=alert],[role=status]")) p.push("error '" + e.textContent.trim() + "' is not announced");
		});
		var auto = d.querySelector("main [autofocus]"), state = d.querySelector("main").dataset.state;
		if (auto && d.activeElement !== auto) p.push("autofocus element " + (auto.id || auto.value || auto.name) + " does not have focus; " + (d.activeElement && (d.activeElement.id || d.activeElement.tagName)) + " has");
		// Where the page asks for one thing, focus is already on it.
		if (!auto && ["start", "devices", "otp", "push_timeout", "assertion"].indexOf(state) >= 0) p.push("the " + state + " page focuses nothing");
		return p;
	})()`)
	for _, p := range problems {
		tb.t.Errorf("accessibility (%s): %s", tb.describe(), p)
	}
	if !tb.noScript {
		tb.assertAxe() // axe-core is JavaScript: it cannot run where scripts are off
	}
}

// axeSource is axe-core's axe.min.js, vendored at a pinned version (see
// testdata/axe-core/README.md) so the check needs no network.
var axeSource = sync.OnceValues(func() (string, error) {
	b, err := os.ReadFile(filepath.Join("testdata", "axe-core", "axe.min.js"))
	return string(b), err
})

// assertAxe runs axe-core on the page with the WCAG 2.2 AA rule set and
// fails on any violation. Injected over CDP, so the page's CSP does not
// apply to it.
func (tb *browserTab) assertAxe() {
	tb.t.Helper()
	src, err := axeSource()
	if err != nil {
		tb.t.Fatalf("axe-core: %v", err)
	}
	if _, err := chromedp.Run(tb.ctx, chromedp.Evaluate[bool](src+";true", chromedp.EvalIgnoreExceptions)); err != nil {
		tb.t.Fatalf("inject axe-core: %v", err)
	}
	found, err := chromedp.Run(tb.ctx, chromedp.Evaluate[[]string](`axe.run(document, {
		runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]},
		resultTypes: ["violations"]
	}).then(function (r) {
		return r.violations.map(function (v) {
			return v.id + " (" + v.impact + "): " + v.help + " at " + v.nodes.map(function (n) { return n.target.join(" "); }).join(", ");
		});
	})`, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("run axe-core: %v\npage: %s", err, tb.describe())
	}
	for _, v := range found {
		tb.t.Errorf("axe-core WCAG 2.2 AA violation (%s): %s", tb.describe(), v)
	}
}

// flowID is the id of the n-th started flow (from the audit log).
func startedFlowID(t *testing.T, s *stack, n int) string {
	t.Helper()
	ev := s.Logs.Events("mfa.started")
	if len(ev) <= n {
		t.Fatalf("only %d mfa.started events, want flow %d", len(ev), n)
	}
	return ev[n]["flow_id"].(string)
}

// waitPoll waits until the push page's script has had an answer from the
// status endpoint: from then on the page is polling.
func (tb *browserTab) waitPoll() {
	tb.t.Helper()
	select {
	case <-tb.statusOK:
	case <-time.After(15 * time.Second):
		tb.t.Fatalf("the push page did not poll within 15s\npage: %s", tb.describe())
	}
}

// startAndPick opens a protected page, starts the challenge and picks the
// device with the given radio value, returning when the next page is shown.
func (tb *browserTab) startAndPick(returnPath, deviceID string) {
	tb.t.Helper()
	tb.navigate(returnPath)
	tb.state("start")
	tb.click(`main[data-state="start"] button[value="start"]`)
	tb.state("devices")
	tb.click(`main[data-state="devices"] button[name="device"][value="` + deviceID + `"]`)
}

// latestCode is the newest code the simulator delivered to user by type.
func deliveredCode(t *testing.T, s *stack, user, typ string) string {
	t.Helper()
	for _, m := range s.Sim.Inbox(user) {
		if m.Type == typ {
			return m.OTP
		}
	}
	t.Fatalf("no %s message for %s in %v", typ, user, s.Sim.Inbox(user))
	return ""
}

// assertSteppedUp checks the demo app page the browser landed on and the
// headers the upstream received with it.
func (tb *browserTab) assertSteppedUp(path, user, amr string) {
	tb.t.Helper()
	tb.waitPath(path, 10*time.Second)
	body := tb.text("body")
	for _, want := range []string{"Admin area", "X-Stepgate-User", user, "X-Stepgate-Acr", "MFA-Only", `"sub"`} {
		if !strings.Contains(body, want) {
			tb.t.Errorf("the upstream page does not show %q:\n%s", want, body)
		}
	}
	h := tb.s.LastRequest().Header
	if got := h.Get("X-Stepgate-User"); got != user {
		tb.t.Errorf("upstream X-Stepgate-User = %q, want %q", got, user)
	}
	if got := h.Get("X-Stepgate-Amr"); !strings.Contains(got, amr) {
		tb.t.Errorf("upstream X-Stepgate-Amr = %q, want it to contain %q", got, amr)
	}
	if h.Get("X-Stepgate-Id-Token") == "" || h.Get("X-Stepgate-Subject") == "" {
		tb.t.Errorf("upstream lacks the ID token or subject: %v", h)
	}
}

func TestChallengePageInChromium(t *testing.T) {
	browser := startChromium(t)

	t.Run("a code by text message gets alice to the page she asked for", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()))
		tb := openTab(t, browser, s, "alice")
		if st := tb.navigate("/admin/reports?week=12"); st != 200 {
			t.Fatalf("challenge page status %d, want 200", st)
		}
		tb.state("start")
		if got := evalJS[string](tb, "location.pathname + location.search"); got != "/.stepgate/challenge?return=%2Fadmin%2Freports%3Fweek%3D12" {
			t.Errorf("redirected to %q", got)
		}
		tb.screenshot("start")
		tb.click(`button[value="start"]`)
		tb.state("devices")
		tb.screenshot("devices")
		if got := tb.text("main ul.devices"); !strings.Contains(got, "Text message") || !strings.Contains(got, "Email") || !strings.Contains(got, "Send code") {
			t.Errorf("device list does not name both methods and what their buttons do: %q", got)
		}
		// Who, and what is being opened.
		if got := tb.text("#user"); got != "alice" {
			t.Errorf("signed-in user shown as %q", got)
		}
		if got := tb.text("#opening"); got != "/admin/reports?week=12" {
			t.Errorf("the page says it opens %q", got)
		}
		if got := evalJS[string](tb, "document.title"); !strings.HasPrefix(got, englishMessage(t, "title_devices")) {
			t.Errorf("device page title %q", got)
		}
		tb.click(`main[data-state="devices"] button[type="submit"]`)
		tb.state("otp")
		tb.screenshot("otp")
		if got := tb.text("#otp-intro"); !strings.Contains(got, "We sent a code to") || !strings.Contains(got, "*******34") {
			t.Errorf("OTP intro %q does not say where the code went", got)
		}
		if ac := evalJS[string](tb, `document.getElementById("otp").autocomplete`); ac != "one-time-code" {
			t.Errorf("otp autocomplete = %q", ac)
		}
		tb.typeInto("#otp", deliveredCode(t, s, "alice", "SMS"))
		tb.submit(chromedp.KeyEvent(kb.Enter))
		tb.assertSteppedUp("/admin/reports", "alice", "otp")
		if got := evalJS[string](tb, "location.search"); got != "?week=12" {
			t.Errorf("query after step-up = %q, want ?week=12", got)
		}
		tb.screenshot("app-after-step-up")
		// The demo app's own page: who stepped up, how and when, and its
		// header table inside a phone's width.
		if got := tb.text("#stepped-up"); !strings.HasPrefix(got, "Stepped up as alice via SMS at ") {
			t.Errorf("the demo app says %q", got)
		}
		if w := evalJS[int](tb, "document.documentElement.scrollWidth"); w > 390 {
			t.Errorf("the demo app's page is %d px wide at 390 px", w)
		}
	})

	t.Run("a wrong code is announced with the attempts left, then the right one works", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()))
		tb := openTab(t, browser, s, "alice")
		tb.startAndPick("/admin/", pingonesim.DemoAliceSMSID)
		tb.state("otp")
		code := deliveredCode(t, s, "alice", "SMS")
		tb.typeInto("#otp", wrongCode(code))
		resp := tb.submit(chromedp.KeyEvent(kb.Enter))
		if resp.Status != 401 {
			t.Errorf("wrong code answered %d, want 401", resp.Status)
		}
		tb.state("otp")
		if got := tb.text("#message"); !strings.Contains(got, "not right") || !strings.Contains(got, "Attempts left: 2") {
			t.Errorf("error message %q", got)
		}
		if got := evalJS[string](tb, `document.getElementById("message").getAttribute("role")`); got != "alert" {
			t.Errorf("error role = %q, want alert", got)
		}
		if got := evalJS[string](tb, `document.getElementById("otp").getAttribute("aria-invalid") + " " + document.getElementById("otp").getAttribute("aria-describedby")`); !strings.Contains(got, "true") || !strings.Contains(got, "message") {
			t.Errorf("code field aria-invalid/aria-describedby = %q", got)
		}
		if v := evalJS[string](tb, `document.getElementById("otp").value`); v != "" {
			t.Errorf("the wrong code is still in the field: %q", v)
		}
		tb.screenshot("otp-wrong")
		tb.typeInto("#otp", code)
		tb.submit(chromedp.KeyEvent(kb.Enter))
		tb.assertSteppedUp("/admin/", "alice", "otp")
	})

	t.Run("a reload after a wrong code and Back after success re-submit nothing", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()))
		tb := openTab(t, browser, s, "alice")
		tb.startAndPick("/admin/", pingonesim.DemoAliceSMSID)
		tb.state("otp")
		code := deliveredCode(t, s, "alice", "SMS")
		// Letters get the page's own message (the browser does not stop
		// the form with its generic one), and cost no attempt.
		tb.typeInto("#otp", "12ab56")
		if resp := tb.submit(chromedp.KeyEvent(kb.Enter)); resp.Status != 400 {
			t.Errorf("a code with letters answered %d, want 400", resp.Status)
		}
		tb.state("otp")
		if got, want := tb.text("#message"), englishMessage(t, "otp_format"); got != want {
			t.Errorf("a code with letters says %q, want %q", got, want)
		}
		tb.screenshot("otp-format")
		tb.typeInto("#otp", wrongCode(code))
		tb.submit(chromedp.KeyEvent(kb.Enter))
		tb.state("otp")
		// The page after the POST is a GET: a reload asks nothing (no
		// "Confirm Form Resubmission") and checks no code again.
		if got := evalJS[string](tb, `performance.getEntriesByType("navigation")[0].type + " " + location.pathname`); got != "navigate /.stepgate/challenge" {
			t.Errorf("the wrong-code page was reached by %q, want a plain navigation", got)
		}
		tb.submit(chromedp.Reload())
		tb.state("otp")
		if n := len(s.Logs.Events("mfa.otp_failed")); n != 1 {
			t.Errorf("mfa.otp_failed = %d after a reload, want 1 (the reload re-submitted the code)", n)
		}
		tb.typeInto("#otp", wrongCode(code))
		tb.submit(chromedp.KeyEvent(kb.Enter))
		if got := tb.text("#message"); !strings.Contains(got, "Attempts left: 1") {
			t.Errorf("after a reload and a second wrong code: %q, want 1 attempt left", got)
		}
		// Spaces are fine.
		tb.typeInto("#otp", code[:3]+" "+code[3:])
		tb.submit(chromedp.KeyEvent(kb.Enter))
		tb.assertSteppedUp("/admin/", "alice", "otp")
		// Back lands on the challenge page's URL, a GET: she is verified,
		// so it sends her on, with no new challenge and no prompt.
		tb.submit(chromedp.NavigateBack())
		tb.waitPath("/admin/", 10*time.Second)
		if n := len(s.Logs.Events("mfa.started")); n != 1 {
			t.Errorf("mfa.started = %d after Back, want 1", n)
		}
		if n := len(s.Sim.Inbox("alice")); n != 1 {
			t.Errorf("alice received %d messages, want 1", n)
		}
	})

	t.Run("an already verified user opening the challenge page is not challenged again", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()))
		tb := openTab(t, browser, s, "carol")
		tb.startAndPick("/admin/", pingonesim.DemoCarolTOTPID)
		tb.state("otp")
		// One method of two is an authenticator app: no resend, but a switch.
		if n := evalJS[int](tb, `document.querySelectorAll('button[value="resend"]').length`); n != 0 {
			t.Errorf("the authenticator-app page offers %d resend buttons", n)
		}
		tb.typeInto("#otp", s.Sim.TOTP(pingonesim.DemoCarolTOTPID))
		tb.submit(chromedp.KeyEvent(kb.Enter))
		tb.assertSteppedUp("/admin/", "carol", "otp")
		tb.navigate("/.stepgate/challenge?return=%2Fadmin%2Fsettings")
		tb.waitPath("/admin/settings", 10*time.Second)
		if n := len(s.Logs.Events("mfa.started")); n != 1 {
			t.Errorf("mfa.started = %d, want 1: the verified user was challenged again", n)
		}
	})

	t.Run("bob's only method offers no switch, and Cancel goes back to the app", func(t *testing.T) {
		s, tb := startChallenge(t, browser, "bob")
		tb.state("push")
		if n := evalJS[int](tb, `document.querySelectorAll('button[value="switch"]').length`); n != 0 {
			t.Errorf("bob (one method) is offered %d switch buttons", n)
		}
		tb.click(`main[data-state="push"] button[value="cancel"]`)
		tb.waitPath("/", 10*time.Second)
		// From another page of the app, Cancel goes back there.
		tb.navigate("/reports/weekly")
		tb.click(`a[href="/admin/"]`)
		tb.state("start")
		tb.click(`main[data-state="start"] button[value="start"]`)
		tb.state("push")
		tb.click(`main[data-state="push"] button[value="cancel"]`)
		tb.waitPath("/reports/weekly", 10*time.Second)
		if ev := s.Logs.Events("mfa.cancelled"); len(ev) != 2 {
			t.Errorf("mfa.cancelled events = %d, want 2", len(ev))
		}
	})

	t.Run("resend delivers a new code that works", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()))
		tb := openTab(t, browser, s, "alice")
		tb.startAndPick("/admin/", pingonesim.DemoAliceSMSID)
		tb.state("otp")
		before := len(s.Sim.Inbox("alice"))
		// Within the cool-down the page says how long to wait and sends
		// nothing.
		if got := tb.text("#resend-hint"); !strings.Contains(got, "You can ask for a new code in") {
			t.Errorf("no cool-down hint after the first code: %q", got)
		}
		tb.click(`button[value="resend"]`)
		tb.state("otp")
		if got := tb.text("#message"); !strings.Contains(got, "You can ask for another in") {
			t.Errorf("an early resend says %q, want how long is left", got)
		}
		if after := len(s.Sim.Inbox("alice")); after != before {
			t.Fatalf("a resend inside the cool-down sent a code (%d → %d messages)", before, after)
		}
		s.Clock.Advance(31 * time.Second)
		tb.click(`button[value="resend"]`)
		tb.state("otp")
		if after := len(s.Sim.Inbox("alice")); after != before+1 {
			t.Fatalf("inbox had %d messages, has %d after resend; want one more", before, after)
		}
		if got := tb.text("#message"); !strings.HasPrefix(got, "New code sent to ") || !strings.Contains(got, "•") && !strings.Contains(got, "*") && !strings.Contains(got, "X") {
			t.Errorf("after resend the page says %q, want New code sent to the masked number", got)
		}
		if got := evalJS[string](tb, `document.getElementById("message").getAttribute("role")`); got != "status" {
			t.Errorf("the resend notice has role %q, want status", got)
		}
		tb.screenshot("otp-resent")
		tb.typeInto("#otp", deliveredCode(t, s, "alice", "SMS"))
		tb.submit(chromedp.KeyEvent(kb.Enter))
		tb.assertSteppedUp("/admin/", "alice", "otp")
	})

	t.Run("switching from text message to e-mail uses the e-mailed code", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()))
		tb := openTab(t, browser, s, "alice")
		tb.startAndPick("/admin/", pingonesim.DemoAliceSMSID)
		tb.state("otp")
		tb.click(`button[value="switch"]`)
		tb.state("devices")
		tb.click(`main[data-state="devices"] button[name="device"][value="` + pingonesim.DemoAliceEmailID + `"]`)
		tb.state("otp")
		if got := tb.text("#otp-intro"); !strings.Contains(got, "@example.com") {
			t.Errorf("OTP intro %q does not name the e-mail address", got)
		}
		tb.typeInto("#otp", deliveredCode(t, s, "alice", "EMAIL"))
		tb.submit(chromedp.KeyEvent(kb.Enter))
		tb.assertSteppedUp("/admin/", "alice", "otp")
	})

	t.Run("keyboard alone completes the challenge in a sensible focus order", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()))
		tb := openTab(t, browser, s, "alice")
		tb.navigate("/admin/")
		tb.state("start")
		if got := tb.focused(); got != "start" {
			t.Fatalf("focus on the start page is on %q, want the start button", got)
		}
		tb.keyNavigate(kb.Enter)
		tb.state("devices")
		if got := tb.focused(); got != pingonesim.DemoAliceSMSID {
			t.Errorf("focus on the device page is on %q, want the selected method", got)
		}
		// Each method is its own button, named for what it does: Tab
		// moves to the next, Enter sends.
		tb.call(chromedp.KeyEvent(kb.Tab))
		if got := tb.focused(); got != pingonesim.DemoAliceEmailID {
			t.Errorf("after Tab focus is on %q, want the e-mail method", got)
		}
		if got := evalJS[string](tb, `document.activeElement.textContent.replace(/\s+/g, " ").trim()`); !strings.Contains(got, "Email") || !strings.HasSuffix(got, "Send code") {
			t.Errorf("the e-mail button reads %q, want its type, address and \"Send code\"", got)
		}
		tb.keyNavigate(kb.Enter)
		tb.state("otp")
		var order []string
		for range 4 {
			tb.call(chromedp.KeyEvent(kb.Tab))
			order = append(order, tb.focused())
		}
		if got, want := strings.Join(order, ","), "Verify,resend,switch,cancel"; got != want {
			t.Errorf("Tab order from the code field = %s, want %s", got, want)
		}
		for range 4 {
			tb.call(chromedp.KeyEvent(kb.Tab, chromedp.KeyModifiers(chromedp.ModifierShift)))
		}
		if got := tb.focused(); got != "otp" {
			t.Fatalf("Shift+Tab back did not return to the code field: %q", got)
		}
		tb.call(chromedp.KeyEvent(deliveredCode(t, s, "alice", "EMAIL")))
		tb.keyNavigate(kb.Enter)
		tb.assertSteppedUp("/admin/", "alice", "otp")
	})

	t.Run("an approved push moves the polling page on by itself", func(t *testing.T) {
		s, tb := startChallenge(t, browser, "bob")
		tb.state("push")
		if got := evalJS[string](tb, `document.getElementById("push-status").getAttribute("aria-live") + "/" + document.getElementById("push-status").getAttribute("role")`); got != "polite/status" {
			t.Errorf("push status region = %q, want polite/status", got)
		}
		tb.screenshot("push")
		tb.waitPoll()
		if err := s.Sim.Push(startedFlowID(t, s, 0), pingonesim.PushApprove); err != nil {
			t.Fatal(err)
		}
		tb.assertSteppedUp("/admin/", "bob", "swk")
	})

	t.Run("a timed-out push offers a retry that can be approved", func(t *testing.T) {
		s, tb := startChallenge(t, browser, "bob")
		tb.state("push")
		tb.waitPoll()
		flow := startedFlowID(t, s, 0)
		if err := s.Sim.Push(flow, pingonesim.PushTimeout); err != nil {
			t.Fatal(err)
		}
		tb.state("push_timeout")
		tb.screenshot("push-timeout")
		tb.click(`main[data-state="push_timeout"] button[value="resend"]`)
		tb.state("push")
		// The poll limit (1/s per flow) runs on the gateway's clock, which
		// the test holds still: move it on so polls are allowed again.
		s.Clock.Advance(5 * time.Second)
		tb.waitPoll()
		if err := s.Sim.Push(flow, pingonesim.PushApprove); err != nil {
			t.Fatal(err)
		}
		tb.assertSteppedUp("/admin/", "bob", "swk")
	})

	t.Run("a denied push ends on a page that explains and offers a fresh start", func(t *testing.T) {
		s, tb := startChallenge(t, browser, "bob")
		tb.state("push")
		tb.waitPoll()
		if err := s.Sim.Push(startedFlowID(t, s, 0), pingonesim.PushDeny); err != nil {
			t.Fatal(err)
		}
		tb.state("error")
		if got := tb.text("#message"); !strings.Contains(got, "denied on your phone") {
			t.Errorf("message %q does not say the push was denied on the phone", got)
		}
		if got := tb.text(`main[data-state="error"] button[value="start"]`); got != "Try again" {
			t.Errorf("the retry button says %q", got)
		}
		if got := evalJS[string](tb, `document.title`); !strings.HasPrefix(got, "Request denied") {
			t.Errorf("title %q, want one that names the state", got)
		}
		tb.screenshot("push-denied")
		tb.click(`main[data-state="error"] button[value="start"]`)
		tb.state("push")
		if n := len(s.Logs.Events("mfa.started")); n != 2 {
			t.Errorf("mfa.started events = %d, want 2 (the fresh start)", n)
		}
	})

	t.Run("a user without any method is refused, not let through", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()))
		tb := openTab(t, browser, s, "dave")
		tb.navigate("/admin/")
		tb.state("start")
		if resp := tb.click(`button[value="start"]`); resp.Status != 403 {
			t.Errorf("bypass answered %d, want 403", resp.Status)
		}
		tb.state("error")
		if got := tb.text("#message"); !strings.Contains(got, "No MFA method is available") {
			t.Errorf("message %q", got)
		}
		tb.screenshot("no-method")
		for _, r := range s.Requests() {
			if strings.HasPrefix(r.RequestURI, "/admin") {
				t.Errorf("the upstream received %s for a user without MFA", r.RequestURI)
			}
		}
	})

	t.Run("without JavaScript the security key is not offered", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()))
		tb := openTab(t, browser, s, "carol")
		tb.scriptsOff()
		tb.navigate("/admin/")
		tb.state("start")
		tb.click(`button[value="start"]`)
		tb.state("devices")
		if shown := evalJS[bool](tb, `(function (b) { return !!b && b.getClientRects().length > 0; })(document.querySelector('button[value="`+pingonesim.DemoCarolFIDO2ID+`"]'))`); shown {
			t.Error("the security key is offered to a browser without JavaScript")
		}
		if got := tb.text("main ul.devices"); !strings.Contains(got, "Authenticator app") {
			t.Errorf("the authenticator app is not offered: %q", got)
		}
		tb.screenshot("devices-nojs")
	})

	t.Run("without JavaScript the push page refreshes itself until approved", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()))
		tb := openTab(t, browser, s, "bob")
		tb.scriptsOff()
		tb.navigate("/admin/")
		tb.state("start")
		tb.click(`button[value="start"]`)
		tb.state("push")
		if got := tb.text("main"); !strings.Contains(got, "refreshes by itself") {
			t.Errorf("the no-script note is not shown: %q", got)
		}
		tb.screenshot("push-nojs")
		if err := s.Sim.Push(startedFlowID(t, s, 0), pingonesim.PushApprove); err != nil {
			t.Fatal(err)
		}
		tb.assertSteppedUp("/admin/", "bob", "swk")
		tb.mu.Lock()
		polled := tb.polls
		tb.mu.Unlock()
		if polled != 0 {
			t.Errorf("the page polled %d times with JavaScript disabled", polled)
		}
	})

	// PingOne sends the assertion challenge and credential ids as arrays of
	// signed bytes; the page also takes base64url strings. Both reach a
	// real authenticator.
	for _, enc := range []struct {
		name      string
		base64URL bool
	}{{"PingOne's byte arrays", false}, {"base64url strings", true}} {
		t.Run("a security key in Chromium's virtual authenticator completes FIDO2 ("+enc.name+")", func(t *testing.T) {
			s := newStack(t, withUpstream(demoApp()), withTenant(func(tn *pingonesim.Tenant) { tn.WebAuthnBase64URL = enc.base64URL }))
			tb := openTab(t, browser, s, "carol")
			tb.plugInSecurityKey(true)
			tb.startAndPick("/admin/", pingonesim.DemoCarolFIDO2ID)
			tb.state("assertion")
			opts := evalJS[string](tb, `document.getElementById("assertion-form").dataset.options`)
			if isArray := strings.Contains(opts, `"challenge":[`); isArray == enc.base64URL {
				t.Fatalf("the page's options are not in the %s encoding: %.300s", enc.name, opts)
			}
			tb.screenshot("assertion")
			tb.click("#assertion-button")
			tb.assertSteppedUp("/admin/", "carol", "hwk")
			if ev := s.Logs.Events("mfa.completed"); len(ev) != 1 {
				t.Errorf("mfa.completed events = %d, want 1", len(ev))
			}
		})
	}

	t.Run("a security key on an origin WebAuthn refuses says the address is the problem", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()))
		tb := openTab(t, browser, s, "carol")
		// The same gateway browsed as 127.0.0.1: a secure context, but the
		// tenant's RP ID is localhost, which 127.0.0.1 cannot claim, so
		// the browser refuses with a SecurityError before any key is asked.
		tb.base = strings.Replace(tb.base, "localhost", "127.0.0.1", 1)
		tb.call(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, network.SetCookie, network.SetCookieParams{Name: "demo_user", Value: "carol", URL: tb.base + "/"})
			return err
		}))
		tb.plugInSecurityKey(true)
		tb.startAndPick("/admin/", pingonesim.DemoCarolFIDO2ID)
		tb.state("assertion")
		tb.call(chromedp.Click(chromedp.CSS("#assertion-button"), chromedp.NodeVisible))
		tb.call(chromedp.WaitVisible(chromedp.CSS("#assertion-error")))
		if got, want := tb.text("#assertion-error"), englishMessage(t, "assertion_origin"); got != want {
			t.Errorf("on a refused origin the page says %q, want %q", got, want)
		}
		tb.screenshot("assertion-origin")
		if ev := s.Logs.Events("mfa.completed"); len(ev) != 0 {
			t.Errorf("mfa.completed events = %d, want 0", len(ev))
		}
	})

	t.Run("a security key that does not answer leaves a way out", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()))
		tb := openTab(t, browser, s, "carol")
		// A key that holds no credential for carol: with presence simulated
		// the browser gets CTAP's "no credentials" at once and rejects
		// navigator.credentials.get, with no timeout to wait out.
		tb.plugInSecurityKey(false)
		tb.startAndPick("/admin/", pingonesim.DemoCarolFIDO2ID)
		tb.state("assertion")
		tb.call(chromedp.Click(chromedp.CSS("#assertion-button"), chromedp.NodeVisible))
		tb.call(chromedp.WaitVisible(chromedp.CSS("#assertion-error")))
		if got, want := tb.text("#assertion-error"), englishMessage(t, "assertion_failed"); got != want {
			t.Errorf("after the key failed the page says %q, want %q", got, want)
		}
		if got := evalJS[string](tb, `document.getElementById("assertion-error").getAttribute("role")`); got != "alert" {
			t.Errorf("the key's failure is not announced: role = %q, want alert", got)
		}
		if evalJS[bool](tb, `document.getElementById("assertion-button").disabled`) {
			t.Error("the security key button stays disabled: no way to try the key again")
		}
		tb.screenshot("assertion-failed")
		// Not stepped up: the protected path still sends her to the
		// challenge, and the app has seen nothing of it.
		if code, loc := tb.visitWithCookies("/admin/"); code != 302 || !strings.HasPrefix(loc, "/.stepgate/challenge") {
			t.Errorf("/admin/ with her cookies after the failed key answered %d to %q, want 302 to the challenge", code, loc)
		}
		for _, r := range s.Requests() {
			if strings.HasPrefix(r.RequestURI, "/admin") {
				t.Errorf("the upstream received %s though the key failed", r.RequestURI)
			}
		}
		if ev := s.Logs.Events("mfa.completed"); len(ev) != 0 {
			t.Errorf("mfa.completed events = %d after a failed key, want 0", len(ev))
		}
		// From the same page, another method: her authenticator app.
		tb.click(`main[data-state="assertion"] button[value="switch"]`)
		tb.state("devices")
		tb.click(`main[data-state="devices"] button[name="device"][value="` + pingonesim.DemoCarolTOTPID + `"]`)
		tb.state("otp")
		if got, want := tb.text("#otp-intro"), englishMessage(t, "otp_intro_totp"); got != want {
			t.Errorf("OTP intro %q, want %q", got, want)
		}
		tb.typeInto("#otp", s.Sim.TOTP(pingonesim.DemoCarolTOTPID))
		tb.submit(chromedp.KeyEvent(kb.Enter))
		tb.assertSteppedUp("/admin/", "carol", "otp")
	})

	t.Run("an expired flow says so and starts afresh", func(t *testing.T) {
		// A simulator that forgets idle flows after 5 minutes, so the
		// PingOne flow expires while the gateway's flow cookie (15 min)
		// still holds: the page must explain and offer a fresh start.
		clock := pingonesim.NewClock(time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC))
		sim := pingonesim.New(pingonesim.Options{Tenant: pingonesim.DemoTenant(), Clock: clock, FlowIdle: 5 * time.Minute})
		simSrv := httptest.NewServer(sim)
		t.Cleanup(simSrv.Close)
		s := newStack(t, withUpstream(demoApp()), withSim(&stack{Sim: sim, Clock: clock, SimURL: simSrv.URL}))
		tb := openTab(t, browser, s, "alice")
		tb.startAndPick("/admin/", pingonesim.DemoAliceSMSID)
		tb.state("otp")
		clock.Advance(6 * time.Minute)
		tb.typeInto("#otp", deliveredCode(t, s, "alice", "SMS"))
		resp := tb.submit(chromedp.KeyEvent(kb.Enter))
		if resp.Status != 410 {
			t.Errorf("expired flow answered %d, want 410", resp.Status)
		}
		tb.state("error")
		if got := tb.text("#message"); !strings.Contains(got, "expired") {
			t.Errorf("message %q does not say the flow expired", got)
		}
		tb.screenshot("expired")
		tb.click(`main[data-state="error"] button[value="start"]`)
		tb.state("devices")
		tb.click(`main[data-state="devices"] button[type="submit"]`)
		tb.state("otp")
		tb.typeInto("#otp", deliveredCode(t, s, "alice", "SMS"))
		tb.submit(chromedp.KeyEvent(kb.Enter))
		tb.assertSteppedUp("/admin/", "alice", "otp")
	})

	t.Run("PingOne down shows the 503 page and recovers", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()))
		tb := openTab(t, browser, s, "alice")
		tb.navigate("/admin/")
		tb.state("start")
		s.Sim.SetFault(pingonesim.Fault{Kind: "status", Status: 503})
		resp := tb.click(`button[value="start"]`)
		if resp.Status != 503 {
			t.Errorf("start with PingOne down answered %d, want 503", resp.Status)
		}
		if ra := cdpHeader(resp.Headers, "Retry-After"); ra == "" {
			t.Errorf("503 page has no Retry-After header: %v", resp.Headers)
		}
		tb.state("error")
		if got := tb.text("#message"); !strings.Contains(got, "not reachable") {
			t.Errorf("message %q does not say the service is unreachable", got)
		}
		tb.screenshot("unavailable")
		s.Sim.ClearFaults()
		tb.click(`main[data-state="error"] a.button`)
		tb.state("start")
		tb.click(`button[value="start"]`)
		tb.state("devices")
	})

	t.Run("too many starts show the 429 page with when to try again", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()), withEnv("STEPGATE_LIMIT_STARTS_PER_USER", "1", "STEPGATE_LIMIT_WINDOW", "1m"))
		tb := openTab(t, browser, s, "alice")
		// One start is allowed; she cancels it and starts again at once.
		tb.startAndPick("/admin/", pingonesim.DemoAliceSMSID)
		tb.state("otp")
		// Cancel goes back where she came from (no page before: the app's
		// home); opening the protected page again offers a new start.
		tb.click(`main[data-state="otp"] button[value="cancel"]`)
		tb.waitPath("/", 10*time.Second)
		tb.navigate("/admin/")
		tb.state("start")
		resp := tb.click(`main[data-state="start"] button[value="start"]`)
		if resp.Status != 429 {
			t.Errorf("the second start answered %d, want 429", resp.Status)
		}
		wait, err := strconv.Atoi(cdpHeader(resp.Headers, "Retry-After"))
		if err != nil || wait < 1 || wait > 60 {
			t.Fatalf("429 Retry-After = %q, want whole seconds within the 1m window", cdpHeader(resp.Headers, "Retry-After"))
		}
		tb.state("error")
		if got, want := tb.text("#message"), englishMessage(t, "rate_limited"); got != want {
			t.Errorf("the 429 page says %q, want %q", got, want)
		}
		// Nothing but the explanation and a way back: no stack trace,
		// limiter name, key or address.
		var lines []string
		for _, l := range strings.Split(tb.text("main"), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				lines = append(lines, l)
			}
		}
		// The page says the same wait as Retry-After (under a minute: seconds).
		retry := fmt.Sprintf(englishMessage(t, "retry_in_seconds"), wait)
		if wait == 60 {
			retry = fmt.Sprintf(englishMessage(t, "retry_in_minutes"), 1)
		}
		if got := tb.text("#retry"); got != retry {
			t.Errorf("the 429 page's wait says %q, want %q (Retry-After %d)", got, retry, wait)
		}
		want := []string{englishMessage(t, "brand"), englishMessage(t, "signed_in_as"), "alice", englishMessage(t, "title_rate_limited"),
			englishMessage(t, "rate_limited"), retry, englishMessage(t, "back"), englishMessage(t, "home")}
		if !strings.EqualFold(strings.Join(lines, "|"), strings.Join(want, "|")) { // the brand is upper-cased by CSS
			t.Errorf("the 429 page shows %q, want only %q", lines, want)
		}
		html := evalJS[string](tb, "document.documentElement.outerHTML")
		for _, leak := range []string{"goroutine", ".go:", "panic", "start_user", "u:alice", "127.0.0.1", "rate_limited", "Retry-After"} {
			if strings.Contains(html, leak) {
				t.Errorf("the 429 page contains %q", leak)
			}
		}
		tb.screenshot("rate-limited")
		if n := len(s.Logs.Events("mfa.started")); n != 1 {
			t.Errorf("mfa.started events = %d, want 1 (the refused start never reached PingOne)", n)
		}
		// Retry-After is honest: once that long has passed, Back and a new
		// start work.
		s.Clock.Advance(time.Duration(wait) * time.Second)
		tb.click(`main[data-state="error"] a.button`)
		tb.state("start")
		tb.click(`main[data-state="start"] button[value="start"]`)
		tb.state("devices")
	})

	t.Run("logout forgets the step-up", func(t *testing.T) {
		s := newStack(t, withUpstream(demoApp()))
		tb := openTab(t, browser, s, "alice")
		tb.startAndPick("/admin/", pingonesim.DemoAliceSMSID)
		tb.state("otp")
		tb.typeInto("#otp", deliveredCode(t, s, "alice", "SMS"))
		tb.submit(chromedp.KeyEvent(kb.Enter))
		tb.assertSteppedUp("/admin/", "alice", "otp")
		tb.click(`form[action="/.stepgate/logout"] button`)
		tb.waitPath("/", 10*time.Second)
		if got := tb.text("body"); !strings.Contains(got, "no step-up on this request") {
			t.Errorf("after logout the app still sees a step-up: %s", got)
		}
		if h := s.LastRequest().Header; h.Get("X-Stepgate-User") != "" {
			t.Errorf("after logout the upstream got X-Stepgate-User %q", h.Get("X-Stepgate-User"))
		}
		tb.navigate("/admin/")
		tb.state("start")
	})

	t.Run("the page speaks the browser's language when a catalogue exists", func(t *testing.T) {
		const title, button = "Bestätigen Sie Ihre Identität", "Weiter"
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "messages"), 0o755); err != nil {
			t.Fatal(err)
		}
		// start_intro is left out: it must come in English.
		cat := `{"title": "` + title + `", "start_button": "` + button + `"}`
		if err := os.WriteFile(filepath.Join(dir, "messages", "de.json"), []byte(cat), 0o644); err != nil {
			t.Fatal(err)
		}
		s := newStack(t, withUpstream(demoApp()), withEnv("STEPGATE_TEMPLATES_DIR", dir))
		tb := openTab(t, browser, s, "alice")
		tb.call(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
				Headers: network.Headers{"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"},
			})
			return err
		}))
		tb.navigate("/admin/")
		tb.state("start")
		if got := evalJS[string](tb, "document.documentElement.lang"); got != "de" {
			t.Errorf(`<html lang=%q>, want "de"`, got)
		}
		if got := tb.text("h1"); got != title {
			t.Errorf("heading %q, want the German %q", got, title)
		}
		if got := evalJS[string](tb, "document.title"); !strings.HasPrefix(got, title) {
			t.Errorf("title %q is not the German one", got)
		}
		if got := tb.text(`button[value="start"]`); got != button {
			t.Errorf("start button %q, want the German %q", got, button)
		}
		if got, want := tb.text("main > p:not(.brand)"), englishMessage(t, "start_intro"); got != want {
			t.Errorf("a key the German catalogue lacks shows %q, want the English %q", got, want)
		}
		tb.screenshot("start-de")
		// The translated page still works: on to a step-up.
		tb.click(`button[value="start"]`)
		tb.state("devices")
		if got := evalJS[string](tb, "document.documentElement.lang"); got != "de" {
			t.Errorf(`the device page has <html lang=%q>, want "de"`, got)
		}
		tb.click(`main[data-state="devices"] button[type="submit"]`)
		tb.state("otp")
		tb.typeInto("#otp", deliveredCode(t, s, "alice", "SMS"))
		tb.submit(chromedp.KeyEvent(kb.Enter))
		tb.assertSteppedUp("/admin/", "alice", "otp")
	})
}

// plugInSecurityKey gives the tab a virtual USB security key that answers at
// once (presence and user verification simulated). With registered, it holds
// carol's demo credential for localhost; without, it holds none, so a
// navigator.credentials.get for her credential fails as a stranger's key does.
func (tb *browserTab) plugInSecurityKey(registered bool) {
	tb.t.Helper()
	key, err := x509.MarshalPKCS8PrivateKey(pingonesim.DemoFIDO2PrivateKey())
	if err != nil {
		tb.t.Fatal(err)
	}
	tb.call(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, webauthn.Enable, webauthn.EnableParams{}); err != nil {
			return err
		}
		auth, err := cdp.Call(ctx, tg, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{
			Options: &webauthn.VirtualAuthenticatorOptions{
				Protocol: webauthn.AuthenticatorProtocolCtap2, Transport: webauthn.AuthenticatorTransportUsb,
				HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true,
			},
		})
		if err != nil || !registered {
			return err
		}
		// Sent raw: cdproto's Credential always includes newer fields
		// (generateCmtgKeyOnNextOperation) that this Chromium rejects.
		return tg.Call(ctx, webauthn.AddCredential.Method, map[string]any{
			"authenticatorId": auth.AuthenticatorID,
			"credential": map[string]any{
				"credentialId":         base64.StdEncoding.EncodeToString(pingonesim.DemoFIDO2CredentialID),
				"isResidentCredential": false,
				"rpId":                 "localhost",
				"privateKey":           base64.StdEncoding.EncodeToString(key),
				"signCount":            1,
			},
		}, nil)
	}))
}

// visitWithCookies requests path from outside the page, as a navigation that
// carries the tab's cookies (a fetch from the page would be an API call,
// answered 401, which the browser logs as an error), and returns the status
// and Location. It leaves the tab where it was.
func (tb *browserTab) visitWithCookies(path string) (int, string) {
	tb.t.Helper()
	var cookies []*network.Cookie
	tb.call(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{tb.base + path}})
		if err != nil {
			return err
		}
		cookies = res.Cookies
		return nil
	}))
	req, _ := http.NewRequest(http.MethodGet, tb.base+path, nil)
	for _, c := range cookies {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		tb.t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

// englishMessage is a text of the built-in English catalogue, so that
// scenarios assert what the page says without restating its prose.
func englishMessage(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "proxy", "challenge", "messages", "en.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	msg, ok := m[key]
	if !ok {
		t.Fatalf("en.json has no message %q", key)
	}
	return msg
}

// cdpHeader reads a response header case-insensitively from CDP's map.
func cdpHeader(h network.Headers, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return fmt.Sprint(v)
		}
	}
	return ""
}

// startChallenge opens /admin/ for user on a fresh stack (demo app upstream)
// and presses the start button, leaving the tab on the first MFA step.
func startChallenge(t *testing.T, browser context.Context, user string) (*stack, *browserTab) {
	t.Helper()
	s := newStack(t, withUpstream(demoApp()))
	tb := openTab(t, browser, s, user)
	tb.navigate("/admin/")
	tb.state("start")
	tb.click(`button[value="start"]`)
	return s, tb
}
