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
