package session

import (
	"encoding/gob"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/sessions"
)

// The step-up cookie is opened on every request through an mfa rule, so its
// cost is part of the gateway's per-request overhead (docs/design.md §13). Compare
// BenchmarkStepUp with BenchmarkGorillaCookieStore, which stores the same
// value the way gorilla's CookieStore does (gob, HMAC, AES-CTR).

func benchStepUpRequest(b testing.TB) (*Store, *http.Request) {
	s, c := newTestStore(b, Options{Secure: true})
	v := testStepUp(c.Now()) // 1 KiB ID token
	ck := onlyCookie(b, func(w http.ResponseWriter) error { return s.SaveStepUp(w, v) })
	r := httptest.NewRequest(http.MethodGet, "/admin/", nil)
	r.Header.Set("Cookie", "theme=dark; _ga=GA1.2.123456789.1700000000; "+ck.Name+"="+ck.Value+"; lang=en")
	return s, r
}

func BenchmarkStepUp(b *testing.B) {
	s, r := benchStepUpRequest(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := s.StepUp(r); !ok {
			b.Fatal("StepUp() = false")
		}
	}
}

func BenchmarkStepUpParallel(b *testing.B) {
	s, r := benchStepUpRequest(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := s.StepUp(r); !ok {
				b.Error("StepUp() = false")
				return
			}
		}
	})
}

func BenchmarkSaveStepUp(b *testing.B) {
	s, c := newTestStore(b, Options{Secure: true})
	v := testStepUp(c.Now())
	w := discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		if err := s.SaveStepUp(w, v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStripCookies(b *testing.B) {
	s, r := benchStepUpRequest(b)
	line := r.Header.Get("Cookie")
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		h["Cookie"] = []string{line}
		s.StripCookies(h)
	}
}

func BenchmarkGorillaCookieStore(b *testing.B) {
	gob.Register(StepUp{})
	store := sessions.NewCookieStore(testKey(1), testKey(2))
	v := testStepUp(epoch)
	sess := sessions.NewSession(store, "__Host-stepgate")
	sess.Options = &sessions.Options{Path: "/", MaxAge: 3600}
	sess.Values["stepup"] = v
	rec := httptest.NewRecorder()
	if err := store.Save(nil, rec, sess); err != nil {
		b.Fatal(err)
	}
	ck := rec.Result().Cookies()[0]
	r := httptest.NewRequest(http.MethodGet, "/admin/", nil)
	r.Header.Set("Cookie", "theme=dark; _ga=GA1.2.123456789.1700000000; "+ck.Name+"="+ck.Value+"; lang=en")
	b.ReportMetric(float64(len(ck.Value)), "cookie-bytes")
	b.ReportAllocs()
	for b.Loop() {
		got, err := store.New(r, "__Host-stepgate")
		if err != nil || got.Values["stepup"].(StepUp).ID != v.ID {
			b.Fatalf("New() = %v, %v", got.Values, err)
		}
	}
}

type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}

func TestStepUpAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	s, r := benchStepUpRequest(t)
	if got := testing.AllocsPerRun(200, func() { s.StepUp(r) }); got > 3 {
		t.Errorf("StepUp() of a valid cookie allocates %v times, want <= 3 (the per-request budget)", got)
	}
	junk := httptest.NewRequest(http.MethodGet, "/", nil)
	junk.Header.Set("Cookie", s.CookieName()+"=AQ"+strings.Repeat("A", 200))
	if got := testing.AllocsPerRun(200, func() { s.StepUp(junk) }); got > 0 {
		t.Errorf("StepUp() of a junk cookie allocates %v times, want 0", got)
	}
}
