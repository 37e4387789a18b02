package rules

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DefaultApproveTTL is an approve rule's ttl when it names none (docs/design.md §14).
const DefaultApproveTTL = 5 * time.Minute

// MaxApproveTTL caps ttl: an approval is for the action in front of the
// user, not for later.
const MaxApproveTTL = 30 * time.Minute

// APIMode is how an approve rule answers a program (api=url|decoupled).
type APIMode uint8

const (
	APIURL       APIMode = iota // 401 approval_required with approval_url (the default)
	APIDecoupled                // 202 and a poll URL; stepgate pushes to the user's phone
)

func (m APIMode) String() string {
	if m == APIDecoupled {
		return "decoupled"
	}
	return "url"
}

// SourceKind says where in the request a shown value or template variable
// is read from.
type SourceKind uint8

const (
	FromForm   SourceKind = iota + 1 // form.NAME: urlencoded or multipart field
	FromJSON                         // json./pointer: RFC 6901 pointer into a JSON body
	FromQuery                        // query.NAME
	FromPath                         // path: the normalised request path
	FromMethod                       // method
)

// Source is a parsed SRC of an approve rule.
type Source struct {
	Kind SourceKind
	Name string // field name (form, query) or pointer (json); "" otherwise
}

func (s Source) String() string {
	switch s.Kind {
	case FromForm:
		return "form." + s.Name
	case FromJSON:
		return "json." + s.Name
	case FromQuery:
		return "query." + s.Name
	case FromPath:
		return "path"
	case FromMethod:
		return "method"
	}
	return "?"
}

// Field is LABEL:SRC (show) or VAR:SRC (vars).
type Field struct {
	Label string
	From  Source
}

// Limits on what an approve rule may name, so a rule cannot ask for an
// unbounded page or notification.
const (
	maxFields     = 16
	maxLabelLen   = 64
	maxSourceName = 256
)

// parseApprove reads an approve rule's options. Approve rules list their
// methods, all of them unsafe ones: approval is for actions.
func parseApprove(r Rule, opts []string, d Defaults) (Rule, error) {
	if len(r.Methods) == 0 {
		return Rule{}, fmt.Errorf("%q approve: approve rules must list their methods (for example POST,DELETE %s approve)", r.Path, r.Path)
	}
	// Safe methods are refused outright, not only alone: browsers send
	// them cross-site freely (links, images, prefetch), so a cross-site
	// page could make anyone's phone ring, and a GET approve rule would
	// also catch the browser's return to the original URL after approval.
	for _, m := range r.Methods {
		if m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "TRACE" {
			return Rule{}, fmt.Errorf("%q approve: %s is not an action; approve rules take unsafe methods such as POST, PUT, PATCH, DELETE", r.Path, m)
		}
	}
	r.ACR, r.TTL = d.ACR, DefaultApproveTTL
	seen := map[string]bool{}
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			return Rule{}, fmt.Errorf("option %q: want key=value", o)
		}
		if seen[k] {
			return Rule{}, fmt.Errorf("option %q: duplicate %s", o, k)
		}
		seen[k] = true
		var err error
		switch k {
		case "show":
			r.Show, err = parseFields(v, false)
		case "vars":
			r.Vars, err = parseFields(v, true)
		case "template", "variant":
			err = checkTemplateName(v)
			if k == "template" {
				r.Template = v
			} else {
				r.Variant = v
			}
		case "ttl":
			var dur time.Duration
			dur, err = time.ParseDuration(v)
			switch {
			case err != nil:
				err = errors.New("not a duration")
			case dur < 10*time.Second || dur > MaxApproveTTL:
				err = fmt.Errorf("must be between 10s and %s", MaxApproveTTL)
			}
			r.TTL = dur
		case "acr":
			r.ACR, err = acrList(strings.Split(v, ","))
		case "forward":
			switch v {
			case "canonical":
			case "original":
				r.Original = true
			default:
				err = errors.New("canonical (the default: stepgate's encoding of what it parsed) or original (the client's bytes)")
			}
		case "api":
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1] // a quoted word reads as the word
			}
			switch v {
			case "url":
				r.API = APIURL
			case "decoupled":
				r.API = APIDecoupled
			default:
				err = errors.New("url (the default: a 401 with a URL to open in a browser) or decoupled (a 202 while stepgate asks the user's phone)")
			}
		case "title":
			r.Title, err = parseText(v, MaxTitleLen)
			if err == nil && strings.Contains(r.Title, "${") {
				err = errors.New("a title is shown as written; values go in message=")
			}
		case "message":
			r.Message, err = parseText(v, MaxMessageLen)
		case "max_age":
			err = errors.New("approve rules have ttl, not max_age: every request needs its own approval")
		default:
			err = fmt.Errorf("unknown key %q", k)
		}
		if err != nil {
			return Rule{}, fmt.Errorf("option %q: %w", o, err)
		}
	}
	if (len(r.Vars) > 0 || r.Variant != "") && r.Template == "" {
		return Rule{}, fmt.Errorf("%q approve: vars and variant need template=NAME", r.Path)
	}
	if r.Message != "" {
		// The message repeats the template's sentence on the page.
		if r.Template == "" {
			return Rule{}, fmt.Errorf("%q approve: message repeats the notification's sentence, so it needs template=NAME", r.Path)
		}
		if err := checkMessage(r.Message, r.Vars); err != nil {
			return Rule{}, fmt.Errorf("%q approve: message: %w", r.Path, err)
		}
	}
	return r, nil
}

// parseFields reads "LABEL:SRC,LABEL:SRC". Labels are letters, digits, '_'
// and '-' (a page shows '_' as a space); template variable names are
// letters, digits and '_', as PingOne's ${name} placeholders are.
func parseFields(v string, variables bool) ([]Field, error) {
	if v == "" {
		return nil, errors.New("empty list")
	}
	parts := strings.Split(v, ",")
	if len(parts) > maxFields {
		return nil, fmt.Errorf("at most %d entries", maxFields)
	}
	out := make([]Field, 0, len(parts))
	for _, p := range parts {
		label, src, ok := strings.Cut(p, ":")
		if !ok {
			return nil, fmt.Errorf("%q: want LABEL:SOURCE", p)
		}
		if err := checkLabel(label, variables); err != nil {
			return nil, err
		}
		if slices.ContainsFunc(out, func(f Field) bool { return f.Label == label }) {
			return nil, fmt.Errorf("%q: listed twice", label)
		}
		s, err := ParseSource(src)
		if err != nil {
			return nil, err
		}
		out = append(out, Field{Label: label, From: s})
	}
	return out, nil
}

func checkLabel(s string, variable bool) error {
	if s == "" || len(s) > maxLabelLen {
		return fmt.Errorf("label %q: 1 to %d characters", s, maxLabelLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || (c == '-' && !variable)
		if !ok {
			if variable {
				return fmt.Errorf("variable %q: only letters, digits and _", s)
			}
			return fmt.Errorf("label %q: only letters, digits, _ and -", s)
		}
	}
	return nil
}

// ParseSource reads one SRC: form.NAME, json./pointer, query.NAME, path or
// method.
func ParseSource(s string) (Source, error) {
	switch s {
	case "path":
		return Source{Kind: FromPath}, nil
	case "method":
		return Source{Kind: FromMethod}, nil
	}
	kind, name, _ := strings.Cut(s, ".")
	var k SourceKind
	switch kind {
	case "form":
		k = FromForm
	case "query":
		k = FromQuery
	case "json":
		k = FromJSON
		if !strings.HasPrefix(name, "/") {
			return Source{}, fmt.Errorf("source %q: a JSON pointer starts with / (json./amount)", s)
		}
		if err := checkPointer(name); err != nil {
			return Source{}, fmt.Errorf("source %q: %w", s, err)
		}
	default:
		return Source{}, fmt.Errorf("source %q: unknown; use form.NAME, json./pointer, query.NAME, path or method", s)
	}
	if name == "" || len(name) > maxSourceName {
		return Source{}, fmt.Errorf("source %q: name must be 1 to %d characters", s, maxSourceName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f {
			return Source{}, fmt.Errorf("source %q: only visible ASCII", s)
		}
		// A form or query name is one every parser reads alike: PHP reads
		// '.', ' ' and '[' as '_', and '[' starts an array for PHP, qs and
		// Rack (docs/design.md §14.2).
		if k != FromJSON && !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return Source{}, fmt.Errorf("source %q: a form or query name is letters, digits, _ and -", s)
		}
	}
	return Source{Kind: k, Name: name}, nil
}

// checkPointer accepts RFC 6901 escapes only (~0, ~1).
func checkPointer(p string) error {
	for i := 0; i < len(p); i++ {
		if p[i] == '~' && (i+1 >= len(p) || (p[i+1] != '0' && p[i+1] != '1')) {
			return errors.New("'~' must be followed by 0 or 1 (RFC 6901)")
		}
	}
	return nil
}

// checkTemplateName: PingOne template and variant names are short tokens.
func checkTemplateName(v string) error {
	if v == "" || len(v) > 100 {
		return errors.New("1 to 100 characters")
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return errors.New("only letters, digits, _, - and .")
		}
	}
	return nil
}

func (r Rule) writeApproveOptions(b *strings.Builder) {
	writeFields := func(key string, fs []Field) {
		if len(fs) == 0 {
			return
		}
		b.WriteString(" " + key + "=")
		for i, f := range fs {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(f.Label + ":" + f.From.String())
		}
	}
	if r.Title != "" {
		b.WriteString(` title="` + r.Title + `"`)
	}
	writeFields("show", r.Show)
	if r.Template != "" {
		b.WriteString(" template=" + r.Template)
	}
	if r.Variant != "" {
		b.WriteString(" variant=" + r.Variant)
	}
	writeFields("vars", r.Vars)
	if r.Message != "" {
		b.WriteString(` message="` + r.Message + `"`)
	}
	b.WriteString(" ttl=" + r.TTL.String())
	if r.ACR != "" {
		b.WriteString(" acr=" + strings.ReplaceAll(r.ACR, " ", ","))
	}
	if r.Original {
		b.WriteString(" forward=original")
	}
	if r.API != APIURL {
		b.WriteString(" api=" + r.API.String())
	}
}
