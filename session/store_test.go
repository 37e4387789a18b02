package session

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/sessions"
	"github.com/stepgate/stepgate/mfa"
)

// clock is a manual clock; tests advance it instead of sleeping.
type clock struct{ t time.Time }

func (c *clock) Now() time.Time          { return c.t }
func (c *clock) Advance(d time.Duration) { c.t = c.t.Add(d) }

var epoch = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func newTestStore(t testing.TB, o Options) (*Store, *clock) {
	t.Helper()
	c := &clock{t: epoch}
	if o.Keys == nil {
		o.Keys = [][]byte{testKey(1)}
	}
	if o.Now == nil {
		o.Now = c.Now
	}
	s, err := NewStore(o)
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	return s, c
}

// fakeIDToken is a JWT-shaped string of n bytes.
func fakeIDToken(n int) string {
	return ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0." + strings.Repeat("eyJzdWIiOiJ1In0", n/15+1))[:n]
}

func testStepUp(now time.Time) StepUp {
	return StepUp{
		ID:          "2b7f3c1e9a0d4e5f8a6b7c8d9e0f1a2b",
		User:        "alice@example.com",
		Subject:     "5a4f3e2d-1c0b-4a9f-8e7d-6c5b4a3f2e1d",
		AuthTime:    now,
		ACR:         "MFA-Only",
		AMR:         []string{"otp", "sms"},
		IDToken:     fakeIDToken(1024),
		TokenExpiry: now.Add(time.Hour),
	}
}

func testFlow(now time.Time) Flow {
	return Flow{
		Pending: mfa.Pending{
			FlowID:       "03a7c0a4-6f4c-4b5e-9c1f-2d3e4f5a6b7c",
			Cookies:      []mfa.Cookie{{Name: "ST", Value: "st-value-123"}, {Name: "other", Value: "x"}},
			Nonce:        "nonce-abc",
			State:        "state-def",
			CodeVerifier: "verifier-ghi",
			ACR:          "MFA-Only",
			Challenged:   true,
		},
		User:       "alice",
		ReturnPath: "/admin/users?id=7",
		CSRF:       []byte("0123456789abcdef0123456789abcdef"),
		Created:    now,
		Status:     "OTP_REQUIRED",
	}
}

// setCookies runs save against a recorder and returns the cookies it set.
func setCookies(t testing.TB, save func(w http.ResponseWriter)) []*http.Cookie {
	t.Helper()
	rec := httptest.NewRecorder()
	save(rec)
	return rec.Result().Cookies()
}

// onlyCookie returns the single cookie save set.
func onlyCookie(t testing.TB, save func(w http.ResponseWriter) error) *http.Cookie {
	t.Helper()
	var err error
	cs := setCookies(t, func(w http.ResponseWriter) { err = save(w) })
	if err != nil {
		t.Fatalf("save: %v", err)
	}
	if len(cs) != 1 {
		t.Fatalf("save set %d cookies, want 1", len(cs))
	}
	return cs[0]
}

// requestWithCookie is a request whose Cookie header is exactly header.
func requestWithCookie(header ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/admin/", nil)
	for _, h := range header {
		r.Header.Add("Cookie", h)
	}
	return r
}

func TestStepUpRoundTrip(t *testing.T) {
	s, c := newTestStore(t, Options{Secure: true})
	want := testStepUp(c.Now())
	ck := onlyCookie(t, func(w http.ResponseWriter) error { return s.SaveStepUp(w, want) })

	got, ok := s.StepUp(requestWithCookie("theme=dark; " + ck.Name + "=" + ck.Value + "; lang=en"))
	if !ok {
		t.Fatal("StepUp() = false after SaveStepUp")
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("StepUp() = %+v\nwant %+v", got, want)
	}
}

func TestStepUpTimesHaveSecondPrecision(t *testing.T) {
	s, c := newTestStore(t, Options{})
	v := testStepUp(c.Now().Add(700 * time.Millisecond))
	ck := onlyCookie(t, func(w http.ResponseWriter) error { return s.SaveStepUp(w, v) })
	got, ok := s.StepUp(requestWithCookie(ck.Name + "=" + ck.Value))
	if !ok {
		t.Fatal("StepUp() = false")
	}
	if want := v.AuthTime.Truncate(time.Second); !got.AuthTime.Equal(want) {
		t.Errorf("AuthTime = %v, want %v", got.AuthTime, want)
	}
}

func TestFlowRoundTrip(t *testing.T) {
	s, c := newTestStore(t, Options{Secure: true})
	want := testFlow(c.Now())
	ck := onlyCookie(t, func(w http.ResponseWriter) error { return s.SaveFlow(w, want) })
	if ck.Name != "__Host-stepgate-flow" {
		t.Errorf("flow cookie name = %q, want __Host-stepgate-flow", ck.Name)
	}
	got, ok := s.Flow(requestWithCookie(ck.Name + "=" + ck.Value))
	if !ok {
		t.Fatal("Flow() = false after SaveFlow")
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Flow() = %+v\nwant %+v", got, want)
	}
}

func TestEmptyValuesRoundTrip(t *testing.T) {
	s, c := newTestStore(t, Options{})
	v := StepUp{TokenExpiry: c.Now().Add(time.Minute)}
	ck := onlyCookie(t, func(w http.ResponseWriter) error { return s.SaveStepUp(w, v) })
	if got, ok := s.StepUp(requestWithCookie(ck.Name + "=" + ck.Value)); !ok || !reflect.DeepEqual(got, v) {
		t.Errorf("StepUp() = %+v, %v; want %+v, true", got, ok, v)
	}
	f := Flow{Created: c.Now()}
	ck = onlyCookie(t, func(w http.ResponseWriter) error { return s.SaveFlow(w, f) })
	if got, ok := s.Flow(requestWithCookie(ck.Name + "=" + ck.Value)); !ok || !reflect.DeepEqual(got, f) {
		t.Errorf("Flow() = %+v, %v; want %+v, true", got, ok, f)
	}
}

func TestCookieAttributes(t *testing.T) {
	tests := []struct {
		name       string
		opts       Options
		save       func(s *Store, now time.Time) func(w http.ResponseWriter) error
		wantName   string
		wantMaxAge int
		wantSecure bool
	}{
		{
			name: "the step-up cookie lives until the ID token expires",
			opts: Options{Secure: true},
			save: func(s *Store, now time.Time) func(w http.ResponseWriter) error {
				return func(w http.ResponseWriter) error { return s.SaveStepUp(w, testStepUp(now)) }
			},
			wantName: "__Host-stepgate", wantMaxAge: 3600, wantSecure: true,
		},
		{
			name: "the flow cookie lives for the flow TTL",
			opts: Options{Secure: true},
			save: func(s *Store, now time.Time) func(w http.ResponseWriter) error {
				return func(w http.ResponseWriter) error { return s.SaveFlow(w, testFlow(now)) }
			},
			wantName: "__Host-stepgate-flow", wantMaxAge: 900, wantSecure: true,
		},
		{
			name: "a flow saved again keeps its original deadline",
			opts: Options{Secure: true},
			save: func(s *Store, now time.Time) func(w http.ResponseWriter) error {
				return func(w http.ResponseWriter) error { return s.SaveFlow(w, testFlow(now.Add(-10*time.Minute))) }
			},
			wantName: "__Host-stepgate-flow", wantMaxAge: 300, wantSecure: true,
		},
		{
			name: "local http uses a plain name and no Secure",
			opts: Options{Secure: false},
			save: func(s *Store, now time.Time) func(w http.ResponseWriter) error {
				return func(w http.ResponseWriter) error { return s.SaveStepUp(w, testStepUp(now)) }
			},
			wantName: "stepgate", wantMaxAge: 3600, wantSecure: false,
		},
		{
			name: "a configured name and TTL are used",
			opts: Options{Secure: true, CookieName: "mfa", FlowTTL: 5 * time.Minute},
			save: func(s *Store, now time.Time) func(w http.ResponseWriter) error {
				return func(w http.ResponseWriter) error { return s.SaveFlow(w, Flow{}) }
			},
			wantName: "mfa-flow", wantMaxAge: 300, wantSecure: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := newTestStore(t, tt.opts)
			ck := onlyCookie(t, tt.save(s, c.Now()))
			if ck.Name != tt.wantName {
				t.Errorf("Name = %q, want %q", ck.Name, tt.wantName)
			}
			if ck.MaxAge != tt.wantMaxAge {
				t.Errorf("MaxAge = %d, want %d", ck.MaxAge, tt.wantMaxAge)
			}
			if ck.Secure != tt.wantSecure {
				t.Errorf("Secure = %v, want %v", ck.Secure, tt.wantSecure)
			}
			if !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" || ck.Domain != "" {
				t.Errorf("attributes HttpOnly=%v SameSite=%v Path=%q Domain=%q; want true, Lax, /, none", ck.HttpOnly, ck.SameSite, ck.Path, ck.Domain)
			}
		})
	}
}

func TestClearSetsAnExpiredCookieWithTheSameAttributes(t *testing.T) {
	s, _ := newTestStore(t, Options{Secure: true})
	for _, tt := range []struct {
		name  string
		clear func(http.ResponseWriter)
		want  string
	}{
		{"ClearStepUp", s.ClearStepUp, "__Host-stepgate"},
		{"ClearFlow", s.ClearFlow, "__Host-stepgate-flow"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cs := setCookies(t, tt.clear)
			if len(cs) != 1 {
				t.Fatalf("set %d cookies, want 1", len(cs))
			}
			ck := cs[0]
			if ck.Name != tt.want || ck.Value != "" || ck.MaxAge >= 0 || !ck.Secure || ck.Path != "/" || !ck.HttpOnly {
				t.Errorf("cookie = %+v; want %s, empty, Max-Age=0, Secure, Path=/, HttpOnly", ck, tt.want)
			}
		})
	}
}

func TestNewStoreCookieNameRules(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr bool
	}{
		{"a __Host- name with Secure is accepted", Options{CookieName: "__Host-x", Secure: true}, false},
		{"a __Host- name without Secure is refused", Options{CookieName: "__Host-x", Secure: false}, true},
		{"a __Secure- name without Secure is refused", Options{CookieName: "__Secure-x", Secure: false}, true},
		{"a plain name without Secure is accepted", Options{CookieName: "sg", Secure: false}, false},
		{"a name with a space is refused", Options{CookieName: "step gate", Secure: true}, true},
		{"a name with a semicolon is refused", Options{CookieName: "a;b", Secure: true}, true},
		{"a negative flow TTL is refused", Options{FlowTTL: -time.Second}, true},
		{"no keys is refused", Options{Keys: [][]byte{}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.Keys == nil {
				tt.opts.Keys = [][]byte{testKey(1)}
			}
			_, err := NewStore(tt.opts)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Errorf("NewStore() error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestStepUpIsAbsent(t *testing.T) {
	s, c := newTestStore(t, Options{Secure: true})
	good := onlyCookie(t, func(w http.ResponseWriter) error { return s.SaveStepUp(w, testStepUp(c.Now())) }).Value
	flow := onlyCookie(t, func(w http.ResponseWriter) error { return s.SaveFlow(w, testFlow(c.Now())) }).Value
	other, _ := newTestStore(t, Options{Secure: true, Keys: [][]byte{testKey(9)}})
	foreign := onlyCookie(t, func(w http.ResponseWriter) error { return other.SaveStepUp(w, testStepUp(c.Now())) }).Value
	gorilla := sessions.NewCookieStore(testKey(1), testKey(1))
	gs := sessions.NewSession(gorilla, "__Host-stepgate")
	gs.Values["user"] = "alice"
	rec := httptest.NewRecorder()
	if err := gorilla.Save(nil, rec, gs); err != nil {
		t.Fatal(err)
	}
	gorillaValue := rec.Result().Cookies()[0].Value
	const name = "__Host-stepgate="

	tests := []struct {
		name    string
		headers []string
	}{
		{"no Cookie header", nil},
		{"only other cookies", []string{"a=1; b=2"}},
		{"an empty value", []string{name}},
		{"a truncated value", []string{name + good[:len(good)-1]}},
		{"a value cut in half", []string{name + good[:len(good)/2]}},
		{"an oversized value", []string{name + good + strings.Repeat("A", MaxCookieSize)}},
		{"the flow cookie's value under the step-up name", []string{name + flow}},
		{"a value sealed under a key we do not have", []string{name + foreign}},
		{"a gorilla securecookie value", []string{name + gorillaValue}},
		{"a quoted value", []string{name + `"` + good + `"`}},
		{"two step-up cookies in one header, even identical", []string{name + good + "; " + name + good}},
		{"two step-up cookies in two headers", []string{name + good, "x=1; " + name + good}},
		{"the name without a value", []string{"__Host-stepgate"}},
		{"a cookie whose name only starts with ours", []string{"__Host-stepgatex=" + good}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, ok := s.StepUp(requestWithCookie(tt.headers...)); ok {
				t.Errorf("StepUp() = %+v, true; want absent", got)
			}
		})
	}
	// The control: the good value on its own is accepted.
	if _, ok := s.StepUp(requestWithCookie(" " + name + good + " ")); !ok {
		t.Error("StepUp() of the untampered cookie with spaces around it = false; want true")
	}
}

func TestEveryTamperedByteIsAbsent(t *testing.T) {
	// Version, nonce, ciphertext and tag: flipping any bit anywhere in the
	// sealed value must make the cookie absent.
	s, c := newTestStore(t, Options{Secure: true})
	good := onlyCookie(t, func(w http.ResponseWriter) error { return s.SaveStepUp(w, testStepUp(c.Now())) }).Value
	raw, err := base64.RawURLEncoding.DecodeString(good)
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		for _, bit := range []byte{0x01, 0x80} {
			b := append([]byte(nil), raw...)
			b[i] ^= bit
			v := base64.RawURLEncoding.EncodeToString(b)
			if _, ok := s.StepUp(requestWithCookie("__Host-stepgate=" + v)); ok {
				t.Fatalf("StepUp() with byte %d of %d xor %#x = true; want absent", i, len(raw), bit)
			}
		}
	}
}

func TestExpiry(t *testing.T) {
	s, c := newTestStore(t, Options{Secure: true})
	su := onlyCookie(t, func(w http.ResponseWriter) error { return s.SaveStepUp(w, testStepUp(c.Now())) })
	fl := onlyCookie(t, func(w http.ResponseWriter) error { return s.SaveFlow(w, testFlow(c.Now())) })
	r := requestWithCookie(su.Name + "=" + su.Value + "; " + fl.Name + "=" + fl.Value)

	tests := []struct {
		name               string
		at                 time.Duration // after saving
		wantStepUp, wantFl bool
	}{
		{"both are valid when just saved", 0, true, true},
		{"the flow is valid one second before its TTL", 15*time.Minute - time.Second, true, true},
		{"the flow is absent at its TTL", 15 * time.Minute, true, false},
		{"the step-up is valid one second before the ID token expires", time.Hour - time.Second, true, false},
		{"the step-up is absent when the ID token expires, whatever the browser keeps", time.Hour, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = epoch.Add(tt.at)
			if _, ok := s.StepUp(r); ok != tt.wantStepUp {
				t.Errorf("StepUp() ok = %v, want %v", ok, tt.wantStepUp)
			}
			if _, ok := s.Flow(r); ok != tt.wantFl {
				t.Errorf("Flow() ok = %v, want %v", ok, tt.wantFl)
			}
		})
	}
}

func TestFlowIsAbsentUnderTheStepUpName(t *testing.T) {
	s, c := newTestStore(t, Options{Secure: true})
	su := onlyCookie(t, func(w http.ResponseWriter) error { return s.SaveStepUp(w, testStepUp(c.Now())) })
	if _, ok := s.Flow(requestWithCookie(s.FlowCookieName() + "=" + su.Value)); ok {
		t.Error("Flow() of a step-up value under the flow name = true; want absent")
	}
	fl := onlyCookie(t, func(w http.ResponseWriter) error { return s.SaveFlow(w, testFlow(c.Now())) })
	if _, ok := s.Flow(requestWithCookie(fl.Name + "=" + fl.Value + ";" + fl.Name + "=" + fl.Value)); ok {
		t.Error("Flow() with two flow cookies = true; want absent")
	}
}

func TestKeyRotationThroughTheStore(t *testing.T) {
	old, _ := newTestStore(t, Options{Secure: true, Keys: [][]byte{testKey(1)}})
	ck := onlyCookie(t, func(w http.ResponseWriter) error { return old.SaveStepUp(w, testStepUp(epoch)) })
	r := requestWithCookie(ck.Name + "=" + ck.Value)

	rotated, _ := newTestStore(t, Options{Secure: true, Keys: [][]byte{testKey(2), testKey(1)}})
	if _, ok := rotated.StepUp(r); !ok {
		t.Error("[new, old] store: StepUp() of a cookie sealed with old = false; want true (no one logged out)")
	}
	retired, _ := newTestStore(t, Options{Secure: true, Keys: [][]byte{testKey(2)}})
	if _, ok := retired.StepUp(r); ok {
		t.Error("[new] store: StepUp() of a cookie sealed with old = true; want absent")
	}
}

func TestSizes(t *testing.T) {
	s, c := newTestStore(t, Options{Secure: true})
	t.Run("a 2 KiB ID token keeps the whole Set-Cookie under 4 KiB", func(t *testing.T) {
		v := testStepUp(c.Now())
		v.IDToken = fakeIDToken(2048)
		v.AMR = []string{"mfa", "otp", "sms", "pwd"}
		rec := httptest.NewRecorder()
		if err := s.SaveStepUp(rec, v); err != nil {
			t.Fatalf("SaveStepUp: %v", err)
		}
		line := rec.Header().Get("Set-Cookie")
		if len(line) >= 4096 {
			t.Errorf("Set-Cookie is %d bytes, want < 4096", len(line))
		}
		t.Logf("Set-Cookie with a 2 KiB ID token: %d bytes", len(line))
	})
	t.Run("a cookie that would exceed 4096 bytes is an error and sets nothing", func(t *testing.T) {
		v := testStepUp(c.Now())
		v.IDToken = fakeIDToken(3072)
		rec := httptest.NewRecorder()
		if err := s.SaveStepUp(rec, v); err == nil {
			t.Error("SaveStepUp with a 3 KiB ID token succeeded; want an error")
		}
		if got := rec.Header().Values("Set-Cookie"); len(got) != 0 {
			t.Errorf("Set-Cookie = %q, want none", got)
		}
	})
}

func TestSaveRefuses(t *testing.T) {
	s, c := newTestStore(t, Options{Secure: true})
	now := c.Now()
	tooManyAMR := testStepUp(now)
	tooManyAMR.AMR = make([]string, maxAMR+1)
	expired := testStepUp(now)
	expired.TokenExpiry = now
	tooManyCookies := testFlow(now)
	tooManyCookies.Cookies = make([]mfa.Cookie, maxCookies+1)
	oldFlow := testFlow(now.Add(-15 * time.Minute))
	tests := []struct {
		name string
		save func(w http.ResponseWriter) error
	}{
		{"a step-up whose ID token has expired", func(w http.ResponseWriter) error { return s.SaveStepUp(w, expired) }},
		{"more than 16 amr values", func(w http.ResponseWriter) error { return s.SaveStepUp(w, tooManyAMR) }},
		{"more than 10 PingOne cookies", func(w http.ResponseWriter) error { return s.SaveFlow(w, tooManyCookies) }},
		{"a flow older than the TTL", func(w http.ResponseWriter) error { return s.SaveFlow(w, oldFlow) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			if err := tt.save(rec); err == nil {
				t.Error("save succeeded; want an error")
			}
			if got := rec.Header().Values("Set-Cookie"); len(got) != 0 {
				t.Errorf("Set-Cookie = %q, want none", got)
			}
		})
	}
}

func TestStripCookies(t *testing.T) {
	s, _ := newTestStore(t, Options{Secure: true})
	tests := []struct {
		name string
		in   []string // Cookie header lines; nil means no header
		want []string
	}{
		{"no Cookie header stays absent", nil, nil},
		{"a header without our cookies is untouched, spacing and all", []string{"a=1;b=2 ;  c=3"}, []string{"a=1;b=2 ;  c=3"}},
		{"the step-up cookie is removed from the middle", []string{"a=1; __Host-stepgate=xyz; b=2"}, []string{"a=1; b=2"}},
		{"both cookies are removed", []string{"__Host-stepgate-flow=f; a=1; __Host-stepgate=s"}, []string{"a=1"}},
		{"odd spacing and tabs around our cookie", []string{"a=1;\t __Host-stepgate = s ;b=x y"}, []string{"a=1; b=x y"}},
		{"other cookies keep their exact bytes", []string{`q="quoted value"; __Host-stepgate=s; e=a=b=c; n`}, []string{`q="quoted value"; e=a=b=c; n`}},
		{"a cookie whose name only contains ours is kept", []string{"x__Host-stepgate=1; __Host-stepgatex=2; __Host-stepgate=3"}, []string{"x__Host-stepgate=1; __Host-stepgatex=2"}},
		{"several headers are each cleaned", []string{"a=1; __Host-stepgate=s", "__Host-stepgate-flow=f; b=2", "c=3"}, []string{"a=1", "b=2", "c=3"}},
		{"a header left empty is dropped", []string{"__Host-stepgate=s", "b=2"}, []string{"b=2"}},
		{"duplicates are all removed", []string{"__Host-stepgate=1; __Host-stepgate=2"}, nil},
		{"our name without a value is removed", []string{"__Host-stepgate; a=1"}, []string{"a=1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"X-Other": {"keep"}}
			if tt.in != nil {
				h["Cookie"] = append([]string(nil), tt.in...)
			}
			s.StripCookies(h)
			if got := h["Cookie"]; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Cookie = %q, want %q", got, tt.want)
			}
			if _, ok := h["Cookie"]; ok && tt.want == nil {
				t.Error("an empty Cookie header was left behind")
			}
			if got := h.Get("X-Other"); got != "keep" {
				t.Errorf("X-Other = %q, want keep", got)
			}
		})
	}
}

func TestStripCookiesDoesNotChangeTheCallersSlice(t *testing.T) {
	s, _ := newTestStore(t, Options{Secure: true})
	orig := []string{"__Host-stepgate=s; a=1"}
	h := http.Header{"Cookie": orig}
	s.StripCookies(h)
	if orig[0] != "__Host-stepgate=s; a=1" {
		t.Errorf("original slice changed to %q", orig)
	}
}

func TestGorillaSessionsStore(t *testing.T) {
	s, c := newTestStore(t, Options{Secure: true})
	var store sessions.Store = s

	t.Run("a request without cookies gets new empty sessions", func(t *testing.T) {
		r := requestWithCookie()
		for _, name := range []string{s.CookieName(), s.FlowCookieName()} {
			sess, err := store.Get(r, name)
			if err != nil {
				t.Fatalf("Get(%q): %v", name, err)
			}
			if !sess.IsNew || len(sess.Values) != 0 {
				t.Errorf("Get(%q) = IsNew %v, Values %v; want new and empty", name, sess.IsNew, sess.Values)
			}
			if o := sess.Options; o.SameSite != http.SameSiteLaxMode || !o.HttpOnly || !o.Secure || o.Path != "/" || o.Domain != "" {
				t.Errorf("Get(%q).Options = %+v; want Lax, HttpOnly, Secure, Path=/, no Domain", name, o)
			}
		}
	})

	t.Run("a step-up saved through the gorilla API opens through both APIs", func(t *testing.T) {
		want := testStepUp(c.Now())
		r := requestWithCookie()
		sess, _ := store.Get(r, s.CookieName())
		sess.Values[ValueStepUp] = want
		rec := httptest.NewRecorder()
		if err := sessions.Save(r, rec); err != nil {
			t.Fatalf("sessions.Save: %v", err)
		}
		ck := rec.Result().Cookies()[0]
		if ck.MaxAge != 3600 || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode {
			t.Errorf("cookie = %+v; want Max-Age=3600, HttpOnly, Lax", ck)
		}
		r2 := requestWithCookie(ck.Name + "=" + ck.Value)
		if got, ok := s.StepUp(r2); !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("StepUp() = %+v, %v; want %+v", got, ok, want)
		}
		sess2, err := store.New(r2, s.CookieName())
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if got := sess2.Values[ValueStepUp]; sess2.IsNew || !reflect.DeepEqual(got, want) || sess2.ID != want.ID {
			t.Errorf("New() = IsNew %v, ID %q, Values[stepup] %+v; want the saved step-up", sess2.IsNew, sess2.ID, got)
		}
	})

	t.Run("a flow pointer saved through the gorilla API opens", func(t *testing.T) {
		want := testFlow(c.Now())
		sess := sessions.NewSession(store, s.FlowCookieName())
		sess.Values[ValueFlow] = &want
		rec := httptest.NewRecorder()
		if err := store.Save(nil, rec, sess); err != nil {
			t.Fatalf("Save: %v", err)
		}
		ck := rec.Result().Cookies()[0]
		got, err := store.New(requestWithCookie(ck.Name+"="+ck.Value), s.FlowCookieName())
		if err != nil || got.IsNew || !reflect.DeepEqual(got.Values[ValueFlow], want) {
			t.Errorf("New() = %+v, %v; want the saved flow", got.Values, err)
		}
	})

	t.Run("MaxAge -1 and empty Values delete the cookie", func(t *testing.T) {
		for _, sess := range []*sessions.Session{
			func() *sessions.Session {
				x := sessions.NewSession(store, s.CookieName())
				x.Values[ValueStepUp] = testStepUp(c.Now())
				x.Options = &sessions.Options{MaxAge: -1}
				return x
			}(),
			sessions.NewSession(store, s.CookieName()),
		} {
			rec := httptest.NewRecorder()
			if err := store.Save(nil, rec, sess); err != nil {
				t.Fatalf("Save: %v", err)
			}
			ck := rec.Result().Cookies()[0]
			if ck.Value != "" || ck.MaxAge >= 0 {
				t.Errorf("cookie = %+v; want a deletion", ck)
			}
		}
	})

	errorCases := []struct {
		name   string
		cookie string
		values map[any]any
	}{
		{"an unknown key", "__Host-stepgate", map[any]any{"user": "alice"}},
		{"the flow key in the step-up cookie", "__Host-stepgate", map[any]any{ValueFlow: testFlow(c.Now())}},
		{"a map instead of a StepUp", "__Host-stepgate", map[any]any{ValueStepUp: map[string]string{"user": "alice"}}},
		{"a nil *StepUp", "__Host-stepgate", map[any]any{ValueStepUp: (*StepUp)(nil)}},
		{"an extra key next to the step-up", "__Host-stepgate", map[any]any{ValueStepUp: testStepUp(c.Now()), "x": 1}},
		{"a StepUp in the flow cookie", "__Host-stepgate-flow", map[any]any{ValueFlow: testStepUp(c.Now())}},
		{"an unknown cookie name", "other", map[any]any{ValueStepUp: testStepUp(c.Now())}},
	}
	for _, tt := range errorCases {
		t.Run("Save refuses "+tt.name, func(t *testing.T) {
			sess := sessions.NewSession(store, tt.cookie)
			sess.Values = tt.values
			rec := httptest.NewRecorder()
			if err := store.Save(nil, rec, sess); err == nil {
				t.Error("Save succeeded; want an error")
			}
			if got := rec.Header().Values("Set-Cookie"); len(got) != 0 {
				t.Errorf("Set-Cookie = %q, want none", got)
			}
		})
	}

	t.Run("Get of an unknown name is an error", func(t *testing.T) {
		if _, err := store.Get(requestWithCookie(), "other"); err == nil {
			t.Error("Get(other) succeeded; want an error")
		}
	})
}

func TestLogValueRedacts(t *testing.T) {
	now := epoch
	su := testStepUp(now)
	if got := su.LogValue().String(); strings.Contains(got, su.IDToken[:40]) {
		t.Errorf("StepUp.LogValue() = %q contains the ID token", got)
	}
	f := testFlow(now)
	got := f.LogValue().String()
	for _, secret := range []string{"st-value-123", "verifier-ghi", string(f.CSRF), "nonce-abc", "state-def"} {
		if strings.Contains(got, secret) {
			t.Errorf("Flow.LogValue() = %q contains %q", got, secret)
		}
	}
}

func TestMintedCookiesOpen(t *testing.T) {
	s, c := newTestStore(t, Options{Secure: true})
	want := testStepUp(c.Now())
	ck, err := s.StepUpCookie(want)
	if err != nil {
		t.Fatalf("StepUpCookie: %v", err)
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(ck)
	if got, ok := s.StepUp(r); !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("StepUp() of a minted cookie = %+v, %v; want %+v, true", got, ok, want)
	}
	fc, err := s.FlowCookie(testFlow(c.Now()))
	if err != nil {
		t.Fatalf("FlowCookie: %v", err)
	}
	r.AddCookie(fc)
	if _, ok := s.Flow(r); !ok {
		t.Error("Flow() of a minted flow cookie = false")
	}
}
