package challenge

import "strings"

// MaxReturnPath bounds the return path kept in the flow cookie.
const MaxReturnPath = 2048

// SafeReturn returns p if it is a same-origin relative path that a browser
// cannot read as another origin, and "/" otherwise (docs/design.md §7). It accepts
// only "/" followed by a non-slash, non-backslash character, with no
// control characters, no backslash anywhere (browsers read "\" as "/"), and
// at most MaxReturnPath bytes.
func SafeReturn(p string) string {
	if len(p) == 0 || len(p) > MaxReturnPath || p[0] != '/' {
		return "/"
	}
	if len(p) > 1 && (p[1] == '/' || p[1] == '\\') {
		return "/"
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c < 0x21 || c == 0x7f || c == '\\' {
			return "/"
		}
	}
	// Percent-encoded slashes or backslashes right after the first "/" can
	// be decoded by a later hop into "//evil" or "/\evil".
	if len(p) >= 4 && p[1] == '%' {
		switch strings.ToLower(p[1:4]) {
		case "%2f", "%5c", "%09", "%0a", "%0d", "%00":
			return "/"
		}
	}
	return p
}
