package session

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestApprovedCookieRoundTripsAndExpires(t *testing.T) {
	s, c := newTestStore(t, Options{})
	rec := httptest.NewRecorder()
	if err := s.SaveApproved(rec, "id.key", time.Minute); err != nil {
		t.Fatal(err)
	}
	cookie := rec.Result().Cookies()[0]
	if cookie.Name != "stepgate-approved" || !cookie.HttpOnly || cookie.Path != "/" || cookie.MaxAge != 60 {
		t.Fatalf("cookie = %+v", cookie)
	}
	r := httptest.NewRequest("GET", "/pay", nil)
	r.AddCookie(cookie)
	if ref, ok := s.Approved(r); !ok || ref != "id.key" {
		t.Fatalf("Approved = %q, %v", ref, ok)
	}
	c.Advance(time.Minute)
	if _, ok := s.Approved(r); ok {
		t.Fatal("an approved-request cookie opened after its ttl (the browser's Max-Age is not trusted)")
	}
}

func TestApprovedCookieIsNotAFlowOrStepUpCookie(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	rec := httptest.NewRecorder()
	_ = s.SaveApproved(rec, "id.key", time.Minute)
	v := rec.Result().Cookies()[0].Value
	r := httptest.NewRequest("GET", "/", nil)
	// The same sealed value under the other names must not open: the name
	// is the additional data.
	r.AddCookie(&http.Cookie{Name: "stepgate-flow", Value: v})
	r.AddCookie(&http.Cookie{Name: "stepgate", Value: v})
	if _, ok := s.Flow(r); ok {
		t.Error("an approved-request value opened as a flow")
	}
	if _, ok := s.StepUp(r); ok {
		t.Error("an approved-request value opened as a step-up")
	}
	h := http.Header{"Cookie": {"app=1; stepgate-approved=" + v + "; b=2"}}
	s.StripCookies(h)
	if got := h.Get("Cookie"); got != "app=1; b=2" {
		t.Errorf("after StripCookies: %q, want the approved cookie removed", got)
	}
}

func TestFlowTailFieldsRoundTripAndDecodeStrictly(t *testing.T) {
	f := testFlow(epoch)
	f.ReturnMethod, f.Approval = "POST", "id.key"
	b, err := marshalFlow(f)
	if err != nil {
		t.Fatal(err)
	}
	got, err := unmarshalFlow(b)
	if err != nil || got.ReturnMethod != "POST" || got.Approval != "id.key" {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	plain := testFlow(epoch)
	base, _ := marshalFlow(plain) // no tail: the format before the tail existed
	if _, err := unmarshalFlow(base); err != nil {
		t.Fatalf("a flow without a tail: %v", err)
	}
	field := func(tag byte, v string) []byte { return appendString([]byte{tag}, v) }
	for name, tail := range map[string][]byte{
		"an unknown tag":             field(9, "x"),
		"tags out of order":          append(field(tagApproval, "a"), field(tagReturnMethod, "POST")...),
		"a tag twice":                append(field(tagApproval, "a"), field(tagApproval, "b")...),
		"an empty value":             field(tagApproval, ""),
		"a truncated value":          field(tagApproval, "abc")[:3],
		"a tag without a value":      {tagApproval},
		"a zero tag (no such field)": field(0, "x"),
	} {
		if _, err := unmarshalFlow(append(append([]byte(nil), base...), tail...)); err == nil {
			t.Errorf("%s decoded", name)
		}
	}
}
