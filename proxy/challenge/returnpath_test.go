package challenge

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// openRedirects is a corpus of open-redirect payloads (after oauth2-proxy's
// and the usual public lists): every one must come back as "/".
var openRedirects = []string{
	"",
	"//evil.example",
	"//evil.example/",
	"///evil.example",
	"////evil.example",
	"/\\evil.example",
	"\\\\evil.example",
	"\\/evil.example",
	"/\\/evil.example",
	"/%09/evil.example",
	"/%0a/evil.example",
	"/%0d/evil.example",
	"/%00/evil.example",
	"/%2f/evil.example",
	"/%2F%2Fevil.example",
	"/%5cevil.example",
	"/%5C%5Cevil.example",
	"%2F%2Fevil.example",
	"%2f%2fevil.example",
	"https:evil.example",
	"https:/evil.example",
	"https://evil.example",
	"https://good.example@evil.example",
	"http://evil.example/admin/",
	"javascript:alert(1)",
	"JaVaScRiPt:alert(1)",
	"data:text/html,<script>alert(1)</script>",
	"evil.example",
	"./evil.example",
	"../evil.example",
	"/\tevil.example",
	"/ /evil.example",
	"/\x00evil",
	"/x\ny",
	"/x\r\nSet-Cookie: a=b",
	"/x\x7fy",
	"\x01/x",
	" /x",
	"/x y",
	"/" + strings.Repeat("a", MaxReturnPath),
	"/" + strings.Repeat("a", 1<<16),
}

func TestSafeReturnRefusesOpenRedirects(t *testing.T) {
	for _, p := range openRedirects {
		t.Run(p[:min(len(p), 32)], func(t *testing.T) {
			if got := SafeReturn(p); got != "/" {
				t.Errorf("SafeReturn(%q) = %q, want /", p, got)
			}
		})
	}
}

func TestSafeReturnKeepsSameOriginPaths(t *testing.T) {
	for _, p := range []string{
		"/",
		"/admin/",
		"/admin/users?page=2&sort=name",
		"/a/b%20c",
		"/a%2Fb", // a later encoded slash is a path character, not a host
		"/caf%C3%A9",
		"/search?q=//evil.example", // a query is not an authority
		"/x#frag",
		"/" + strings.Repeat("a", MaxReturnPath-1),
	} {
		t.Run(p[:min(len(p), 32)], func(t *testing.T) {
			if got := SafeReturn(p); got != p {
				t.Errorf("SafeReturn(%q) = %q, want it unchanged", p, got)
			}
		})
	}
}

// FuzzSafeReturn checks the open-redirect invariants on any input: the
// result is "/" or a path that starts with one "/" followed by neither "/"
// nor "\", has no control character or backslash, is at most MaxReturnPath
// bytes, is either the input or "/", and parses (as a browser's Location
// would) with no scheme and no host.
func FuzzSafeReturn(f *testing.F) {
	for _, p := range openRedirects {
		f.Add(p)
	}
	f.Add("/admin/")
	f.Add("/a?b=//c")
	f.Fuzz(func(t *testing.T, p string) {
		got := SafeReturn(p)
		if got == "/" {
			return
		}
		if got != p {
			t.Fatalf("SafeReturn(%q) = %q: neither the input nor /", p, got)
		}
		if len(got) > MaxReturnPath {
			t.Fatalf("SafeReturn(%q) longer than %d", p, MaxReturnPath)
		}
		if got[0] != '/' || got[1] == '/' || got[1] == '\\' {
			t.Fatalf("SafeReturn(%q) = %q: not a single-slash relative path", p, got)
		}
		for i := 0; i < len(got); i++ {
			if c := got[i]; c < 0x20 || c == 0x7f || c == '\\' {
				t.Fatalf("SafeReturn(%q) kept byte %#x", p, c)
			}
		}
		if lower := strings.ToLower(got[1:]); strings.HasPrefix(lower, "%2f") || strings.HasPrefix(lower, "%5c") {
			t.Fatalf("SafeReturn(%q) = %q: an encoded separator follows the first slash", p, got)
		}
		u, err := url.Parse(got)
		if err != nil {
			return // a Location the browser cannot resolve goes nowhere
		}
		if u.Scheme != "" || u.Host != "" || u.User != nil {
			t.Fatalf("SafeReturn(%q) = %q parses with scheme %q host %q", p, got, u.Scheme, u.Host)
		}
		// Resolved against our origin, as a browser resolves Location.
		base, _ := url.Parse("https://good.example/x/y")
		if r := base.ResolveReference(u); r.Host != "good.example" || r.Scheme != "https" {
			t.Fatalf("SafeReturn(%q) = %q resolves to %s", p, got, r)
		}
	})
}

func TestWhereTheUserCameFromIsASameOriginPathOrNothing(t *testing.T) {
	for _, tt := range []struct{ name, referer, want string }{
		{"a page of the same host is kept with its query", "https://app.example/reports?week=12", "/reports?week=12"},
		{"another host is dropped", "https://evil.example/reports", ""},
		{"a host that only starts the same is dropped", "https://app.example.evil/x", ""},
		{"stepgate's own pages are dropped", "https://app.example/.stepgate/challenge", ""},
		{"a non-http scheme is dropped", "javascript://app.example/%0aalert(1)", ""},
		{"a path that SafeReturn would rewrite is dropped", "https://app.example//evil.example/", ""},
		{"a very long path is dropped", "https://app.example/" + strings.Repeat("a", maxFrom), ""},
		{"no Referer is nothing", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "https://app.example/admin/", nil)
			if tt.referer != "" {
				r.Header.Set("Referer", tt.referer)
			}
			if got := referrerPath(r); got != tt.want {
				t.Errorf("referrerPath(%q) = %q, want %q", tt.referer, got, tt.want)
			}
		})
	}
}
