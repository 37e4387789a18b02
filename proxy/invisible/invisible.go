// Package invisible finds the characters a person cannot see and makes them
// visible, so that what a page shows of a request (its method, its path, a
// value) reads the way the request is: "/pay/%E2%80%AEtxt" decodes to a
// path with a RIGHT-TO-LEFT OVERRIDE that a browser would render reversed;
// Escape shows it as "/pay/⟨U+202E⟩txt".
//
// It must never drop or replace a character silently: an escape names the
// code point (or, for a byte that is not UTF-8, the byte), so two different
// strings never look the same after Escape. HTML escaping stays the
// template's job.
package invisible

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ignorable are Unicode's Default_Ignorable_Code_Point ranges
// (DerivedCoreProperties.txt): characters that render as nothing unless a
// font says otherwise — zero-width spaces and joiners, soft hyphen,
// combining grapheme joiner, Hangul fillers, variation selectors, bidi
// marks, tag characters.
var ignorable = &unicode.RangeTable{
	R16: []unicode.Range16{
		{Lo: 0x00ad, Hi: 0x00ad, Stride: 1}, // soft hyphen
		{Lo: 0x034f, Hi: 0x034f, Stride: 1}, // combining grapheme joiner
		{Lo: 0x061c, Hi: 0x061c, Stride: 1}, // Arabic letter mark
		{Lo: 0x115f, Hi: 0x1160, Stride: 1}, // Hangul choseong and jungseong fillers
		{Lo: 0x17b4, Hi: 0x17b5, Stride: 1}, // Khmer inherent vowels
		{Lo: 0x180b, Hi: 0x180f, Stride: 1}, // Mongolian variation selectors and vowel separator
		{Lo: 0x200b, Hi: 0x200f, Stride: 1}, // zero-width space, non-joiner, joiner; LRM, RLM
		{Lo: 0x202a, Hi: 0x202e, Stride: 1}, // bidi embeddings and overrides
		{Lo: 0x2060, Hi: 0x206f, Stride: 1}, // word joiner, invisible operators, bidi isolates, deprecated formats
		{Lo: 0x3164, Hi: 0x3164, Stride: 1}, // Hangul filler
		{Lo: 0xfe00, Hi: 0xfe0f, Stride: 1}, // variation selectors
		{Lo: 0xfeff, Hi: 0xfeff, Stride: 1}, // zero-width no-break space (BOM)
		{Lo: 0xffa0, Hi: 0xffa0, Stride: 1}, // halfwidth Hangul filler
		{Lo: 0xfff0, Hi: 0xfff8, Stride: 1}, // unassigned, reserved as ignorable
	},
	R32: []unicode.Range32{
		{Lo: 0x1bca0, Hi: 0x1bca3, Stride: 1}, // shorthand format controls
		{Lo: 0x1d173, Hi: 0x1d17a, Stride: 1}, // musical symbol format controls
		{Lo: 0xe0000, Hi: 0xe0fff, Stride: 1}, // tags and variation selectors supplement
	},
}

// Is reports whether r is a character a person cannot see: C0 and C1
// controls and DEL (Cc), format characters (Cf, which include every bidi
// control and the tag characters), line and paragraph separators (Zl, Zp),
// and Unicode's default-ignorable code points. The ordinary space U+0020 and
// other spaces (Zs) are visible as space and are not included.
func Is(r rune) bool {
	if r < 0x80 {
		return r < 0x20 || r == 0x7f
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp, ignorable)
}

// Has reports whether s holds an invisible character or a byte that is not
// UTF-8.
func Has(s string) bool {
	for i, r := range s {
		if Is(r) || (r == utf8.RuneError && isBadByte(s, i)) {
			return true
		}
	}
	return false
}

// Escape returns s with every invisible character written as ⟨U+XXXX⟩ and
// every byte that is not UTF-8 as ⟨0xXX⟩. Everything else is unchanged.
func Escape(s string) string {
	if !Has(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i, r := range s {
		switch {
		case r == utf8.RuneError && isBadByte(s, i):
			b.WriteString("⟨0x")
			b.WriteString(hex(int64(s[i]), 2))
			b.WriteString("⟩")
		case Is(r):
			b.WriteString("⟨U+")
			b.WriteString(hex(int64(r), 4))
			b.WriteString("⟩")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// isBadByte reports whether the U+FFFD that ranging over s gave at i is a
// byte that is not UTF-8 rather than a U+FFFD written in s.
func isBadByte(s string, i int) bool {
	_, n := utf8.DecodeRuneInString(s[i:])
	return n == 1
}

// hex is v in upper-case hexadecimal, zero-padded to at least width digits.
func hex(v int64, width int) string {
	h := strings.ToUpper(strconv.FormatInt(v, 16))
	if len(h) < width {
		h = strings.Repeat("0", width-len(h)) + h
	}
	return h
}
