package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/stepgate/stepgate/mfa/jwks"
	"github.com/stepgate/stepgate/mfa/pingonesim"
)

func TestAllowPathIsProxiedUntouched(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	req, _ := http.NewRequest(http.MethodGet, s.Proxy+"/public/page%41?q=1&r=%2F", nil)
	req.Header.Set("X-App-Header", "kept")
	req.AddCookie(&http.Cookie{Name: "app_session", Value: "abc"})
	r := b.do(req)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("got %d, want 200: %s", r.StatusCode, r.Body)
	}
	got := s.LastRequest()
	if got.RequestURI != "/public/page%41?q=1&r=%2F" {
		t.Errorf("upstream request URI = %q, want the bytes the client sent", got.RequestURI)
	}
	if got.Header.Get("X-App-Header") != "kept" || got.Header.Get("Cookie") != "app_session=abc" {
		t.Errorf("application headers changed: %v", got.Header)
	}
	for name := range got.Header {
		if strings.HasPrefix(strings.ToLower(name), "x-stepgate-") {
			t.Errorf("upstream got %s without a step-up", name)
		}
	}
}

func TestMFAPathAnswersByClientKind(t *testing.T) {
	s := newStack(t)
	tests := []struct {
		name, method, path string
		header             map[string]string
		wantStatus         int
		wantLocation       string
	}{
		{"a browser navigation is redirected to the challenge", "GET", "/admin/users?page=2",
			map[string]string{"Accept": "text/html"}, 302, "/.stepgate/challenge?return=%2Fadmin%2Fusers%3Fpage%3D2"},
		{"a browser form post is sent to the challenge with 303", "POST", "/forms/save",
			map[string]string{"Accept": "text/html", "Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Mode": "navigate"},
			303, "/.stepgate/challenge?return=%2Fforms%2Fsave&method=POST"},
		{"an API call gets 401", "GET", "/api/v1/items",
			map[string]string{"Accept": "application/json"}, 401, ""},
		{"an XHR from a page gets 401", "GET", "/admin/data",
			map[string]string{"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"}, 401, ""},
		{"a fetch() (Sec-Fetch-Mode cors) gets 401", "GET", "/admin/data",
			map[string]string{"Accept": "*/*, text/html", "Sec-Fetch-Mode": "cors"}, 401, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := s.browser("alice")
			var body io.Reader // a GET with a body is refused before any rule (CL.0)
			if tt.method != http.MethodGet {
				body = strings.NewReader("secret=body")
			}
			req, _ := http.NewRequest(tt.method, s.Proxy+tt.path, body)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			r := b.do(req)
			if r.StatusCode != tt.wantStatus {
				t.Fatalf("got %d, want %d: %s", r.StatusCode, tt.wantStatus, r.Body)
			}
			if tt.wantLocation != "" && r.Header.Get("Location") != tt.wantLocation {
				t.Errorf("Location = %q, want %q", r.Header.Get("Location"), tt.wantLocation)
			}
			if tt.wantStatus == 401 {
				wa := r.Header.Get("WWW-Authenticate")
				for _, want := range []string{`Bearer error="insufficient_user_authentication"`, `acr_values="MFA-Only"`} {
					if !strings.Contains(wa, want) {
						t.Errorf("WWW-Authenticate %q lacks %q", wa, want)
					}
				}
				if !strings.Contains(r.Body, `"error":"step_up_required"`) || !strings.Contains(r.Body, `"challenge_url"`) {
					t.Errorf("body %s lacks the step_up_required error", r.Body)
				}
			}
		})
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("upstream received %d requests for paths without a step-up", n)
	}
	// max_age from the rule reaches the API challenge.
	b := s.browser("alice")
	req, _ := http.NewRequest("GET", s.Proxy+"/admin/x", nil)
	req.Header.Set("Accept", "application/json")
	if wa := b.do(req).Header.Get("WWW-Authenticate"); !strings.Contains(wa, "max_age=900") {
		t.Errorf("WWW-Authenticate %q lacks max_age=900", wa)
	}
}

func TestStepUpByOTPForwardsVerifiedHeaders(t *testing.T) {
	s := newStack(t)
	b := s.stepUpAlice("/admin/panel?tab=1")
	r := b.get("/admin/panel?tab=1")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("after step-up got %d: %s", r.StatusCode, r.Body)
	}
	h := s.LastRequest().Header
	tok := h.Get("X-Stepgate-Id-Token")
	claims := verifyWithSimJWKS(t, s, tok)
	if got := h.Get("X-Stepgate-Subject"); got == "" || got != claims["sub"] {
		t.Errorf("X-Stepgate-Subject = %q, want the token's sub %v", got, claims["sub"])
	}
	if got := h.Get("X-Stepgate-User"); got != "alice" {
		t.Errorf("X-Stepgate-User = %q, want alice", got)
	}
	if got := h.Get("X-Stepgate-Acr"); got != "MFA-Only" {
		t.Errorf("X-Stepgate-Acr = %q, want MFA-Only", got)
	}
	if got := h.Get("X-Stepgate-Amr"); !strings.Contains(got, "otp") {
		t.Errorf("X-Stepgate-Amr = %q, want otp in it", got)
	}
	if got, want := h.Get("X-Stepgate-Auth-Time"), s.Clock.Now().Unix(); got != itoa(want) {
		t.Errorf("X-Stepgate-Auth-Time = %q, want %d", got, want)
	}
	if c := h.Get("Cookie"); strings.Contains(c, "stepgate") {
		t.Errorf("stepgate cookies reached the upstream: %q", c)
	}
	if ev := s.Logs.Events("mfa.completed"); len(ev) != 1 || ev[0]["user"] != "alice" {
		t.Errorf("mfa.completed audit events = %v", ev)
	}
	// pi.remoteIp carried the resolved client address.
	started := s.Logs.Events("mfa.started")
	if len(started) != 1 {
		t.Fatalf("mfa.started events = %v", started)
	}
	info, ok := s.Sim.Flow(started[0]["flow_id"].(string))
	if !ok || info.RemoteIP != "127.0.0.1" {
		t.Errorf("simulator recorded remote IP %q (found %v), want 127.0.0.1", info.RemoteIP, ok)
	}
}

func TestStepUpByPush(t *testing.T) {
	for _, tt := range []struct {
		name    string
		outcome string
		want    string
	}{
		{"approved push completes", "approve", "completed"},
		{"denied push fails", "deny", "failed"},
		{"timed-out push offers a retry", "timeout", "push_timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t)
			b := s.browser("bob")
			b.get("/.stepgate/challenge?return=/admin/")
			r := b.follow(b.post("action", "start"))
			if !strings.Contains(r.Body, `data-state="push"`) {
				t.Fatalf("not on the push page: %s", r.Body)
			}
			flowID := s.Logs.Events("mfa.started")[0]["flow_id"].(string)
			if err := s.Sim.Push(flowID, pingonePush(tt.outcome)); err != nil {
				t.Fatal(err)
			}
			status := statusJSON(t, b)
			switch tt.want {
			case "completed":
				if status["status"] != "COMPLETED" || status["next"] != "/admin/" {
					t.Fatalf("status = %v", status)
				}
				if r := b.get("/admin/"); r.StatusCode != 200 {
					t.Errorf("after approval got %d", r.StatusCode)
				}
			case "failed":
				if status["next"] != "/.stepgate/challenge" {
					t.Fatalf("status = %v", status)
				}
				if r := b.get("/.stepgate/challenge"); r.StatusCode != http.StatusForbidden || !strings.Contains(r.Body, "role=\"alert\"") {
					t.Errorf("denied push page: %d %s", r.StatusCode, r.Body)
				}
			case "push_timeout":
				r := b.get("/.stepgate/challenge")
				if !strings.Contains(r.Body, `data-state="push_timeout"`) {
					t.Fatalf("not on timed-out page: %s", r.Body)
				}
				r = b.follow(b.post("action", "resend"))
				if !strings.Contains(r.Body, `data-state="push"`) {
					t.Fatalf("retry did not send a new push: %s", r.Body)
				}
				if err := s.Sim.Push(flowID, pingonePush("approve")); err != nil {
					t.Fatal(err)
				}
				if st := statusJSON(t, b); st["status"] != "COMPLETED" {
					t.Errorf("after retry and approval status = %v", st)
				}
			}
		})
	}
}

func TestStepUpAfterSwitchingDevice(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(b.follow(b.post("action", "start")).Body)
	if len(ids) != 2 {
		t.Fatalf("alice should be offered 2 devices, got %v", ids)
	}
	b.follow(b.post("action", "select", "device", ids[0]))
	r := b.follow(b.post("action", "switch"))
	if !strings.Contains(r.Body, `data-state="devices"`) {
		t.Fatalf("switch did not list devices: %s", r.Body)
	}
	r = b.follow(b.post("action", "select", "device", ids[1]))
	if !strings.Contains(r.Body, "a****@example.com") && !strings.Contains(r.Body, "@") {
		t.Errorf("OTP page does not name the e-mail target: %s", r.Body)
	}
	msg := s.Sim.Inbox("alice")[0]
	if msg.Type != "EMAIL" {
		t.Fatalf("newest message is %s, want EMAIL", msg.Type)
	}
	if r := b.post("action", "otp", "otp", msg.OTP); r.StatusCode != 303 || r.Header.Get("Location") != "/admin/" {
		t.Fatalf("OTP by e-mail: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
}

func TestWrongOTPThenRightOTP(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(b.follow(b.post("action", "start")).Body)
	b.follow(b.post("action", "select", "device", ids[0]))
	r := b.submit("action", "otp", "otp", wrongCode(s.latestOTP("alice")))
	if r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.Body, "Attempts left: 2") {
		t.Fatalf("wrong code: %d %s", r.StatusCode, r.Body)
	}
	if ev := s.Logs.Events("mfa.otp_failed"); len(ev) != 1 {
		t.Errorf("mfa.otp_failed events = %d, want 1", len(ev))
	}
	if r := b.post("action", "otp", "otp", s.latestOTP("alice")); r.StatusCode != 303 {
		t.Fatalf("right code after a wrong one: %d %s", r.StatusCode, r.Body)
	}
}

func TestFreshnessWindowExpires(t *testing.T) {
	s := newStack(t)
	b := s.stepUpAlice("/admin/")
	if r := b.get("/admin/"); r.StatusCode != 200 {
		t.Fatalf("fresh step-up: %d", r.StatusCode)
	}
	s.Clock.Advance(14 * time.Minute)
	if r := b.get("/admin/"); r.StatusCode != 200 {
		t.Fatalf("14 min later (max_age 15m): %d", r.StatusCode)
	}
	s.Clock.Advance(2 * time.Minute)
	if r := b.get("/admin/"); r.StatusCode != http.StatusFound {
		t.Fatalf("16 min later: got %d, want 302 to a new challenge", r.StatusCode)
	}
	// /api/ uses the default max_age (1h): still fresh.
	req, _ := http.NewRequest("GET", s.Proxy+"/api/x", nil)
	req.Header.Set("Accept", "application/json")
	if r := b.do(req); r.StatusCode != 200 {
		t.Errorf("/api/ with default max_age 1h after 16 min: %d", r.StatusCode)
	}
}

func TestStepUpIsBoundToTheUpstreamUser(t *testing.T) {
	s := newStack(t)
	b := s.stepUpAlice("/admin/")
	b.user = "bob" // same browser cookies, another identity from the IdP
	if r := b.get("/admin/"); r.StatusCode != http.StatusFound {
		t.Fatalf("bob with alice's step-up: got %d, want 302", r.StatusCode)
	}
	b.user = "alice"
	if r := b.get("/admin/"); r.StatusCode != 200 {
		t.Fatalf("alice again: %d", r.StatusCode)
	}
}

func TestBadStepUpCookiesMeanChallenge(t *testing.T) {
	s := newStack(t)
	b := s.stepUpAlice("/admin/")
	u, _ := url.Parse(s.Proxy)
	var value string
	for _, c := range b.Client.Jar.Cookies(u) {
		if c.Name == "stepgate" {
			value = c.Value
		}
	}
	if value == "" {
		t.Fatal("no step-up cookie")
	}
	flip := []byte(value)
	flip[len(flip)/2] ^= 0x01
	if flip[len(flip)/2] == '.' || flip[len(flip)/2] == ' ' {
		flip[len(flip)/2] = 'A'
	}
	oldKeyStack := newStack(t, withSim(s), withEnv("STEPGATE_COOKIE_KEYS", testKey2))
	for _, tt := range []struct {
		name, value, base string
	}{
		{"a tampered cookie", string(flip), s.Proxy},
		{"a truncated cookie", value[:len(value)-10], s.Proxy},
		{"an oversized cookie", value + strings.Repeat("A", 4096), s.Proxy},
		{"an empty cookie", "", s.Proxy},
		{"a cookie sealed by a key the gateway no longer has", value, oldKeyStack.Proxy},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status := getStatus(t, tt.base+"/admin/", http.Header{
				"X-Forwarded-User": {"alice"}, "Accept": {"text/html"}, "Cookie": {"stepgate=" + tt.value}})
			if status != http.StatusFound {
				t.Fatalf("got %d, want 302 (challenge)", status)
			}
		})
	}
}

func TestKeyRotationKeepsUsersSteppedUp(t *testing.T) {
	s := newStack(t)
	b := s.stepUpAlice("/admin/")
	rotated := newStack(t, withSim(s), withEnv("STEPGATE_COOKIE_KEYS", testKey2+","+testKey))
	b.base = rotated.Proxy
	if r := b.get("/admin/"); r.StatusCode != 200 {
		t.Fatalf("cookie sealed by the old first key, opened after rotation: %d", r.StatusCode)
	}
	// A new step-up on the rotated gateway is sealed with the new key, so a
	// gateway that has only the new key accepts it.
	b2 := rotated.stepUpAlice("/admin/")
	onlyNew := newStack(t, withSim(s), withEnv("STEPGATE_COOKIE_KEYS", testKey2))
	b2.base = onlyNew.Proxy
	if r := b2.get("/admin/"); r.StatusCode != 200 {
		t.Fatalf("cookie sealed by the new key on a new-key-only gateway: %d", r.StatusCode)
	}
}

func TestFlowStartedOnOneGatewayFinishesOnAnother(t *testing.T) {
	a := newStack(t)
	b2 := newStack(t, withSim(a))
	br := a.browser("alice")
	br.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(br.follow(br.post("action", "start")).Body)
	br.base = b2.Proxy // the next request lands on the other replica
	r := br.follow(br.post("action", "select", "device", ids[0]))
	if !strings.Contains(r.Body, `data-state="otp"`) {
		t.Fatalf("other replica did not continue the flow: %s", r.Body)
	}
	br.base = a.Proxy
	if r := br.post("action", "otp", "otp", a.latestOTP("alice")); r.StatusCode != 303 {
		t.Fatalf("OTP on the first replica: %d %s", r.StatusCode, r.Body)
	}
	br.base = b2.Proxy
	if r := br.get("/admin/"); r.StatusCode != 200 {
		t.Fatalf("protected page on the second replica: %d", r.StatusCode)
	}
}

func TestSpoofedStepgateHeadersNeverReachUpstream(t *testing.T) {
	s := newStack(t)
	spoofs := []string{
		"X-Stepgate-Id-Token", "x-stepgate-id-token", "X_Stepgate_Id_Token", "X.Stepgate.Id.Token",
		"X-Stepgate-User", "X_STEPGATE_USER", "x-stepgate_subject", "X-Stepgate-Auth.Time",
		"X-Stepgate-Acr", "X-Stepgate-Amr", "X-Stepgate-Anything",
	}
	check := func(t *testing.T, b *browser, path string, wantUser string) {
		t.Helper()
		req, _ := http.NewRequest("GET", s.Proxy+path, nil)
		for _, name := range spoofs {
			req.Header[name] = []string{"mallory"}
		}
		req.Header.Add("Connection", "X-Stepgate-Id-Token, X-Stepgate-User")
		if r := b.do(req); r.StatusCode != 200 {
			t.Fatalf("GET %s: %d", path, r.StatusCode)
		}
		h := s.LastRequest().Header
		for name, v := range h {
			n := strings.NewReplacer("_", "-", ".", "-").Replace(strings.ToLower(name))
			if strings.HasPrefix(n, "x-stepgate-") && strings.Contains(strings.Join(v, ","), "mallory") {
				t.Errorf("spoofed %s: %v reached the upstream", name, v)
			}
		}
		if got := h.Get("X-Stepgate-User"); got != wantUser {
			t.Errorf("X-Stepgate-User = %q, want %q", got, wantUser)
		}
	}
	t.Run("on an allow path without a step-up", func(t *testing.T) {
		check(t, s.browser("alice"), "/public", "")
	})
	t.Run("on an mfa path with a step-up", func(t *testing.T) {
		check(t, s.stepUpAlice("/admin/"), "/admin/", "alice")
	})
}

func TestIdentityFromUntrustedPeerIsIgnored(t *testing.T) {
	s := newStack(t, withEnv("STEPGATE_TRUSTED_PROXIES", "10.9.9.9/32"))
	b := s.browser("alice")
	req, _ := http.NewRequest("GET", s.Proxy+"/admin/", nil)
	req.Header.Set("X-Forwarded-For", "10.9.9.9")
	if r := b.do(req); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("mfa path with an identity from an untrusted peer: %d, want 401", r.StatusCode)
	}
	if ev := s.Logs.Events("identity.rejected"); len(ev) != 1 {
		t.Errorf("identity.rejected events = %d, want 1", len(ev))
	}
	b.get("/public")
	h := s.LastRequest().Header
	if h.Get("X-Forwarded-User") != "" {
		t.Errorf("upstream received X-Forwarded-User %q from an untrusted peer", h.Get("X-Forwarded-User"))
	}
	if xff := h.Get("X-Forwarded-For"); xff != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want only the peer", xff)
	}
}

func TestRefusedPathFormsAnswer400(t *testing.T) {
	s := newStack(t)
	for _, target := range []string{
		"/admin/..", "/admin/%2e%2e/x", "/public/%2e/admin/", "/public/../admin/", "/admin%2fx", "/admin%2Fx",
		"/admin%5cx", "/admin\\x", "/admin;x=1", "/admin%3bx", "/public/%23/admin", "/public%3f",
		"/public%25", "/public%00", "/public%0a", "//admin/", "/admin//x", "/bad%zz", "/bad%4",
		"http://evil.example/admin/", "*",
	} {
		t.Run(target, func(t *testing.T) {
			status := rawRequest(t, s.Proxy, "GET "+target+" HTTP/1.1\r\nHost: x\r\nX-Forwarded-User: alice\r\n\r\n")
			if status != 400 {
				t.Errorf("GET %s: got %d, want 400", target, status)
			}
		})
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("upstream received %d refused requests", n)
	}
	// net/http answers OPTIONS * itself; it never reaches a rule or the upstream.
	if status := rawRequest(t, s.Proxy, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"); status != 200 {
		t.Errorf("OPTIONS *: %d, want 200", status)
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("upstream received OPTIONS *")
	}
}

func TestReturnPathsStayOnThisOrigin(t *testing.T) {
	s := newStack(t)
	for _, ret := range []string{"//evil.example", "/\\evil.example", "/%09/evil.example", "https:evil.example",
		"https://good@evil.example", "%2F%2Fevil.example", "/%2F/evil.example", "/%5Cevil.example", "\x01/x",
		"/" + strings.Repeat("a", 3000)} {
		t.Run(ret[:min(len(ret), 24)], func(t *testing.T) {
			s.Clock.Advance(2 * time.Minute) // stay under the flow-start limit (5 per 10 min)
			b := s.browser("alice")
			b.get("/.stepgate/challenge?return=" + url.QueryEscape(ret))
			ids := deviceIDs(b.follow(b.post("action", "start")).Body)
			b.follow(b.post("action", "select", "device", ids[0]))
			r := b.post("action", "otp", "otp", s.latestOTP("alice"))
			if r.StatusCode != 303 || r.Header.Get("Location") != "/" {
				t.Fatalf("return %q ended at %d %q, want 303 /", ret, r.StatusCode, r.Header.Get("Location"))
			}
		})
	}
}

func TestBypassIsRefused(t *testing.T) {
	s := newStack(t)
	b := s.browser("dave")
	b.get("/.stepgate/challenge?return=/admin/")
	r := b.submit("action", "start")
	if r.StatusCode != http.StatusForbidden || !strings.Contains(r.Body, "No MFA method is available") {
		t.Fatalf("dave (bypass): %d %s", r.StatusCode, r.Body)
	}
	if r := b.get("/admin/"); r.StatusCode != http.StatusFound {
		t.Errorf("dave reached /admin/ after a bypass: %d", r.StatusCode)
	}
}

func TestFlowStartsOnlyOnCSRFCheckedPost(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	good := b.csrf
	for _, tt := range []struct {
		name   string
		mutate func(*http.Request)
	}{
		{"missing token", func(r *http.Request) { r.Body = nil; r.ContentLength = 0 }},
		{"wrong token", func(r *http.Request) { setForm(r, "csrf", strings.Repeat("A", len(good))) }},
		{"cross-site Origin", func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") }},
		{"Sec-Fetch-Site cross-site", func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", s.Proxy+"/.stepgate/challenge", nil)
			setForm(req, "csrf", good)
			req.Header.Set("Origin", s.Proxy)
			tt.mutate(req)
			// A 303 (never a page a reload would post again) to a 403
			// page that explains.
			r := b.do(req)
			if r.StatusCode != http.StatusSeeOther {
				t.Fatalf("got %d, want 303", r.StatusCode)
			}
			if r := b.follow(r); r.StatusCode != http.StatusForbidden || !strings.Contains(r.Body, "came from another site") {
				t.Fatalf("the page after the refusal: %d, want 403 that says why: %s", r.StatusCode, r.Body)
			}
		})
	}
	// A GET never starts a flow, whatever it carries.
	b.get("/.stepgate/challenge?action=start&csrf=" + good)
	if n := len(s.Logs.Events("mfa.started")); n != 0 {
		t.Fatalf("%d flows started without a valid POST", n)
	}
	if n := len(s.Sim.Inbox("alice")); n != 0 {
		t.Fatalf("%d messages sent without a valid POST", n)
	}
}

func TestLogoutClearsStepUp(t *testing.T) {
	s := newStack(t)
	b := s.stepUpAlice("/admin/")
	r := b.postForm("/.stepgate/logout", url.Values{})
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.StatusCode)
	}
	if r := b.get("/admin/"); r.StatusCode != http.StatusFound {
		t.Fatalf("after logout: %d, want 302", r.StatusCode)
	}
}

func TestNoIdentityOnMFAPathIs401(t *testing.T) {
	s := newStack(t)
	b := s.browser("")
	if r := b.get("/admin/"); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("got %d, want 401", r.StatusCode)
	}
	if r := b.get("/public"); r.StatusCode != 200 {
		t.Fatalf("allow path without identity: %d", r.StatusCode)
	}
	if r := b.get("/blocked"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("deny path: %d", r.StatusCode)
	}
}

// helpers

func verifyWithSimJWKS(t *testing.T, s *stack, tok string) jwt.MapClaims {
	t.Helper()
	if tok == "" {
		t.Fatal("no ID token forwarded")
	}
	env := s.Env["STEPGATE_PINGONE_ENV_ID"]
	keys := jwks.New(jwks.Options{URL: s.SimURL + "/" + env + "/as/jwks", Client: http.DefaultClient, Now: s.Clock.Now})
	claims := jwt.MapClaims{}
	_, err := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(s.Clock.Now),
		jwt.WithIssuer(s.SimURL+"/"+env+"/as"), jwt.WithAudience(s.Env["STEPGATE_PINGONE_CLIENT_ID"])).
		ParseWithClaims(tok, claims, keys.Keyfunc(context.Background()))
	if err != nil {
		t.Fatalf("forwarded ID token does not verify against the simulator's JWKS: %v", err)
	}
	return claims
}

func statusJSON(t *testing.T, b *browser) map[string]any {
	t.Helper()
	req, _ := http.NewRequest("GET", b.base+"/.stepgate/challenge/status", nil)
	req.Header.Set("Accept", "application/json")
	r := b.do(req)
	var m map[string]any
	if err := jsonUnmarshal(r.Body, &m); err != nil {
		t.Fatalf("status: %d %s", r.StatusCode, r.Body)
	}
	return m
}

func rawRequest(t *testing.T, base, raw string) int {
	t.Helper()
	status, _, _ := rawExchange(t, base, raw)
	return status
}

func setForm(r *http.Request, k, v string) {
	body := url.Values{k: {v}}.Encode()
	r.Body = http.NoBody
	r.Body = nopCloser{strings.NewReader(body)}
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
}

type nopCloser struct{ *strings.Reader }

func (nopCloser) Close() error { return nil }

func wrongCode(c string) string {
	if c == "000000" {
		return "111111"
	}
	return "000000"
}

func TestReplayedFlowCookieAfterCompletionDoesNotRefreshStepUp(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(b.follow(b.post("action", "start")).Body)
	b.follow(b.post("action", "select", "device", ids[0]))
	u, _ := url.Parse(s.Proxy)
	var flowCookie string
	for _, c := range b.Client.Jar.Cookies(u) {
		if c.Name == "stepgate-flow" {
			flowCookie = c.Value
		}
	}
	if r := b.post("action", "otp", "otp", s.latestOTP("alice")); r.StatusCode != 303 {
		t.Fatalf("step-up: %d", r.StatusCode)
	}
	// Ten minutes later an attacker (or a stale tab) replays the flow cookie
	// of the completed flow, hoping for a fresh step-up.
	s.Clock.Advance(10 * time.Minute)
	req, _ := http.NewRequest("GET", s.Proxy+"/.stepgate/challenge", nil)
	req.Header.Set("X-Forwarded-User", "alice")
	req.Header.Set("Accept", "text/html")
	req.Header.Set("Cookie", "stepgate-flow="+flowCookie)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == "stepgate" && c.Value != "" {
			t.Fatalf("replayed flow cookie minted a new step-up cookie (status %d)", resp.StatusCode)
		}
	}
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("replayed completion: got %d, want 403", resp.StatusCode)
	}
}

func TestFlowStartLimitIsConfigurable(t *testing.T) {
	s := newStack(t, withEnv("STEPGATE_LIMIT_STARTS_PER_USER", "1", "STEPGATE_LIMIT_WINDOW", "1m"))
	start := func() response {
		b := s.browser("alice")
		b.get("/.stepgate/challenge?return=/admin/")
		r := b.post("action", "start")
		if r.StatusCode == http.StatusSeeOther && r.Header.Get("Retry-After") != "" {
			return b.follow(r) // refused: the 429 page
		}
		return r
	}
	if r := start(); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("first start: %d", r.StatusCode)
	}
	if r := start(); r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("second start within the window: %d (Retry-After %q), want 429", r.StatusCode, r.Header.Get("Retry-After"))
	}
	s.Clock.Advance(time.Minute)
	if r := start(); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("start after the window: %d", r.StatusCode)
	}
}

func TestAccessLogCanBeTurnedOffWithoutLosingAuditEvents(t *testing.T) {
	count := func(logs, msg string) int {
		n := 0
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, `"msg":"`+msg+`"`) {
				n++
			}
		}
		return n
	}
	for _, tt := range []struct {
		value      string
		wantAccess bool
	}{{"true", true}, {"false", false}} {
		t.Run("STEPGATE_ACCESS_LOG="+tt.value, func(t *testing.T) {
			s := newStack(t, withEnv("STEPGATE_ACCESS_LOG", tt.value))
			s.stepUpAlice("/admin/").get("/admin/")
			logs := s.Logs.String()
			if got := count(logs, "request") > 0; got != tt.wantAccess {
				t.Errorf("access lines present = %v, want %v", got, tt.wantAccess)
			}
			for _, line := range strings.Split(logs, "\n") {
				if !strings.Contains(line, `"msg":"request"`) {
					continue
				}
				// The gateway writes these lines itself; the log buffer must
				// still know them, and they must stay slog-shaped JSON.
				var v struct {
					Time     time.Time `json:"time"`
					Level    string    `json:"level"`
					Path     string    `json:"path"`
					Status   int       `json:"status"`
					Decision string    `json:"decision"`
					User     string    `json:"user"`
					ClientIP string    `json:"client_ip"`
				}
				if err := json.Unmarshal([]byte(line), &v); err != nil || v.Level != "INFO" || v.Path == "" ||
					v.Status == 0 || v.Decision == "" || v.ClientIP == "" || v.Time.IsZero() {
					t.Errorf("access line %s: %+v, %v", line, v, err)
				}
				if !isAccessLine([]byte(line)) {
					t.Errorf("the log buffer would not batch the access line %s", line)
				}
			}
			if len(s.Logs.Events("mfa.started")) != 1 || len(s.Logs.Events("mfa.completed")) != 1 {
				t.Errorf("audit events missing:\n%s", logs)
			}
		})
	}
}

func TestPingOneCustomDomain(t *testing.T) {
	s := newStack(t,
		withTenant(func(tn *pingonesim.Tenant) { tn.CustomDomain = true }),
		withEnv("STEPGATE_PINGONE_CUSTOM_DOMAIN", "true"))
	if st := getStatus(t, s.Admin+"/readyz", http.Header{}); st != http.StatusOK {
		t.Fatalf("readyz = %d: the signing keys did not load from {base}/as/jwks", st)
	}
	b := s.stepUpAlice("/admin/")
	if r := b.get("/admin/"); r.StatusCode != http.StatusOK {
		t.Fatalf("after a step-up through the custom domain: %d", r.StatusCode)
	}
	tok := s.LastRequest().Header.Get("X-Stepgate-Id-Token")
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok, claims); err != nil || claims["iss"] != s.SimURL+"/as" {
		t.Errorf("forwarded ID token issuer = %v (%v), want %s/as", claims["iss"], err, s.SimURL)
	}
}

// Issue 16: every answer to a challenge POST is a 303, so a reload shows
// the page again instead of posting the code again.
func TestChallengePostsRedirectSoAReloadDoesNotResubmit(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(b.submit("action", "start").Body)
	b.submit("action", "select", "device", ids[0])
	wrong := b.post("action", "otp", "otp", wrongCode(s.latestOTP("alice")))
	if wrong.StatusCode != http.StatusSeeOther || wrong.Header.Get("Location") != "/.stepgate/challenge?return=%2Fadmin%2F" {
		t.Fatalf("wrong code answered %d to %q, want 303 to the page", wrong.StatusCode, wrong.Header.Get("Location"))
	}
	page := b.follow(wrong)
	if page.StatusCode != http.StatusUnauthorized || !strings.Contains(page.Body, "Attempts left: 2") {
		t.Fatalf("the page after a wrong code: %d %s", page.StatusCode, page.Body)
	}
	// A reload is a GET of the same page: no code check, the attempt count
	// unchanged, and the message shown once only.
	reload := b.get("/.stepgate/challenge")
	if reload.StatusCode != http.StatusOK || strings.Contains(reload.Body, "not right") || !strings.Contains(reload.Body, `data-state="otp"`) {
		t.Errorf("reload: %d, want the code page without the old message: %s", reload.StatusCode, reload.Body)
	}
	if n := len(s.Logs.Events("mfa.otp_failed")); n != 1 {
		t.Errorf("mfa.otp_failed events after a reload = %d, want 1", n)
	}
	page = b.submit("action", "otp", "otp", wrongCode(s.latestOTP("alice")))
	if !strings.Contains(page.Body, "Attempts left: 1") {
		t.Errorf("the second wrong code does not leave 1 attempt (the reload burned one?): %s", page.Body)
	}
	// A code typed with a space or a dash is the same code.
	code := s.latestOTP("alice")
	done := b.post("action", "otp", "otp", code[:3]+" "+code[3:])
	if done.StatusCode != http.StatusSeeOther || done.Header.Get("Location") != "/admin/" {
		t.Fatalf("code %q with a space: %d to %q, want 303 to /admin/", code[:3]+" "+code[3:], done.StatusCode, done.Header.Get("Location"))
	}
	// Back to the challenge page after success: already verified, so on to
	// the page she asked for, without a new challenge.
	back := b.get("/.stepgate/challenge?return=/admin/")
	if back.StatusCode != http.StatusSeeOther || back.Header.Get("Location") != "/admin/" {
		t.Errorf("challenge page after success: %d to %q, want 303 to /admin/", back.StatusCode, back.Header.Get("Location"))
	}
	if n := len(s.Logs.Events("mfa.started")); n != 1 {
		t.Errorf("mfa.started = %d, want 1", n)
	}
}

func TestCodeFormatErrorsAreThePagesOwn(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	ids := deviceIDs(b.submit("action", "start").Body)
	page := b.submit("action", "select", "device", ids[0])
	if strings.Contains(page.Body, "pattern=") || !strings.Contains(page.Body, "novalidate") {
		t.Errorf("the code field leaves validation to the browser: %s", page.Body)
	}
	for _, in := range []string{"12a456", "", "12"} {
		r := b.submit("action", "otp", "otp", in)
		if r.StatusCode != http.StatusBadRequest || !strings.Contains(r.Body, "digits only") {
			t.Errorf("code %q: %d, want 400 with the page's own message: %s", in, r.StatusCode, r.Body)
		}
	}
	if n := len(s.Logs.Events("mfa.otp_failed")); n != 0 {
		t.Errorf("malformed codes reached PingOne: %d otp_failed events", n)
	}
}

func TestAnExpiredFlowCookieIsCountedAndExplained(t *testing.T) {
	s := newStack(t)
	b := s.browser("alice")
	b.get("/.stepgate/challenge?return=/admin/")
	b.Client.Jar = mustJar(t) // the flow cookie is gone (expired)
	form := url.Values{"csrf": {b.csrf}, "action": {"start"}}
	req, _ := http.NewRequest(http.MethodPost, s.Proxy+"/.stepgate/challenge", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", s.Proxy)
	req.Header.Set("Referer", s.Proxy+"/.stepgate/challenge?return=%2Fadmin%2Fusers")
	post := b.do(req)
	if post.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST without a flow cookie: %d, want 303", post.StatusCode)
	}
	r := b.follow(post)
	if !strings.Contains(r.Body, "session expired") || !strings.Contains(r.Body, `data-state="start"`) {
		t.Errorf("after the flow cookie expired: %d %s", r.StatusCode, r.Body)
	}
	// The fresh start still knows where she was going.
	if !strings.Contains(r.Body, `<dd id="opening">/admin/users</dd>`) {
		t.Errorf("the fresh start lost the return path: %s", r.Body)
	}
	if got := s.metric(t, `stepgate_challenges_total{event="expired"}`); got != 1 {
		t.Errorf(`stepgate_challenges_total{event="expired"} = %v, want 1`, got)
	}
}

func TestAllowPathAccessLinesCarryTheHeaderUser(t *testing.T) {
	s := newStack(t)
	s.browser("alice").get("/public/")
	for _, line := range strings.Split(s.Logs.String(), "\n") {
		if strings.Contains(line, `"path":"/public/"`) {
			if !strings.Contains(line, `"user":"alice"`) {
				t.Errorf("allow-path access line without the user: %s", line)
			}
			return
		}
	}
	t.Errorf("no access line for /public/:\n%s", s.Logs.String())
}

// A push denied on the phone says so, offers a retry and, for a user with
// another method, that method (issue 16).
func TestADeniedPushOffersRetryAndAnotherMethod(t *testing.T) {
	for _, tt := range []struct {
		name   string
		extra  bool // bob also has a text-message device
		others bool
	}{
		{"a user with push alone is offered a retry only", false, false},
		{"a user with another method is offered it too", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t, withTenant(func(tn *pingonesim.Tenant) {
				if tt.extra {
					tn.Users[1].Devices = append(tn.Users[1].Devices, pingonesim.Device{ID: "bob-sms", Type: "SMS", Nickname: "Bob's desk phone", Phone: "+1 555 0100 7777"})
				}
			}))
			b := s.browser("bob")
			b.get("/.stepgate/challenge?return=/admin/")
			if page := b.submit("action", "start"); !strings.Contains(page.Body, `data-state="push"`) {
				t.Fatalf("not on the push page: %s", page.Body)
			}
			if err := s.Sim.Push(s.Logs.Events("mfa.started")[0]["flow_id"].(string), pingonePush("deny")); err != nil {
				t.Fatal(err)
			}
			page := b.get("/.stepgate/challenge")
			if page.StatusCode != http.StatusForbidden || !strings.Contains(page.Body, "denied on your phone") || !strings.Contains(page.Body, ">Try again<") {
				t.Fatalf("after the denial: %d %s", page.StatusCode, page.Body)
			}
			if got := strings.Contains(page.Body, `id="other-method"`); got != tt.others {
				t.Fatalf("another method offered = %v, want %v", got, tt.others)
			}
			if !tt.others {
				return
			}
			list := b.submit("action", "start", "pick", "1")
			if ids := deviceIDs(list.Body); len(ids) != 2 {
				t.Fatalf("the other-method page lists %v, want both of bob's methods: %s", ids, list.Body)
			}
			if page := b.submit("action", "select", "device", "bob-sms"); !strings.Contains(page.Body, `data-state="otp"`) {
				t.Fatalf("not on the code page after picking the text message: %s", page.Body)
			}
			if r := b.post("action", "otp", "otp", s.latestOTP("bob")); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/admin/" {
				t.Errorf("the code from the other method: %d to %q", r.StatusCode, r.Header.Get("Location"))
			}
		})
	}
}

func TestASecurityKeyPingOneDoesNotKnowIsExplained(t *testing.T) {
	s := newStack(t)
	b := s.browser("carol")
	b.get("/.stepgate/challenge?return=/admin/")
	b.submit("action", "start")
	if page := b.submit("action", "select", "device", pingonesim.DemoCarolFIDO2ID); !strings.Contains(page.Body, `data-state="assertion"`) {
		t.Fatalf("not on the security-key page: %s", page.Body)
	}
	stranger := `{"id":"c3RyYW5nZXI","rawId":"c3RyYW5nZXI","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"AA","signature":"AA","userHandle":null}}`
	page := b.submit("action", "assertion", "origin", s.Proxy, "assertion", stranger)
	if page.StatusCode != http.StatusBadRequest || !strings.Contains(page.Body, `data-state="assertion"`) || !strings.Contains(page.Body, "may not be registered") {
		t.Fatalf("a key PingOne refuses: %d %s", page.StatusCode, page.Body)
	}
	if b.cookie("stepgate") != "" {
		t.Error("a step-up cookie was issued for a refused key")
	}
}
