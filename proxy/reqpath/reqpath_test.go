package reqpath

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name, method, target string
		want                 Path
	}{
		{"the root path is accepted", "GET", "/", Path{Match: "/", Escaped: "/"}},
		{"a plain path is matched as sent", "GET", "/admin/users", Path{Match: "/admin/users", Escaped: "/admin/users"}},
		{"a single trailing slash is fine", "GET", "/admin/", Path{Match: "/admin/", Escaped: "/admin/"}},
		{"the query is split off and never matched", "GET", "/a?x=/admin/..%2f&y", Path{Match: "/a", Escaped: "/a", Query: "x=/admin/..%2f&y"}},
		{"an empty query keeps an empty Query", "GET", "/a?", Path{Match: "/a", Escaped: "/a"}},
		{"an escaped unreserved character is decoded for matching only", "GET", "/%61dmin/%41", Path{Match: "/admin/A", Escaped: "/%61dmin/%41"}},
		{"an encoded dot inside a name is decoded", "GET", "/file%2Ejs", Path{Match: "/file.js", Escaped: "/file%2Ejs"}},
		{"three dots are a name, not a dot segment", "GET", "/.../x", Path{Match: "/.../x", Escaped: "/.../x"}},
		{"a dotfile is a name", "GET", "/.well-known/x", Path{Match: "/.well-known/x", Escaped: "/.well-known/x"}},
		{"an encoded space is a name character", "GET", "/My%20Docs", Path{Match: "/My Docs", Escaped: "/My%20Docs"}},
		{"encoded UTF-8 is decoded", "GET", "/caf%C3%A9", Path{Match: "/café", Escaped: "/caf%C3%A9"}},
		{"sub-delims and brackets are allowed raw", "GET", "/a:b@c!$&'()*+,=[]-._~", Path{Match: "/a:b@c!$&'()*+,=[]-._~", Escaped: "/a:b@c!$&'()*+,=[]-._~"}},
		{"OPTIONS * is the asterisk form", "OPTIONS", "*", Path{Match: "*", Escaped: "*"}},
		{"a target of exactly MaxLen is accepted", "GET", "/" + strings.Repeat("a", MaxLen-1), Path{Match: "/" + strings.Repeat("a", MaxLen-1), Escaped: "/" + strings.Repeat("a", MaxLen-1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.method, tt.target)
			if err != nil {
				t.Fatalf("Parse(%q, %q) error = %v, want nil", tt.method, tt.target, err)
			}
			if got != tt.want {
				t.Errorf("Parse(%q, %q) = %+v, want %+v", tt.method, tt.target, got, tt.want)
			}
		})
	}
}

// attacks is the table of refused targets, named by flaw class. The fuzz
// target uses it as its seed corpus.
var attacks = []struct {
	name, method, target string
	want                 *Error
}{
	{"absolute-form could route by the authority", "GET", "http://evil/admin", errNotOriginForm},
	{"absolute-form https is refused", "GET", "https://internal/admin", errNotOriginForm},
	{"authority-form (CONNECT) is refused", "CONNECT", "internal:443", errNotOriginForm},
	{"asterisk-form is refused for GET", "GET", "*", errAsterisk},
	{"a relative path is refused", "GET", "admin", errNotOriginForm},
	{"an empty target is refused", "GET", "", errEmpty},
	{"an encoded slash could hide a subtree", "GET", "/admin%2fusers", errEncodedSep},
	{"an upper-case encoded slash is refused", "GET", "/admin%2Fusers", errEncodedSep},
	{"an encoded backslash is a Windows separator", "GET", "/admin%5cusers", errEncodedSep},
	{"an upper-case encoded backslash is refused", "GET", "/admin%5Cusers", errEncodedSep},
	{"an encoded semicolon is a path parameter on Tomcat", "GET", "/admin%3bjsessionid=1", errEncodedSep},
	{"an encoded hash could truncate the path upstream", "GET", "/public%23/../admin", errEncodedSep},
	{"an encoded question mark could split the path upstream", "GET", "/public%3f/admin", errEncodedSep},
	{"an encoded percent enables double decoding", "GET", "/admin%252fx", errEncodedSep},
	{"double-encoded dot-dot is refused by its percent", "GET", "/a/%252e%252e/admin", errEncodedSep},
	{"an encoded NUL truncates in C upstreams", "GET", "/admin%00.js", errEncodedControl},
	{"an encoded newline splits logs and headers", "GET", "/a%0d%0aX-Evil:1", errEncodedControl},
	{"an encoded tab is a control character", "GET", "/a%09b", errEncodedControl},
	{"an encoded DEL is a control character", "GET", "/a%7fb", errEncodedControl},
	{"a raw backslash is a separator on IIS", "GET", "/public\\..\\admin", errRawBackslash},
	{"a raw semicolon is a path parameter on Tomcat and Spring", "GET", "/admin;x=1/users", errRawSemicolon},
	{"a raw semicolon dot-dot is refused", "GET", "/public/..;/admin", errRawSemicolon},
	{"a raw space is refused", "GET", "/a b", errRawControl},
	{"a raw tab is refused", "GET", "/a\tb", errRawControl},
	{"a raw NUL is refused", "GET", "/a\x00b", errRawControl},
	{"a raw DEL is refused", "GET", "/a\x7fb", errRawControl},
	{"a raw fragment cannot appear in a request target", "GET", "/public#/admin", errFragment},
	{"a raw fragment in the query is refused", "GET", "/a?x#y", errFragment},
	{"a control character in the query is refused", "GET", "/a?x\r\ny", errQueryByte},
	{"a dot-dot segment escapes the subtree", "GET", "/public/../admin", errDotSegment},
	{"a trailing dot-dot segment is refused", "GET", "/admin/x/..", errDotSegment},
	{"a dot segment is refused", "GET", "/./admin", errDotSegment},
	{"a trailing dot segment is refused", "GET", "/admin/.", errDotSegment},
	{"a lower-case encoded dot-dot is refused", "GET", "/public/%2e%2e/admin", errDotSegment},
	{"a mixed-case encoded dot-dot is refused", "GET", "/public/%2E%2e/admin", errDotSegment},
	{"a half-encoded dot-dot is refused", "GET", "/public/.%2e/admin", errDotSegment},
	{"the other half-encoded dot-dot is refused", "GET", "/public/%2e./admin", errDotSegment},
	{"an encoded dot segment is refused", "GET", "/%2e/admin", errDotSegment},
	{"an empty segment is refused", "GET", "//admin", errEmptySegment},
	{"an empty segment in the middle is refused", "GET", "/public//admin", errEmptySegment},
	{"a double trailing slash is refused", "GET", "/admin//", errEmptySegment},
	{"a truncated escape is refused", "GET", "/a%4", errBadEscape},
	{"a bare percent is refused", "GET", "/a%", errBadEscape},
	{"a non-hex escape is refused", "GET", "/a%zz", errBadEscape},
	{"IIS %u escapes are refused", "GET", "/%u002fadmin", errBadEscape},
	{"an overlong UTF-8 slash is refused", "GET", "/a%c0%afadmin", errInvalidUTF8},
	{"an overlong UTF-8 dot is refused", "GET", "/%c0%ae%c0%ae/admin", errInvalidUTF8},
	{"a lone continuation byte is refused", "GET", "/a%80", errInvalidUTF8},
	{"raw non-ASCII is refused", "GET", "/caf\xc3\xa9", errRawByte},
	{"a raw double quote is refused", "GET", "/a\"b", errRawByte},
	{"a raw pipe is refused", "GET", "/a|b", errRawByte},
	{"a raw angle bracket is refused", "GET", "/<script>", errRawByte},
	{"a target over MaxLen is refused", "GET", "/" + strings.Repeat("a", MaxLen), errTooLong},
	{"a long query counts toward MaxLen", "GET", "/a?" + strings.Repeat("a", MaxLen), errTooLong},
}

func TestParseRefusesAttacks(t *testing.T) {
	for _, tt := range attacks {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.method, tt.target)
			if err == nil {
				t.Fatalf("Parse(%q, %q) = %+v, want error %q", tt.method, tt.target, got, tt.want.Reason)
			}
			if !errors.Is(err, ErrBadPath) {
				t.Errorf("errors.Is(%v, ErrBadPath) = false, want true", err)
			}
			var e *Error
			if !errors.As(err, &e) || e != tt.want {
				t.Errorf("Parse(%q, %q) error = %v, want %v", tt.method, tt.target, err, tt.want)
			}
			if got != (Path{}) {
				t.Errorf("Parse returned %+v with an error, want the zero Path", got)
			}
		})
	}
}

// Go's reverse proxy writes url.URL.EscapedPath(); with Path=Match and
// RawPath=Escaped it must write exactly the bytes that were matched.
func TestEscapedPathRoundTripsThroughNetURL(t *testing.T) {
	for _, target := range []string{"/", "/a/b/", "/%61dmin", "/My%20Docs", "/caf%C3%A9", "/a:b@c!$&'()*+,=[]", "/%7e%2B"} {
		p, err := Parse("GET", target)
		if err != nil {
			t.Fatalf("Parse(%q): %v", target, err)
		}
		u := url.URL{Path: p.Match, RawPath: p.Escaped}
		if got := u.EscapedPath(); got != p.Escaped {
			t.Errorf("EscapedPath() for %q = %q, want %q", target, got, p.Escaped)
		}
	}
}

func TestParseAllocations(t *testing.T) {
	tests := []struct {
		name, target string
		want         float64
	}{
		{"a path without escapes allocates nothing", "/admin/users/42?x=1", 0},
		{"a path with escapes allocates its decoded copy once", "/admin/%41%42", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := testing.AllocsPerRun(100, func() {
				if _, err := Parse("GET", tt.target); err != nil {
					t.Fatal(err)
				}
			})
			if got != tt.want {
				t.Errorf("allocations = %v, want %v", got, tt.want)
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	for _, bb := range []struct{ name, target string }{
		{"plain", "/admin/users/42/settings?tab=security"},
		{"escaped", "/files/My%20Documents/report%202024.pdf"},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse("GET", bb.target); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestCheckWindows(t *testing.T) {
	tests := []struct {
		name, target string
		want         *Error
	}{
		{"a plain path is fine", "/admin/users/x.aspx", nil},
		{"a tilde without a digit is fine", "/~alice/x", nil},
		{"the root is fine", "/", nil},
		{"a trailing slash is fine", "/admin/", nil},
		{"a trailing dot on a segment is stripped by Win32", "/admin./x", errWinTrailing},
		{"an encoded trailing dot is refused", "/admin%2E/x", errWinTrailing},
		{"a trailing dot on the last segment is refused", "/admin/secret.aspx.", errWinTrailing},
		{"three dots are refused", "/.../x", errWinTrailing},
		{"an encoded trailing space is stripped by Win32", "/admin%20/x", errWinTrailing},
		{"an NTFS alternate data stream is refused", "/admin/web.config::$DATA", errWinColon},
		{"an 8.3 short name is refused", "/ADMINI~1/x", errWinShortName},
		{"an encoded wildcard is refused", "/admin/%3C%3E", errWinWildcard},
		{"a raw asterisk is refused", "/adm*", errWinWildcard},
		{"a fullwidth letter is refused", "/%EF%BD%81dmin/x", errWinLookAlike},
		{"a fullwidth capital is refused", "/%EF%BC%A1DMIN/x", errWinLookAlike},
		{"a fullwidth slash is refused", "/admin%EF%BC%8Fx", errWinLookAlike},
		{"a fullwidth backslash is refused", "/admin%EF%BC%BCx", errWinLookAlike},
		{"a fullwidth full stop is refused", "/admin%EF%BC%8E/x", errWinLookAlike},
		{"a division slash is refused", "/admin%E2%88%95x", errWinLookAlike},
		{"a set-minus backslash is refused", "/admin%E2%88%96x", errWinLookAlike},
		{"a yen sign (0x5C in Shift-JIS) is refused", "/admin%C2%A5x", errWinLookAlike},
		{"a one-dot leader is refused", "/admin%E2%80%A4/x", errWinLookAlike},
		{"a dotless i is refused", "/adm%C4%B1n/x", errWinLookAlike},
		{"a long s is refused", "/%C5%BFecret", errWinLookAlike},
		{"a letter with a caron is refused", "/%C7%8Edmin", errWinLookAlike},
		{"a combining mark is refused", "/a%CC%81dmin", errWinLookAlike},
		{"the Kelvin sign is refused", "/%E2%84%AAey", errWinLookAlike},
		{"a circled letter is refused", "/%E2%93%90dmin", errWinLookAlike},
		{"a ligature is refused", "/%EF%AC%81le", errWinLookAlike},
		{"a mathematical bold letter is refused", "/%F0%9D%90%9Admin", errWinLookAlike},
		{"a non-breaking hyphen is refused", "/admin%E2%80%91panel", errWinLookAlike},
		{"a Latin-1 letter is fine", "/caf%C3%A9/x", nil},
		{"another script is fine", "/%E6%97%A5%E6%9C%AC/x", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("GET", tt.target)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.target, err)
			}
			err = CheckWindows(p.Match)
			if tt.want == nil {
				if err != nil {
					t.Errorf("CheckWindows(%q) = %v, want nil", p.Match, err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e != tt.want || !errors.Is(err, ErrBadPath) {
				t.Errorf("CheckWindows(%q) = %v, want %v", p.Match, err, tt.want)
			}
		})
	}
}
