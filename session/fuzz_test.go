package session

import (
	"bytes"
	"net/http"
	"slices"
	"strings"
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
	good := s.keys.Load().codec.Seal(s.CookieName(), pt)
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
		sealed := s.keys.Load().codec.Seal(s.CookieName(), plaintext)
		s.StepUp(requestWithCookie(s.CookieName() + "=" + sealed))
	})
}

// FuzzStripCookies checks that whatever a client sends, no stepgate cookie
// reaches the upstream, and every other cookie pair does, in order and
// byte for byte.
func FuzzStripCookies(f *testing.F) {
	s, _ := newTestStore(f, Options{Secure: true})
	f.Add("a=1; __Host-stepgate=x; b=2", "__Host-stepgate-flow=y")
	f.Add(" __Host-stepgate =x;;; ;", "\t__Host-stepgate")
	f.Add(`q="v;w"; __Host-stepgate=1`, "x__Host-stepgate=2")
	f.Fuzz(func(t *testing.T, line1, line2 string) {
		h := http.Header{"Cookie": {line1, line2}}
		s.StripCookies(h)
		for _, name := range []string{s.CookieName(), s.FlowCookieName()} {
			for _, line := range h["Cookie"] {
				for part := range strings.SplitSeq(line, ";") {
					n, _, _ := strings.Cut(part, "=")
					if trimOWS(n) == name {
						t.Fatalf("cookie %q survived in %q", name, h["Cookie"])
					}
				}
			}
		}
		var want, got []string
		for _, line := range []string{line1, line2} {
			for part := range strings.SplitSeq(line, ";") {
				p := trimOWS(part)
				n, _, _ := strings.Cut(p, "=")
				if p != "" && trimOWS(n) != s.CookieName() && trimOWS(n) != s.FlowCookieName() {
					want = append(want, p)
				}
			}
		}
		for _, line := range h["Cookie"] {
			for part := range strings.SplitSeq(line, ";") {
				if p := trimOWS(part); p != "" {
					got = append(got, p)
				}
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("other cookies = %q, want %q", got, want)
		}
	})
}
