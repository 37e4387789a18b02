package session

import (
	"bytes"
	"testing"
)

// FuzzOpenStepUp checks the two things an attacker controls: the cookie
// value (random values never open) and, were a key ever to leak or a bug to
// seal junk, the plaintext (the decoder never panics, and anything it
// accepts is the one canonical encoding of what it returned).
func FuzzOpenStepUp(f *testing.F) {
	s, c := newTestStore(f, Options{Secure: true})
	v := testStepUp(c.Now())
	v.IDToken = fakeIDToken(200)
	pt, err := marshalStepUp(v)
	if err != nil {
		f.Fatal(err)
	}
	good := s.codec.Seal(s.CookieName(), pt)
	flowPT, err := marshalFlow(testFlow(c.Now()))
	if err != nil {
		f.Fatal(err)
	}
	// Seeds are near misses of a real cookie, never a real one: each fuzz
	// worker is its own process with its own random nonces, so a valid
	// cookie in the corpus would open in every worker.
	mid := len(good) / 2
	swap := "A"
	if good[mid] == 'A' {
		swap = "B"
	}
	tampered := good[:mid] + swap + good[mid+1:]
	if tampered == good {
		f.Fatal("tampering left the value unchanged")
	}
	f.Add(tampered, pt)
	f.Add(good[:len(good)-1], flowPT)
	f.Add("", []byte{})
	f.Add("AQ", []byte{kindStepUp})
	f.Add(good[:40], stepUpFields(17, make([]string, 17), nil))
	f.Add(good+good, append([]byte{kindStepUp}, bytes.Repeat([]byte{0xff}, 12)...))

	f.Fuzz(func(t *testing.T, value string, plaintext []byte) {
		if got, ok := s.StepUp(requestWithCookie(s.CookieName() + "=" + value)); ok {
			t.Fatalf("random value %q opened as %+v", value, got)
		}
		if _, ok := s.Flow(requestWithCookie(s.FlowCookieName() + "=" + value)); ok {
			t.Fatalf("random value %q opened as a flow", value)
		}
		if su, err := unmarshalStepUp(plaintext); err == nil {
			again, err := marshalStepUp(su)
			if err != nil || !bytes.Equal(again, plaintext) {
				t.Fatalf("step-up %x decoded to %+v, which encodes as %x, %v", plaintext, su, again, err)
			}
		}
		if fl, err := unmarshalFlow(plaintext); err == nil {
			again, err := marshalFlow(fl)
			if err != nil || !bytes.Equal(again, plaintext) {
				t.Fatalf("flow %x decoded to %+v, which encodes as %x, %v", plaintext, fl, again, err)
			}
		}
		// A sealed, well-formed plaintext must behave like any cookie:
		// absent or valid, never a panic.
		sealed := s.codec.Seal(s.CookieName(), plaintext)
		s.StepUp(requestWithCookie(s.CookieName() + "=" + sealed))
	})
}
