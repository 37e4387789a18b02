package pingonesim

import (
	"errors"
	"testing"
)

// FuzzParseAction: the flows POST decoder never panics, and anything it
// accepts is one of the four actions the simulator implements.
func FuzzParseAction(f *testing.F) {
	f.Add("application/vnd.pingidentity.otp.check+json", []byte(`{"otp":"123456"}`))
	f.Add("application/vnd.pingidentity.device.select+json; charset=utf-8", []byte(`{"device":{"id":"d"}}`))
	f.Add("application/vnd.pingidentity.assertion.check+json", []byte(`{"origin":"https://x","assertion":"{}"}`))
	f.Add("application/vnd.pingidentity.session.reset+json", []byte(``))
	f.Add("application/json", []byte(`{}`))
	f.Add("application/vnd.pingidentity.otp.check+json", []byte(`{"otp":1}`))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		a, err := parseAction(ct, body)
		if err != nil {
			if errors.Is(err, errUnsupportedMedia) && a.Name != "" {
				t.Errorf("unsupported media type returned action %q", a.Name)
			}
			return
		}
		if _, ok := allowedIn[a.Name]; !ok {
			t.Errorf("accepted unknown action %q", a.Name)
		}
	})
}

// FuzzVerifyAssertion: arbitrary assertion strings and origins never panic
// and never complete a flow.
func FuzzVerifyAssertion(f *testing.F) {
	f.Add("http://localhost", `{"id":"AQID","rawId":"AQID","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"","signature":""}}`)
	f.Add("https://localhost", `{}`)
	f.Add("", `not json`)
	sim := New(Options{Tenant: DemoTenant(), SigningKey: testKey()})
	user := sim.findUser("carol")
	fl := &flow{user: user, selected: &user.Devices[1], challenge: []byte("0123456789abcdef0123456789abcdef")}
	f.Fuzz(func(t *testing.T, origin, assertion string) {
		sim.mu.Lock()
		defer sim.mu.Unlock()
		if err := sim.verifyAssertion(fl, origin, assertion); err == nil {
			t.Errorf("a fuzzed assertion verified: origin %q assertion %q", origin, assertion)
		}
	})
}

// FuzzVerifyClientJWT: arbitrary login_hint_token strings never panic and
// never verify without the client secret.
func FuzzVerifyClientJWT(f *testing.F) {
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.x")
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJjIn0.")
	f.Add("a.b.c")
	sim := New(Options{Tenant: DemoTenant(), SigningKey: testKey()})
	app := sim.findApp(DemoClientID)
	f.Fuzz(func(t *testing.T, raw string) {
		if _, err := sim.verifyClientJWT(raw, app, "http://x/"+DemoEnvID+"/as", t0, kindRequest); err == nil {
			t.Errorf("a fuzzed token verified: %q", raw)
		}
	})
}
