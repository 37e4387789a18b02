package extauthz

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/stepgate/stepgate/proxy"
	"github.com/stepgate/stepgate/proxy/clientip"
)

// seen records what the decision core was asked, and answers with a.
type seen struct {
	q     proxy.Request
	style proxy.Style
	body  *proxy.Body
	a     proxy.Answer
}

func (s *seen) Check(_ context.Context, q proxy.Request, style proxy.Style, body *proxy.Body) proxy.Answer {
	s.q, s.style, s.body = q, style, body
	return s.a
}

// envoy is the trusted peer; httptest requests come from 192.0.2.1.
var envoy = clientip.New([]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")})

// check is Envoy's check of method target with body.
func check(method, target, body string) *http.Request {
	return httptest.NewRequest(method, PathPrefix+target, strings.NewReader(body))
}

func TestTheOriginalRequestIsWhatFollowsThePrefix(t *testing.T) {
	c := &seen{a: proxy.Answer{Status: http.StatusForbidden}}
	s := New(Config{Checker: c, ClientIP: envoy}).ServeCheck(httptest.NewRecorder(), check("DELETE", "/admin/x?y=1", ""))
	if c.q.Method != "DELETE" || c.q.Target != "/admin/x?y=1" || c.style != proxy.StyleEnvoy {
		t.Fatalf("got %s %q in style %d", c.q.Method, c.q.Target, c.style)
	}
	if s.Asked == nil || s.Asked.Target != "/admin/x?y=1" {
		t.Fatalf("the access line names %+v", s.Asked)
	}
}

// unreadable fails the test if anything reads it.
type unreadable struct{ t *testing.T }

func (u unreadable) Read([]byte) (int, error) {
	u.t.Error("a body was read")
	return 0, errors.New("read")
}

func TestBodiesAreHandedOnOnlyFromATrustedPeerWithBodiesOn(t *testing.T) {
	for _, tc := range []struct {
		name     string
		trusted  bool
		withBody bool
	}{
		{"an untrusted peer's body is never read", false, true},
		{"without with_request_body no body is read", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &seen{a: proxy.Answer{Status: http.StatusForbidden}}
			r := httptest.NewRequest("POST", PathPrefix+"/api/payments", unreadable{t})
			r.ContentLength = 10
			if !tc.trusted {
				r.RemoteAddr = "198.51.100.7:4000"
			}
			New(Config{Checker: c, ClientIP: envoy, WithBody: tc.withBody}).ServeCheck(httptest.NewRecorder(), r)
			if c.body != nil {
				t.Fatalf("handed on %+v", c.body)
			}
		})
	}
}

func TestATrustedPeersBodyIsHandedOnUpToOneByteOverTheLimit(t *testing.T) {
	c := &seen{a: proxy.Answer{Status: http.StatusForbidden}}
	r := check("POST", "/api/payments", "0123456789")
	r.Header.Set("X-Envoy-Auth-Partial-Body", "true")
	New(Config{Checker: c, ClientIP: envoy, WithBody: true, MaxBody: 4}).ServeCheck(httptest.NewRecorder(), r)
	if c.body == nil || string(c.body.Data) != "01234" || !c.body.Partial {
		t.Fatalf("handed on %+v", c.body)
	}
	if c.q.Header.Get("X-Envoy-Auth-Partial-Body") != "" {
		t.Fatal("the core saw Envoy's partial-body header")
	}

	c = &seen{a: proxy.Answer{Status: http.StatusForbidden}}
	New(Config{Checker: c, ClientIP: envoy, WithBody: true}).ServeCheck(httptest.NewRecorder(), check("GET", "/admin", ""))
	if c.body == nil || len(c.body.Data) != 0 || c.body.Partial {
		t.Fatalf("a check without a body handed on %+v", c.body)
	}
}

// broken is a body that breaks off.
type broken struct{}

func (broken) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestABodyThatBreaksOffIsA400WithoutACheck(t *testing.T) {
	c := &seen{}
	r := httptest.NewRequest("POST", PathPrefix+"/api/payments", broken{})
	r.ContentLength = 10
	w := httptest.NewRecorder()
	s := New(Config{Checker: c, ClientIP: envoy, WithBody: true}).ServeCheck(w, r)
	if w.Code != http.StatusBadRequest || w.Header().Get("Cache-Control") != "no-store" ||
		w.Header().Get(proxy.HeaderError) != "bad_request" || w.Body.String() != `{"error":"bad_request"}`+"\n" {
		t.Fatalf("got %d %v %q", w.Code, w.Header(), w.Body)
	}
	if c.q.Method != "" || s.Decision != "rejected" || s.Asked != nil {
		t.Fatalf("checked %+v, served %+v", c.q, s)
	}
}

func TestHeadersToRemoveAreNamedOnlyWhenTheRequestGoesThrough(t *testing.T) {
	for _, ok := range []bool{true, false} {
		a := proxy.Answer{OK: ok, Status: http.StatusOK, Header: http.Header{}, Remove: []string{"x-stepgate-user", "cookie"}}
		if !ok {
			a.Status = http.StatusForbidden
		}
		w := httptest.NewRecorder()
		New(Config{Checker: &seen{a: a}, ClientIP: envoy}).ServeCheck(w, check("GET", "/public", ""))
		got := w.Header().Get(HeaderRemove)
		if want := map[bool]string{true: "x-stepgate-user,cookie", false: ""}[ok]; got != want || w.Code != a.Status {
			t.Fatalf("OK=%v: %d, %s: %q, want %q", ok, w.Code, HeaderRemove, got, want)
		}
	}
}

func TestTheDoorOwnsItsPrefixOnly(t *testing.T) {
	for target, want := range map[string]bool{
		PathPrefix + "/admin":        true,
		PathPrefix + "/":             true,
		PathPrefix:                   false,
		PathPrefix + "x/y":           false,
		"/.STEPGATE/ext-authz/admin": false,
		"/.stepgate/auth":            false,
	} {
		if got := New(Config{}).Owns(httptest.NewRequest("GET", target, nil)); got != want {
			t.Errorf("%s: owned %v, want %v", target, got, want)
		}
	}
}
