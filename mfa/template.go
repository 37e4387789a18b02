package mfa

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on pi.template (SOURCES-2026-12.md C1). Only the variant limit is
// PingOne's own (TF-TPL: 100 characters); the rest are GUESSES that keep a
// message within PingOne's 660-character maximum (C1, console page).
const (
	maxTemplateName    = 100
	maxTemplateVariant = 100 // TF-TPL
	maxTemplateVars    = 20
	maxTemplateVarName = 64
	// MaxTemplateValue is the length (in characters) each variable value
	// is cut to. GUESS: PingOne documents no per-variable limit; 255 leaves
	// room for the template's own words within 660 characters.
	MaxTemplateValue = 255
)

// templateName is what template and variable names may look like: PingOne's
// are like strong_authentication and sum (C1).
var templateName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// templateClaim turns t into the pi.template claim: {"name", "variant"
// (omitted when empty), "variables"}. A name, variant or variable name
// outside the limits is an error; a value is cut to MaxTemplateValue
// characters with control characters replaced by spaces, so a value cannot
// start a new line of the message.
func templateClaim(t *Template) (map[string]any, error) {
	if t == nil {
		return nil, nil
	}
	if len(t.Name) > maxTemplateName || !templateName.MatchString(t.Name) {
		return nil, errors.New("template name is empty, too long or not a name")
	}
	if utf8.RuneCountInString(t.Variant) > maxTemplateVariant || !utf8.ValidString(t.Variant) ||
		strings.IndexFunc(t.Variant, unicode.IsControl) >= 0 {
		return nil, fmt.Errorf("template variant is longer than %d characters or not text", maxTemplateVariant)
	}
	if len(t.Variables) > maxTemplateVars {
		return nil, fmt.Errorf("template has more than %d variables", maxTemplateVars)
	}
	vars := make(map[string]string, len(t.Variables))
	for k, v := range t.Variables {
		if len(k) > maxTemplateVarName || !templateName.MatchString(k) {
			return nil, fmt.Errorf("template variable name %.64q is not a name of at most %d characters", k, maxTemplateVarName)
		}
		vars[k] = cutValue(v)
	}
	claim := map[string]any{"name": t.Name, "variables": vars}
	if t.Variant != "" {
		claim["variant"] = t.Variant
	}
	return claim, nil
}

// cutValue makes v valid UTF-8, replaces control characters with spaces and
// keeps at most MaxTemplateValue characters.
func cutValue(v string) string {
	v = strings.ToValidUTF8(v, "\uFFFD")
	var b strings.Builder
	n := 0
	for _, r := range v {
		if n == MaxTemplateValue {
			break
		}
		if unicode.IsControl(r) {
			r = ' '
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}
