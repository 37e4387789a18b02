package session

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The step-up cache must not change what StepUp answers: these tests open
// the same cookie repeatedly (so later calls are cache hits) and check that
// expiry, tampering and the caller's copy behave as on a first open.

func cachedRequest(t *testing.T, s *Store, v StepUp) (*http.Request, *http.Cookie) {
	t.Helper()
	ck, err := s.StepUpCookie(v)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/admin/", nil)
	r.AddCookie(ck)
	if _, ok := s.StepUp(r); !ok { // fills the cache
		t.Fatal("first StepUp() = false, want true")
	}
	return r, ck
}

func TestStepUpCacheStillExpires(t *testing.T) {
	s, c := newTestStore(t, Options{})
	v := testStepUp(c.Now())
	r, _ := cachedRequest(t, s, v)
	c.Advance(time.Hour) // exactly at TokenExpiry
	if _, ok := s.StepUp(r); ok {
		t.Error("StepUp() of an expired, cached step-up = true, want false")
	}
}

func TestStepUpCacheTamperedValueMisses(t *testing.T) {
	s, c := newTestStore(t, Options{})
	_, ck := cachedRequest(t, s, testStepUp(c.Now()))
	b := []byte(ck.Value)
	b[len(b)/2] ^= 1
	r := httptest.NewRequest(http.MethodGet, "/admin/", nil)
	r.AddCookie(&http.Cookie{Name: ck.Name, Value: string(b)})
	if _, ok := s.StepUp(r); ok {
		t.Error("StepUp() of a tampered copy of a cached cookie = true, want false")
	}
}

func TestStepUpCacheReturnsCallersOwnAMR(t *testing.T) {
	s, c := newTestStore(t, Options{})
	r, _ := cachedRequest(t, s, testStepUp(c.Now()))
	got, _ := s.StepUp(r)
	got.AMR[0] = "changed"
	again, ok := s.StepUp(r)
	if !ok || again.AMR[0] != "otp" {
		t.Errorf("after a caller changed its AMR, StepUp() AMR = %v, %v; want [otp sms], true", again.AMR, ok)
	}
}

func TestStepUpCacheIsBounded(t *testing.T) {
	s, c := newTestStore(t, Options{})
	for i := 0; i < stepUpCacheSize+10; i++ {
		v := testStepUp(c.Now())
		v.ID = string(rune('a'+i%26)) + time.Duration(i).String()
		cachedRequest(t, s, v)
	}
	s.keys.Load().stepUps.mu.RLock()
	n := len(s.keys.Load().stepUps.m)
	s.keys.Load().stepUps.mu.RUnlock()
	if n > stepUpCacheSize {
		t.Errorf("cache holds %d step-ups, want at most %d", n, stepUpCacheSize)
	}
}

func TestStepUpCacheDuplicateCookieStillRefused(t *testing.T) {
	s, c := newTestStore(t, Options{})
	r, ck := cachedRequest(t, s, testStepUp(c.Now()))
	r.AddCookie(ck) // the same valid cookie twice: ambiguous, so absent
	if _, ok := s.StepUp(r); ok {
		t.Error("StepUp() with two step-up cookies = true, want false")
	}
}
