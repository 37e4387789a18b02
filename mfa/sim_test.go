package mfa

// Integration tests: the Client against the PingOne simulator over real
// loopback HTTP.

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

var simStart = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

type observed struct {
	mu  sync.Mutex
	ops []string
}

func (o *observed) add(op string) { o.mu.Lock(); defer o.mu.Unlock(); o.ops = append(o.ops, op) }
func (o *observed) list() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.ops)
}

type simEnv struct {
	t      *testing.T
	sim    *pingonesim.Server
	clock  *pingonesim.Clock
	srv    *httptest.Server
	cfg    Config
	client *Client
	obs    *observed
}

func newSimEnv(t *testing.T, tenant pingonesim.Tenant, mutate func(*Config)) *simEnv {
	t.Helper()
	return newSimEnvWrapped(t, tenant, nil, mutate)
}

// newSimEnvWrapped puts wrap (if any) in front of the simulator, to make
// PingOne answer in ways the simulator does not.
func newSimEnvWrapped(t *testing.T, tenant pingonesim.Tenant, wrap func(http.Handler) http.Handler, mutate func(*Config)) *simEnv {
	t.Helper()
	clock := pingonesim.NewClock(simStart)
	sim := pingonesim.New(pingonesim.Options{Tenant: tenant, Clock: clock})
	var h http.Handler = sim
	if wrap != nil {
		h = wrap(sim)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	e := &simEnv{t: t, sim: sim, clock: clock, srv: srv, obs: &observed{}}
	app := tenant.Apps[0]
	e.cfg = Config{
		AuthBase:     srv.URL,
		EnvID:        tenant.EnvID,
		ClientID:     app.ClientID,
		ClientSecret: Secret(app.Secret),
		Timeout:      5 * time.Second,
		Now:          clock.Now,
		Observe:      func(op string, code int, d time.Duration) { e.obs.add(op) },
	}
	if mutate != nil {
		mutate(&e.cfg)
	}
	e.client = e.newClient()
	return e
}

func (e *simEnv) newClient() *Client {
	e.t.Helper()
	c, err := New(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *simEnv) start(user string) (*Flow, *Pending) {
	e.t.Helper()
	f, p, err := e.client.Start(context.Background(), StartRequest{User: user, RemoteIP: "203.0.113.7", ACR: pingonesim.DemoPolicy})
	if err != nil {
		e.t.Fatalf("Start(%s): %v", user, err)
	}
	return f, p
}

// lastOTP is the newest code the simulator delivered to user for device.
func (e *simEnv) lastOTP(user, deviceID string) Secret {
	e.t.Helper()
	for _, m := range e.sim.Inbox(user) {
		if m.DeviceID == deviceID && m.OTP != "" {
			return Secret(m.OTP)
		}
	}
	e.t.Fatalf("no OTP for %s/%s in inbox", user, deviceID)
	return ""
}

func (e *simEnv) complete(p *Pending, f *Flow) *Result {
	e.t.Helper()
	res, err := e.client.Complete(context.Background(), p, f)
	if err != nil {
		e.t.Fatalf("Complete: %v", err)
	}
	return res
}

func wantKind(t *testing.T, err error, kind ErrorKind) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *Error of kind %s", err, err, kind)
	}
	if e.Kind != kind {
		t.Fatalf("kind = %s, want %s (error: %v)", e.Kind, kind, err)
	}
	return e
}

// smsTenant is the demo tenant plus a DEFAULT_TO_FIRST user with one SMS
// device, a FIDO2-only user and a push-only user with a short push timeout.
func customTenant() pingonesim.Tenant {
	t := pingonesim.DemoTenant()
	fido := pingonesim.DemoFIDO2PrivateKey()
	t.Users = append(t.Users,
		pingonesim.User{ID: "erin-id", Username: "erin", DeviceSelection: pingonesim.DefaultToFirst,
			Devices: []pingonesim.Device{{ID: "erin-sms", Type: "SMS", Phone: "+15551234567"}}},
		pingonesim.User{ID: "fran-id", Username: "fran",
			Devices: []pingonesim.Device{{ID: "fran-key", Type: "FIDO2", Nickname: "YubiKey",
				CredentialID: pingonesim.DemoFIDO2CredentialID, PublicKey: &fido.PublicKey}}},
	)
	return t
}

func TestFirstStatus(t *testing.T) {
	e := newSimEnv(t, customTenant(), nil)
	tests := []struct {
		name           string
		user           string
		want           Status
		wantChallenged bool
		check          func(t *testing.T, f *Flow)
	}{
		{"a user with two devices and prompt-to-select is asked to choose", "alice", StatusDeviceSelectionRequired, false,
			func(t *testing.T, f *Flow) {
				if len(f.Devices) != 2 {
					t.Fatalf("devices = %+v, want 2", f.Devices)
				}
				for _, d := range f.Devices {
					if d.ID == "" || d.Type == "" || d.Target == "" {
						t.Errorf("device %+v lacks id, type or masked target", d)
					}
					if d.Target == "+15551234567" {
						t.Errorf("target not masked: %q", d.Target)
					}
				}
			}},
		{"a default-to-first SMS user gets an OTP straight away", "erin", StatusOTPRequired, true,
			func(t *testing.T, f *Flow) {
				if f.SelectedDeviceID != "erin-sms" {
					t.Errorf("selected = %q, want erin-sms", f.SelectedDeviceID)
				}
			}},
		{"a push user gets a push straight away", "bob", StatusPushConfirmationRequired, true, nil},
		{"a FIDO2-only user gets assertion options as an object", "fran", StatusAssertionRequired, true,
			func(t *testing.T, f *Flow) {
				var opts struct {
					Challenge        json.RawMessage `json:"challenge"`
					RPID             string          `json:"rpId"`
					AllowCredentials []struct {
						ID   json.RawMessage
						Type string
					}
				}
				if err := json.Unmarshal(f.AssertionOptions, &opts); err != nil {
					t.Fatalf("options %s: %v", f.AssertionOptions, err)
				}
				ch, err := pingonesim.DecodeWebAuthnBytes(opts.Challenge)
				if err != nil || len(ch) != 32 || opts.RPID != "localhost" || len(opts.AllowCredentials) != 1 {
					t.Errorf("options = %+v (challenge %x, %v)", opts, ch, err)
				}
			}},
		{"a user without devices under a bypass policy completes at once", "dave", StatusCompleted, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, p := e.start(tt.user)
			if f.Status != tt.want {
				t.Fatalf("status = %s, want %s", f.Status, tt.want)
			}
			if p.Challenged != tt.wantChallenged {
				t.Errorf("Challenged = %v, want %v", p.Challenged, tt.wantChallenged)
			}
			if p.FlowID != f.ID || p.Nonce == "" || p.State == "" || p.ACR != pingonesim.DemoPolicy {
				t.Errorf("pending = %+v", p)
			}
			if !slices.ContainsFunc(p.Cookies, func(c Cookie) bool { return c.Name == "ST" && c.Value != "" }) {
				t.Errorf("pending cookies %v lack ST", p.Cookies)
			}
			if tt.check != nil {
				tt.check(t, f)
			}
		})
	}
}

func TestOTPCompletesForEveryResponseType(t *testing.T) {
	for _, rt := range []string{ResponseTypeTokenIDToken, ResponseTypeIDToken, ResponseTypeCode} {
		t.Run("response type "+rt, func(t *testing.T) {
			e := newSimEnv(t, pingonesim.DemoTenant(), func(c *Config) { c.ResponseType = rt })
			ctx := context.Background()
			f, p := e.start("alice")
			if (p.CodeVerifier != "") != (rt == ResponseTypeCode) {
				t.Errorf("code verifier %q for response type %s", p.CodeVerifier, rt)
			}
			f, err := e.client.SelectDevice(ctx, p, pingonesim.DemoAliceSMSID)
			if err != nil || f.Status != StatusOTPRequired {
				t.Fatalf("SelectDevice: %v, %v", f, err)
			}
			f, err = e.client.CheckOTP(ctx, p, e.lastOTP("alice", pingonesim.DemoAliceSMSID))
			if err != nil || f.Status != StatusCompleted {
				t.Fatalf("CheckOTP: %+v, %v", f, err)
			}
			res := e.complete(p, f)
			if res.Subject != pingonesim.DemoAliceID || res.ACR != pingonesim.DemoPolicy || !res.MFA {
				t.Errorf("result = %+v, want alice, %s, MFA", res, pingonesim.DemoPolicy)
			}
			if !res.Expiry.After(simStart) || res.IDToken == "" || len(res.AMR) == 0 {
				t.Errorf("result = %+v", res)
			}
			ops := e.obs.list()
			if rt == ResponseTypeCode && !slices.Contains(ops, "token") {
				t.Errorf("ops %v lack token exchange", ops)
			}
			if rt != ResponseTypeCode && slices.Contains(ops, "token") {
				t.Errorf("ops %v have a token call for %s", ops, rt)
			}
			for _, want := range []string{"authorize", "device_select", "otp_check", "jwks"} {
				if !slices.Contains(ops, want) {
					t.Errorf("observed ops %v lack %s", ops, want)
				}
			}
		})
	}
}

func TestResendIssuesANewCodeAndRejectsTheOld(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	ctx := context.Background()
	_, p := e.start("alice")
	if _, err := e.client.SelectDevice(ctx, p, pingonesim.DemoAliceSMSID); err != nil {
		t.Fatal(err)
	}
	old := e.lastOTP("alice", pingonesim.DemoAliceSMSID)
	if _, err := e.client.SelectDevice(ctx, p, pingonesim.DemoAliceSMSID); err != nil {
		t.Fatal(err)
	}
	if n := len(e.sim.Inbox("alice")); n != 2 {
		t.Fatalf("inbox has %d messages, want 2", n)
	}
	fresh := e.lastOTP("alice", pingonesim.DemoAliceSMSID)
	if fresh == old {
		t.Skip("the two random codes collided")
	}
	_, err := e.client.CheckOTP(ctx, p, old)
	wantKind(t, err, KindWrongOTP)
	f, err := e.client.CheckOTP(ctx, p, fresh)
	if err != nil || f.Status != StatusCompleted {
		t.Fatalf("new code: %v, %v", f, err)
	}
}

func TestSwitchingDevice(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	ctx := context.Background()
	_, p := e.start("alice")
	if _, err := e.client.SelectDevice(ctx, p, pingonesim.DemoAliceSMSID); err != nil {
		t.Fatal(err)
	}
	f, err := e.client.SelectDevice(ctx, p, pingonesim.DemoAliceEmailID)
	if err != nil || f.Status != StatusOTPRequired || f.SelectedDeviceID != pingonesim.DemoAliceEmailID {
		t.Fatalf("switch: %+v, %v", f, err)
	}
	if m := e.sim.Inbox("alice")[0]; m.Type != "EMAIL" {
		t.Errorf("newest message type = %s, want EMAIL", m.Type)
	}
	f, err = e.client.CheckOTP(ctx, p, e.lastOTP("alice", pingonesim.DemoAliceEmailID))
	if err != nil || f.Status != StatusCompleted {
		t.Fatalf("CheckOTP: %v, %v", f, err)
	}
	if res := e.complete(p, f); !res.MFA {
		t.Errorf("MFA = false after an e-mail OTP")
	}
}

func TestWrongOTPThenRightOTP(t *testing.T) {
	e := newSimEnv(t, customTenant(), nil)
	ctx := context.Background()
	_, p := e.start("erin")
	_, err := e.client.CheckOTP(ctx, p, "000000x")
	ee := wantKind(t, err, KindWrongOTP)
	if ee.AttemptsRemaining != 2 || ee.HTTPStatus != 400 || ee.DetailCode != "INVALID_OTP" || ee.CorrelationID == "" {
		t.Errorf("error = %+v, want 2 attempts left, 400, INVALID_OTP, a correlation id", ee)
	}
	f, err := e.client.CheckOTP(ctx, p, e.lastOTP("erin", "erin-sms"))
	if err != nil || f.Status != StatusCompleted {
		t.Fatalf("right OTP: %v, %v", f, err)
	}
}

func TestOTPFailureLimitFailsTheFlow(t *testing.T) {
	e := newSimEnv(t, customTenant(), nil)
	ctx := context.Background()
	_, p := e.start("erin")
	var last *Error
	for i := range 3 {
		_, err := e.client.CheckOTP(ctx, p, "bad")
		last = wantKind(t, err, KindWrongOTP)
		if want := 2 - i; last.AttemptsRemaining != want {
			t.Errorf("attempt %d: remaining = %d, want %d", i+1, last.AttemptsRemaining, want)
		}
	}
	f, err := e.client.Read(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if f.Status != StatusFailed {
		t.Fatalf("status = %s, want FAILED", f.Status)
	}
	if _, err := e.client.Complete(ctx, p, f); err == nil {
		t.Error("Complete accepted a FAILED flow")
	}
}

func TestPush(t *testing.T) {
	tests := []struct {
		name    string
		outcome pingonesim.PushOutcome
		want    Status
	}{
		{"an approved push completes", pingonesim.PushApprove, StatusCompleted},
		{"a denied push fails", pingonesim.PushDeny, StatusFailed},
		{"an unanswered push times out", pingonesim.PushTimeout, StatusPushConfirmationTimedOut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSimEnv(t, pingonesim.DemoTenant(), nil)
			ctx := context.Background()
			f, p := e.start("bob")
			f, err := e.client.Read(ctx, p)
			if err != nil || f.Status != StatusPushConfirmationRequired {
				t.Fatalf("poll before answer: %v, %v", f, err)
			}
			if err := e.sim.Push(p.FlowID, tt.outcome); err != nil {
				t.Fatal(err)
			}
			f, err = e.client.Read(ctx, p)
			if err != nil || f.Status != tt.want {
				t.Fatalf("poll after answer: %+v, %v; want %s", f, err, tt.want)
			}
			switch tt.want {
			case StatusCompleted:
				if res := e.complete(p, f); !res.MFA || res.Subject != pingonesim.DemoBobID {
					t.Errorf("result = %+v", res)
				}
			case StatusPushConfirmationTimedOut:
				f, err = e.client.SelectDevice(ctx, p, pingonesim.DemoBobMobileID)
				if err != nil || f.Status != StatusPushConfirmationRequired {
					t.Errorf("retry push: %v, %v", f, err)
				}
			}
		})
	}
}

func TestTOTP(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	ctx := context.Background()
	_, p := e.start("carol")
	if _, err := e.client.SelectDevice(ctx, p, pingonesim.DemoCarolTOTPID); err != nil {
		t.Fatal(err)
	}
	f, err := e.client.CheckOTP(ctx, p, Secret(e.sim.TOTP(pingonesim.DemoCarolTOTPID)))
	if err != nil || f.Status != StatusCompleted {
		t.Fatalf("CheckOTP: %v, %v", f, err)
	}
	e.complete(p, f)
}

// assertion builds what navigator.credentials.get would return for the
// simulator's FIDO2 key.
func assertion(t *testing.T, opts json.RawMessage, origin, rpID string, counter uint32) string {
	t.Helper()
	var o struct {
		Challenge json.RawMessage `json:"challenge"`
	}
	if err := json.Unmarshal(opts, &o); err != nil {
		t.Fatal(err)
	}
	ch, err := pingonesim.DecodeWebAuthnBytes(o.Challenge)
	if err != nil {
		t.Fatal(err)
	}
	cdj, _ := json.Marshal(map[string]string{"type": "webauthn.get", "challenge": base64.RawURLEncoding.EncodeToString(ch), "origin": origin})
	rp := sha256.Sum256([]byte(rpID))
	ad := append(rp[:], 0x01)
	ad = binary.BigEndian.AppendUint32(ad, counter)
	cdh := sha256.Sum256(cdj)
	digest := sha256.Sum256(append(slices.Clone(ad), cdh[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, pingonesim.DemoFIDO2PrivateKey(), digest[:])
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	a, _ := json.Marshal(map[string]any{
		"id": b64(pingonesim.DemoFIDO2CredentialID), "rawId": b64(pingonesim.DemoFIDO2CredentialID), "type": "public-key",
		"response": map[string]string{"clientDataJSON": b64(cdj), "authenticatorData": b64(ad), "signature": b64(sig)},
	})
	return string(a)
}

func TestAssertion(t *testing.T) {
	e := newSimEnv(t, customTenant(), nil)
	ctx := context.Background()
	f, p := e.start("fran")
	origin := "http://localhost:8083"
	_, err := e.client.CheckAssertion(ctx, p, origin, `{"type":"public-key"}`)
	if err == nil {
		t.Fatal("a bogus assertion was accepted")
	}
	f, err = e.client.Read(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	f, err = e.client.CheckAssertion(ctx, p, origin, assertion(t, f.AssertionOptions, origin, "localhost", 1))
	if err != nil || f.Status != StatusCompleted {
		t.Fatalf("CheckAssertion: %+v, %v", f, err)
	}
	if res := e.complete(p, f); !res.MFA {
		t.Error("MFA = false after a FIDO2 assertion")
	}
}

func TestExpiredFlow(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	_, p := e.start("alice")
	e.clock.Advance(16 * time.Minute)
	_, err := e.client.Read(context.Background(), p)
	if ee := wantKind(t, err, KindFlowExpired); ee.HTTPStatus != 404 {
		t.Errorf("HTTP status = %d, want 404", ee.HTTPStatus)
	}
	_, err = e.client.SelectDevice(context.Background(), p, pingonesim.DemoAliceSMSID)
	wantKind(t, err, KindFlowExpired)
}

func TestBypassIsNotMFA(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	f, p := e.start("dave")
	res := e.complete(p, f)
	if res.MFA {
		t.Errorf("MFA = true for a bypass (amr %v)", res.AMR)
	}
	if res.Subject != pingonesim.DemoDaveID {
		t.Errorf("subject = %q", res.Subject)
	}
}

func TestRemoteIPReachesPingOne(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	_, p := e.start("alice")
	info, ok := e.sim.Flow(p.FlowID)
	if !ok {
		t.Fatal("simulator does not know the flow")
	}
	if info.RemoteIP != "203.0.113.7" || info.User != "alice" || info.ClientID != pingonesim.DemoClientID || info.ACR != pingonesim.DemoPolicy {
		t.Errorf("flow info = %+v", info)
	}
}

func TestPendingMovesBetweenClients(t *testing.T) {
	for _, rt := range []string{ResponseTypeTokenIDToken, ResponseTypeCode} {
		t.Run("response type "+rt, func(t *testing.T) {
			e := newSimEnv(t, pingonesim.DemoTenant(), func(c *Config) { c.ResponseType = rt })
			ctx := context.Background()
			_, p := e.start("alice")
			if _, err := e.client.SelectDevice(ctx, p, pingonesim.DemoAliceSMSID); err != nil {
				t.Fatal(err)
			}
			sealed, err := json.Marshal(*p)
			if err != nil {
				t.Fatal(err)
			}
			other := e.newClient() // another replica: no shared memory with the first
			var restored Pending
			if err := json.Unmarshal(sealed, &restored); err != nil {
				t.Fatal(err)
			}
			f, err := other.CheckOTP(ctx, &restored, e.lastOTP("alice", pingonesim.DemoAliceSMSID))
			if err != nil || f.Status != StatusCompleted {
				t.Fatalf("CheckOTP on the other client: %v, %v", f, err)
			}
			res, err := other.Complete(ctx, &restored, f)
			if err != nil || !res.MFA || res.Subject != pingonesim.DemoAliceID {
				t.Fatalf("Complete on the other client: %+v, %v", res, err)
			}
		})
	}
}

func TestFlowCallsWithoutTheSTCookieAreRefused(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	_, p := e.start("alice")
	p.Cookies = nil
	_, err := e.client.Read(context.Background(), p)
	if ee := wantKind(t, err, KindInvalid); ee.HTTPStatus != 401 || ee.Code != "INVALID_TOKEN" {
		t.Errorf("error = %+v, want 401 INVALID_TOKEN", ee)
	}
}

func TestMalformedFlowIDIsRefusedBeforeAnyRequest(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	for _, id := range []string{"", "../as/token", "a/b", "a?b", "a%2Fb", string(make([]byte, 129))} {
		before := e.sim.Requests()
		_, err := e.client.Read(context.Background(), &Pending{FlowID: id})
		wantKind(t, err, KindInvalid)
		if e.sim.Requests() != before {
			t.Errorf("flow id %q: a request was sent", id)
		}
	}
}

// TestCustomDomain runs a whole step-up against an environment served on a
// PingOne custom domain: no /{EnvID} in any path, issuer {AuthBase}/as. A
// client configured the other way round fails at authorize, closed.
func TestCustomDomain(t *testing.T) {
	tenant := pingonesim.DemoTenant()
	tenant.CustomDomain = true
	e := newSimEnv(t, tenant, func(c *Config) { c.CustomDomain = true; c.ResponseType = ResponseTypeCode })
	if want := e.srv.URL + "/as"; e.client.Issuer() != want {
		t.Fatalf("issuer = %q, want %q", e.client.Issuer(), want)
	}
	ctx := context.Background()
	f, p := e.start("alice")
	f, err := e.client.SelectDevice(ctx, p, pingonesim.DemoAliceSMSID)
	if err != nil || f.Status != StatusOTPRequired {
		t.Fatalf("SelectDevice: %+v, %v", f, err)
	}
	if f, err = e.client.CheckOTP(ctx, p, e.lastOTP("alice", pingonesim.DemoAliceSMSID)); err != nil || f.Status != StatusCompleted {
		t.Fatalf("CheckOTP: %+v, %v", f, err)
	}
	if res := e.complete(p, f); res.Subject != pingonesim.DemoAliceID || !res.MFA {
		t.Errorf("result = %+v", res)
	}
	for _, op := range []string{"authorize", "device_select", "otp_check", "token", "jwks"} {
		if !slices.Contains(e.obs.list(), op) {
			t.Errorf("observed ops %v lack %s", e.obs.list(), op)
		}
	}

	// The same simulator, a client that puts the environment id in paths.
	e.cfg.CustomDomain = false
	_, _, err = e.newClient().Start(ctx, StartRequest{User: "alice", RemoteIP: "203.0.113.7", ACR: pingonesim.DemoPolicy})
	wantKind(t, err, KindInvalid)
	// And a custom-domain client against an environment served under /{EnvID}.
	plain := newSimEnv(t, pingonesim.DemoTenant(), func(c *Config) { c.CustomDomain = true })
	_, _, err = plain.client.Start(ctx, StartRequest{User: "alice", RemoteIP: "203.0.113.7", ACR: pingonesim.DemoPolicy})
	wantKind(t, err, KindInvalid)
}

// A PingOne 400 names the parameter it refused in details[].target: the
// error (and so the log line) says which, never the value sent.
func TestRefusalNamesTheParameterPingOneNamed(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	_, p := e.start("alice")
	const sent = "no-such-device-0123"
	_, err := e.client.SelectDevice(context.Background(), p, sent)
	pe := wantKind(t, err, KindInvalid)
	if pe.HTTPStatus != 400 || pe.Code != "INVALID_DATA" || pe.DetailCode != "INVALID_VALUE" {
		t.Fatalf("error = %v, want 400 INVALID_DATA/INVALID_VALUE", err)
	}
	if got := err.Error(); !strings.Contains(got, "target device.id") {
		t.Errorf("error %q does not name the parameter PingOne refused (device.id)", got)
	}
	if strings.Contains(err.Error(), sent) {
		t.Errorf("error %q carries the value sent", err.Error())
	}
}
