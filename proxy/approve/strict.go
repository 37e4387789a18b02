package approve

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/stepgate/stepgate/proxy/rules"
)

// What stepgate shows must be what the application acts on (docs/design.md
// §14.2). PHP, Werkzeug, Django, Express (qs, busboy), Rack and Go each read
// a form or a JSON body their own way: they fold field names differently,
// skip different malformed parts, pick a different one of two values, take
// another Content-Type line. So a request an approve rule holds is read under
// one strict grammar, refused (ErrRefused) wherever it leaves that grammar or
// could be read two ways, and then forwarded as stepgate re-encodes it from
// its own parse (canonical form), not as the client wrote it. The
// application can then only read what the page and the message showed.

// ErrRefused reports a request an approve rule cannot hold: its body or query
// does not fit the strict grammar, or a shown value could be read two ways.
// The error's text names the reason, never a value.
var ErrRefused = errors.New("approve: refused")

// refusal is an ErrRefused with its reason: a fixed phrase, safe to log.
type refusal string

func (r refusal) Error() string        { return "approve: refused: " + string(r) }
func (r refusal) Is(target error) bool { return target == ErrRefused }

// Reason is the fixed phrase of an ErrRefused, for the audit line.
func Reason(err error) string {
	var r refusal
	if errors.As(err, &r) {
		return string(r)
	}
	return "unreadable request"
}

// Bounds of the strict grammar: every parser the matrix runs reads at least
// this many fields, parts and levels without dropping one (PHP's
// max_input_vars is 1000 and max_file_uploads 20, qs's parameterLimit 1000,
// Rack's multipart part limit 128, PHP's json depth 512).
const (
	maxFields    = 256
	maxFileParts = 16
	maxJSONDepth = 64
)

// bodyKind is what the strict grammar read the body as.
type bodyKind uint8

const (
	bodyNone   bodyKind = iota // no body at all
	bodyForm                   // application/x-www-form-urlencoded
	bodyMulti                  // multipart/form-data
	bodyJSON                   // application/json, */*+json
	bodyOpaque                 // another declared type: not read, forwarded as it is
)

// field is one urlencoded field or multipart part, decoded.
type field struct {
	name, value string
	file        bool   // a multipart part with a filename
	filename    string // files only
	ctype       string // files only: the part's Content-Type, "" for none
	keys        []string
}

// parsed is a request read under the strict grammar.
type parsed struct {
	query     []field
	kind      bodyKind
	form      []field // bodyForm, bodyMulti
	mediaType string  // as parsed, in lower case; "" without a body
	json      any     // bodyJSON: the document, objects as map[string]any, numbers as json.Number
}

// Canonical form, as forwarded.
type canonical struct {
	query, contentType string
	body               []byte
}

// Canonicalize reads q under the strict grammar, refuses (ErrRefused) what
// does not fit it or could be read two ways — fields is what the rule shows
// and sends — and, unless original is set, replaces q's query, Content-Type
// and body with their canonical encoding, so that the digest binds, and the
// upstream receives, exactly what was parsed. header is the request's header
// (after stripping); it is checked for a second Content-Type line and a
// Content-Encoding, and updated to match q.
func (q *Request) Canonicalize(header http.Header, fields []rules.Field, original bool) error {
	if err := checkHeader(header); err != nil {
		return err
	}
	p, c, err := parseRequest(q.RawQuery, q.ContentType, q.Body, header.Get("Content-Encoding"))
	if err != nil {
		return err
	}
	if original && p.kind != bodyOpaque && p.kind != bodyNone {
		// Django reads no form whose type is not written in lower case:
		// the client's own bytes pass only as every parser reads them.
		if mt, _, _ := strings.Cut(q.ContentType, ";"); strings.TrimSpace(mt) != p.mediaType {
			return refusal("a Content-Type not written in lower case")
		}
	}
	if err := p.check(fields, q.Override); err != nil {
		return err
	}
	q.parsed = p
	if original {
		return nil
	}
	q.RawQuery, q.ContentType, q.Body = c.query, c.contentType, c.body
	header.Del("Content-Encoding") // only identity gets this far
	if c.contentType == "" {
		header.Del("Content-Type")
	} else {
		header["Content-Type"] = []string{c.contentType}
	}
	return nil
}

// Apply makes r the request q describes: its query, Content-Type and body
// (after Canonicalize, the canonical ones).
func (q *Request) Apply(r *http.Request) {
	r.URL.RawQuery = q.RawQuery
	if q.ContentType == "" {
		r.Header.Del("Content-Type")
	} else {
		r.Header["Content-Type"] = []string{q.ContentType}
	}
	r.Body = io.NopCloser(bytes.NewReader(q.Body))
	r.ContentLength = int64(len(q.Body))
	r.RequestURI = q.Path
	if q.RawQuery != "" {
		r.RequestURI += "?" + q.RawQuery
	}
}

// checkHeader refuses the header lines that parsers read differently: two
// Content-Type lines (Go takes the first, Werkzeug the last) or a spelling
// variant of one (CGI and WSGI fold '_' into '-'), and a Content-Encoding
// other than identity (the body would not be what stepgate read).
func checkHeader(h http.Header) error {
	for name, vs := range h {
		if folded := strings.ReplaceAll(strings.ToLower(name), "_", "-"); folded == "content-type" || folded == "content-encoding" {
			if name != "Content-Type" && name != "Content-Encoding" {
				return refusal("a spelling variant of Content-Type or Content-Encoding")
			}
			if len(vs) > 1 {
				return refusal("more than one " + name + " line")
			}
		}
	}
	return nil
}

// parseRequest reads the query and the body under the strict grammar and
// returns them with their canonical encoding.
func parseRequest(rawQuery, contentType string, body []byte, contentEncoding string) (*parsed, canonical, error) {
	p := &parsed{}
	var c canonical
	if contentEncoding != "" && !strings.EqualFold(contentEncoding, "identity") {
		return nil, c, refusal("a Content-Encoding stepgate does not read")
	}
	var err error
	if p.query, err = parseURLEncoded(rawQuery); err != nil {
		return nil, c, fmt.Errorf("query: %w", err)
	}
	c.query = encodeURLEncoded(p.query)
	if contentType == "" {
		if len(body) > 0 {
			// Rack reads a POST body without a Content-Type as a form.
			return nil, c, refusal("a body without a Content-Type")
		}
		return p, c, nil
	}
	mt, params, err := parseMediaType(contentType)
	if err != nil {
		return nil, c, err
	}
	p.mediaType = mt
	switch {
	case mt == "application/x-www-form-urlencoded":
		if err := onlyUTF8(params); err != nil {
			return nil, c, err
		}
		p.kind = bodyForm
		if p.form, err = parseURLEncoded(string(body)); err != nil {
			return nil, c, fmt.Errorf("body: %w", err)
		}
		c.contentType, c.body = mt, []byte(encodeURLEncoded(p.form))
	case mt == "multipart/form-data":
		// Exactly one parameter, named boundary: PHP takes the first
		// parameter whose name contains "boundary", Go the one named so.
		if len(params) != 1 || params[0][0] != "boundary" {
			return nil, c, refusal("a multipart Content-Type with parameters other than one boundary")
		}
		p.kind = bodyMulti
		if p.form, err = parseMultipart(body, params[0][1]); err != nil {
			return nil, c, err
		}
		c.contentType, c.body = encodeMultipart(p.form)
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		if err := onlyUTF8(params); err != nil {
			return nil, c, err
		}
		p.kind = bodyJSON
		if p.json, c.body, err = parseJSON(body); err != nil {
			return nil, c, err
		}
		c.contentType = mt
	default:
		if strings.HasPrefix(mt, "multipart/") {
			return nil, c, refusal("a multipart type other than form-data")
		}
		p.kind = bodyOpaque
		c.contentType, c.body = contentType, body
	}
	if len(p.query)+len(p.form) > maxFields {
		return nil, c, refusal("more fields than every parser reads")
	}
	return p, c, nil
}

// check refuses a request in which a value the rule shows or sends could be
// read another way: named twice under any parser's folding of names, given
// in the query and the body (PHP's $_REQUEST and Werkzeug's request.values
// merge them), spelt differently from the rule, read from a body of another
// kind, or not shown as the application would read it. A method override
// field is refused too: a rule matched the method stepgate saw.
func (p *parsed) check(fields []rules.Field, override string) error {
	all := slices.Concat(p.query, p.form)
	if n := countKey(all, foldString("_method")); n > 0 {
		// The one override the gateway honoured (STEPGATE_METHOD_OVERRIDE
		// =form) may stay: the rule matched the method it names.
		if i := slices.IndexFunc(p.form, func(f field) bool { return f.name == "_method" && !f.file }); override == "" || n > 1 || i < 0 ||
			OverrideMethod(p.form[i].value) != override {
			return refusal("a _method override field")
		}
	}
	if jsonHasMethod(p.json) {
		return refusal("a _method override field")
	}
	for _, f := range fields {
		switch f.From.Kind {
		case rules.FromForm, rules.FromQuery:
			inQuery := f.From.Kind == rules.FromQuery
			if !inQuery && p.kind != bodyForm && p.kind != bodyMulti && p.kind != bodyNone {
				return refusal("a form field shown from a body that is not a form")
			}
			key := foldString(f.From.Name)
			if obj, ok := p.json.(map[string]any); ok && inQuery {
				// Laravel's input() and Rails' params read a JSON body's
				// member over, or in place of, the query's field.
				for k := range obj {
					if slices.Contains(nameKeys(k), key) {
						return refusal("a shown query field is also a JSON member")
					}
				}
			}
			n := countKey(all, key)
			if n == 0 {
				continue
			}
			if n > 1 {
				return refusal("a shown field is given more than once")
			}
			src := p.form
			if inQuery {
				src = p.query
			}
			i := slices.IndexFunc(src, func(x field) bool { return x.name == f.From.Name })
			if i < 0 || src[i].file {
				return refusal("a shown field is given in another place or spelling")
			}
		case rules.FromJSON:
			if p.kind != bodyJSON && p.kind != bodyNone {
				return refusal("a JSON value shown from a body that is not JSON")
			}
			if p.kind == bodyJSON && p.mediaType != "application/json" {
				// Express's json() reads only application/json: the app
				// would act on no body at all.
				return refusal("a JSON value shown from a type other than application/json")
			}
			// Laravel's input() and Rails' params merge the query into a
			// JSON body's top level.
			top, _, _ := strings.Cut(strings.TrimPrefix(f.From.Name, "/"), "/")
			if countKey(p.query, foldString(unescapePointer(top))) > 0 {
				return refusal("a shown JSON member is also in the query")
			}
			if _, _, err := p.jsonValue(f.From.Name); err != nil {
				return err
			}
		}
		v, ok, err := p.value(f.From)
		if err != nil {
			return err
		}
		if ok {
			if err := checkShown(v); err != nil {
				return err
			}
		}
	}
	return nil
}

func countKey(fs []field, key string) int {
	n := 0
	for i := range fs {
		if slices.Contains(fs[i].keys, key) {
			n++
		}
	}
	return n
}

// value reads one form, query or JSON source from a parsed request.
func (p *parsed) value(s rules.Source) (string, bool, error) {
	switch s.Kind {
	case rules.FromQuery, rules.FromForm:
		src := p.form
		if s.Kind == rules.FromQuery {
			src = p.query
		}
		for _, f := range src {
			if f.name == s.Name && !f.file {
				return f.value, true, nil
			}
		}
		return "", false, nil
	case rules.FromJSON:
		return p.jsonValue(s.Name)
	}
	return "", false, nil
}

// jsonValue resolves an RFC 6901 pointer. A member spelt differently from
// the pointer (encoding/json matches struct fields ignoring case) is
// refused; numbers must be plain decimals that every parser reads alike.
func (p *parsed) jsonValue(pointer string) (string, bool, error) {
	if p.kind != bodyJSON {
		return "", false, nil
	}
	cur := p.json
	for _, tok := range strings.Split(pointer, "/")[1:] {
		tok = unescapePointer(tok)
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[tok]
			if !ok {
				k := foldString(tok)
				for name := range c {
					if foldString(name) == k {
						return "", false, refusal("a shown JSON member spelt differently from the rule")
					}
				}
				return "", false, nil
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) || (len(tok) > 1 && tok[0] == '0') || tok[0] == '+' {
				return "", false, nil
			}
			cur = c[i]
		default:
			return "", false, nil
		}
	}
	switch v := cur.(type) {
	case string:
		return v, true, nil
	case json.Number:
		if !plainDecimal(string(v)) {
			return "", false, refusal("a shown number not written as a plain decimal of at most 15 digits")
		}
		return string(v), true, nil
	}
	var b bytes.Buffer
	writeJSON(&b, cur)
	return b.String(), true, nil
}

func unescapePointer(tok string) string {
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
}

// plainDecimal: -?digits(.digits)?, at most 15 significant digits (so that a
// double, which JavaScript and PHP use, holds it exactly), no exponent.
func plainDecimal(s string) bool {
	s = strings.TrimPrefix(s, "-")
	intPart, frac, hasFrac := strings.Cut(s, ".")
	if intPart == "" || (hasFrac && frac == "") || (len(intPart) > 1 && intPart[0] == '0') {
		return false
	}
	digits := 0
	for _, part := range []string{intPart, frac} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return false
			}
		}
		digits += len(part)
	}
	return digits-len(intPart)+len(strings.TrimLeft(intPart, "0")) <= 15
}

// checkShown refuses a value a person would not read as the application
// does: invalid UTF-8, characters a person cannot see (format characters —
// bidi controls, zero-width, soft hyphen, tags —, variation selectors,
// Hangul fillers, controls other than white space, private-use and
// unassigned code points), and numbers written so that a parser reads
// another number than a person (5e3, 0x1F4, 1_000, Infinity, digits of
// another script).
func checkShown(v string) error {
	if !utf8.ValidString(v) {
		return refusal("a shown value that is not UTF-8")
	}
	otherDigits := false
	for _, r := range v {
		if invisible(r) {
			return refusal("a shown value with a character a person cannot see")
		}
		if r > unicode.MaxASCII && unicode.Is(unicode.Nd, r) {
			otherDigits = true
		}
	}
	if misreadNumber(v, otherDigits) {
		return refusal("a shown number not written as a plain decimal")
	}
	return nil
}

// invisible reports a rune that shows as nothing, or changes how its
// neighbours show.
func invisible(r rune) bool {
	switch {
	case r == '\t' || r == '\n' || r == '\r':
		return false // white space: shown as one space
	case r < 0x20 || (r >= 0x7f && r < 0xa0):
		return true
	case r == 0x034f, r == 0x115f, r == 0x1160, r == 0x3164, r == 0xffa0, r == 0x2800,
		r >= 0xfe00 && r <= 0xfe0f, r >= 0xe0100 && r <= 0xe01ef, r >= 0x180b && r <= 0x180f:
		// combining grapheme joiner, Hangul fillers, Braille blank,
		// variation selectors, Mongolian selectors and vowel separator
		return true
	}
	return unicode.In(r, unicode.Cf, unicode.Co, unicode.Cs) || !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z)
}

// misreadNumber reports a value that PHP, JavaScript or Python read as a
// number other than the one a person reads in it.
func misreadNumber(v string, otherDigits bool) bool {
	t := strings.TrimFunc(v, unicode.IsSpace)
	t = strings.TrimLeft(t, "+-")
	lower := strings.ToLower(t)
	switch lower {
	case "inf", "infinity", "nan":
		return true
	}
	if otherDigits && t != "" && (unicode.IsDigit(rune(t[0])) || !utf8.RuneStart(t[0]) || t[0] >= 0x80) {
		return true // Python's float() reads ５００ and ٥٠٠ as 500
	}
	if len(lower) > 2 && lower[0] == '0' && strings.ContainsRune("xbo", rune(lower[1])) {
		return true // JavaScript's Number("0x1F4") is 500
	}
	i, digits := 0, 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '_' || t[i] == '.') {
		if t[i] == '_' {
			return digits > 0 // Python's float("1_000") is 1000
		}
		if t[i] != '.' {
			digits++
		}
		i++
	}
	if digits == 0 || i == len(t) {
		return false
	}
	// 5e3, 0.05e5: PHP's numeric strings and every float parser read an
	// exponent.
	rest := strings.TrimLeft(t[i+1:], "+-")
	return (t[i] == 'e' || t[i] == 'E') && rest != "" && rest[0] >= '0' && rest[0] <= '9'
}

// MethodField reads a POST body's _method field (Rails, Laravel, Symfony
// and Express's method-override read it as the method) under the strict
// grammar: found is false for a body that is not a form. A form that does
// not fit the grammar, or names _method twice under any parser's folding,
// is an error.
func MethodField(contentType string, body []byte) (value string, found bool, err error) {
	mt, _, _ := strings.Cut(contentType, ";")
	switch strings.ToLower(strings.TrimSpace(mt)) {
	case "application/x-www-form-urlencoded", "multipart/form-data":
	default:
		return "", false, nil
	}
	p, _, err := parseRequest("", contentType, body, "")
	if err != nil {
		return "", false, err
	}
	switch countKey(p.form, foldString("_method")) {
	case 0:
		return "", false, nil
	case 1:
		for _, f := range p.form {
			if f.name == "_method" && !f.file {
				return f.value, true, nil // as sent: Rack and Express do not trim it
			}
		}
	}
	return "", false, refusal("a _method override field named twice or in another spelling")
}

// OverrideMethod is the method a _method value names, upper-cased, or ""
// when it is not ASCII letters alone: Rack and Express neither trim it nor
// fold it as Go does ("GET " and "OPTIONſ" stay POST to them, while
// strings.ToUpper and EqualFold would read GET and OPTIONS).
func OverrideMethod(v string) string {
	if v == "" || len(v) > 16 {
		return ""
	}
	b := []byte(v)
	for i, c := range b {
		switch {
		case 'A' <= c && c <= 'Z':
		case 'a' <= c && c <= 'z':
			b[i] = c - ('a' - 'A')
		default:
			return ""
		}
	}
	return string(b)
}

// jsonHasMethod reports whether a JSON body has a top-level member that
// Laravel's input() or Express's method-override (reading req.body) takes
// as _method.
func jsonHasMethod(v any) bool {
	obj, _ := v.(map[string]any)
	for k := range obj {
		if slices.Contains(nameKeys(k), "_method") {
			return true
		}
	}
	return false
}

// ReadAsJSON reports whether Laravel reads a body of media type mt as
// JSON: the type contains "/json" or "+json", in any case.
func ReadAsJSON(mt string) bool {
	mt = strings.ToLower(mt)
	return strings.Contains(mt, "/json") || strings.Contains(mt, "+json")
}

// JSONNamesMethod refuses a body that an application reads as JSON
// (Laravel: a media type containing "/json" or "+json") and that names a
// method with a _method member, or that does not parse strictly (it cannot
// then be shown not to). Other bodies, and an empty one, pass.
func JSONNamesMethod(contentType string, body []byte) error {
	mt, _, _ := strings.Cut(contentType, ";")
	if len(body) == 0 || !ReadAsJSON(mt) {
		return nil
	}
	p, _, err := parseRequest("", "application/json", body, "")
	if err != nil {
		return err
	}
	if jsonHasMethod(p.json) {
		return refusal("a _method member in a JSON body")
	}
	return nil
}

// QueryNamesMethod reports whether any parser would read a field of the
// query as _method. It reads leniently, as PHP does (an invalid escape
// stays as written, both '&' and ';' separate), so that no spelling slips
// past on a path that does not hold the request.
func QueryNamesMethod(raw string) bool {
	for part := range strings.FieldsFuncSeq(raw, func(r rune) bool { return r == '&' || r == ';' }) {
		name, _, _ := strings.Cut(part, "=")
		var b strings.Builder
		for i := 0; i < len(name); i++ {
			switch c := name[i]; {
			case c == '+':
				b.WriteByte(' ')
			case c == '%' && i+2 < len(name) && isHex(name[i+1]) && isHex(name[i+2]):
				b.WriteByte(unhex(name[i+1])<<4 | unhex(name[i+2]))
				i += 2
			default:
				b.WriteByte(c)
			}
		}
		n := b.String()
		if i := strings.IndexByte(n, 0); i >= 0 {
			n = n[:i] // PHP cuts a name at NUL
		}
		if slices.Contains(nameKeys(n), "_method") {
			return true
		}
	}
	return false
}

// parseMediaType reads "type/subtype *(; name=value)" strictly: tokens, a
// quoted string without escapes, each parameter once. The type and the
// parameter names come back in lower case.
func parseMediaType(s string) (string, [][2]string, error) {
	bad := refusal("a Content-Type that does not parse")
	mt, rest, semi := strings.Cut(s, ";")
	if semi && strings.Trim(rest, " \t") == "" {
		// "text/plain;" and "text/plain; ": an empty parameter, refused
		// as one after a parameter is. Rack 2.2 fails on it (a 500) where
		// the other parsers ignore it.
		return "", nil, bad
	}
	mt = strings.ToLower(strings.TrimSpace(mt))
	typ, sub, ok := strings.Cut(mt, "/")
	if !ok || !isToken(typ) || !isToken(sub) {
		return "", nil, bad
	}
	var params [][2]string
	for rest != "" {
		var part string
		rest = strings.TrimLeft(rest, " \t")
		if strings.HasPrefix(rest, ";") || rest == "" {
			return "", nil, bad
		}
		name, after, ok := strings.Cut(rest, "=")
		name = strings.ToLower(strings.TrimSpace(name))
		if !ok || !isToken(name) {
			return "", nil, bad
		}
		var value string
		if strings.HasPrefix(after, "\"") {
			end := strings.IndexByte(after[1:], '"')
			if end < 0 {
				return "", nil, bad
			}
			value, part = after[1:end+1], after[end+2:]
			if strings.ContainsAny(value, "\\\r\n\x00") {
				return "", nil, bad
			}
		} else {
			value, part, _ = strings.Cut(after, ";")
			value = strings.TrimRight(value, " \t")
			if !isToken(value) {
				return "", nil, bad
			}
			if part != "" || strings.HasSuffix(after, ";") {
				part = ";" + part
			}
		}
		part = strings.TrimLeft(part, " \t")
		switch {
		case part == "":
			rest = ""
		case part[0] == ';':
			rest = part[1:]
			if strings.TrimSpace(rest) == "" {
				return "", nil, bad
			}
		default:
			return "", nil, bad
		}
		if slices.ContainsFunc(params, func(p [2]string) bool { return p[0] == name }) {
			return "", nil, bad
		}
		params = append(params, [2]string{name, value})
	}
	return mt, params, nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// onlyUTF8 refuses every parameter but charset=utf-8: Django and Werkzeug
// decode a form in the charset the Content-Type names.
func onlyUTF8(params [][2]string) error {
	for _, p := range params {
		if p[0] != "charset" || !strings.EqualFold(p[1], "utf-8") {
			return refusal("a Content-Type parameter other than charset=utf-8")
		}
	}
	return nil
}

// parseURLEncoded reads name=value pairs separated by '&' only. Refused: a
// ';' (older Rack and Python split on it), a '%' not followed by two hex
// digits (PHP keeps it, Go refuses it), a control character or a raw byte
// outside ASCII, a name or value that is not UTF-8 once decoded, an empty or
// space-padded name (PHP drops leading spaces), a NUL (PHP cuts the name
// there), a field without '=' (Rack reads it as nil, the rest as ""), a
// "]=" after the first '=' (qs splits there). Empty
// pairs ("a=1&&b=2") are dropped.
func parseURLEncoded(s string) ([]field, error) {
	var out []field
	for part := range strings.SplitSeq(s, "&") {
		if part == "" {
			continue
		}
		if len(out) == maxFields {
			return nil, refusal("more fields than every parser reads")
		}
		for i := 0; i < len(part); i++ {
			if c := part[i]; c < 0x20 || c >= 0x7f || c == ';' {
				return nil, refusal("a form or query with a ';', a control character or a raw byte outside ASCII")
			}
		}
		// qs reads %5B and %5D as brackets before it splits, and ends a
		// name at the first "]=" if there is one: it reads "amount=]=" and
		// "amount=x%5D=y" as fields named "amount=]" and "amount=x]".
		if qs := qsBrackets.Replace(part); strings.Contains(qs, "]=") && strings.Index(qs, "]=")+1 != strings.IndexByte(qs, '=') {
			return nil, refusal("a form or query field with ']=' after its '='")
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			// Rack reads "flag" as nil, the others as "".
			return nil, refusal("a form or query field without '='")
		}
		name, err := formUnescape(k)
		if err != nil {
			return nil, err
		}
		value, err := formUnescape(v)
		if err != nil {
			return nil, err
		}
		if err := checkName(name); err != nil {
			return nil, err
		}
		if strings.IndexByte(value, 0) >= 0 || !utf8.ValidString(value) {
			return nil, refusal("a form or query value with a NUL or not in UTF-8")
		}
		out = append(out, field{name: name, value: value, keys: nameKeys(name)})
	}
	return out, nil
}

var qsBrackets = strings.NewReplacer("%5B", "[", "%5b", "[", "%5D", "]", "%5d", "]")

func formUnescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '+':
			b = append(b, ' ')
		case '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", refusal("a '%' not followed by two hex digits")
			}
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return string(b), nil
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// checkName refuses a field name that parsers cut, trim or decode apart.
func checkName(name string) error {
	if name == "" || !utf8.ValidString(name) || strings.TrimFunc(name, unicode.IsSpace) != name {
		return refusal("an empty, padded or non-UTF-8 field name")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || invisible(r) {
			return refusal("a field name with a control or invisible character")
		}
	}
	return nil
}

// nameKeys are the names a field may be read under by some parser, folded
// (Unicode simple folding, as encoding/json and case-insensitive frameworks
// compare): as written; PHP's, which reads ' ', '.' and an unclosed '['
// as '_' and takes "a[b]" as an element of a; qs's and Rack's base name,
// before the first '[' or after leading brackets ("[a]" and "]a" are a for
// Rack and qs).
func nameKeys(name string) []string {
	keys := []string{foldString(name)}
	add := func(s string) {
		if s == "" {
			return
		}
		if k := foldString(s); !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	php := strings.TrimLeft(name, " ")
	if i := strings.IndexByte(php, '['); i >= 0 && strings.IndexByte(php[i+1:], ']') >= 0 {
		add(phpMangle(php[:i], false))
	}
	add(phpMangle(php, true))
	if i := strings.IndexByte(name, '['); i >= 0 {
		add(name[:i])
	}
	rack := strings.TrimLeft(name, "[]")
	if i := strings.IndexAny(rack, "[]"); i >= 0 {
		rack = rack[:i]
	}
	add(rack)
	return keys
}

func phpMangle(s string, brackets bool) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '.' || (brackets && r == '[') {
			return '_'
		}
		return r
	}, s)
}

// foldString maps s to one representative of its Unicode simple-folding
// class: two strings have the same fold exactly when strings.EqualFold
// says they are equal.
func foldString(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(s)
	}
	return strings.Map(func(r rune) rune {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < m {
				m = f
			}
		}
		if m < utf8.RuneSelf {
			return unicode.ToLower(m)
		}
		return m
	}, s)
}

// encodeURLEncoded writes fields as name=value pairs, every byte outside
// A-Z a-z 0-9 - . _ ~ percent-encoded (a space too: "%20" means a space to
// every parser, '+' only to form parsers).
func encodeURLEncoded(fs []field) string {
	var b strings.Builder
	for i, f := range fs {
		if i > 0 {
			b.WriteByte('&')
		}
		escapeTo(&b, f.name)
		b.WriteByte('=')
		escapeTo(&b, f.value)
	}
	return b.String()
}

func escapeTo(b *strings.Builder, s string) {
	const hexUpper = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexUpper[c>>4])
		b.WriteByte(hexUpper[c&15])
	}
}

// parseMultipart reads a multipart/form-data body strictly: no preamble,
// each part with one Content-Disposition of type form-data with a quoted
// name (and, for a file, a quoted filename) and at most a Content-Type, no
// other header (Go decodes quoted-printable Content-Transfer-Encoding), no
// folded header lines, and the delimiter nowhere but between parts; after
// the closing delimiter at most a CRLF. Whatever a lenient parser would
// read another way is refused rather than skipped.
func parseMultipart(body []byte, boundary string) ([]field, error) {
	if len(boundary) > 70 || !isToken(boundary) {
		// Rack 2.2 ends a quoted boundary at ';' or ',' (boundary="X;Y"
		// is X to it): a part could hide the delimiter it reads. Browsers,
		// curl and the common clients send token boundaries.
		return nil, refusal("a multipart boundary over 70 characters or not a token")
	}
	delim := []byte("--" + boundary)
	bad := func(why string) error { return refusal("multipart: " + why) }
	if !bytes.HasPrefix(body, delim) || !bytes.HasPrefix(body[len(delim):], []byte("\r\n")) {
		return nil, bad("the body does not start with the boundary")
	}
	// Every occurrence of the delimiter must be one that separates parts:
	// PHP, busboy and Werkzeug each search for it a little differently.
	if n := bytes.Count(body, delim); n != bytes.Count(body, append([]byte("\r\n"), delim...))+1 {
		return nil, bad("the boundary inside a part")
	}
	rest := body[len(delim)+2:]
	var out []field
	files := 0
	for {
		end := bytes.Index(rest, append([]byte("\r\n"), delim...))
		if end < 0 {
			return nil, bad("no closing boundary")
		}
		part := rest[:end]
		rest = rest[end+2+len(delim):]
		f, err := parsePart(part)
		if err != nil {
			return nil, err
		}
		if f.file {
			if files++; files > maxFileParts {
				return nil, bad("more files than every parser reads")
			}
		}
		if len(out) == maxFields {
			return nil, refusal("more fields than every parser reads")
		}
		out = append(out, f)
		switch {
		case bytes.HasPrefix(rest, []byte("\r\n")):
			rest = rest[2:]
		case bytes.HasPrefix(rest, []byte("--")):
			if tail := rest[2:]; len(tail) != 0 && !bytes.Equal(tail, []byte("\r\n")) {
				return nil, bad("data after the closing boundary")
			}
			return out, nil
		default:
			return nil, bad("a boundary followed by other than CRLF or --")
		}
	}
}

func parsePart(part []byte) (field, error) {
	bad := func(why string) (field, error) { return field{}, refusal("multipart: " + why) }
	head, content, ok := bytes.Cut(part, []byte("\r\n\r\n"))
	if !ok {
		return bad("a part without a blank line after its headers")
	}
	var f field
	seenCD, seenCT := false, false
	for line := range strings.SplitSeq(string(head), "\r\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || !isToken(name) || strings.ContainsAny(line, "\r\n\x00") {
			return bad("a malformed part header")
		}
		value = strings.Trim(value, " \t")
		switch strings.ToLower(name) {
		case "content-disposition":
			if seenCD {
				return bad("a part with two Content-Disposition headers")
			}
			seenCD = true
			if err := parseDisposition(value, &f); err != nil {
				return field{}, err
			}
		case "content-type":
			if seenCT {
				return bad("a part with two Content-Type headers")
			}
			seenCT = true
			mt, params, err := parseMediaType(value)
			if err != nil {
				return field{}, err
			}
			f.ctype = value
			if mt == "text/plain" && onlyUTF8(params) == nil {
				f.ctype = "" // a value's default; kept only for files
			} else if !strings.Contains(value, "/") {
				return bad("a malformed part Content-Type")
			}
		default:
			return bad("a part header other than Content-Disposition and Content-Type")
		}
	}
	if !seenCD {
		return bad("a part without Content-Disposition")
	}
	if !f.file {
		if f.ctype != "" {
			// Werkzeug decodes a value in the charset its part names.
			return bad("a value part with a Content-Type other than text/plain; charset=utf-8")
		}
		f.value = string(content)
		if strings.IndexByte(f.value, 0) >= 0 || !utf8.ValidString(f.value) {
			return bad("a value part with a NUL or not in UTF-8")
		}
	} else {
		f.value = string(content)
	}
	f.keys = nameKeys(f.name)
	return f, nil
}

// parseDisposition reads `form-data; name="x"[; filename="y"]`.
func parseDisposition(v string, f *field) error {
	bad := refusal("multipart: a Content-Disposition other than form-data with a quoted name")
	typ, params, err := parseMediaTypeLike(v)
	if err != nil || typ != "form-data" {
		return bad
	}
	hasName := false
	for _, p := range params {
		switch p.name {
		case "name":
			hasName, f.name = true, p.value
		case "filename":
			f.file, f.filename = true, p.value
		default:
			return bad // name*, filename* (RFC 5987) and the rest
		}
		if !p.quoted {
			return bad
		}
	}
	if !hasName {
		return bad
	}
	if err := checkName(f.name); err != nil {
		return err
	}
	if f.file && (strings.ContainsAny(f.filename, "\"\\\r\n\x00") || !utf8.ValidString(f.filename)) {
		return bad
	}
	return nil
}

type dispParam struct {
	name, value string
	quoted      bool
}

// parseMediaTypeLike reads a Content-Disposition: a token, then parameters
// whose quoted values may hold any character but '"', '\', CR, LF and NUL
// (field names are UTF-8 and may hold ';' or '=').
func parseMediaTypeLike(s string) (string, []dispParam, error) {
	bad := errors.New("bad")
	typ, rest, _ := strings.Cut(s, ";")
	typ = strings.ToLower(strings.TrimSpace(typ))
	if !isToken(typ) {
		return "", nil, bad
	}
	var params []dispParam
	for strings.TrimSpace(rest) != "" {
		rest = strings.TrimLeft(rest, " \t")
		name, after, ok := strings.Cut(rest, "=")
		name = strings.ToLower(name)
		if !ok || !isToken(name) {
			return "", nil, bad
		}
		p := dispParam{name: name}
		if strings.HasPrefix(after, "\"") {
			end := strings.IndexByte(after[1:], '"')
			if end < 0 {
				return "", nil, bad
			}
			p.value, p.quoted, rest = after[1:end+1], true, after[end+2:]
			if strings.ContainsAny(p.value, "\\\r\n\x00") {
				return "", nil, bad
			}
		} else {
			p.value, rest, _ = strings.Cut(after, ";")
			rest = ";" + rest
		}
		rest = strings.TrimLeft(rest, " \t")
		if rest != "" {
			if rest[0] != ';' {
				return "", nil, bad
			}
			rest = rest[1:]
			if strings.TrimSpace(rest) == "" {
				return "", nil, bad
			}
		}
		if slices.ContainsFunc(params, func(q dispParam) bool { return q.name == p.name }) {
			return "", nil, bad // Go refuses a repeated name, PHP takes the last
		}
		params = append(params, p)
	}
	return typ, params, nil
}

// encodeMultipart writes the parts with a boundary derived from their
// content (the same request always encodes alike, so an API client's retry
// has the digest of the approved one) and one canonical header each.
func encodeMultipart(fs []field) (string, []byte) {
	h := sha256.New()
	for _, f := range fs {
		for _, s := range []string{f.name, f.filename, f.ctype, f.value} {
			h.Write([]byte(strconv.Itoa(len(s)) + ":" + s))
		}
	}
	boundary := "stepgate-" + hex.EncodeToString(h.Sum(nil))[:40]
	var b bytes.Buffer
	for _, f := range fs {
		b.WriteString("--" + boundary + "\r\n")
		b.WriteString(`Content-Disposition: form-data; name="` + f.name + `"`)
		if f.file {
			b.WriteString(`; filename="` + f.filename + `"`)
		}
		b.WriteString("\r\n")
		if f.file && f.ctype != "" {
			b.WriteString("Content-Type: " + f.ctype + "\r\n")
		}
		b.WriteString("\r\n")
		b.WriteString(f.value)
		b.WriteString("\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return "multipart/form-data; boundary=" + boundary, b.Bytes()
}

// parseJSON reads one JSON document strictly — UTF-8 without a BOM, no
// unpaired surrogate escape and no \u0000 (PHP's json_decode fails on the
// first, Go reads it as U+FFFD), no object with two keys equal under Unicode
// simple folding (encoding/json matches struct fields so; most parsers keep
// the last), at most maxJSONDepth levels, nothing after it — and returns it
// with its compact canonical encoding.
func parseJSON(body []byte) (any, []byte, error) {
	bad := refusal("a JSON body that does not parse strictly")
	if !utf8.Valid(body) || bytes.HasPrefix(body, []byte("\xef\xbb\xbf")) {
		return nil, nil, bad
	}
	if err := checkEscapes(body); err != nil {
		return nil, nil, err
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var b bytes.Buffer
	doc, err := readJSON(d, &b, 0)
	if err != nil {
		return nil, nil, err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, bad // trailing data: not one document
	}
	return doc, b.Bytes(), nil
}

func readJSON(d *json.Decoder, b *bytes.Buffer, depth int) (any, error) {
	bad := refusal("a JSON body that does not parse strictly")
	if depth > maxJSONDepth {
		return nil, refusal("a JSON body nested deeper than every parser reads")
	}
	t, err := d.Token()
	if err != nil {
		return nil, bad
	}
	switch t := t.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := map[string]any{}
			folded := map[string]bool{}
			b.WriteByte('{')
			for d.More() {
				kt, err := d.Token()
				if err != nil {
					return nil, bad
				}
				k := kt.(string)
				if fk := foldString(k); folded[fk] {
					return nil, refusal("a JSON object with two keys equal ignoring case")
				} else {
					folded[fk] = true
				}
				if len(obj) > 0 {
					b.WriteByte(',')
				}
				writeString(b, k)
				b.WriteByte(':')
				v, err := readJSON(d, b, depth+1)
				if err != nil {
					return nil, err
				}
				obj[k] = v
			}
			if _, err := d.Token(); err != nil {
				return nil, bad
			}
			b.WriteByte('}')
			return obj, nil
		case '[':
			arr := []any{}
			b.WriteByte('[')
			for d.More() {
				if len(arr) > 0 {
					b.WriteByte(',')
				}
				v, err := readJSON(d, b, depth+1)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			if _, err := d.Token(); err != nil {
				return nil, bad
			}
			b.WriteByte(']')
			return arr, nil
		}
		return nil, bad
	case string:
		writeString(b, t)
	case json.Number:
		b.WriteString(string(t))
	case bool:
		b.WriteString(strconv.FormatBool(t))
	case nil:
		b.WriteString("null")
	}
	return t, nil
}

func writeString(b *bytes.Buffer, s string) {
	e := json.NewEncoder(b)
	e.SetEscapeHTML(false)
	_ = e.Encode(s)
	b.Truncate(b.Len() - 1) // Encode's newline
}

// writeJSON writes a parsed value compactly, object members in key order
// (a shown object or array; the canonical body keeps the client's order).
func writeJSON(b *bytes.Buffer, v any) {
	switch v := v.(type) {
	case map[string]any:
		b.WriteByte('{')
		for i, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range v {
				if !yield(k) {
					return
				}
			}
		}) {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(b, k)
			b.WriteByte(':')
			writeJSON(b, v[k])
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSON(b, e)
		}
		b.WriteByte(']')
	case string:
		writeString(b, v)
	case json.Number:
		b.WriteString(string(v))
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case nil:
		b.WriteString("null")
	}
}

// checkEscapes refuses \u0000 and unpaired UTF-16 surrogate escapes inside
// JSON strings.
func checkEscapes(body []byte) error {
	inString := false
	for i := 0; i < len(body); i++ {
		c := body[i]
		if !inString {
			inString = c == '"'
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if i+1 < len(body) && body[i+1] == 'u' {
				r, ok := hex4(body, i+2)
				if !ok {
					return nil // the decoder refuses it
				}
				switch {
				case r == 0:
					return refusal("a JSON string with \\u0000")
				case r >= 0xd800 && r < 0xdc00:
					lo, ok := hex4(body, i+8)
					if !ok || body[i+6] != '\\' || body[i+7] != 'u' || lo < 0xdc00 || lo > 0xdfff {
						return refusal("a JSON string with an unpaired surrogate")
					}
					i += 6
				case r >= 0xdc00 && r <= 0xdfff:
					return refusal("a JSON string with an unpaired surrogate")
				}
				i += 5
			} else {
				i++
			}
		}
	}
	return nil
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[i:i+4]), 16, 16)
	return rune(v), err == nil
}
