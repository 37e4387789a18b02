package session

import (
	"net/http"
	"testing"
)

// A reload's key roll (docs/design.md §9.1) works like a restart's: a
// cookie sealed with a key still listed opens, a new cookie is sealed with
// the first key, and a cookie sealed with a dropped key stops opening at
// once, even though it opened (and was cached) a moment before.
func TestSetKeysRollsLikeARestart(t *testing.T) {
	s, c := newTestStore(t, Options{Keys: [][]byte{testKey(1)}})
	su := testStepUp(c.t)
	cookie := func() *http.Request {
		ck, err := s.StepUpCookie(su)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.AddCookie(ck)
		return r
	}
	old := cookie()
	if _, ok := s.StepUp(old); !ok {
		t.Fatal("a cookie sealed with the only key does not open")
	}

	steps := []struct {
		name       string
		keys       [][]byte
		oldOpens   bool
		sealedWith int // which test key seals new cookies
	}{
		{"phase 1: the new key is learnt, the old one still seals", [][]byte{testKey(1), testKey(2)}, true, 1},
		{"phase 2: the new key seals, the old one still opens", [][]byte{testKey(2), testKey(1)}, true, 2},
		{"phase 3: the old key is dropped", [][]byte{testKey(2)}, false, 2},
	}
	for _, st := range steps {
		if err := s.SetKeys(st.keys); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if _, ok := s.StepUp(old); ok != st.oldOpens {
			t.Errorf("%s: the old cookie opens: %v, want %v", st.name, ok, st.oldOpens)
		}
		fresh := cookie()
		only, err := NewCodec([][]byte{testKey(byte(st.sealedWith))})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := cookieValue(fresh.Header, s.CookieName())
		if _, err := only.Open(s.CookieName(), v); err != nil {
			t.Errorf("%s: a new cookie is not sealed with key %d", st.name, st.sealedWith)
		}
	}
}

func TestSetKeysRefusesABadListAndKeepsTheKeys(t *testing.T) {
	s, c := newTestStore(t, Options{Keys: [][]byte{testKey(1)}})
	ck, _ := s.StepUpCookie(testStepUp(c.t))
	if err := s.SetKeys([][]byte{[]byte("short")}); err == nil {
		t.Fatal("SetKeys took a 5-byte key")
	}
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(ck)
	if _, ok := s.StepUp(r); !ok {
		t.Error("after a refused SetKeys, the cookie of the kept key does not open")
	}
}
