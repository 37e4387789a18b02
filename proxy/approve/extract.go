package approve

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"strconv"
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
}

// Value reads one source from the request. A source that is absent, or a
// body that does not parse as its content type says, gives ok false; the
// caller shows that as missing rather than guessing.
func (q *Request) Value(s rules.Source) (v string, ok bool) {
	switch s.Kind {
	case rules.FromMethod:
		return q.Method, true
	case rules.FromPath:
		return q.Match, true
	case rules.FromQuery:
		vs, err := url.ParseQuery(q.RawQuery)
		if err != nil || len(vs[s.Name]) == 0 {
			return "", false
		}
		return vs[s.Name][0], true
	case rules.FromForm:
		return q.formValue(s.Name)
	case rules.FromJSON:
		return q.jsonValue(s.Name)
	}
	return "", false
}

func (q *Request) mediaType() (string, map[string]string) {
	mt, params, err := mime.ParseMediaType(q.ContentType)
	if err != nil {
		return "", nil
	}
	return mt, params
}

// formValue reads the first value of a field of an urlencoded or multipart
// body. File parts are skipped: a file is not a value to show.
func (q *Request) formValue(name string) (string, bool) {
	mt, params := q.mediaType()
	switch mt {
	case "application/x-www-form-urlencoded":
		vs, err := url.ParseQuery(string(q.Body))
		if err != nil || len(vs[name]) == 0 {
			return "", false
		}
		return vs[name][0], true
	case "multipart/form-data":
		if params["boundary"] == "" {
			return "", false
		}
		mr := multipart.NewReader(bytes.NewReader(q.Body), params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				return "", false
			}
			if p.FormName() != name || p.FileName() != "" {
				continue
			}
			// The body is already bounded; one more byte than a value may
			// show is all that is needed to cut it.
			b, err := io.ReadAll(io.LimitReader(p, 4*MaxValueRunes+4))
			if err != nil {
				return "", false
			}
			return string(b), true
		}
	}
	return "", false
}

// jsonValue resolves an RFC 6901 pointer in a JSON body. Strings are shown
// as they are, numbers as written, other values as compact JSON.
func (q *Request) jsonValue(pointer string) (string, bool) {
	if mt, _ := q.mediaType(); mt != "application/json" && !strings.HasSuffix(mt, "+json") {
		return "", false
	}
	d := json.NewDecoder(bytes.NewReader(q.Body))
	d.UseNumber()
	var doc any
	if err := d.Decode(&doc); err != nil {
		return "", false
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return "", false // trailing data: not one JSON document
	}
	cur := doc
	for _, tok := range strings.Split(pointer, "/")[1:] {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[tok]
			if !ok {
				return "", false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) || (len(tok) > 1 && tok[0] == '0') {
				return "", false
			}
			cur = c[i]
		default:
			return "", false
		}
	}
	switch v := cur.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	}
	b, err := json.Marshal(cur)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// ErrAmbiguous reports a request whose shown or sent values could be read
// two ways: the page would show one and the application act on another.
var ErrAmbiguous = errors.New("approve: the request names a shown value twice")

// Ambiguous refuses a request in which a value the rule shows or sends is
// given more than once — a repeated form or query field (frameworks differ
// on which one wins, some compare names ignoring case) or, for a JSON body,
// any object with two keys equal ignoring case (a Go app decoding into a
// struct takes the last, case-insensitively) — and a body in an encoding
// stepgate does not read (Content-Encoding).
func (q *Request) Ambiguous(fields []rules.Field, contentEncoding string) error {
	if contentEncoding != "" && !strings.EqualFold(contentEncoding, "identity") {
		return ErrAmbiguous
	}
	jsonChecked := false
	for _, f := range fields {
		var n int
		switch f.From.Kind {
		case rules.FromQuery:
			n = countFold(q.RawQuery, f.From.Name)
		case rules.FromForm:
			switch mt, params := q.mediaType(); mt {
			case "application/x-www-form-urlencoded":
				n = countFold(string(q.Body), f.From.Name)
			case "multipart/form-data":
				n = q.countParts(params["boundary"], f.From.Name)
			}
		case rules.FromJSON:
			if !jsonChecked {
				jsonChecked = true
				if duplicateJSONKeys(q.Body) {
					return ErrAmbiguous
				}
			}
		}
		if n > 1 {
			return ErrAmbiguous
		}
	}
	return nil
}

// countFold counts the fields of an urlencoded string whose name equals
// name ignoring case.
func countFold(raw, name string) int {
	n := 0
	for part := range strings.SplitSeq(raw, "&") {
		k, _, _ := strings.Cut(part, "=")
		if k, err := url.QueryUnescape(k); err == nil && strings.EqualFold(k, name) {
			n++
		}
	}
	return n
}

func (q *Request) countParts(boundary, name string) int {
	if boundary == "" {
		return 0
	}
	mr := multipart.NewReader(bytes.NewReader(q.Body), boundary)
	n := 0
	for {
		p, err := mr.NextPart()
		if err != nil {
			return n
		}
		if strings.EqualFold(p.FormName(), name) {
			n++
		}
	}
}

// duplicateJSONKeys reports whether any object in a JSON document has two
// keys equal ignoring case. A body that is not JSON has none (its values
// are then shown as missing).
func duplicateJSONKeys(body []byte) bool {
	d := json.NewDecoder(bytes.NewReader(body))
	var walk func() bool // reports a duplicate; stops at the first error
	walk = func() bool {
		t, err := d.Token()
		if err != nil {
			return false
		}
		switch t {
		case json.Delim('{'):
			seen := map[string]bool{}
			for d.More() {
				kt, err := d.Token()
				if err != nil {
					return false
				}
				k, _ := kt.(string)
				lk := strings.ToLower(k)
				if seen[lk] {
					return true
				}
				seen[lk] = true
				if walk() {
					return true
				}
			}
			_, _ = d.Token()
		case json.Delim('['):
			for d.More() {
				if walk() {
					return true
				}
			}
			_, _ = d.Token()
		}
		return false
	}
	return walk()
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
