package invisible

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEscapeShowsWhatCannotBeSeen(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"a right-to-left override in a path is named", "/pay/\u202etxt.exe", "/pay/⟨U+202E⟩txt.exe"},
		{"every bidi embedding and override is named", "\u202a\u202b\u202c\u202d", "⟨U+202A⟩⟨U+202B⟩⟨U+202C⟩⟨U+202D⟩"},
		{"bidi isolates are named", "\u2066\u2067\u2068\u2069", "⟨U+2066⟩⟨U+2067⟩⟨U+2068⟩⟨U+2069⟩"},
		{"bidi marks are named", "a\u200eb\u200fc\u061cd", "a⟨U+200E⟩b⟨U+200F⟩c⟨U+061C⟩d"},
		{"zero-width characters are named", "5\u200b0\u200c0\u200d", "5⟨U+200B⟩0⟨U+200C⟩0⟨U+200D⟩"},
		{"word joiner and invisible operators are named", "\u2060\u2061\u2062\u2063\u2064", "⟨U+2060⟩⟨U+2061⟩⟨U+2062⟩⟨U+2063⟩⟨U+2064⟩"},
		{"a byte order mark is named", "\ufeffx", "⟨U+FEFF⟩x"},
		{"a soft hyphen is named", "pay\u00adee", "pay⟨U+00AD⟩ee"},
		{"tag characters are named", "x\U000e0041\U000e007f", "x⟨U+E0041⟩⟨U+E007F⟩"},
		{"Hangul fillers are named", "\u115f\u1160\u3164\uffa0", "⟨U+115F⟩⟨U+1160⟩⟨U+3164⟩⟨U+FFA0⟩"},
		{"variation selectors are named", "a\ufe00\ufe0f\U000e0100\U000e01ef", "a⟨U+FE00⟩⟨U+FE0F⟩⟨U+E0100⟩⟨U+E01EF⟩"},
		{"a combining grapheme joiner is named", "a\u034fb", "a⟨U+034F⟩b"},
		{"other format characters are named", "\u0600\u06dd\u180e\ufff9\U000110bd", "⟨U+0600⟩⟨U+06DD⟩⟨U+180E⟩⟨U+FFF9⟩⟨U+110BD⟩"},
		{"C0 controls and DEL are named", "a\x00b\tc\nd\x7f", "a⟨U+0000⟩b⟨U+0009⟩c⟨U+000A⟩d⟨U+007F⟩"},
		{"C1 controls are named", "a\u0085b\u009bc", "a⟨U+0085⟩b⟨U+009B⟩c"},
		{"line and paragraph separators are named", "a\u2028b\u2029c", "a⟨U+2028⟩b⟨U+2029⟩c"},
		{"a byte that is not UTF-8 is named as a byte", "a\xffb\xc3", "a⟨0xFF⟩b⟨0xC3⟩"},
		{"a U+FFFD written in the text stays as it is", "a\ufffdb", "a\ufffdb"},
		{"plain ASCII is unchanged", "POST /payments/transfer", "POST /payments/transfer"},
		{"letters of every script are unchanged", "/café/Ωμέγα/東京/مرحبا", "/café/Ωμέγα/東京/مرحبا"},
		{"spaces are visible and unchanged", "ACME\u00a0GmbH 500", "ACME\u00a0GmbH 500"},
		{"look-alike brackets in the text stay text", "⟨U+202E⟩", "⟨U+202E⟩"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Escape(tt.in); got != tt.want {
				t.Errorf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if got, want := Has(tt.in), tt.in != tt.want; got != want {
				t.Errorf("Has(%q) = %v, want %v", tt.in, got, want)
			}
		})
	}
}

func TestEscapeDoesNotAllocateForCleanText(t *testing.T) {
	s := strings.Repeat("/payments/transfer", 4)
	if n := testing.AllocsPerRun(100, func() { _ = Escape(s) }); n != 0 {
		t.Errorf("Escape of clean text allocates %v times", n)
	}
}

// FuzzEscape checks that Escape leaves nothing invisible and no invalid
// UTF-8, and changes only what Has reports.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"/pay/\u202etxt", "\xff\xfe", "a\u200bb", "\U000e0041", "plain", "\ufffd", "⟨U+202E⟩"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Escape(s)
		if !utf8.ValidString(got) {
			t.Fatalf("Escape(%q) = %q: not UTF-8", s, got)
		}
		if Has(got) {
			t.Fatalf("Escape(%q) = %q still has an invisible character", s, got)
		}
		if !Has(s) && got != s {
			t.Fatalf("Escape(%q) = %q changed clean text", s, got)
		}
	})
}
