package approve

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/stepgate/stepgate/proxy/rules"
)

// Cuts of docs/design.md §14: what the page shows stays readable and bounded.
const (
	MaxValueRunes  = 200     // each shown value or template variable
	MaxSummarySize = 1 << 10 // all shown labels and values together, in bytes
)

// Request is the part of an intercepted request that approvals look at.
type Request struct {
	User        string
	Method      string
	Path        string // as forwarded (reqpath.Path.Escaped)
	Match       string // decoded once (reqpath.Path.Match)
	RawQuery    string
	ContentType string
	Body        []byte
	// Override is the method the application will act on when a method
	// override the gateway honours names another than Method (which stays
	// the method on the wire); "" when none does.
	Override string `json:"override,omitempty"`

	parsed *parsed // set by Canonicalize; not kept with a held request
}

// Value reads one source from the request under the strict grammar of
// Canonicalize. A source that is absent, or a request that does not fit the
// grammar, gives ok false; Canonicalize refuses the latter before anything
// is shown.
func (q *Request) Value(s rules.Source) (v string, ok bool) {
	switch s.Kind {
	case rules.FromMethod:
		if q.Override != "" {
			return q.Override, true
		}
		return q.Method, true
	case rules.FromPath:
		return q.Match, true
	}
	p := q.parsed
	if p == nil {
		var err error
		if p, _, err = parseRequest(q.RawQuery, q.ContentType, q.Body, ""); err != nil {
			return "", false
		}
	}
	v, ok, err := p.value(s)
	if err != nil {
		return "", false
	}
	return v, ok
}

// Clean makes a value safe to show and to send: invalid UTF-8 and control
// characters become U+FFFD, runs of white space become one space (so that
// padding cannot push what matters past the cut), the ends are trimmed, and
// it is cut at MaxValueRunes with "…". HTML escaping is the template's job.
func Clean(s string) string {
	var b strings.Builder
	n := 0
	space := false
	for _, r := range strings.TrimFunc(s, unicode.IsSpace) {
		if n == MaxValueRunes {
			b.WriteString("…")
			break
		}
		if unicode.IsSpace(r) { // line breaks too: a value is shown on one line
			if space {
				continue
			}
			space = true
			b.WriteByte(' ')
			n++
			continue
		}
		space = false
		if r == utf8.RuneError || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) ||
			(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			// Bidirectional overrides could make "500" read as "005".
			r = '\uFFFD'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}
