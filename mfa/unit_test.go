package mfa

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func testConfig(base string) Config {
	return Config{
		AuthBase:     base,
		EnvID:        "env-1",
		ClientID:     "client-1",
		ClientSecret: "s3cret",
	}
}

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr bool
	}{
		{"a complete config is accepted", func(*Config) {}, false},
		{"a trailing slash on the auth base is accepted", func(c *Config) { c.AuthBase += "/" }, false},
		{"a custom domain with a path prefix is accepted", func(c *Config) { c.AuthBase = "https://login.example.com/p1" }, false},
		{"a relative auth base is refused", func(c *Config) { c.AuthBase = "auth.pingone.com" }, true},
		{"an ftp auth base is refused", func(c *Config) { c.AuthBase = "ftp://auth.pingone.com" }, true},
		{"an auth base with user info is refused", func(c *Config) { c.AuthBase = "https://u:p@auth.pingone.com" }, true},
		{"an auth base with a query is refused", func(c *Config) { c.AuthBase = "https://auth.pingone.com?x=1" }, true},
		{"an empty env id is refused", func(c *Config) { c.EnvID = "" }, true},
		{"an env id with a slash is refused", func(c *Config) { c.EnvID = "a/b" }, true},
		{"an empty client id is refused", func(c *Config) { c.ClientID = "" }, true},
		{"an empty client secret is refused", func(c *Config) { c.ClientSecret = "" }, true},
		{"response type code is accepted", func(c *Config) { c.ResponseType = "code" }, false},
		{"response type id_token is accepted", func(c *Config) { c.ResponseType = "id_token" }, false},
		{"response type token alone is refused", func(c *Config) { c.ResponseType = "token" }, true},
		{"scopes without openid are refused", func(c *Config) { c.Scopes = "profile email" }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig("https://auth.pingone.com")
			tt.mutate(&cfg)
			_, err := New(cfg)
			if got := err != nil; got != tt.wantErr {
				t.Errorf("error = %v, want error: %v", err, tt.wantErr)
			}
		})
	}
}

func TestIssuer(t *testing.T) {
	c, err := New(testConfig("https://auth.pingone.eu/"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Issuer(), "https://auth.pingone.eu/env-1/as"; got != want {
		t.Errorf("Issuer() = %q, want %q", got, want)
	}
}

func decodeSegment(t *testing.T, tok string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLoginHintTokenClaims(t *testing.T) {
	c, err := New(testConfig("https://auth.pingone.com"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_750_000_000, 0)
	tok, err := c.loginHintToken("alice", now)
	if err != nil {
		t.Fatal(err)
	}
	hdr := decodeSegment(t, tok, 0)
	if len(hdr) != 2 || hdr["alg"] != "HS256" || hdr["typ"] != "JWT" {
		t.Errorf("header = %v, want exactly alg HS256 and typ JWT", hdr)
	}
	// The signature verifies with the client secret, and only with it.
	if _, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return []byte("s3cret"), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(func() time.Time { return now })); err != nil {
		t.Errorf("verify with the client secret: %v", err)
	}
	if _, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return []byte("other"), nil },
		jwt.WithTimeFunc(func() time.Time { return now })); err == nil {
		t.Error("verified with another secret")
	}
	cl := decodeSegment(t, tok, 1)
	wantStr := map[string]string{"iss": "client-1", "sub": "alice", "aud": "https://auth.pingone.com/env-1/as"}
	for k, want := range wantStr {
		if got, _ := cl[k].(string); got != want {
			t.Errorf("%s = %v, want %q (a plain string)", k, cl[k], want)
		}
	}
	wantNum := map[string]int64{"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(2 * time.Minute).Unix()}
	for k, want := range wantNum {
		if got, _ := cl[k].(float64); int64(got) != want {
			t.Errorf("%s = %v, want %d", k, cl[k], want)
		}
	}
	jti, _ := cl["jti"].(string)
	if raw, err := base64.RawURLEncoding.DecodeString(jti); err != nil || len(raw) != 16 {
		t.Errorf("jti = %q, want 128 random bits", jti)
	}
	tok2, _ := c.loginHintToken("alice", now)
	if decodeSegment(t, tok2, 1)["jti"] == jti {
		t.Error("two tokens share a jti")
	}
}

func TestRequestObjectClaims(t *testing.T) {
	c, err := New(testConfig("https://auth.pingone.com"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_750_000_000, 0)
	tok, err := c.requestObject("203.0.113.7", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	cl := decodeSegment(t, tok, 1)
	if cl["pi.remoteIp"] != "203.0.113.7" || cl["iss"] != "client-1" || cl["aud"] != "https://auth.pingone.com/env-1/as" {
		t.Errorf("claims = %v", cl)
	}
	if int64(cl["exp"].(float64)) != now.Add(2*time.Minute).Unix() || cl["jti"] == "" {
		t.Errorf("exp/jti = %v/%v", cl["exp"], cl["jti"])
	}
	tok, _ = c.requestObject("", nil, now)
	if _, ok := decodeSegment(t, tok, 1)["pi.remoteIp"]; ok {
		t.Error("pi.remoteIp sent without a remote IP")
	}
}

func TestDecodeFlow(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		check func(t *testing.T, f *Flow, err error)
	}{
		{"a device selection flow yields devices with masked targets",
			`{"id":"f1","status":"DEVICE_SELECTION_REQUIRED","_links":{"device.select":{"href":"https://a/e/flows/f1"}},
			  "_embedded":{"devices":[{"id":"d1","type":"SMS","status":"ACTIVE","phone":"+1*****1234","nickname":"work"},
			                          {"id":"d2","type":"EMAIL","email":"j***@x.com"},{"type":"EMAIL"}]},
			  "expiresAt":"2026-01-01T10:15:00.000Z"}`,
			func(t *testing.T, f *Flow, err error) {
				if err != nil {
					t.Fatal(err)
				}
				want := []Device{{ID: "d1", Type: "SMS", Target: "+1*****1234", Nickname: "work"}, {ID: "d2", Type: "EMAIL", Target: "j***@x.com"}}
				if fmt.Sprint(f.Devices) != fmt.Sprint(want) {
					t.Errorf("devices = %+v, want %+v", f.Devices, want)
				}
				if f.Links["device.select"] != "https://a/e/flows/f1" {
					t.Errorf("links = %v", f.Links)
				}
				if !f.ExpiresAt.Equal(time.Date(2026, 1, 1, 10, 15, 0, 0, time.UTC)) {
					t.Errorf("expiresAt = %v", f.ExpiresAt)
				}
			}},
		{"options sent as a string are normalised to an object",
			`{"id":"f1","status":"ASSERTION_REQUIRED","publicKeyCredentialRequestOptions":"{\"challenge\": \"abc\", \"rpId\":\"localhost\"}"}`,
			func(t *testing.T, f *Flow, err error) {
				if err != nil || string(f.AssertionOptions) != `{"challenge":"abc","rpId":"localhost"}` {
					t.Errorf("options = %s, err %v", f.AssertionOptions, err)
				}
			}},
		{"options sent as an object are accepted",
			`{"id":"f1","status":"ASSERTION_REQUIRED","publicKeyCredentialRequestOptions":{"challenge":[1,2]}}`,
			func(t *testing.T, f *Flow, err error) {
				if err != nil || string(f.AssertionOptions) != `{"challenge":[1,2]}` {
					t.Errorf("options = %s, err %v", f.AssertionOptions, err)
				}
			}},
		{"options that are not an object are dropped",
			`{"id":"f1","status":"ASSERTION_REQUIRED","publicKeyCredentialRequestOptions":"[1]"}`,
			func(t *testing.T, f *Flow, err error) {
				if err != nil || f.AssertionOptions != nil {
					t.Errorf("options = %s, err %v", f.AssertionOptions, err)
				}
			}},
		{"a completed flow carries the authorize response",
			`{"id":"f1","status":"COMPLETED","_embedded":{"user":{"id":"u1"}},"selectedDevice":{"id":"d1"},
			  "authorizeResponse":{"id_token":"x.y.z","access_token":"at","state":"st","expires_in":"3600","token_type":"Bearer"}}`,
			func(t *testing.T, f *Flow, err error) {
				if err != nil {
					t.Fatal(err)
				}
				ar := f.AuthorizeResponse
				if ar == nil || ar.IDToken.Reveal() != "x.y.z" || ar.AccessToken.Reveal() != "at" || ar.State != "st" || ar.ExpiresIn != 3600 {
					t.Errorf("authorizeResponse = %+v", ar)
				}
				if f.UserID != "u1" || f.SelectedDeviceID != "d1" {
					t.Errorf("user %q selected %q", f.UserID, f.SelectedDeviceID)
				}
			}},
		{"fields of unexpected types are ignored, not fatal",
			`{"id":"f1","status":"OTP_REQUIRED","_links":[],"_embedded":{"devices":{"a":1}},"selectedDevice":"d1","expiresAt":5}`,
			func(t *testing.T, f *Flow, err error) {
				if err != nil || f.Status != StatusOTPRequired || len(f.Devices) != 0 {
					t.Errorf("flow = %+v, err %v", f, err)
				}
			}},
		{"an unknown status passes through",
			`{"id":"f1","status":"SOMETHING_NEW"}`,
			func(t *testing.T, f *Flow, err error) {
				if err != nil || f.Status != "SOMETHING_NEW" {
					t.Errorf("flow = %+v, err %v", f, err)
				}
			}},
		{"a flow without an id is an error", `{"status":"OTP_REQUIRED"}`,
			func(t *testing.T, f *Flow, err error) {
				if err == nil {
					t.Error("got nil error")
				}
			}},
		{"a body that is not JSON is an error", `<html>`,
			func(t *testing.T, f *Flow, err error) {
				if err == nil {
					t.Error("got nil error")
				}
			}},
		{"JSON null is an error", `null`,
			func(t *testing.T, f *Flow, err error) {
				if err == nil {
					t.Error("got nil error")
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := decodeFlow([]byte(tt.body))
			tt.check(t, f, err)
		})
	}
}

func TestDecodeFlowBoundsDevices(t *testing.T) {
	var devs []string
	for i := range 100 {
		devs = append(devs, fmt.Sprintf(`{"id":"d%d","type":"SMS","nickname":%q}`, i, strings.Repeat("n", 2*maxField)))
	}
	f, err := decodeFlow([]byte(`{"id":"f","status":"DEVICE_SELECTION_REQUIRED","_embedded":{"devices":[` + strings.Join(devs, ",") + `]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Devices) != maxDevices {
		t.Errorf("devices = %d, want %d", len(f.Devices), maxDevices)
	}
	if len(f.Devices[0].Nickname) != maxField {
		t.Errorf("nickname length = %d, want %d", len(f.Devices[0].Nickname), maxField)
	}
}

func FuzzDecodeFlow(f *testing.F) {
	f.Add([]byte(`{"id":"f1","status":"DEVICE_SELECTION_REQUIRED","_embedded":{"devices":[{"id":"d1","type":"SMS","phone":"+1**"}]}}`))
	f.Add([]byte(`{"id":"f1","status":"ASSERTION_REQUIRED","publicKeyCredentialRequestOptions":"{\"challenge\":\"x\"}"}`))
	f.Add([]byte(`{"id":"f1","status":"COMPLETED","authorizeResponse":{"id_token":"a","expires_in":1e99}}`))
	f.Add([]byte(`{"id":"f1","status":"x","_links":{"self":{"href":5}},"expiresAt":"2026-13-40T99:00:00Z"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"id":"f1","status":"PUSH_CONFIRMATION_REQUIRED","numberMatching":{"type":"SELECT_NUMBER","number":"47"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		fl, err := decodeFlow(body)
		if err != nil {
			return
		}
		if fl.ID == "" || fl.Status == "" {
			t.Fatalf("decoded a flow without id or status: %+v", fl)
		}
		if len(fl.Devices) > maxDevices {
			t.Fatalf("%d devices kept", len(fl.Devices))
		}
		for _, d := range fl.Devices {
			if d.ID == "" || len(d.Type) > maxField || len(d.Target) > maxField || len(d.Nickname) > maxField {
				t.Fatalf("device not bounded: %+v", d)
			}
		}
		if fl.AssertionOptions != nil && (!json.Valid(fl.AssertionOptions) || fl.AssertionOptions[0] != '{') {
			t.Fatalf("options not a JSON object: %s", fl.AssertionOptions)
		}
	})
}

func TestMergeCookies(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	big := strings.Repeat("v", maxCookieBytes)
	many := func() []Cookie {
		var cs []Cookie
		for i := range maxCookies {
			cs = append(cs, Cookie{Name: fmt.Sprintf("c%d", i), Value: "v"})
		}
		return cs
	}
	tests := []struct {
		name string
		have []Cookie
		set  []*http.Cookie
		want []Cookie
	}{
		{"a new cookie is added", nil, []*http.Cookie{{Name: "ST", Value: "a"}}, []Cookie{{"ST", "a"}}},
		{"a cookie of the same name is replaced", []Cookie{{"ST", "a"}, {"X", "1"}}, []*http.Cookie{{Name: "ST", Value: "b"}}, []Cookie{{"ST", "b"}, {"X", "1"}}},
		{"a negative Max-Age deletes", []Cookie{{"ST", "a"}, {"X", "1"}}, []*http.Cookie{{Name: "ST", MaxAge: -1}}, []Cookie{{"X", "1"}}},
		{"an expiry in the past deletes", []Cookie{{"ST", "a"}}, []*http.Cookie{{Name: "ST", Value: "x", Expires: now.Add(-time.Hour)}}, []Cookie{}},
		{"an expiry in the future keeps", nil, []*http.Cookie{{Name: "ST", Value: "x", Expires: now.Add(time.Hour)}}, []Cookie{{"ST", "x"}}},
		{"an oversized cookie is ignored", []Cookie{{"ST", "a"}}, []*http.Cookie{{Name: "ST", Value: big}}, []Cookie{{"ST", "a"}}},
		{"an eleventh cookie is ignored", many(), []*http.Cookie{{Name: "new", Value: "v"}}, many()},
		{"a cookie is still replaced when the jar is full", many(), []*http.Cookie{{Name: "c0", Value: "w"}}, append([]Cookie{{"c0", "w"}}, many()[1:]...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mergeCookies(tt.have, tt.set, now)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCookieHeaderSanitises(t *testing.T) {
	got := cookieHeader([]Cookie{{"ST", "abc"}, {"bad name", "x"}, {"X", "a\r\nInjected: 1"}})
	if strings.ContainsAny(got, "\r\n") || !strings.HasPrefix(got, "ST=abc") || strings.Contains(got, "bad name") {
		t.Errorf("Cookie header = %q", got)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		v    string
		want time.Duration
	}{
		{"seconds are read", "30", 30 * time.Second},
		{"an HTTP date is read against our clock", now.Add(2 * time.Minute).Format(http.TimeFormat), 2 * time.Minute},
		{"an absent header means one second", "", time.Second},
		{"garbage means one second", "soon", time.Second},
		{"zero means one second", "0", time.Second},
		{"a date in the past means one second", now.Add(-time.Hour).Format(http.TimeFormat), time.Second},
		{"a huge value is capped at an hour", "99999999", time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryAfter(tt.v, now); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestOnAuthBase(t *testing.T) {
	c, err := New(testConfig("https://auth.example.com/p1"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url  string
		want bool
	}{
		{"https://auth.example.com/p1/env-1/flows/abc", true},
		{"https://AUTH.example.com/p1/env-1/as/resume?flowId=abc", true},
		{"http://auth.example.com/p1/env-1/flows/abc", false},
		{"https://auth.example.com.evil.com/p1/env-1/flows/abc", false},
		{"https://auth.example.com:8443/p1/env-1/flows/abc", false},
		{"https://auth.example.com/p1/env-2/flows/abc", false},
		{"https://auth.example.com/env-1/flows/abc", false},
		{"https://auth.example.com/p1/env-1/../env-2/flows/abc", false},
		{"https://x@auth.example.com/p1/env-1/flows/abc", false},
		{"//auth.example.com/p1/env-1/flows/abc", false},
		{"/p1/env-1/flows/abc", false},
		{"https://auth.example.com/p1/env-1%2F..%2Fx/flows", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			if got := c.onAuthBase(tt.url); got != tt.want {
				t.Errorf("onAuthBase = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSecretsRedactInLogsAndErrors(t *testing.T) {
	var buf strings.Builder
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	ar := AuthorizeResponse{IDToken: "eyJ.secret.token", Code: "the-code"}
	log.Info("x", "otp", Secret("123456"), "ar", fmt.Sprintf("%+v", ar))
	for _, leak := range []string{"123456", "eyJ.secret.token", "the-code"} {
		if strings.Contains(buf.String(), leak) {
			t.Errorf("log contains %q: %s", leak, buf.String())
		}
	}
}
