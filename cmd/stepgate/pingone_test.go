package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

// TestRequestObjectSignedWithOwnKeyThroughJWKSURL: with
// STEPGATE_PINGONE_REQUEST_KEY_FILE the request object is RS256 with
// stepgate's key, and PingOne (an app with requireSignedRequestObject)
// verifies it with the JWKS it fetches from stepgate's admin /jwks.json.
func TestRequestObjectSignedWithOwnKeyThroughJWKSURL(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "request-key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	// PingOne's jwksUrl points here; it forwards to the admin listener once
	// the gateway is up (its port is only known then).
	var admin atomic.Value
	var fetched atomic.Int32
	jwksURL := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		base, _ := admin.Load().(string)
		res, err := http.Get(base + "/jwks.json")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		fetched.Add(1)
		w.WriteHeader(res.StatusCode)
		_, _ = io.Copy(w, res.Body)
	}))
	t.Cleanup(jwksURL.Close)

	s := newStack(t, withEnv("STEPGATE_PINGONE_REQUEST_KEY_FILE", keyFile),
		withTenant(func(ten *pingonesim.Tenant) {
			ten.Apps[0].JWKSURL = jwksURL.URL
			ten.Apps[0].RequireSignedRequestObject = true
		}))
	admin.Store(s.Admin)

	res, err := http.Get(s.Admin + "/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), `"kty":"RSA"`) || strings.Contains(string(body), `"d"`) {
		t.Fatalf("/jwks.json = %d %s", res.StatusCode, body)
	}

	s.stepUpAlice("/admin/")
	info, ok := s.Sim.Flow(startedFlowID(t, s, 0))
	if !ok || info.RequestAlg != "RS256" || info.Status != "COMPLETED" {
		t.Errorf("PingOne saw %+v; want an RS256 request object and a completed flow", info)
	}
	if fetched.Load() == 0 {
		t.Error("PingOne never fetched the jwksUrl")
	}
}

func TestNoJWKSEndpointWithoutARequestKey(t *testing.T) {
	s := newStack(t)
	if code := getStatus(t, s.Admin+"/jwks.json", http.Header{}); code != http.StatusNotFound {
		t.Errorf("/jwks.json without a request key = %d, want 404", code)
	}
}

func TestBadRequestKeyFileIsAConfigError(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{bad, filepath.Join(dir, "missing.pem")} {
		env := validEnv()
		env["STEPGATE_PINGONE_REQUEST_KEY_FILE"] = path
		c, err := loadConfig(environOf(env))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.validate(os.ReadFile); err == nil || !strings.Contains(err.Error(), "STEPGATE_PINGONE_REQUEST_KEY_FILE") {
			t.Errorf("%s: err = %v, want one naming STEPGATE_PINGONE_REQUEST_KEY_FILE", filepath.Base(path), err)
		}
	}
}

// TestCancelWorksWhenPingOneRefusesSessionReset: PingOne's flows do not
// advertise session.reset (SOURCES A22, B17); the cancel button must still
// drop the flow and let the user start again.
func TestCancelWorksWhenPingOneRefusesSessionReset(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(b.follow(b.post("action", "start")).Body)
	if len(ids) == 0 {
		t.Fatal("no devices offered")
	}
	s.Sim.SetFault(pingonesim.Fault{Op: "flows", Kind: "status", Status: http.StatusUnsupportedMediaType, Count: 1})
	// Cancel goes back to the app (issue 16); opening the challenge again
	// starts afresh.
	if r := b.post("action", "cancel"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("cancel: %d, want 303", r.StatusCode)
	}
	r := b.get("/.stepgate/challenge?return=/admin/")
	if !strings.Contains(r.Body, `data-state="start"`) {
		t.Fatalf("after cancel the page is not back at the start: %d %s", r.StatusCode, r.Body)
	}
	if ev := s.Logs.Events("mfa.cancelled"); len(ev) != 1 {
		t.Errorf("mfa.cancelled events = %v", ev)
	}
	r = b.follow(b.post("action", "start"))
	if len(deviceIDs(r.Body)) == 0 {
		t.Errorf("a new flow did not start after the cancel: %s", r.Body)
	}
}

// TestPromptLoginRuleReachesPingOne: a rule's prompt=login is sent on
// authorize; other rules send no prompt.
func TestPromptLoginRuleReachesPingOne(t *testing.T) {
	s := newStack(t, withEnv("STEPGATE_RULES", "/admin/ mfa prompt=login; /api/ mfa"))
	s.stepUpAlice("/admin/")
	if info, _ := s.Sim.Flow(startedFlowID(t, s, 0)); info.Prompt != "login" {
		t.Errorf("prompt at PingOne = %q, want login", info.Prompt)
	}
	b := s.browser("bob")
	b.get("/.stepgate/challenge?return=/api/")
	b.post("action", "start")
	if info, _ := s.Sim.Flow(startedFlowID(t, s, 1)); info.Prompt != "" {
		t.Errorf("prompt at PingOne for a rule without it = %q", info.Prompt)
	}
}

// TestUnknownPingOneContentIsShownAuditedAndCounted: a device type and a
// flow status stepgate does not know never crash the page nor complete a
// step-up; each gives an audit line and a metric.
func TestUnknownPingOneContentIsShownAuditedAndCounted(t *testing.T) {
	s := newStack(t, withTenant(func(ten *pingonesim.Tenant) {
		ten.Users = append(ten.Users, pingonesim.User{ID: "zoe-id", Username: "zoe", DeviceSelection: pingonesim.PromptToSelect,
			Devices: []pingonesim.Device{
				{ID: "zoe-oath", Type: "OATH_TOKEN", Nickname: "Zoe's token"},
				{ID: "zoe-sms", Type: "SMS", Phone: "+15550199"},
			}})
	}))
	b := s.browser("zoe")
	b.get("/.stepgate/challenge?return=/admin/")
	page := b.follow(b.post("action", "start"))
	if page.StatusCode != http.StatusOK || len(deviceIDs(page.Body)) != 2 || !strings.Contains(page.Body, "Another method") {
		t.Fatalf("device list with an unknown type: %d %s", page.StatusCode, page.Body)
	}
	if strings.Contains(page.Body, "type_OATH_TOKEN") {
		t.Error("the page shows a raw message key for the unknown type")
	}
	if got := s.metric(t, `stepgate_pingone_unexpected_total{what="device_type"}`); got < 1 {
		t.Errorf("device_type metric = %v", got)
	}
	ev := s.Logs.Events("pingone.unexpected")
	if len(ev) == 0 || ev[0]["what"] != "device_type" || ev[0]["value"] != "OATH_TOKEN" || ev[0]["user"] != "zoe" {
		t.Errorf("audit = %v", ev)
	}

	if err := s.Sim.ForceStatus(startedFlowID(t, s, 0), "CONSENT_REQUIRED"); err != nil {
		t.Fatal(err)
	}
	page = b.get("/.stepgate/challenge")
	if page.StatusCode != http.StatusBadGateway || !strings.Contains(page.Body, "does not understand") {
		t.Errorf("unknown status page: %d %s", page.StatusCode, page.Body)
	}
	if got := s.metric(t, `stepgate_pingone_unexpected_total{what="status"}`); got != 1 {
		t.Errorf("status metric = %v, want 1", got)
	}
	found := false
	for _, e := range s.Logs.Events("pingone.unexpected") {
		found = found || (e["what"] == "status" && e["value"] == "CONSENT_REQUIRED")
	}
	if !found {
		t.Errorf("no audit line for the unknown status: %v", s.Logs.Events("pingone.unexpected"))
	}
	if r := b.get("/admin/"); r.StatusCode != http.StatusFound {
		t.Errorf("GET /admin/ after an unknown status = %d, want 302 to the challenge (no step-up)", r.StatusCode)
	}
}

// TestPushPageShowsTheNumberToMatch: with push number matching on, the push
// page shows the number PingOne's flow carries (the simulator's INFERRED
// shape), and picking it on the phone completes the step-up.
func TestPushPageShowsTheNumberToMatch(t *testing.T) {
	s := newStack(t, withTenant(func(ten *pingonesim.Tenant) {
		ten.Policies[0].NumberMatching = pingonesim.NumberMatchingSelect
	}))
	b := s.browser("bob")
	b.get("/.stepgate/challenge?return=/admin/")
	r := b.follow(b.post("action", "start"))
	flowID := startedFlowID(t, s, 0)
	choices := s.Sim.Inbox("bob")[0].NumberChoices
	var number string
	for _, c := range choices {
		if strings.Contains(r.Body, `id="push-number" aria-describedby="push-number-intro">`+c+`</p>`) {
			number = c
		}
	}
	if !strings.Contains(r.Body, `data-state="push"`) || number == "" {
		t.Fatalf("push page does not show one of the phone's choices %v: %s", choices, r.Body)
	}
	if err := s.Sim.PushNumber(flowID, number); err != nil {
		t.Fatal(err)
	}
	if st := statusJSON(t, b); st["status"] != "COMPLETED" {
		t.Fatalf("status after matching = %v", st)
	}
	if r := b.get("/admin/"); r.StatusCode != http.StatusOK {
		t.Errorf("after the match GET /admin/ = %d", r.StatusCode)
	}
}

func TestPushPageWithoutNumberMatchingShowsNoNumber(t *testing.T) {
	s := newStack(t)
	b := s.browser("bob")
	b.get("/.stepgate/challenge?return=/admin/")
	if r := b.follow(b.post("action", "start")); strings.Contains(r.Body, "push-number") {
		t.Errorf("a number is shown without number matching: %s", r.Body)
	}
}

// TestWhatsAppIsACodeMethod: PingOne's WHATSAPP devices (SOURCES B21) get
// their own label and a code, like SMS.
func TestWhatsAppIsACodeMethod(t *testing.T) {
	s := newStack(t, withTenant(func(ten *pingonesim.Tenant) {
		ten.Users = append(ten.Users, pingonesim.User{ID: "yan-id", Username: "yan",
			Devices: []pingonesim.Device{{ID: "yan-wa", Type: "WHATSAPP", Phone: "+15550142"}}})
	}))
	b := s.browser("yan")
	b.get("/.stepgate/challenge?return=/admin/")
	r := b.follow(b.post("action", "start"))
	if !strings.Contains(r.Body, `data-state="otp"`) || !strings.Contains(r.Body, "*******42") {
		t.Fatalf("WhatsApp device: not on the OTP page naming the number: %s", r.Body)
	}
	if m := s.Sim.Inbox("yan")[0]; m.Type != "WHATSAPP" || !strings.Contains(m.Text, m.OTP) {
		t.Errorf("message = %+v", m)
	}
	if r := b.post("action", "otp", "otp", s.latestOTP("yan")); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/admin/" {
		t.Errorf("WhatsApp code: %d to %q", r.StatusCode, r.Header.Get("Location"))
	}
	if got := s.metric(t, `stepgate_pingone_unexpected_total{what="device_type"}`); got != 0 {
		t.Errorf("WHATSAPP counted as unexpected: %v", got)
	}
}

// TestPingOneCoolDownIsExplained: after PingOne's per-user cool-down starts
// (3 wrong codes), choosing a code method again shows why it is refused.
func TestPingOneCoolDownIsExplained(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(b.follow(b.post("action", "start")).Body)
	b.follow(b.post("action", "select", "device", ids[0]))
	for range 3 {
		b.post("action", "otp", "otp", wrongCode(s.latestOTP("alice")))
	}
	b = s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	ids = deviceIDs(b.follow(b.post("action", "start")).Body)
	if len(ids) == 0 {
		t.Fatal("no devices offered")
	}
	r := b.submit("action", "select", "device", ids[1]) // the e-mail: blocked as well (a 303 to the page that says so)
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(r.Body, "Too many failed attempts with this method") {
		t.Errorf("select during PingOne's cool-down: %d %s", r.StatusCode, r.Body)
	}
	if r := b.get("/admin/"); r.StatusCode != http.StatusFound {
		t.Errorf("GET /admin/ during the cool-down = %d, want 302", r.StatusCode)
	}
}
