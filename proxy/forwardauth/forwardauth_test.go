package forwardauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stepgate/stepgate/proxy"
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

func TestTheOriginalRequestIsReadFromExactlyOneHeaderFamily(t *testing.T) {
	for _, tc := range []struct {
		name        string
		header      map[string][]string
		method, tgt string
		host        string
		style       proxy.Style
	}{
		{"nginx's family is answered as nginx",
			map[string][]string{"X-Original-Method": {"POST"}, "X-Original-Uri": {"/admin/x?y=1"}},
			"POST", "/admin/x?y=1", "stepgate.internal", proxy.StyleNginx},
		{"Traefik's and Caddy's family is answered with redirects, on the original host",
			map[string][]string{"X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/admin"}, "X-Forwarded-Host": {"app.example"}},
			"GET", "/admin", "app.example", proxy.StyleRedirect},
		{"both families describe no request",
			map[string][]string{"X-Original-Method": {"GET"}, "X-Original-Uri": {"/public"}, "X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/public"}},
			"", "", "stepgate.internal", proxy.StyleNginx},
		{"neither family describes no request",
			map[string][]string{}, "", "", "stepgate.internal", proxy.StyleNginx},
		{"a header sent twice describes no request",
			map[string][]string{"X-Original-Method": {"GET"}, "X-Original-Uri": {"/public", "/admin"}},
			"", "", "stepgate.internal", proxy.StyleNginx},
		{"a method that is not a token describes no request",
			map[string][]string{"X-Original-Method": {"GET /public"}, "X-Original-Uri": {"/admin"}},
			"", "", "stepgate.internal", proxy.StyleNginx},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &seen{a: proxy.Answer{Status: http.StatusForbidden}}
			r := httptest.NewRequest("GET", Path, nil)
			r.Host = "stepgate.internal"
			for k, v := range tc.header {
				r.Header[k] = v
			}
			s := New(c).ServeCheck(httptest.NewRecorder(), r)
			if c.q.Method != tc.method || c.q.Target != tc.tgt || c.q.Host != tc.host || c.style != tc.style {
				t.Fatalf("got %q %q on %q in style %d, want %q %q on %q in style %d",
					c.q.Method, c.q.Target, c.q.Host, c.style, tc.method, tc.tgt, tc.host, tc.style)
			}
			if c.body != nil {
				t.Fatal("forward-auth handed on a body")
			}
			if s.Asked == nil || s.Asked.Method != tc.method || s.Asked.Target != tc.tgt {
				t.Fatalf("the access line names %+v", s.Asked)
			}
		})
	}
}

func TestNginxsDescriptionIsNotAHeaderOfTheRequest(t *testing.T) {
	c := &seen{a: proxy.Answer{Status: http.StatusForbidden}}
	r := httptest.NewRequest("GET", Path, nil)
	r.Header.Set("X-Original-Method", "GET")
	r.Header.Set("X-Original-Uri", "/admin")
	New(c).ServeCheck(httptest.NewRecorder(), r)
	if got := c.q.Header.Get("X-Original-Uri") + c.q.Header.Get("X-Original-Method"); got != "" {
		t.Fatalf("the core saw the description as headers: %q", got)
	}
}

func TestTheAnswerIsWrittenAsTheCoreGaveIt(t *testing.T) {
	c := &seen{a: proxy.Answer{Status: http.StatusUnauthorized, Decision: "mfa_required", User: "alice",
		Header: http.Header{"X-Stepgate-Redirect": {"/.stepgate/challenge"}, "Cache-Control": {"no-store"}},
		Body:   []byte(`{"error":"step_up_required"}` + "\n")}}
	r := httptest.NewRequest("GET", Path, nil)
	r.Header.Set("X-Original-Method", "GET")
	r.Header.Set("X-Original-Uri", "/admin")
	w := httptest.NewRecorder()
	s := New(c).ServeCheck(w, r)
	if w.Code != http.StatusUnauthorized || w.Header().Get("X-Stepgate-Redirect") != "/.stepgate/challenge" ||
		w.Header().Get("Cache-Control") != "no-store" || w.Body.String() != string(c.a.Body) {
		t.Fatalf("got %d %v %q", w.Code, w.Header(), w.Body)
	}
	if s.Decision != "mfa_required" || s.User != "alice" {
		t.Fatalf("served %+v", s)
	}
}

func TestTheDoorOwnsItsPathOnly(t *testing.T) {
	for target, want := range map[string]bool{
		Path:                   true,
		Path + "?x=1":          true,
		Path + "/x":            false,
		"/.STEPGATE/auth":      false,
		"/.stepgate/challenge": false,
		"/admin":               false,
	} {
		if got := New(nil).Owns(httptest.NewRequest("GET", target, nil)); got != want {
			t.Errorf("%s: owned %v, want %v", target, got, want)
		}
	}
}
