package rules

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/stepgate/stepgate/proxy/invisible"
)

// Limits on an approve rule's text options, in characters. PingOne caps a
// whole notification at 660 characters (pingone.md §15 C1); the message is
// the sentence of it the page repeats, with values of up to 200 each.
const (
	MaxTitleLen   = 100
	MaxMessageLen = 300
)

// MessagePart is a piece of an approve rule's message: literal text, or
// (Var != "") the template variable whose value goes there.
type MessagePart struct {
	Text string
	Var  string
}

// MessageParts splits r.Message at its ${VAR} placeholders; nil when the
// rule has no message. Parse has checked that every VAR is one of r.Vars.
func (r Rule) MessageParts() []MessagePart {
	parts, _ := splitMessage(r.Message)
	return parts
}

// parseText reads the value of title= or message=: quoted ("Send a
// payment") or a single word (Delete). It is shown as written, so it must
// be visible: no control, format or other invisible character, no white
// space but the ordinary space (and none at either end), and no '\\',
// kept for escapes should they ever be needed.
func parseText(v string, maxLen int) (string, error) {
	if strings.HasPrefix(v, `"`) {
		// words ends a quoted value at its closing quote.
		v = strings.TrimSuffix(v[1:], `"`)
	}
	switch {
	case v == "":
		return "", errors.New("empty")
	case !utf8.ValidString(v):
		return "", errors.New("not UTF-8")
	case utf8.RuneCountInString(v) > maxLen:
		return "", fmt.Errorf("at most %d characters", maxLen)
	case strings.HasPrefix(v, " ") || strings.HasSuffix(v, " "):
		return "", errors.New("a space at either end")
	}
	for _, c := range v {
		switch {
		case invisible.Is(c):
			return "", fmt.Errorf("the invisible character %s", invisible.Escape(string(c)))
		case unicode.IsSpace(c) && c != ' ':
			return "", fmt.Errorf("the white space %s: use an ordinary space", invisible.Escape(string(c)))
		case c == '\\':
			return "", errors.New(`'\' is not allowed`)
		}
	}
	return v, nil
}

// splitMessage reads ${NAME} placeholders the way PingOne's templates
// (and the simulator) do: from "${" to the next "}". A '$' not followed by
// '{' is text.
func splitMessage(m string) ([]MessagePart, error) {
	var parts []MessagePart
	for m != "" {
		i := strings.Index(m, "${")
		if i < 0 {
			parts = append(parts, MessagePart{Text: m})
			break
		}
		if i > 0 {
			parts = append(parts, MessagePart{Text: m[:i]})
		}
		j := strings.IndexByte(m[i+2:], '}')
		if j < 0 {
			return nil, fmt.Errorf("%q: \"${\" without \"}\"", m[i:])
		}
		parts = append(parts, MessagePart{Var: m[i+2 : i+2+j]})
		m = m[i+3+j:]
	}
	return parts, nil
}

// checkMessage checks that every ${NAME} in a message is one of the rule's
// vars: the page fills in the values stepgate sends PingOne, and knows no
// others (${otp}, which the page must never show, among them).
func checkMessage(m string, vars []Field) error {
	parts, err := splitMessage(m)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if p.Var == "" && p.Text != "" {
			continue
		}
		known := false
		names := make([]string, len(vars))
		for i, f := range vars {
			names[i] = f.Label
			known = known || f.Label == p.Var
		}
		if !known {
			if len(names) == 0 {
				return fmt.Errorf("${%s}: the rule has no vars; a message may only use the rule's vars", p.Var)
			}
			return fmt.Errorf("${%s} is not one of the rule's vars (%s)", p.Var, strings.Join(names, ", "))
		}
	}
	return nil
}
