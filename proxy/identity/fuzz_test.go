package identity

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzHeaderUser checks that the header source never returns a user from an
// untrusted peer, never leaves the header behind for one, and returns only
// values that pass ValidUser's promises.
func FuzzHeaderUser(f *testing.F) {
	for _, s := range []string{"alice", "alice, admin", "", " alice", "ali\u200bce", "alice\xff", strings.Repeat("a", 257), "zoë"} {
		f.Add(s, "", true)
		f.Add(s, "admin", false)
	}
	src := NewHeader("X-Forwarded-User")
	f.Fuzz(func(t *testing.T, v, variant string, trusted bool) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header = http.Header{"X-Forwarded-User": {v}}
		if variant != "" {
			r.Header["X_forwarded_user"] = []string{variant}
		}
		got, err := src.User(r, trusted)
		if _, ok := r.Header["X_forwarded_user"]; ok {
			t.Fatal("a variant spelling of the header was left on the request")
		}
		if !trusted {
			if got != "" || !errors.Is(err, ErrNoIdentity) {
				t.Fatalf("untrusted peer: User() = %q, %v", got, err)
			}
			if _, ok := r.Header["X-Forwarded-User"]; ok {
				t.Fatal("the header from an untrusted peer was left on the request")
			}
			return
		}
		if err != nil {
			return
		}
		if got != v || len(got) == 0 || len(got) > MaxUserLen || !utf8.ValidString(got) || strings.Contains(got, ",") ||
			strings.ContainsFunc(got, func(r rune) bool { return !unicode.IsPrint(r) }) {
			t.Fatalf("User() accepted %q", got)
		}
	})
}
