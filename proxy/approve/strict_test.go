package approve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/store"
)

const (
	formType = "application/x-www-form-urlencoded"
	jsonType = "application/json"
)

func src(t testing.TB, s string) rules.Field {
	t.Helper()
	f, err := rules.ParseSource(s)
	if err != nil {
		t.Fatal(err)
	}
	return rules.Field{Label: s, From: f}
}

// mp builds a multipart body by hand, so that a test controls every byte:
// parts are "HEADERS\r\n\r\nCONTENT" with headers joined by \r\n.
func mp(boundary string, parts ...string) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		b.WriteString("--" + boundary + "\r\n" + p + "\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return b.Bytes()
}

// strictCase is one request an approve rule holds: refused, or shown as want.
type strictCase struct {
	name   string
	query  string
	ctype  []string // Content-Type lines; nil: none
	header http.Header
	body   string
	fields []string // sources the rule shows
	want   []string // the values shown, in fields' order; nil: refused
}

func (c strictCase) run(t *testing.T) {
	t.Helper()
	h := http.Header{}
	for k, vs := range c.header {
		h[k] = vs
	}
	if c.ctype != nil {
		h["Content-Type"] = c.ctype
	}
	q := &Request{Method: "POST", Path: "/pay", Match: "/pay", RawQuery: c.query, ContentType: h.Get("Content-Type"), Body: []byte(c.body)}
	var fs []rules.Field
	for _, f := range c.fields {
		fs = append(fs, src(t, f))
	}
	err := q.Canonicalize(h, fs, false)
	if c.want == nil {
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("Canonicalize = %v, want a refusal", err)
		}
		if strings.Contains(err.Error(), "9999") || strings.Contains(err.Error(), "EVIL") {
			t.Fatalf("the refusal names a value: %v", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Canonicalize refused a plain request: %v", err)
	}
	for i, f := range fs {
		got, ok := q.Value(f.From)
		if want := c.want[i]; got != want || (want != "" && !ok) {
			t.Errorf("%s = %q (found %v), want %q", c.fields[i], got, ok, want)
		}
	}
	// The canonical request reads the same to Go's own parsers.
	checkWithGo(t, q, fs, c.want)
}

// checkWithGo reads the canonical request with net/http's parsers and
// compares each shown form or query value.
func checkWithGo(t *testing.T, q *Request, fs []rules.Field, want []string) {
	t.Helper()
	r, err := http.NewRequest("POST", "http://app/pay?"+q.RawQuery, bytes.NewReader(q.Body))
	if err != nil {
		t.Fatal(err)
	}
	if q.ContentType != "" {
		r.Header.Set("Content-Type", q.ContentType)
	}
	if strings.HasPrefix(q.ContentType, "multipart/") {
		if err := r.ParseMultipartForm(1 << 20); err != nil {
			t.Fatalf("the canonical multipart body does not parse: %v", err)
		}
	} else if err := r.ParseForm(); err != nil {
		t.Fatalf("the canonical request does not parse: %v", err)
	}
	for i, f := range fs {
		var got string
		switch f.From.Kind {
		case rules.FromForm:
			got = r.PostFormValue(f.From.Name)
		case rules.FromQuery:
			got = r.URL.Query().Get(f.From.Name)
		default:
			continue
		}
		if got != want[i] {
			t.Errorf("Go reads %s of the canonical request as %q, want %q", f.From, got, want[i])
		}
	}
}

var ok5 = []string{"5"}

func TestStrictGrammar(t *testing.T) {
	for _, c := range strictCorpus() {
		t.Run(c.name, c.run)
	}
}

// strictCorpus is the adversarial corpus of docs/design.md §14.2: each
// case is refused, or shown as want. The parser matrix (matrix_test.go)
// sends every accepted one to real application parsers.
func strictCorpus() []strictCase {
	form := []string{formType}
	mpCT := []string{"multipart/form-data; boundary=XyZ"}
	js := []string{jsonType}
	cases := []strictCase{
		// What a plain client sends is held and shown.
		{name: "a plain urlencoded form", ctype: form, body: "amount=5&payee=ACME+GmbH", fields: []string{"form.amount", "form.payee"}, want: []string{"5", "ACME GmbH"}},
		{name: "a charset of utf-8 in any case", ctype: []string{formType + "; charset=UTF-8"}, body: "amount=5", fields: []string{"form.amount"}, want: ok5},
		{name: "a raw space (curl -d)", ctype: form, body: "payee=ACME GmbH", fields: []string{"form.payee"}, want: []string{"ACME GmbH"}},
		{name: "a missing optional field", ctype: form, body: "amount=5", fields: []string{"form.note"}, want: []string{""}},
		{name: "repeated fields the rule does not show", ctype: form, body: "amount=5&tag=a&tag=b&items[]=1&items[]=2", fields: []string{"form.amount"}, want: ok5},
		{name: "a query value", query: "ref=INV-7", fields: []string{"query.ref"}, want: []string{"INV-7"}},
		{name: "a multipart value", ctype: mpCT, body: string(mp("XyZ", `Content-Disposition: form-data; name="amount"`+"\r\n\r\n5")), fields: []string{"form.amount"}, want: ok5},
		{name: "a browser's empty file input", ctype: mpCT, body: string(mp("XyZ", `Content-Disposition: form-data; name="amount"`+"\r\n\r\n5", `Content-Disposition: form-data; name="receipt"; filename=""`+"\r\nContent-Type: application/octet-stream\r\n\r\n")), fields: []string{"form.amount"}, want: ok5},
		{name: "a value part declared text/plain utf-8", ctype: mpCT, body: string(mp("XyZ", "Content-Disposition: form-data; name=\"amount\"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n5")), fields: []string{"form.amount"}, want: ok5},
		{name: "a JSON body", ctype: js, body: `{"amount": 5, "payee": {"name": "ACME"}}`, fields: []string{"json./amount", "json./payee/name"}, want: []string{"5", "ACME"}},
		{name: "a JSON decimal", ctype: []string{"application/json; charset=utf-8"}, body: `{"amount": 500.10}`, fields: []string{"json./amount"}, want: []string{"500.10"}},
		{name: "a vendor JSON type (Express reads only application/json)", ctype: []string{"application/vnd.api+json"}, body: `{"items":[{"id":7}]}`, fields: []string{"json./items/0/id"}},
		{name: "an opaque body with path-only fields", ctype: []string{"application/xml"}, body: "<a/>", fields: []string{"path"}, want: []string{"/pay"}},

		// 1. Field-name folding: names that differ for Go are one field
		// for PHP, Rack or qs.
		{name: "PHP cuts a name at NUL", ctype: form, body: "amount=5&amount%00x=9999", fields: []string{"form.amount"}},
		{name: "PHP drops leading spaces", ctype: form, body: "amount=5&%20amount=9999", fields: []string{"form.amount"}},
		{name: "PHP reads . as _", ctype: form, body: "pay_to=ACME&pay.to=EVIL", fields: []string{"form.pay_to"}},
		{name: "PHP reads a space as _", ctype: form, body: "pay_to=ACME&pay+to=EVIL", fields: []string{"form.pay_to"}},
		{name: "PHP reads an unclosed [ as _", ctype: form, body: "pay_to=ACME&pay%5Bto=EVIL", fields: []string{"form.pay_to"}},
		{name: "PHP, qs and Rack read a[x] as a", ctype: form, body: "amount=5&amount%5Bx%5D=9999", fields: []string{"form.amount"}},
		{name: "an array of the shown name", ctype: form, body: "amount[]=5", fields: []string{"form.amount"}},
		{name: "Rack and qs read [a] as a", ctype: form, body: "amount=5&%5Bamount%5D=9999", fields: []string{"form.amount"}},
		{name: "Rack reads ]a as a", ctype: form, body: "amount=5&%5Damount=9999", fields: []string{"form.amount"}},
		{name: "a name in another case", ctype: form, body: "amount=5&AMOUNT=9999", fields: []string{"form.amount"}},
		{name: "a name folding to the shown one (Kelvin sign)", ctype: form, body: "kind=a&%E2%84%AAind=b", fields: []string{"form.kind"}},
		{name: "the shown name only in another spelling", ctype: form, body: "Amount=9999", fields: []string{"form.amount"}},
		{name: "query names fold alike", query: "ref=1&ref%00=2", fields: []string{"query.ref"}},
		{name: "an escaped repeat", ctype: form, body: "amount=5&%61mount=9999", fields: []string{"form.amount"}},
		{name: "a plain repeat", ctype: form, body: "amount=5&amount=9999", fields: []string{"form.amount"}},
		{name: "a padded name", ctype: form, body: "amount%20=9999", fields: []string{"form.note"}},
		{name: "an invisible character in a name", ctype: form, body: "amo%E2%80%8Bunt=9999", fields: []string{"form.note"}},

		// 2. Multipart parts a lenient parser reads and Go skipped.
		{name: "another disposition type", ctype: mpCT, body: string(mp("XyZ", `Content-Disposition: form-data; name="amount"`+"\r\n\r\n5", `Content-Disposition: attachment; name="amount"`+"\r\n\r\n9999")), fields: []string{"form.amount"}},
		{name: "a repeated name parameter", ctype: mpCT, body: string(mp("XyZ", `Content-Disposition: form-data; name="x"; name="amount"`+"\r\n\r\n9999")), fields: []string{"form.amount"}},
		{name: "trailing junk in the disposition", ctype: mpCT, body: string(mp("XyZ", `Content-Disposition: form-data; name="amount"; junk`+"\r\n\r\n9999")), fields: []string{"form.amount"}},
		{name: "an unquoted name", ctype: mpCT, body: string(mp("XyZ", `Content-Disposition: form-data; name=amount`+"\r\n\r\n9999")), fields: []string{"form.amount"}},
		{name: "an RFC 5987 name", ctype: mpCT, body: string(mp("XyZ", `Content-Disposition: form-data; name*=UTF-8''amount`+"\r\n\r\n9999")), fields: []string{"form.amount"}},
		{name: "a backslash in a quoted name", ctype: mpCT, body: string(mp("XyZ", `Content-Disposition: form-data; name="amo\"unt"`+"\r\n\r\n9999")), fields: []string{"form.amount"}},
		{name: "a transfer encoding Go decodes", ctype: mpCT, body: string(mp("XyZ", "Content-Disposition: form-data; name=\"amount\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=39999")), fields: []string{"form.amount"}},
		{name: "two dispositions in one part", ctype: mpCT, body: string(mp("XyZ", "Content-Disposition: form-data; name=\"amount\"\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n5")), fields: []string{"form.amount"}},
		{name: "a value part in another charset", ctype: mpCT, body: string(mp("XyZ", "Content-Disposition: form-data; name=\"payee\"\r\nContent-Type: text/plain; charset=utf-7\r\n\r\nACME")), fields: []string{"form.payee"}},
		{name: "a part's Content-Type with an empty parameter (Rack 2.2 answers 500)", ctype: mpCT, body: string(mp("XyZ", "Content-Disposition: form-data; name=\"amount\"\r\nContent-Type: text/plain; \r\n\r\n5")), fields: []string{"form.amount"}},
		{name: "a Content-Type ending in ';'", ctype: []string{formType + ";"}, body: "amount=5", fields: []string{"form.amount"}},
		{name: "a folded part header", ctype: mpCT, body: string(mp("XyZ", "Content-Disposition: form-data;\r\n name=\"amount\"\r\n\r\n5")), fields: []string{"form.amount"}},
		{name: "a preamble", ctype: mpCT, body: "junk\r\n" + string(mp("XyZ", `Content-Disposition: form-data; name="amount"`+"\r\n\r\n5")), fields: []string{"form.amount"}},
		{name: "data after the closing boundary", ctype: mpCT, body: string(mp("XyZ", `Content-Disposition: form-data; name="amount"`+"\r\n\r\n5")) + "--XyZ\r\nContent-Disposition: form-data; name=\"amount\"\r\n\r\n9999", fields: []string{"form.amount"}},
		{name: "the boundary inside a value", ctype: mpCT, body: string(mp("XyZ", `Content-Disposition: form-data; name="note"`+"\r\n\r\nx\n--XyZ\nContent-Disposition: form-data; name=\"amount\"\n\n9999")), fields: []string{"form.amount"}},
		{name: "no closing boundary", ctype: mpCT, body: "--XyZ\r\nContent-Disposition: form-data; name=\"amount\"\r\n\r\n5", fields: []string{"form.amount"}},
		{name: "a shown name that is also a file", ctype: mpCT, body: string(mp("XyZ", `Content-Disposition: form-data; name="amount"`+"\r\n\r\n5", `Content-Disposition: form-data; name="amount"; filename="a.txt"`+"\r\n\r\n9999")), fields: []string{"form.amount"}},

		// 3. Boundary confusion.
		{name: "a parameter containing boundary before boundary", ctype: []string{"multipart/form-data; xboundary=AAA; boundary=XyZ"}, body: string(mp("XyZ", `Content-Disposition: form-data; name="amount"`+"\r\n\r\n5")), fields: []string{"form.amount"}},
		{name: "a quoted boundary with ';' (Rack reads the part before it)", ctype: []string{`multipart/form-data; boundary="X;Y"`}, body: "--X;Y\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n--X\r\nContent-Disposition: form-data; name=\"amount\"\r\n\r\n9999\r\n--X--\r\n--X;Y\r\nContent-Disposition: form-data; name=\"amount\"\r\n\r\n5\r\n--X;Y--\r\n", fields: []string{"form.amount"}},
		{name: "a quoted boundary with ','", ctype: []string{`multipart/form-data; boundary="X,Y"`}, body: "--X,Y\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n--X\r\nContent-Disposition: form-data; name=\"amount\"\r\n\r\n9999\r\n--X--\r\n--X,Y\r\nContent-Disposition: form-data; name=\"amount\"\r\n\r\n5\r\n--X,Y--\r\n", fields: []string{"form.amount"}},
		{name: "two boundaries", ctype: []string{"multipart/form-data; boundary=XyZ; boundary=AAA"}, body: string(mp("XyZ", `Content-Disposition: form-data; name="amount"`+"\r\n\r\n5")), fields: []string{"form.amount"}},
		{name: "a charset beside the boundary", ctype: []string{"multipart/form-data; charset=utf-8; boundary=XyZ"}, body: string(mp("XyZ", `Content-Disposition: form-data; name="amount"`+"\r\n\r\n5")), fields: []string{"form.amount"}},
		{name: "multipart/mixed", ctype: []string{"multipart/mixed; boundary=XyZ"}, body: string(mp("XyZ", `Content-Disposition: form-data; name="amount"`+"\r\n\r\n5")), fields: []string{"path"}},

		// 4. The same field in the query and the body.
		{name: "a form field also in the query", query: "amount=9999", ctype: form, body: "amount=5", fields: []string{"form.amount"}},
		{name: "a form field only in the query", query: "amount=9999", ctype: form, body: "payee=ACME", fields: []string{"form.amount"}},
		{name: "a query field also in the body", query: "ref=1", ctype: form, body: "ref=2", fields: []string{"query.ref"}},
		{name: "a JSON member also in the query", query: "amount=9999", ctype: js, body: `{"amount":5}`, fields: []string{"json./amount"}},
		{name: "a shown query field also a JSON member (Laravel's input() takes the body's)", query: "ref=INV-7", ctype: js, body: `{"REF":"EVIL"}`, fields: []string{"query.ref"}},
		{name: "a shown query field absent but a JSON member (Laravel's input() reads it)", ctype: js, body: `{"ref":"EVIL"}`, fields: []string{"query.ref"}},
		{name: "a shown query field beside an unrelated JSON body", query: "ref=INV-7", ctype: js, body: `{"amount":5}`, fields: []string{"query.ref"}, want: []string{"INV-7"}},
		{name: "a form field from a JSON body", ctype: js, body: `{"amount":9999}`, fields: []string{"form.amount"}},
		{name: "a JSON value from a form body", ctype: form, body: "amount=9999", fields: []string{"json./amount"}},

		// 5. JSON key folding.
		{name: "JSON keys equal ignoring case", ctype: js, body: `{"amount":5,"AMOUNT":9999}`, fields: []string{"json./amount"}},
		{name: "JSON keys equal under simple folding (long s)", ctype: js, body: `{"ssn":"1","\u017fsn":"2"}`, fields: []string{"json./ssn"}},
		{name: "JSON keys equal under simple folding (Kelvin)", ctype: js, body: `{"k":5,"\u212a":9999}`, fields: []string{"json./k"}},
		{name: "a JSON duplicate deep in an array", ctype: js, body: `{"amount":5,"c":[{"x":1,"x":2}]}`, fields: []string{"json./amount"}},
		{name: "the shown member only in another case", ctype: js, body: `{"Amount":9999}`, fields: []string{"json./amount"}},

		// 6. Two Content-Type lines.
		{name: "two Content-Type lines", ctype: []string{formType, jsonType}, body: "amount=5", fields: []string{"form.amount"}},
		{name: "a Content_Type spelling", ctype: form, header: http.Header{"Content_type": {jsonType}}, body: "amount=5", fields: []string{"form.amount"}},
		{name: "a compressed body", ctype: js, header: http.Header{"Content-Encoding": {"gzip"}}, body: `{"amount":5}`, fields: []string{"json./amount"}},

		// 7. An unreadable body is refused, never shown as missing.
		{name: "a bad escape", ctype: form, body: "amount=5&payee=%zz", fields: []string{"form.amount"}},
		{name: "a ; separator", ctype: form, body: "amount=5;amount=9999", fields: []string{"form.amount"}},
		{name: "an unterminated charset quote", ctype: []string{formType + `; charset="utf-8`}, body: "amount=5", fields: []string{"form.amount"}},
		{name: "another charset", ctype: []string{formType + "; charset=iso-8859-1"}, body: "amount=5", fields: []string{"form.amount"}},
		{name: "a JSON BOM", ctype: js, body: "\ufeff{\"amount\":5}", fields: []string{"json./amount"}},
		{name: "JSON NaN", ctype: js, body: `{"amount":NaN}`, fields: []string{"json./amount"}},
		{name: "JSON trailing data", ctype: js, body: `{"amount":5}{"amount":9999}`, fields: []string{"json./amount"}},
		{name: "JSON invalid UTF-8", ctype: js, body: "{\"payee\":\"\xff\"}", fields: []string{"json./payee"}},
		{name: "a JSON unpaired surrogate", ctype: js, body: `{"payee":"\ud800"}`, fields: []string{"json./payee"}},
		{name: "a JSON NUL escape", ctype: js, body: `{"payee":"A\u0000B"}`, fields: []string{"json./payee"}},
		{name: "a form value not in UTF-8", ctype: form, body: "payee=%FF", fields: []string{"form.payee"}},
		{name: "a body without a Content-Type", body: "amount=9999", fields: []string{"path"}},
		{name: "a Content-Type that does not parse", ctype: []string{"form"}, body: "amount=5", fields: []string{"form.amount"}},
		{name: "a raw control byte", ctype: form, body: "amount=5\x01", fields: []string{"form.amount"}},
		{name: "a field without = (Rack reads nil)", ctype: form, body: "amount", fields: []string{"form.amount"}},
		{name: "a ]= after the = (qs ends the name there)", ctype: form, body: "amount=]=", fields: []string{"form.amount"}},
		{name: "an escaped ]= after the = (qs unescapes brackets first)", ctype: form, body: "amount=5Bamount%5D=9999", fields: []string{"form.amount"}},

		// Numbers are shown as the application reads them, or refused.
		{name: "5e3", ctype: form, body: "amount=5e3", fields: []string{"form.amount"}},
		{name: "0.05e5", ctype: form, body: "amount=0.05e5", fields: []string{"form.amount"}},
		{name: "a hex number", ctype: form, body: "amount=0x1F4", fields: []string{"form.amount"}},
		{name: "digit grouping with _", ctype: form, body: "amount=1_000", fields: []string{"form.amount"}},
		{name: "Infinity", ctype: form, body: "amount=-Infinity", fields: []string{"form.amount"}},
		{name: "fullwidth digits", ctype: form, body: "amount=%EF%BC%95%EF%BC%90%EF%BC%90", fields: []string{"form.amount"}},
		{name: "a JSON exponent", ctype: js, body: `{"amount":5e3}`, fields: []string{"json./amount"}},
		{name: "a JSON number past a double's precision", ctype: js, body: `{"amount":12345678901234567}`, fields: []string{"json./amount"}},
		{name: "a plain decimal with cents", ctype: form, body: "amount=5000.25", fields: []string{"form.amount"}, want: []string{"5000.25"}},
		{name: "a word that starts like a number", ctype: form, body: "payee=3e+Partners", fields: []string{"form.payee"}, want: []string{"3e Partners"}},
		{name: "an exponent before a word (PHP reads 300000)", ctype: form, body: "amount=3e5+EUR", fields: []string{"form.amount"}},
		{name: "a name that is not a number", ctype: form, body: "payee=Eve+Ltd", fields: []string{"form.payee"}, want: []string{"Eve Ltd"}},

		// Characters a person cannot see.
		{name: "a bidi override", ctype: form, body: "payee=%E2%80%AEEMCA", fields: []string{"form.payee"}},
		{name: "a zero-width space", ctype: form, body: "amount=5%E2%80%8B000", fields: []string{"form.amount"}},
		{name: "a soft hyphen", ctype: form, body: "payee=AC%C2%ADME", fields: []string{"form.payee"}},
		{name: "a tag character", ctype: form, body: "payee=ACME%F3%A0%81%81", fields: []string{"form.payee"}},
		{name: "a Hangul filler", ctype: form, body: "payee=%E3%85%A4", fields: []string{"form.payee"}},
		{name: "a variation selector", ctype: form, body: "payee=ACME%EF%B8%8F", fields: []string{"form.payee"}},
		{name: "a JSON string with an invisible character", ctype: js, body: `{"payee":"AC\u2066ME"}`, fields: []string{"json./payee"}},
		{name: "a value with a line break is shown", ctype: form, body: "note=a%0Ab", fields: []string{"form.note"}, want: []string{"a\nb"}},

		// Method override.
		{name: "_method in the body", ctype: form, body: "amount=5&_method=DELETE", fields: []string{"form.amount"}},
		{name: "_method in the query", query: "_method=DELETE", ctype: form, body: "amount=5", fields: []string{"form.amount"}},
		{name: "_method folded", ctype: form, body: "amount=5&_METHOD=DELETE", fields: []string{"form.amount"}},
		{name: "_method in a JSON body", ctype: js, body: `{"amount":5,"_method":"DELETE"}`, fields: []string{"json./amount"}},
		{name: "_method in a multipart body", ctype: mpCT, body: string(mp("XyZ", `Content-Disposition: form-data; name="_method"`+"\r\n\r\nDELETE")), fields: []string{"path"}},
	}
	return append(cases, generatedCorpus()...)
}

// generatedCorpus multiplies the name and value attacks over every place a
// field can travel: an urlencoded body, a multipart body, the query.
func generatedCorpus() []strictCase {
	var out []strictCase
	names := []string{
		"amount%00", "%20amount", "amount%5B%5D", "amount[x]", "amount[", "amount]", "[amount]", "]amount", "[[amount",
		"AMOUNT", "Amount", "amount%C2%A0", "amo%C2%ADunt", "amount%E2%80%8B",
	}
	for _, n := range names {
		plain, _ := formUnescape(n)
		out = append(out,
			strictCase{name: "urlencoded body: amount and " + n, ctype: []string{formType}, body: "amount=5&" + n + "=9999", fields: []string{"form.amount"}},
			strictCase{name: "query: amount and " + n, query: "amount=5&" + n + "=9999", fields: []string{"query.amount"}},
			strictCase{name: "query " + n + " beside a body amount", query: n + "=9999", ctype: []string{formType}, body: "amount=5", fields: []string{"form.amount"}},
			strictCase{name: "multipart: amount and " + n, ctype: []string{"multipart/form-data; boundary=b0"},
				body: string(mp("b0", `Content-Disposition: form-data; name="amount"`+"\r\n\r\n5", `Content-Disposition: form-data; name="`+plain+`"`+"\r\n\r\n9999")), fields: []string{"form.amount"}},
		)
	}
	// Look-alike names are other fields to every parser (none folds
	// compatibility characters): they pass, and amount is the one shown.
	for _, n := range []string{"%EF%BD%81mount", "am%C6%A1unt", "amount_", "amounts", "amount-"} {
		out = append(out, strictCase{name: "urlencoded body: amount and the look-alike " + n, ctype: []string{formType}, body: "amount=5&" + n + "=9999", fields: []string{"form.amount"}, want: []string{"5"}})
	}
	// Values a person reads as one number and a parser as another, or
	// cannot see; and values that must pass.
	values := []struct {
		v    string
		want string // "": refused
	}{
		{"5e3", ""}, {"5E3", ""}, {"5e%2B3", ""}, {"0.05e5", ""}, {".5e4", ""}, {"5.e3", ""}, {"+5e3", ""}, {" 5e3", ""},
		{"0x1388", ""}, {"0X1388", ""}, {"0b1", ""}, {"0o17", ""}, {"5_000", ""}, {"inf", ""}, {"NaN", ""}, {"-infinity", ""},
		{"%D9%A5%D9%A0%D9%A0", ""}, {"5%E2%80%8B000", ""}, {"%E2%80%AE0005", ""}, {"5%C2%AD000", ""}, {"5%EF%B8%8F", ""},
		{"500", "500"}, {"500.00", "500.00"}, {"-5", "-5"}, {"0005", "0005"}, {"5,000", "5,000"}, {"EUR", "EUR"}, {"e5", "e5"},
		{"%C3%A9t%C3%A9", "été"}, {"ACME%20GmbH", "ACME GmbH"}, {"O%27Brien+%26+Sons", "O'Brien & Sons"}, {"%E4%B8%AD%E6%96%87", "中文"},
	}
	for _, v := range values {
		var want []string
		if v.want != "" {
			want = []string{v.want}
		}
		plain, _ := formUnescape(v.v)
		out = append(out,
			strictCase{name: "urlencoded value " + v.v, ctype: []string{formType}, body: "amount=" + v.v, fields: []string{"form.amount"}, want: want},
			strictCase{name: "multipart value " + v.v, ctype: []string{"multipart/form-data; boundary=b0"},
				body: string(mp("b0", `Content-Disposition: form-data; name="amount"`+"\r\n\r\n"+plain)), fields: []string{"form.amount"}, want: want},
		)
		if !strings.ContainsAny(v.v, "%+ ") {
			out = append(out, strictCase{name: "query value " + v.v, query: "amount=" + v.v, fields: []string{"query.amount"}, want: want})
		}
	}
	return out
}

func TestCanonicalEncoding(t *testing.T) {
	tests := []struct {
		name            string
		query, ctype    string
		body            string
		wantQuery       string
		wantType        string
		wantBody        string
		wantBodyPattern func(string) bool
	}{
		{name: "urlencoded: one escape per byte, %20 for a space, empty pairs dropped", query: "a=x+y&&b=%7e", ctype: formType + "; charset=UTF-8", body: "amount=5&payee=ACME+G%6dbH&&x=",
			wantQuery: "a=x%20y&b=~", wantType: formType, wantBody: "amount=5&payee=ACME%20GmbH&x="},
		{name: "JSON: compact, order kept", ctype: "application/json; charset=utf-8", body: "{ \"b\": [1, 2.50 ],\n \"a\": \"<\\u00e9>\" }",
			wantType: jsonType, wantBody: `{"b":[1,2.50],"a":"<é>"}`},
		{name: "opaque: as sent", ctype: "text/plain; charset=us-ascii", body: "hello", wantType: "text/plain; charset=us-ascii", wantBody: "hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"Content-Type": {tt.ctype}}
			q := &Request{RawQuery: tt.query, ContentType: tt.ctype, Body: []byte(tt.body)}
			if err := q.Canonicalize(h, nil, false); err != nil {
				t.Fatal(err)
			}
			if q.RawQuery != tt.wantQuery || q.ContentType != tt.wantType || string(q.Body) != tt.wantBody || h.Get("Content-Type") != tt.wantType {
				t.Errorf("got %q %q %q (header %q), want %q %q %q", q.RawQuery, q.ContentType, q.Body, h.Get("Content-Type"), tt.wantQuery, tt.wantType, tt.wantBody)
			}
		})
	}

	t.Run("multipart: a fresh boundary derived from the content, one header per part", func(t *testing.T) {
		body := mp("XyZ", "Content-Disposition: form-data; name=\"amount\"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n5",
			"content-disposition: form-data;name=\"doc\";  filename=\"r.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF")
		canon := func() *Request {
			q := &Request{ContentType: "multipart/form-data; boundary=XyZ", Body: body}
			if err := q.Canonicalize(http.Header{}, []rules.Field{src(t, "form.amount")}, false); err != nil {
				t.Fatal(err)
			}
			return q
		}
		q := canon()
		_, params, err := mime.ParseMediaType(q.ContentType)
		if err != nil || !strings.HasPrefix(params["boundary"], "stepgate-") {
			t.Fatalf("Content-Type %q", q.ContentType)
		}
		want := "--" + params["boundary"] + "\r\nContent-Disposition: form-data; name=\"amount\"\r\n\r\n5\r\n--" + params["boundary"] +
			"\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"r.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--" + params["boundary"] + "--\r\n"
		if string(q.Body) != want {
			t.Errorf("body:\n%q\nwant\n%q", q.Body, want)
		}
		if again := canon(); again.ContentType != q.ContentType || !bytes.Equal(again.Body, q.Body) {
			t.Error("the same request encodes two ways: an API client's retry would not match its approval")
		}
		mr := multipart.NewReader(bytes.NewReader(q.Body), params["boundary"])
		p, err := mr.NextPart()
		if err != nil || p.FormName() != "amount" {
			t.Fatalf("Go's reader: %v", err)
		}
		if b, _ := io.ReadAll(p); string(b) != "5" {
			t.Errorf("Go reads amount as %q", b)
		}
	})

	t.Run("original keeps the client's bytes once they pass", func(t *testing.T) {
		h := http.Header{"Content-Type": {formType}}
		q := &Request{RawQuery: "a=x+y", ContentType: formType, Body: []byte("amount=5&payee=ACME+GmbH")}
		if err := q.Canonicalize(h, []rules.Field{src(t, "form.amount")}, true); err != nil {
			t.Fatal(err)
		}
		if q.RawQuery != "a=x+y" || string(q.Body) != "amount=5&payee=ACME+GmbH" {
			t.Errorf("original changed: %q %q", q.RawQuery, q.Body)
		}
		q = &Request{ContentType: formType, Body: []byte("amount=5&amount%00=9999")}
		if err := q.Canonicalize(http.Header{"Content-Type": {formType}}, []rules.Field{src(t, "form.amount")}, true); !errors.Is(err, ErrRefused) {
			t.Errorf("original skipped the strict grammar: %v", err)
		}
	})
}

func TestApplyRewritesTheForwardedRequest(t *testing.T) {
	r, _ := http.NewRequest("POST", "http://gw/pay?x=a+b", strings.NewReader("amount=5&payee=A+B"))
	r.Header.Set("Content-Type", formType+"; charset=utf-8")
	q := &Request{Method: "POST", Path: "/pay", Match: "/pay", RawQuery: "x=a+b", ContentType: r.Header.Get("Content-Type"), Body: []byte("amount=5&payee=A+B")}
	if err := q.Canonicalize(r.Header, nil, false); err != nil {
		t.Fatal(err)
	}
	q.Apply(r)
	b, _ := io.ReadAll(r.Body)
	if string(b) != "amount=5&payee=A%20B" || r.ContentLength != int64(len(b)) || r.URL.RawQuery != "x=a%20b" ||
		r.Header.Get("Content-Type") != formType || r.RequestURI != "/pay?x=a%20b" {
		t.Errorf("forwarded %q %d %q %q %q", b, r.ContentLength, r.URL.RawQuery, r.Header.Get("Content-Type"), r.RequestURI)
	}
}

func TestAnApprovalOutlivesADigestKeyRoll(t *testing.T) {
	s := store.NewMemory(store.MemoryOptions{})
	oldKey, newKey := []byte("key before the roll"), []byte("key after the roll")
	q := &Request{User: "alice", Method: "POST", Path: "/pay", ContentType: formType, Body: []byte("amount=5")}
	before := New(s, [][]byte{oldKey}, 0, nil)
	ctx := context.Background()
	if err := s.Approve(ctx, before.Digest(q), rules.DefaultApproveTTL); err != nil {
		t.Fatal(err)
	}
	after := New(s, [][]byte{newKey, oldKey}, 0, nil)
	ok, d, _, err := after.Consume(ctx, q)
	if err != nil || !ok || d != before.Digest(q) {
		t.Fatalf("after the roll: used %v, digest %q, err %v", ok, d, err)
	}
	if ok, _, _, _ := after.Consume(ctx, q); ok {
		t.Fatal("the approval was used twice")
	}
}

// FuzzStrictGrammar: whatever Canonicalize accepts, its canonical form is
// accepted again and is a fixed point (encoding what was parsed changes
// nothing), and Go's parsers read each field as stepgate does.
func FuzzStrictGrammar(f *testing.F) {
	f.Add("a=1", formType, []byte("amount=5&payee=ACME+GmbH"))
	f.Add("", "multipart/form-data; boundary=XyZ", mp("XyZ", `Content-Disposition: form-data; name="amount"`+"\r\n\r\n5"))
	f.Add("", jsonType, []byte(`{"amount":5,"payee":{"name":"ACME"},"l":[1,true,null]}`))
	f.Add("x=%41", formType+"; charset=utf-8", []byte("a[b]=1&a%5Bc%5D=2&+x=3"))
	f.Fuzz(func(t *testing.T, query, ctype string, body []byte) {
		fields := []rules.Field{src(t, "form.amount"), src(t, "query.a"), src(t, "json./amount")}
		h := http.Header{"Content-Type": {ctype}}
		q := &Request{RawQuery: query, ContentType: ctype, Body: body}
		if err := q.Canonicalize(h, fields, false); err != nil {
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("a refusal that is not ErrRefused: %v", err)
			}
			return
		}
		again := &Request{RawQuery: q.RawQuery, ContentType: q.ContentType, Body: q.Body}
		if err := again.Canonicalize(http.Header{"Content-Type": {q.ContentType}}, fields, false); err != nil {
			t.Fatalf("the canonical form is refused: %v\n%q %q %q", err, q.RawQuery, q.ContentType, q.Body)
		}
		if again.RawQuery != q.RawQuery || again.ContentType != q.ContentType || !bytes.Equal(again.Body, q.Body) {
			t.Fatalf("canonical form is not a fixed point:\n%q %q %q\n%q %q %q", q.RawQuery, q.ContentType, q.Body, again.RawQuery, again.ContentType, again.Body)
		}
		if vs, err := url.ParseQuery(q.RawQuery); err != nil {
			t.Fatalf("Go cannot parse the canonical query %q: %v", q.RawQuery, err)
		} else if v, ok := q.Value(fields[1].From); ok && (len(vs["a"]) != 1 || vs["a"][0] != v) {
			t.Fatalf("query a: stepgate %q, Go %q", v, vs["a"])
		}
		if q.ContentType == jsonType && !json.Valid(q.Body) {
			t.Fatalf("canonical JSON is not JSON: %q", q.Body)
		}
		if q.ContentType == formType || strings.HasPrefix(q.ContentType, "multipart/form-data") {
			r, _ := http.NewRequest("POST", "http://app/", bytes.NewReader(q.Body))
			r.Header.Set("Content-Type", q.ContentType)
			if err := r.ParseMultipartForm(1 << 20); err != nil && !errors.Is(err, http.ErrNotMultipart) {
				t.Fatalf("Go cannot parse the canonical body: %v", err)
			}
			if v, ok := q.Value(fields[0].From); ok && r.PostFormValue("amount") != v {
				t.Fatalf("form amount: stepgate %q, Go %q", v, r.PostFormValue("amount"))
			}
		}
	})
}
