package reqpath_test

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stepgate/stepgate/proxy/reqpath"
	"github.com/stepgate/stepgate/proxy/rules"
)

// FuzzParsePath checks the properties the gateway relies on for every
// accepted target, and that an /admin/ mfa rule cannot be skipped by any
// spelling Parse lets through.
func FuzzParsePath(f *testing.F) {
	methods, targets := reqpath.AttackTargets()
	for i := range targets {
		f.Add(methods[i], targets[i])
	}
	for _, s := range []string{"/", "/admin", "/admin/", "/ADMIN/x", "/%61dmin/x", "/%41DMIN", "/adm%C4%B1n/",
		"/a?b=c", "/caf%C3%A9", "/a:b@c!$&'()*+,=[]", "/%7e%2B",
		// Windows best-fit look-alikes: fullwidth letters and separators.
		"/%EF%BD%81dmin/x", "/%EF%BC%A1DMIN/", "/admin%EF%BC%8Fx", "/%EF%BD%81%EF%BD%84%EF%BD%8D%EF%BD%89%EF%BD%8E",
		"/admin%EF%BC%BCx", "/adm%C4%B1n/", "/%E2%84%AAey"} {
		f.Add("GET", s)
	}
	f.Add("OPTIONS", "*")

	plain, err := rules.Parse("fuzz", "/admin/ mfa", rules.Defaults{Action: rules.Allow})
	if err != nil {
		f.Fatal(err)
	}
	folded, err := rules.Parse("fuzz", "/admin/ mfa", rules.Defaults{Action: rules.Allow, CaseInsensitive: true})
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, method, target string) {
		p, err := reqpath.Parse(method, target)
		if err != nil {
			if p != (reqpath.Path{}) {
				t.Fatalf("Parse(%q) returned %+v with error %v", target, p, err)
			}
			return
		}
		if p.Match == "*" {
			if method != "OPTIONS" || target != "*" || p.Escaped != "*" {
				t.Fatalf("Parse(%q, %q) = %+v: asterisk outside OPTIONS *", method, target, p)
			}
			return
		}
		if !strings.HasPrefix(p.Match, "/") {
			t.Fatalf("Match %q does not start with /", p.Match)
		}
		if strings.Contains(p.Match, "//") {
			t.Fatalf("Match %q has an empty segment", p.Match)
		}
		for _, seg := range strings.Split(p.Match, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("Match %q has a dot segment", p.Match)
			}
		}
		if strings.ContainsAny(p.Match, "\\;?#%") || strings.ContainsFunc(p.Match, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("Match %q has a separator, percent or control character", p.Match)
		}
		if !utf8.ValidString(p.Match) {
			t.Fatalf("Match %q is not valid UTF-8", p.Match)
		}
		dec, err := url.PathUnescape(p.Escaped)
		if err != nil || dec != p.Match {
			t.Fatalf("Escaped %q decodes to %q, %v; want Match %q", p.Escaped, dec, err, p.Match)
		}
		if u := (url.URL{Path: p.Match, RawPath: p.Escaped}); u.EscapedPath() != p.Escaped {
			t.Fatalf("net/url would forward %q, not the matched %q", u.EscapedPath(), p.Escaped)
		}
		if want := strings.TrimSuffix(target, "?"+p.Query); want != p.Escaped {
			t.Fatalf("Escaped %q + Query %q is not the target %q", p.Escaped, p.Query, target)
		}

		if p.Match == "/admin" || strings.HasPrefix(p.Match, "/admin/") {
			if got := plain.Match(method, p.Match).Action; got != rules.MFA {
				t.Fatalf("%q matched %s, want mfa", p.Match, got)
			}
		}
		if l := strings.ToLower(p.Match); l == "/admin" || strings.HasPrefix(l, "/admin/") {
			if got := folded.Match(method, p.Match).Action; got != rules.MFA {
				t.Fatalf("%q (case-insensitive) matched %s, want mfa", p.Match, got)
			}
		}
		// What Win32 would open: trailing dots and spaces stripped per
		// segment, case folded. Whatever CheckWindows lets through must
		// reach the /admin/ rule if Windows would serve it from /admin.
		if reqpath.CheckWindows(p.Match) == nil {
			if w := winName(p.Match); w == "/admin" || strings.HasPrefix(w, "/admin/") {
				if got := folded.Match(method, p.Match).Action; got != rules.MFA {
					t.Fatalf("%q (Windows %q) matched %s, want mfa", p.Match, w, got)
				}
			}
		}
	})
}

func winName(p string) string {
	// Best-fit reads fullwidth ASCII (U+FF01–U+FF5E) as ASCII.
	p = strings.Map(func(r rune) rune {
		if r >= 0xFF01 && r <= 0xFF5E {
			return r - 0xFEE0
		}
		return r
	}, p)
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = strings.ToLower(strings.TrimRight(s, ". "))
	}
	return strings.Join(segs, "/")
}
