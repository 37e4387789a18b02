//go:build unix

package approve

import (
	"context"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stepgate/stepgate/proxy/approve/parsertest"
	"github.com/stepgate/stepgate/proxy/rules"
)

// The parser matrix (docs/design.md §14.2): every request of the corpus is
// refused by stepgate, or every real application parser — PHP, Flask,
// Django, Express, Rack, Go — reads each shown field as exactly the value
// stepgate showed, and acts on the method the rule matched. Both what
// stepgate forwards (the canonical form) and, for forward=original, the
// client's own bytes are checked.

// matrixRequest is one request as the matrix sends it.
type matrixRequest struct {
	query, ctype string
	header       http.Header
	body         []byte
}

// shown is what stepgate showed for one rule field.
type shown struct {
	src   rules.Source
	value string
	found bool
}

func fieldsOf(ss []shown) parsertest.Fields {
	var f parsertest.Fields
	for _, s := range ss {
		switch s.src.Kind {
		case rules.FromForm:
			f.Form = append(f.Form, s.src.Name)
		case rules.FromQuery:
			f.Query = append(f.Query, s.src.Name)
		case rules.FromJSON:
			f.JSON = append(f.JSON, s.src.Name)
		}
	}
	return f
}

// disagreements lists every accessor of every report that reads a shown
// field otherwise than stepgate showed it, or a method other than POST.
func disagreements(reps []parsertest.Report, ss []shown) []string {
	var out []string
	for _, rep := range reps {
		if rep.Method != "POST" {
			out = append(out, fmt.Sprintf("%s acts on %s", rep.Parser, rep.Method))
		}
		for _, s := range ss {
			var prefixes []string
			switch s.src.Kind {
			case rules.FromForm:
				prefixes = []string{"post.", "request.", "input."}
			case rules.FromQuery:
				prefixes = []string{"get.", "input."}
			case rules.FromJSON:
				prefixes = []string{"json.", "jsonmap."}
			default:
				continue
			}
			for _, pre := range prefixes {
				got, ok := rep.Values[pre+s.src.Name]
				if !ok {
					continue // this parser has no such accessor
				}
				// A framework that refused the request (multer refuses a
				// file where none is expected) acts on nothing.
				if !sameValue(got, s) && (rep.Error == "" || got.Present) {
					out = append(out, fmt.Sprintf("%s %s%s = %s, stepgate showed %q (found %v)", rep.Parser, pre, s.src.Name, got, s.value, s.found))
				}
			}
		}
	}
	return out
}

func sameValue(got parsertest.Value, s shown) bool {
	if !s.found {
		return !got.Present
	}
	if !got.Present {
		return false
	}
	switch got.Kind {
	case "string":
		return got.Text == s.value
	case "number":
		// PHP prints 500.1 for 500.10, Go 5e+06 for 5000000: the same
		// number is what counts.
		a, ok1 := new(big.Rat).SetString(got.Text)
		b, ok2 := new(big.Rat).SetString(s.value)
		return ok1 && ok2 && a.Cmp(b) == 0
	case "bool", "null":
		return got.Text == s.value
	}
	return true // an object or array shown as compact JSON: printed differently by each language
}

type matrixRun struct {
	t       *testing.T
	parsers []*parsertest.Parser
	checked int // requests every parser read as shown
	refused int
}

// check runs one request through Canonicalize and, if it is held, through
// every parser: the canonical form, and with original the client's bytes.
func (m *matrixRun) check(name string, r matrixRequest, srcs []rules.Source) {
	m.t.Helper()
	for _, original := range []bool{false, true} {
		h := http.Header{}
		for k, vs := range r.header {
			h[k] = vs
		}
		if r.ctype != "" {
			h["Content-Type"] = append([]string{r.ctype}, h["Content-Type"]...)
		}
		q := &Request{Method: "POST", Path: "/pay", Match: "/pay", RawQuery: r.query, ContentType: r.ctype, Body: r.body}
		fs := make([]rules.Field, len(srcs))
		for i, s := range srcs {
			fs[i] = rules.Field{Label: s.String(), From: s}
		}
		if err := q.Canonicalize(h, fs, original); err != nil {
			if !original {
				m.refused++
			}
			return
		}
		ss := make([]shown, len(srcs))
		for i, s := range srcs {
			v, ok := q.Value(s)
			ss[i] = shown{src: s, value: v, found: ok}
		}
		req := parsertest.Request{Method: "POST", Path: "/pay", RawQuery: q.RawQuery, ContentType: q.ContentType, Body: q.Body}
		if original {
			req.Header = r.header
		}
		reps, err := parsertest.ParseAll(context.Background(), m.parsers, fieldsOf(ss), req)
		if err != nil {
			m.t.Fatalf("%s: %v", name, err)
		}
		if d := disagreements(reps, ss); len(d) > 0 {
			m.t.Errorf("%s (original bytes %v): stepgate held it, and a parser reads it otherwise:\n  %s\n  request: %q %q %q",
				name, original, strings.Join(d, "\n  "), req.RawQuery, req.ContentType, req.Body)
		}
		if !original {
			m.checked++
		}
	}
}

func TestParserMatrixAgreesWithWhatIsShown(t *testing.T) {
	m := &matrixRun{t: t, parsers: parsertest.Start(t)}
	for _, c := range strictCorpus() {
		var srcs []rules.Source
		for _, f := range c.fields {
			srcs = append(srcs, src(t, f).From)
		}
		h := http.Header{}
		for k, vs := range c.header {
			h[k] = vs
		}
		ctype := ""
		if len(c.ctype) > 0 {
			ctype = c.ctype[0]
			if len(c.ctype) > 1 {
				h["Content-Type"] = c.ctype[1:] // a second line
			}
		}
		m.check(c.name, matrixRequest{query: c.query, ctype: ctype, header: h, body: []byte(c.body)}, srcs)
	}
	t.Logf("corpus: %d requests held and read alike by %d parsers, %d refused", m.checked, len(m.parsers), m.refused)
	if m.checked < 40 || m.refused < 150 {
		t.Errorf("the corpus shrank: %d held, %d refused", m.checked, m.refused)
	}
}

// TestParserMatrixDifferential generates requests from the pieces that
// parsers read differently — names, values, separators, content types,
// multipart headers — and checks every one stepgate holds against every
// parser. STEPGATE_DIFF_SEED and STEPGATE_DIFF_N choose the run (CI runs the
// default seed; a failure names the seed that reproduces it).
func TestParserMatrixDifferential(t *testing.T) {
	seed, n := uint64(2026), 400
	if s, err := strconv.ParseUint(os.Getenv("STEPGATE_DIFF_SEED"), 10, 64); err == nil {
		seed = s
	}
	if v, err := strconv.Atoi(os.Getenv("STEPGATE_DIFF_N")); err == nil {
		n = v
	}
	m := &matrixRun{t: t, parsers: parsertest.Start(t)}
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	srcs := []rules.Source{{Kind: rules.FromForm, Name: "amount"}, {Kind: rules.FromForm, Name: "pay_to"}, {Kind: rules.FromQuery, Name: "ref"}}
	jsonSrcs := []rules.Source{{Kind: rules.FromJSON, Name: "/amount"}, {Kind: rules.FromJSON, Name: "/payee/name"}, {Kind: rules.FromQuery, Name: "ref"}}
	for i := range n {
		r, json := generate(rng)
		s := srcs
		if json {
			s = jsonSrcs
		}
		m.check(fmt.Sprintf("seed %d request %d", seed, i), r, s)
	}
	t.Logf("seed %d: %d generated requests held and read alike by %d parsers, %d refused", seed, m.checked, len(m.parsers), m.refused)
	if m.checked < n/10 {
		t.Errorf("only %d of %d generated requests were held: the generator no longer exercises the parsers", m.checked, n)
	}
}

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

// Each pool has pieces every parser reads alike and pieces that some read
// otherwise; a request takes one of the second kind now and then, so that
// many are held and reach the parsers, and many are refused.
var (
	genNames    = []string{"amount", "pay_to", "ref", "note", "tag", "items[0][qty]", "a.b", "x-y", "Ünïcode", "中文"}
	genBadNames = []string{"AMOUNT", "pay.to", "pay to", "pay[to", "amount[]", "amount[x]", "[amount]", "]amount", "_method",
		"amount\x00", " amount", "Amount", "paY_to", "amo\u00adunt", "ref[]", "k\u212a"}
	genValues = []string{"5", "500.00", "9999", "ACME GmbH", "EVIL", "", " 5", "5 ", "a&b=c", "a=b", "100%", "O'Brien",
		"é", "中文", "a\nb", "a\r\nb", "%", "+", ";", "-0", "007", "5,000", "e5", "#x", "a\tb"}
	genBadValues = []string{"5e3", "0x10", "1_000", "NaN", "Infinity", "\u202eEMCA", "x\u200by", "\xff", "a\x00b", "\u00ad"}
	genCtypes    = []string{"application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8",
		"multipart/form-data; boundary=B", "multipart/form-data; boundary=\"B\""}
	genBadCtypes = []string{"APPLICATION/X-WWW-FORM-URLENCODED", "application/x-www-form-urlencoded; charset=latin1",
		"multipart/form-data; charset=utf-8; boundary=B", "text/plain", ""}
)

// choose takes from bad one time in n.
func choose[T any](rng *rand.Rand, good, bad []T, n int) T {
	if rng.IntN(n) == 0 {
		return pick(rng, bad)
	}
	return pick(rng, good)
}

// generate makes one request: a form (urlencoded or multipart, by its
// Content-Type) or a JSON body, and a query, from pieces chosen at random.
func generate(rng *rand.Rand) (matrixRequest, bool) {
	var r matrixRequest
	r.header = http.Header{}
	nq := rng.IntN(3)
	var q []string
	for range nq {
		q = append(q, escapeGen(rng, choose(rng, genNames, genBadNames, 12))+"="+escapeGen(rng, choose(rng, genValues, genBadValues, 12)))
	}
	r.query = strings.Join(q, choose(rng, []string{"&", "&&"}, []string{";"}, 20))
	if rng.IntN(4) == 0 {
		r.ctype = choose(rng, []string{"application/json", "application/json; charset=utf-8"}, []string{"application/vnd.x+json", "text/plain", "application/json; charset=utf-16"}, 6)
		r.body = []byte(genJSON(rng))
		return r, true
	}
	r.ctype = choose(rng, genCtypes, genBadCtypes, 8)
	n := 1 + rng.IntN(4)
	if strings.HasPrefix(strings.ToLower(r.ctype), "multipart/") {
		var b strings.Builder
		for range n {
			b.WriteString("--B\r\n")
			name := choose(rng, genNames, genBadNames, 10)
			switch rng.IntN(12) {
			case 0:
				b.WriteString("Content-Disposition: form-data; name=\"" + name + "\"; filename=\"f.txt\"\r\n")
			case 1:
				b.WriteString("Content-Disposition: form-data; name=" + name + "\r\n")
			case 2:
				b.WriteString("Content-Disposition: form-data; name=\"" + name + "\"\r\nContent-Type: text/plain; charset=utf-8\r\n")
			default:
				b.WriteString("Content-Disposition: form-data; name=\"" + name + "\"\r\n")
			}
			b.WriteString("\r\n" + choose(rng, genValues, genBadValues, 12) + "\r\n")
		}
		b.WriteString("--B--\r\n")
		r.body = []byte(b.String())
		return r, false
	}
	var parts []string
	for range n {
		parts = append(parts, escapeGen(rng, choose(rng, genNames, genBadNames, 10))+"="+escapeGen(rng, choose(rng, genValues, genBadValues, 10)))
	}
	r.body = []byte(strings.Join(parts, choose(rng, []string{"&", "&&"}, []string{";"}, 20)))
	return r, false
}

// escapeGen percent-encodes s, or leaves it raw where it can travel so.
func escapeGen(rng *rand.Rand, s string) string {
	if rng.IntN(3) == 0 && !strings.ContainsAny(s, "&=;%+ \x00\r\n#") && isPrintableASCII(s) {
		return s
	}
	var b strings.Builder
	escapeTo(&b, s)
	return b.String()
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func genJSON(rng *rand.Rand) string {
	keys := []string{"amount", "payee", "note", "items", "ref"}
	badKeys := []string{"AMOUNT", "PAYEE", "pay\u017fee", "_method", "\u212amount", "Amount"}
	vals := []string{`5`, `500.10`, `9999`, `"5"`, `"ACME"`, `"EVIL"`, `-0`, `true`, `null`, `{"name":"ACME"}`, `{"name":"O'Brien \u00e9"}`,
		`[1,2]`, `"a\nb"`, `0.5`, `-12.75`, `"\u4e2d"`}
	badVals := []string{`5e3`, `12345678901234567`, `{"name":"EVIL","NAME":"X"}`, `{"name":"\u202eEMCA"}`, `"\ud800"`, `"a\u0000b"`, `NaN`}
	var b strings.Builder
	b.WriteByte('{')
	used := map[string]bool{}
	for i := range 1 + rng.IntN(3) {
		k := choose(rng, keys, badKeys, 8)
		if used[k] && rng.IntN(4) != 0 {
			continue
		}
		used[k] = true
		if i > 0 && b.Len() > 1 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(k) + ":" + choose(rng, vals, badVals, 8))
	}
	b.WriteByte('}')
	if rng.IntN(20) == 0 {
		b.WriteString(` {"amount":9999}`)
	}
	return b.String()
}

// FuzzParserMatrix is the differential fuzz target: the fuzzer's requests
// go through Canonicalize, and whatever stepgate would hold goes to every
// real parser, canonical and as sent; any disagreement with what stepgate
// shows is a failure. The seeds are the corpus (the seed pass runs with
// the other tests; CI fuzzes it for FUZZTIME).
func FuzzParserMatrix(f *testing.F) {
	for _, c := range strictCorpus() {
		ctype := ""
		if len(c.ctype) > 0 {
			ctype = c.ctype[0]
		}
		f.Add(c.query, ctype, []byte(c.body))
	}
	m := &matrixRun{parsers: parsertest.Start(f)}
	srcs := []rules.Source{{Kind: rules.FromForm, Name: "amount"}, {Kind: rules.FromQuery, Name: "ref"}, {Kind: rules.FromForm, Name: "pay_to"}}
	jsonSrcs := []rules.Source{{Kind: rules.FromJSON, Name: "/amount"}, {Kind: rules.FromJSON, Name: "/payee/name"}, {Kind: rules.FromQuery, Name: "ref"}}
	f.Fuzz(func(t *testing.T, query, ctype string, body []byte) {
		if len(query)+len(ctype)+len(body) > 4096 || !isPrintableASCII(query) || strings.Contains(query, "#") ||
			!isPrintableASCII(strings.ReplaceAll(ctype, " ", "")) {
			return // not a request target or header a client can send
		}
		m.t = t
		s := srcs
		if strings.Contains(ctype, "json") {
			s = jsonSrcs
		}
		m.check("fuzz", matrixRequest{query: query, ctype: ctype, header: http.Header{}, body: body}, s)
	})
}
