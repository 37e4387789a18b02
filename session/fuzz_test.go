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
		ours := []string{s.CookieName(), s.FlowCookieName(), s.apprName}
		for _, name := range ours {
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
				if p != "" && !slices.Contains(ours, trimOWS(n)) {
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

// splitCookieValue is cookieValue as cookie parsers read a line, and as it
// was written before nextPair: pairs cut at ';', the name before the first
// '=', spaces and tabs trimmed.
func splitCookieValue(lines []string, name string) (string, bool) {
	var value string
	found := 0
	for _, line := range lines {
		for part := range strings.SplitSeq(line, ";") {
			n, v, ok := strings.Cut(part, "=")
			if ok && trimOWS(n) == name {
				found++
				value = trimOWS(v)
			}
		}
	}
	if found != 1 {
		return "", false
	}
	return value, true
}

// FuzzCookieValue holds cookieValue (and stripLine's answer to whether a
// line holds one of ours, which decides whether it is rebuilt) to the
// splitting reader:
// a cookie found where a parser sees none, or missed where it sees one,
// would be a step-up read from another cookie's value.
func FuzzCookieValue(f *testing.F) {
	s, _ := newTestStore(f, Options{Secure: true})
	f.Add("a=1; __Host-stepgate=x; b=2", "__Host-stepgate-flow=y")
	f.Add(" __Host-stepgate =x ;;; ;", "\t__Host-stepgate")
	f.Add(`q="v; __Host-stepgate=1"`, "x__Host-stepgate=2; __Host-stepgatex=3")
	f.Add("a=__Host-stepgate=1; b=c __Host-stepgate=2", "__Host-stepgate-approved =r")
	f.Add("__Host-stepgate=1;__Host-stepgate=2", "")
	f.Fuzz(func(t *testing.T, line1, line2 string) {
		lines := []string{line1, line2}
		for _, name := range []string{s.CookieName(), s.FlowCookieName(), s.apprName} {
			got, gotOK := cookieValue(http.Header{"Cookie": lines}, name)
			want, wantOK := splitCookieValue(lines, name)
			if got != want || gotOK != wantOK {
				t.Fatalf("cookieValue(%q, %q) = %q, %v; splitting reads %q, %v", lines, name, got, gotOK, want, wantOK)
			}
		}
		for _, line := range lines {
			want := false
			for part := range strings.SplitSeq(line, ";") {
				n, _, _ := strings.Cut(part, "=")
				if n = trimOWS(n); n == s.CookieName() || n == s.FlowCookieName() || n == s.apprName {
					want = true
				}
			}
			if _, got := s.stripLine(line); got != want {
				t.Fatalf("stripLine(%q) says %v; splitting reads %v", line, got, want)
			}
		}
	})
}
