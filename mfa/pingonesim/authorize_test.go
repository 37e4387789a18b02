package pingonesim

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestAuthorizeRejectsBadRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(ten *Tenant) {
		ten.Apps = append(ten.Apps, App{ClientID: "other-app", Secret: "other-secret", Policies: []string{DemoPolicy}})
		ten.Policies = append(ten.Policies, Policy{Name: "Unassigned"})
	})
	signed := func(method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
		tok := jwt.NewWithClaims(method, claims)
		for k, v := range header {
			tok.Header[k] = v
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	baseClaims := func() jwt.MapClaims {
		return jwt.MapClaims{"iss": DemoClientID, "sub": "alice", "aud": h.issuer(), "exp": t0.Add(time.Minute).Unix()}
	}
	tests := []struct {
		name       string
		over       url.Values
		wantStatus int
		wantTarget string
	}{
		{"an unknown client_id is refused", url.Values{"client_id": {"nope"}}, 400, "client_id"},
		{"a redirect response_mode is refused", url.Values{"response_mode": {"query"}}, 400, "response_mode"},
		{"a missing response_mode is refused", url.Values{"response_mode": nil}, 400, "response_mode"},
		{"an unknown response_type is refused", url.Values{"response_type": {"code banana"}}, 400, "response_type"},
		{"id_token without nonce is refused", url.Values{"nonce": nil}, 400, "nonce"},
		{"a scope without openid is refused", url.Values{"scope": {"profile"}}, 400, "scope"},
		{"an unassigned acr_values policy is refused", url.Values{"acr_values": {"Unassigned"}}, 400, "acr_values"},
		{"an unknown acr_values policy is refused", url.Values{"acr_values": {"Nope"}}, 400, "acr_values"},
		{"a non-numeric max_age is refused", url.Values{"max_age": {"1h"}}, 400, "max_age"},
		{"a repeated client_id is refused", url.Values{"client_id": {DemoClientID, DemoClientID}}, 400, "client_id"},
		{"an unknown PKCE method is refused", url.Values{"response_type": {"code"}, "code_challenge": {strings.Repeat("a", 43)}, "code_challenge_method": {"S512"}}, 400, "code_challenge_method"},
		{"a missing login_hint_token is refused", url.Values{"login_hint_token": nil}, 400, "login_hint_token"},
		{"a login_hint_token signed with the wrong secret is refused",
			url.Values{"login_hint_token": {signed(jwt.SigningMethodHS256, []byte("wrong"), nil, baseClaims())}}, 400, "login_hint_token"},
		{"a login_hint_token with the wrong aud is refused",
			url.Values{"login_hint_token": {h.token(map[string]any{"aud": "https://auth.pingone.com/" + DemoEnvID + "/as"})}}, 400, "login_hint_token"},
		{"an expired login_hint_token is refused",
			url.Values{"login_hint_token": {h.token(map[string]any{"exp": t0.Add(-2 * time.Minute).Unix()})}}, 400, "login_hint_token"},
		{"a login_hint_token without exp is refused by default",
			url.Values{"login_hint_token": {h.token(map[string]any{"exp": nil})}}, 400, "login_hint_token"},
		{"a login_hint_token for an unknown user is refused",
			url.Values{"login_hint_token": {h.token(map[string]any{"sub": "mallory"})}}, 400, "login_hint_token"},
		{"a login_hint_token issued by an application the environment lacks is refused",
			url.Values{"login_hint_token": {signed(jwt.SigningMethodHS256, []byte("other-secret"), nil,
				jwt.MapClaims{"iss": "stranger-app", "sub": "alice", "aud": h.issuer(), "exp": t0.Add(time.Minute).Unix()})}}, 400, "login_hint_token"},
		{"a login_hint_token naming another application but signed with this client's secret is refused",
			url.Values{"login_hint_token": {signed(jwt.SigningMethodHS256, []byte(DemoClientSecret), nil,
				jwt.MapClaims{"iss": "other-app", "sub": "alice", "aud": h.issuer(), "exp": t0.Add(time.Minute).Unix()})}}, 400, "login_hint_token"},
		{"a login_hint_token with a cty header is refused",
			url.Values{"login_hint_token": {signed(jwt.SigningMethodHS256, []byte(DemoClientSecret), map[string]any{"cty": "JWT"}, baseClaims())}}, 400, "login_hint_token"},
		{"a login_hint_token with an enc header is refused",
			url.Values{"login_hint_token": {signed(jwt.SigningMethodHS256, []byte(DemoClientSecret), map[string]any{"enc": "A256GCM"}, baseClaims())}}, 400, "login_hint_token"},
		{"a login_hint_token with alg none is refused",
			url.Values{"login_hint_token": {signed(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil, baseClaims())}}, 400, "login_hint_token"},
		{"a request JWT with a bad signature is refused",
			url.Values{"request": {signed(jwt.SigningMethodHS256, []byte("wrong"), nil, baseClaims())}}, 400, "request"},
		{"a request JWT that is RS256 is refused when the app has no JWKS",
			url.Values{"request": {h.sim.SignIDToken(baseClaims())}}, 400, "request"},
		{"a request JWT with a non-string pi.remoteIp is refused",
			url.Values{"request": {h.token(map[string]any{"pi.remoteIp": 7})}}, 400, "request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.authorize(h.authorizeParams("alice", tt.over))
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", r.status, tt.wantStatus, r.raw)
			}
			if got := str(r.body, "code"); got != "INVALID_DATA" {
				t.Errorf("code = %q, want INVALID_DATA", got)
			}
			if got := str(detail(r), "target"); got != tt.wantTarget {
				t.Errorf("detail target = %q, want %q (body %s)", got, tt.wantTarget, r.raw)
			}
			if got, want := str(r.body, "id"), r.header.Get("Correlation-Id"); got == "" || got != want {
				t.Errorf("error id = %q, Correlation-Id = %q; want equal and non-empty", got, want)
			}
			if len(r.header.Values("Set-Cookie")) != 0 {
				t.Errorf("a refused authorize set cookies: %v", r.header.Values("Set-Cookie"))
			}
		})
	}
}

func TestAuthorizeAcceptsVariants(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(ten *Tenant) {
		ten.Apps[0].AllowNoExp = true
		ten.Apps[0].Policies = []string{DemoPolicy, "Second"}
		ten.Policies = append(ten.Policies, Policy{Name: "Second"})
	})
	tests := []struct {
		name    string
		over    url.Values
		wantACR string
	}{
		{"a token without exp is accepted when the app allows it", url.Values{"login_hint_token": {h.token(map[string]any{"exp": nil})}}, DemoPolicy},
		{"a token expired within the 60 s skew is accepted", url.Values{"login_hint_token": {h.token(map[string]any{"exp": t0.Add(-30 * time.Second).Unix()})}}, DemoPolicy},
		{"the user may be named by id", url.Values{"login_hint_token": {h.token(map[string]any{"sub": DemoAliceID})}}, DemoPolicy},
		{"the first assigned acr_values name wins", url.Values{"acr_values": {"Unknown Second " + DemoPolicy}}, "Second"},
		{"empty acr_values runs the app's first policy", url.Values{"acr_values": nil}, DemoPolicy},
		{"response_type code needs no nonce", url.Values{"response_type": {"code"}, "nonce": nil}, DemoPolicy},
		{"a numeric max_age is accepted", url.Values{"max_age": {"300"}}, DemoPolicy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := h.start("alice", tt.over)
			info, ok := h.sim.Flow(str(r.body, "id"))
			if !ok {
				t.Fatal("flow not recorded")
			}
			if info.ACR != tt.wantACR {
				t.Errorf("ACR = %q, want %q", info.ACR, tt.wantACR)
			}
		})
	}
}

func TestAuthorizeByGETRecordsRemoteIPAndSetsSTCookie(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	params := h.authorizeParams("bob", url.Values{"request": {h.token(map[string]any{"sub": "bob", "pi.remoteIp": "203.0.113.7"})}})
	req, _ := http.NewRequest(http.MethodGet, h.env()+"/as/authorize?"+params.Encode(), nil)
	r := h.do(req)
	if r.status != 200 {
		t.Fatalf("status = %d; body %s", r.status, r.raw)
	}
	info, _ := h.sim.Flow(str(r.body, "id"))
	if got, want := info.RemoteIP, "203.0.113.7"; got != want {
		t.Errorf("RemoteIP = %q, want %q", got, want)
	}
	if got, want := info.ClientID, DemoClientID; got != want {
		t.Errorf("ClientID = %q, want %q", got, want)
	}
	cookies := (&http.Response{Header: r.header}).Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies = %v, want one ST", cookies)
	}
	c := cookies[0]
	if c.Name != "ST" || c.Path != "/"+DemoEnvID+"/" || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteNoneMode {
		t.Errorf("ST cookie = %+v, want ST; Path=/env/; HttpOnly; Secure; SameSite=None", c)
	}
}

func TestAuthorizeFirstStatus(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(ten *Tenant) {
		ten.Policies = append(ten.Policies, Policy{Name: "Block", NoDevice: NoDeviceBlock},
			Policy{Name: "Prompt", DeviceSelection: PromptToSelect})
		ten.Apps[0].Policies = append(ten.Apps[0].Policies, "Block", "Prompt")
		ten.Users = append(ten.Users,
			User{ID: "u-email", Username: "erin", Devices: []Device{{ID: "d-email", Type: "EMAIL", Email: "erin@example.com"}}},
			User{ID: "u-voice", Username: "vic", Devices: []Device{{ID: "d-voice", Type: "VOICE", Phone: "+44 20 7946 0958"}}},
			User{ID: "u-fido", Username: "fred", Devices: []Device{{ID: "d-fido", Type: "FIDO2",
				CredentialID: []byte{1, 2, 3}, PublicKey: &DemoFIDO2PrivateKey().PublicKey}}},
			User{ID: "u-two", Username: "twyla", Devices: []Device{
				{ID: "d-t1", Type: "TOTP", TOTPSecret: []byte("x")}, {ID: "d-t2", Type: "SMS", Phone: "+15551234567"}}},
		)
	})
	tests := []struct {
		name         string
		user, acr    string
		wantStatus   string
		wantSelected string
		wantInbox    int
		wantChalleng bool
	}{
		{"a user with several devices and prompt-to-select must choose", "alice", DemoPolicy, "DEVICE_SELECTION_REQUIRED", "", 0, false},
		{"a push-only user gets a push at once", "bob", DemoPolicy, "PUSH_CONFIRMATION_REQUIRED", DemoBobMobileID, 1, true},
		{"a user without devices is bypassed under BYPASS", "dave", DemoPolicy, "COMPLETED", "", 0, false},
		{"a user without devices fails under BLOCK", "dave", "Block", "FAILED", "", 0, false},
		{"a single EMAIL device gets a code at once", "erin", DemoPolicy, "OTP_REQUIRED", "d-email", 1, true},
		{"a single VOICE device gets a code at once", "vic", DemoPolicy, "OTP_REQUIRED", "d-voice", 1, true},
		{"a single FIDO2 device asks for an assertion", "fred", DemoPolicy, "ASSERTION_REQUIRED", "d-fido", 0, true},
		{"default-to-first with a TOTP first device expects a code without sending one", "twyla", DemoPolicy, "OTP_REQUIRED", "d-t1", 0, true},
		{"prompt-to-select with several devices asks to choose", "twyla", "Prompt", "DEVICE_SELECTION_REQUIRED", "", 0, false},
		{"prompt-to-select with one device selects it", "erin", "Prompt", "OTP_REQUIRED", "d-email", 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.sim.Inbox(tt.user))
			r, _ := h.start(tt.user, url.Values{"acr_values": {tt.acr}})
			if got := str(r.body, "status"); got != tt.wantStatus {
				t.Fatalf("status = %q, want %q; body %s", got, tt.wantStatus, r.raw)
			}
			if got := str(r.body, "selectedDevice", "id"); got != tt.wantSelected {
				t.Errorf("selectedDevice = %q, want %q", got, tt.wantSelected)
			}
			if got := len(h.sim.Inbox(tt.user)) - before; got != tt.wantInbox {
				t.Errorf("messages delivered = %d, want %d", got, tt.wantInbox)
			}
			info, _ := h.sim.Flow(str(r.body, "id"))
			if info.Challenged != tt.wantChalleng {
				t.Errorf("Challenged = %v, want %v", info.Challenged, tt.wantChalleng)
			}
		})
	}
}

func TestFlowJSONShape(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r, _ := h.start("alice", nil)
	id := str(r.body, "id")
	self := h.env() + "/flows/" + id
	for _, l := range []string{"self", "device.select"} {
		if got := str(r.body, "_links", l, "href"); got != self {
			t.Errorf("_links.%s = %q, want %q", l, got, self)
		}
	}
	// As PingOne's example flow (SEED, SOURCES A21/A22): no session.reset
	// link, a signOnPage on apps.pingone.com, bypassAllowed, the
	// application's name, no _embedded.user, userRetries on each device.
	if _, ok := r.body["_links"].(map[string]any)["session.reset"]; ok {
		t.Error("flow advertises session.reset; PingOne's example has none")
	}
	if got, want := str(r.body, "_links", "signOnPage", "href"), "https://apps.pingone.com/"+DemoEnvID+"/signon/?flowId="+id; got != want {
		t.Errorf("_links.signOnPage = %q, want %q", got, want)
	}
	if v, ok := r.body["bypassAllowed"].(bool); !ok || !v {
		t.Errorf("bypassAllowed = %v, want true under the demo's BYPASS policy", r.body["bypassAllowed"])
	}
	if got := str(r.body, "_embedded", "application", "name"); got != "stepgate demo" {
		t.Errorf("_embedded.application.name = %q", got)
	}
	if got, want := str(r.body, "resumeUrl"), h.env()+"/as/resume?flowId="+id; got != want {
		t.Errorf("resumeUrl = %q, want %q", got, want)
	}
	if got, want := str(r.body, "expiresAt"), "2026-03-01T10:15:00.000Z"; got != want {
		t.Errorf("expiresAt = %q, want %q", got, want)
	}
	if got, want := str(r.body, "environment", "id"), DemoEnvID; got != want {
		t.Errorf("environment.id = %q, want %q", got, want)
	}
	if _, ok := r.body["_embedded"].(map[string]any)["user"]; ok {
		t.Error("a non-terminal flow embeds the user; PingOne's example does not")
	}
	devs := r.body["_embedded"].(map[string]any)["devices"].([]any)
	d0, d1 := devs[0].(map[string]any), devs[1].(map[string]any)
	if got, want := str(d0, "userRetries"), "0"; got != want {
		t.Errorf("userRetries = %q, want %q", got, want)
	}
	if got, want := str(d0, "phone"), "*******34"; got != want {
		t.Errorf("masked phone = %q, want %q", got, want)
	}
	if got, want := str(d1, "email"), "a****@example.com"; got != want {
		t.Errorf("masked email = %q, want %q", got, want)
	}
	if strings.Contains(r.raw, "alice@example.com") || strings.Contains(r.raw, "0100") {
		t.Errorf("flow JSON leaks an unmasked target: %s", r.raw)
	}
	if got := str(d0, "status"); got != "ACTIVE" {
		t.Errorf("device status = %q, want ACTIVE", got)
	}
}

func TestUnknownEnvironmentAndPathAre404(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	for _, p := range []string{"/other-env/as/jwks", "/" + DemoEnvID + "/as/nope", "/" + DemoEnvID + "/flows/a/b", "/"} {
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+p, nil)
		r := h.do(req)
		if r.status != 404 || str(r.body, "code") != "NOT_FOUND" {
			t.Errorf("GET %s = %d %s, want 404 NOT_FOUND", p, r.status, r.raw)
		}
	}
	req, _ := http.NewRequest(http.MethodDelete, h.env()+"/as/authorize", nil)
	if r := h.do(req); r.status != 405 || r.header.Get("Allow") == "" || str(r.body, "code") != "INVALID_REQUEST" {
		t.Errorf("DELETE authorize = %d (Allow %q, code %q), want 405 INVALID_REQUEST with Allow", r.status, r.header.Get("Allow"), str(r.body, "code"))
	}
}

func TestRequestsCountsOnlyPingOneSurface(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.start("alice", nil)
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/_sim/inbox", nil)
	h.do(req)
	if got := h.sim.Requests(); got != 1 {
		t.Errorf("Requests() = %d, want 1", got)
	}
}

func TestIssuerFollowsTheRequestHost(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	req, _ := http.NewRequest(http.MethodGet, h.env()+"/as/.well-known/openid-configuration", nil)
	req.Host = "auth.example.test:8443"
	r := h.do(req)
	if got, want := str(r.body, "issuer"), "http://auth.example.test:8443/"+DemoEnvID+"/as"; got != want {
		t.Errorf("issuer = %q, want %q", got, want)
	}
}
