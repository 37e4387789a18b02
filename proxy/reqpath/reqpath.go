// Package reqpath turns a raw HTTP request target (r.RequestURI) into the one
// path that policy rules match and the exact bytes forwarded upstream
// (docs/design.md §2).
//
// It fails closed: any target whose meaning could differ between stepgate and
// the upstream (encoded separators, dot segments, empty segments, invalid or
// ambiguous escapes, non-origin forms) is refused, so that every decision is
// made on the path the upstream will actually serve. It must never repair,
// re-encode or "clean" a path: a path that needs cleaning is refused.
//
// Choices where the spec is silent:
//   - Decoded bytes must form valid UTF-8 (overlong or truncated sequences such
//     as %C0%AF are the classic way to smuggle a '/').
//   - Raw bytes outside RFC 3986 pchar (plus '[' and ']', which browsers leave
//     alone) are refused, including raw non-ASCII, '"', '<', '>', '{', '}',
//     '|', '^' and '`'. Browsers percent-encode these; refusing them means
//     Go's url.URL{Path: Match, RawPath: Escaped}.EscapedPath() returns
//     Escaped unchanged, so the upstream receives exactly the matched bytes.
//   - The 8 KiB limit applies to the whole request target, query included.
//   - The query is split off at the first '?', never matched, and forwarded
//     as is; it may not contain '#', space, control characters or DEL.
package reqpath

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// MaxLen is the longest request target accepted, query included.
const MaxLen = 8 << 10

// Path is a request target that passed every check.
type Path struct {
	// Match is the path decoded once: what rules see. Case is untouched;
	// rules fold it when configured to.
	Match string
	// Escaped is the path exactly as the client sent it (no query): the
	// bytes to forward upstream. Decoding it once gives Match.
	Escaped string
	// Query is the raw query without the '?', forwarded as is and never
	// matched. Empty when there was none.
	Query string
}

// ErrBadPath is matched (errors.Is) by every error Parse returns.
var ErrBadPath = errors.New("reqpath: bad request path")

// Error says why a target was refused. Reason is a fixed phrase that never
// echoes the input, so it is safe to log and to count.
type Error struct {
	Reason string
}

func (e *Error) Error() string { return "reqpath: " + e.Reason }

// Is makes every *Error match ErrBadPath.
func (e *Error) Is(target error) bool { return target == ErrBadPath }

// The refusal reasons. They are values, not state: nothing ever assigns them.
var (
	errTooLong        = &Error{"request target too long"}
	errEmpty          = &Error{"empty request target"}
	errAsterisk       = &Error{"asterisk-form only allowed for OPTIONS"}
	errNotOriginForm  = &Error{"request target is not origin-form"}
	errFragment       = &Error{"fragment in request target"}
	errBadEscape      = &Error{"invalid percent-escape"}
	errEncodedSep     = &Error{"encoded separator or reserved character"}
	errEncodedControl = &Error{"encoded control character"}
	errRawBackslash   = &Error{"raw backslash"}
	errRawSemicolon   = &Error{"raw semicolon"}
	errRawControl     = &Error{"raw control character or space"}
	errRawByte        = &Error{"character not allowed in a path"}
	errDotSegment     = &Error{"dot segment"}
	errEmptySegment   = &Error{"empty path segment"}
	errInvalidUTF8    = &Error{"decoded path is not valid UTF-8"}
	errQueryByte      = &Error{"character not allowed in the query"}
)

// Parse checks requestURI (the raw request target, r.RequestURI) for the
// request method and returns the path to match and to forward. Every error
// is an *Error and matches ErrBadPath; the gateway answers 400.
//
// "OPTIONS *" gives Path{Match: "*", Escaped: "*"}; no rule path can match
// it.
func Parse(method, requestURI string) (Path, error) {
	if len(requestURI) > MaxLen {
		return Path{}, errTooLong
	}
	if requestURI == "" {
		return Path{}, errEmpty
	}
	if requestURI == "*" {
		if method != "OPTIONS" {
			return Path{}, errAsterisk
		}
		return Path{Match: "*", Escaped: "*"}, nil
	}
	// Absolute-form (http://h/p), authority-form (h:443) and anything else
	// that is not origin-form: a proxy in front of us would route these by
	// the authority, not by our rules.
	if requestURI[0] != '/' {
		return Path{}, errNotOriginForm
	}

	raw, query := requestURI, ""
	hasQuery := false
	for i := 0; i < len(requestURI); i++ {
		if requestURI[i] == '?' {
			raw, query, hasQuery = requestURI[:i], requestURI[i+1:], true
			break
		}
	}
	if hasQuery {
		if err := checkQuery(query); err != nil {
			return Path{}, err
		}
	}

	escapes, high, err := check(raw)
	if err != nil {
		return Path{}, err
	}
	p := Path{Match: raw, Escaped: raw, Query: query}
	if escapes {
		p.Match = decode(raw)
		if high && !utf8.ValidString(p.Match) {
			return Path{}, errInvalidUTF8
		}
	}
	return p, nil
}

// check validates the raw path in one pass without allocating. It reports
// whether the path has any percent-escape and whether any decodes to a byte
// >= 0x80 (so the UTF-8 check is needed).
func check(raw string) (escapes, high bool, err error) {
	// Per segment: decoded length and whether every decoded byte is '.'.
	segLen, segDots := 0, true
	for i := 1; i <= len(raw); i++ {
		if i == len(raw) || raw[i] == '/' {
			if segLen == 0 {
				// An empty segment: "//" anywhere, but a single trailing '/'
				// (which includes the root "/") is fine.
				if i < len(raw) {
					return false, false, errEmptySegment
				}
			} else if segDots && segLen <= 2 {
				return false, false, errDotSegment
			}
			segLen, segDots = 0, true
			continue
		}
		c := raw[i]
		if c == '%' {
			if i+2 >= len(raw) {
				return false, false, errBadEscape
			}
			hi, ok1 := unhex(raw[i+1])
			lo, ok2 := unhex(raw[i+2])
			if !ok1 || !ok2 {
				return false, false, errBadEscape
			}
			c = hi<<4 | lo
			switch {
			case c < 0x20 || c == 0x7f:
				return false, false, errEncodedControl
			case c == '/' || c == '\\' || c == ';' || c == '#' || c == '?' || c == '%':
				return false, false, errEncodedSep
			case c >= 0x80:
				high = true
			}
			escapes = true
			i += 2
		} else {
			switch {
			case c <= 0x20 || c == 0x7f:
				return false, false, errRawControl
			case c == '\\':
				return false, false, errRawBackslash
			case c == ';':
				return false, false, errRawSemicolon
			case c == '#':
				return false, false, errFragment
			case !pchar(c):
				return false, false, errRawByte
			}
		}
		segLen++
		if c != '.' {
			segDots = false
		}
	}
	return escapes, high, nil
}

// checkQuery refuses what cannot appear in a request target's query: a
// fragment, whitespace and control characters.
func checkQuery(q string) error {
	for i := 0; i < len(q); i++ {
		switch c := q[i]; {
		case c == '#':
			return errFragment
		case c <= 0x20 || c == 0x7f:
			return errQueryByte
		}
	}
	return nil
}

// decode percent-decodes a path that check accepted.
func decode(raw string) string {
	// A Builder hands over its buffer without a copy: one allocation.
	var b strings.Builder
	b.Grow(len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '%' {
			hi, _ := unhex(raw[i+1])
			lo, _ := unhex(raw[i+2])
			c = hi<<4 | lo
			i += 2
		}
		b.WriteByte(c)
	}
	return b.String()
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// pchar reports whether c may appear raw in a path segment: RFC 3986
// unreserved, sub-delims (';' is refused earlier), ':' and '@', plus '[' and
// ']', which Go's url package and browsers leave unescaped.
func pchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', // unreserved
		'!', '$', '&', '\'', '(', ')', '*', '+', ',', '=', // sub-delims
		':', '@', '[', ']':
		return true
	}
	return false
}

var (
	errWinTrailing  = &Error{"segment ends in a dot or space (Windows strips it)"}
	errWinColon     = &Error{"colon in path (NTFS stream or drive)"}
	errWinShortName = &Error{"8.3 short-name form (~digit)"}
	errWinWildcard  = &Error{"Windows wildcard or reserved character"}
	errWinLookAlike = &Error{"non-ASCII look-alike of an ASCII letter or separator (Windows best-fit)"}
)

// CheckWindows refuses a Match (from Parse) that a Windows upstream (IIS,
// anything on NTFS) could map onto a different file than its spelling
// suggests, which would let it skip a rule: a segment ending in '.' or ' '
// ("/admin./x" is "/admin/x" to Win32), a ':' ("/admin::$DATA"), an 8.3
// short name ("/ADMINI~1/" for "/administrator/"), or one of * " < > | that
// Win32 treats as wildcards, or a non-ASCII character that Windows'
// "best-fit" conversion to an ANSI code page or Unicode compatibility
// folding reads as an ASCII letter, digit or separator ("/ａdmin" or
// "/admin／x" for "/admin/x"; see lookAlike). The gateway calls it when
// case-insensitive (IIS-style) matching is on; rules fold case, this
// refuses the rest. It does not allocate.
func CheckWindows(match string) error {
	if match == "*" {
		return nil
	}
	for i := 0; i < len(match); i++ {
		c := match[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(match[i:])
			if lookAlike(r) {
				return errWinLookAlike
			}
			i += size - 1
			continue
		}
		switch c {
		case '/':
			if i > 0 && (match[i-1] == '.' || match[i-1] == ' ') {
				return errWinTrailing
			}
		case ':':
			return errWinColon
		case '~':
			if i+1 < len(match) && '0' <= match[i+1] && match[i+1] <= '9' {
				return errWinShortName
			}
		case '*', '"', '<', '>', '|':
			return errWinWildcard
		}
	}
	if n := len(match); n > 1 && (match[n-1] == '.' || match[n-1] == ' ') {
		return errWinTrailing
	}
	return nil
}

// lookAlike reports whether Windows may read r as ASCII. Best-fit tables
// (WideCharToMultiByte without WC_NO_BEST_FIT_CHARS, used by ANSI APIs and
// older ISAPI and CGI stacks) map characters missing from the code page to
// a similar-looking one, and compatibility normalisation (NFKC) does the
// same for presentation forms. Refused, because the rules match the
// characters as written:
//
//   - fullwidth ASCII, U+FF01–U+FF5E ("ａ" is "a", "／" is "/");
//   - other slash, backslash, dot and colon look-alikes, and the yen and
//     won signs that the Japanese and Korean code pages put at 0x5C ('\');
//   - letters that best-fit or fold to ASCII letters: Latin Extended-A and
//     -B ("ı", "ſ", "ǎ"), IPA and modifier letters, combining marks (dropped
//     by best-fit, leaving the base letter), Latin Extended Additional,
//     super- and subscripts, letterlike symbols (Kelvin "K", Ångström "Å"),
//     enclosed alphanumerics ("ⓐ"), Latin ligatures ("ﬁ") and mathematical
//     alphanumerics ("𝐚").
//
// Latin-1 letters (U+00C0–U+00FF, "é", "ü") are in the Western code page
// itself and are left alone, as are other scripts.
func lookAlike(r rune) bool {
	switch {
	case r >= 0xFF01 && r <= 0xFF5E: // fullwidth ASCII
		return true
	case r >= 0x0100 && r <= 0x036F: // Latin Extended-A/B, IPA, modifier letters, combining marks
		return true
	case r >= 0x1D00 && r <= 0x1DFF: // phonetic extensions, combining supplement
		return true
	case r >= 0x1E00 && r <= 0x1EFF: // Latin Extended Additional
		return true
	case r >= 0x2070 && r <= 0x209F: // superscripts and subscripts
		return true
	case r >= 0x2100 && r <= 0x215F: // letterlike symbols, number forms
		return true
	case r >= 0x2460 && r <= 0x24FF: // enclosed alphanumerics
		return true
	case r >= 0xFB00 && r <= 0xFB06: // Latin ligatures
		return true
	case r >= 0x1D400 && r <= 0x1D7FF: // mathematical alphanumerics
		return true
	}
	switch r {
	case 0x2044, 0x2215, 0x2571, 0x29F8, // slashes: ⁄ ∕ ╱ ⧸
		0x2216, 0x2572, 0x29F5, 0x29F9, 0xFE68, 0x00A5, 0x20A9, // backslashes: ∖ ╲ ⧵ ⧹ ﹨ ¥ ₩
		0x2024, 0xFE52, 0x3002, 0xFF61, // dots: ․ ﹒ 。 ｡
		0x2236, 0xA789, 0xFE55, 0xFE13, // colons: ∶ ꞉ ﹕ ︓
		0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2212: // hyphens and minus: ‐ ‑ ‒ – — −
		return true
	}
	return false
}

// ValidMethod reports whether m is an HTTP method token (RFC 9110 §9.1) of
// reasonable length, as a front proxy's description of a request must name.
func ValidMethod(m string) bool {
	if m == "" || len(m) > 32 {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
