//go:build unix

package parsertest_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stepgate/stepgate/proxy/approve/parsertest"
)

var update = flag.Bool("update", false, "rewrite testdata/quirks.golden from the parsers' answers")

func multipart(parts ...string) []byte {
	var b strings.Builder
	for i := 0; i+1 < len(parts); i += 2 {
		fmt.Fprintf(&b, "--XB\r\nContent-Disposition: form-data; %s\r\n\r\n%s\r\n", parts[i], parts[i+1])
	}
	b.WriteString("--XB--\r\n")
	return []byte(b.String())
}

// quirks are requests on which the parsers disagree (or agree
// surprisingly); their answers are kept in testdata/quirks.golden, which
// is the matrix's record of what each framework really does. The test
// fails when one changes (a new Debian package, a new npm lock): read the
// diff, then go test -run TestQuirks -update.
func quirks() []struct {
	name string
	f    parsertest.Fields
	q    parsertest.Request
} {
	amount := parsertest.Fields{Form: []string{"amount"}, Query: []string{"amount"}}
	amountPayee := parsertest.Fields{Form: []string{"amount", "payee"}, Query: []string{"amount", "payee"}}
	js := parsertest.Fields{JSON: []string{"/amount"}}
	form := func(body string) parsertest.Request {
		return parsertest.Request{ContentType: urlencoded, Body: []byte(body)}
	}
	jsonBody := func(ctype, body string) parsertest.Request {
		return parsertest.Request{ContentType: ctype, Body: []byte(body)}
	}
	var fields1001 strings.Builder
	for i := range 1001 {
		fmt.Fprintf(&fields1001, "f%d=1&", i)
	}
	return []struct {
		name string
		f    parsertest.Fields
		q    parsertest.Request
	}{
		{"names PHP folds", parsertest.Fields{Form: []string{"a_b", "a.b", "a b", "a[b"}}, form("a.b=1&a b=2&a[b=3")},
		{"a repeated field", amount, form("amount=1&amount=2")},
		{"the query and the body both name amount", amount, parsertest.Request{RawQuery: "amount=9", ContentType: urlencoded, Body: []byte("amount=5")}},
		{"a GET with a form body", amount, parsertest.Request{Method: "GET", RawQuery: "amount=9", ContentType: urlencoded, Body: []byte("amount=5")}},
		{"a PUT with a form body", amount, parsertest.Request{Method: "PUT", ContentType: urlencoded, Body: []byte("amount=5")}},
		{"a PATCH with a multipart body", amount, parsertest.Request{Method: "PATCH", ContentType: "multipart/form-data; boundary=XB", Body: multipart(`name="amount"`, "5")}},
		{"a lower-case post", amount, parsertest.Request{Method: "post", ContentType: urlencoded, Body: []byte("amount=5")}},
		{"multipart, the field twice", amount, parsertest.Request{ContentType: "multipart/form-data; boundary=XB", Body: multipart(`name="amount"`, "5", `name="amount"`, "6")}},
		{"multipart, the field as a file", amount, parsertest.Request{ContentType: "multipart/form-data; boundary=XB", Body: multipart(`name="amount"; filename="a.txt"`, "5")}},
		{"a form body without Content-Type", amount, parsertest.Request{Body: []byte("amount=5")}},
		{"a form body as text/plain", amount, jsonBody("text/plain", "amount=5")},
		{"an upper-case form Content-Type", amount, jsonBody("APPLICATION/X-WWW-FORM-URLENCODED", "amount=5")},
		{"a form Content-Type with charset=utf-16", amount, jsonBody(urlencoded+"; charset=utf-16", "amount=5")},
		{"text/plain, then a second Content-Type: form", amount, parsertest.Request{ContentType: "text/plain", Header: http.Header{"Content-Type": {urlencoded}}, Body: []byte("amount=5")}},
		{"form, then a second Content-Type: text/plain", amount, parsertest.Request{ContentType: urlencoded, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("amount=5")}},
		{"amount[]", amount, form("amount[]=5&amount[]=6")},
		{"amount[x]", amount, form("amount[x]=5")},
		{"amount and amount[]", amount, form("amount=5&amount[]=6")},
		{"nested 70 deep", parsertest.Fields{Form: []string{"a"}}, form("a" + strings.Repeat("[x]", 70) + "=5")},
		{"semicolons", amountPayee, parsertest.Request{RawQuery: "amount=1;payee=Q", ContentType: urlencoded, Body: []byte("amount=5;payee=ACME")}},
		{"a bad %-escape", amountPayee, form("amount=5%zz&payee=ACME")},
		{"a NUL and a plus", amountPayee, form("amount=5%00&payee=A+B")},
		{"1001 fields before amount", amount, form(fields1001.String() + "amount=5")},
		{"an empty name", parsertest.Fields{Form: []string{""}}, form("=5&&")},
		{"_method=delete in the body", amount, form("amount=5&_method=delete")},
		{"_method=GET in the body", amount, form("amount=5&_method=GET")},
		{"X-HTTP-Method-Override: PUT", amount, parsertest.Request{ContentType: urlencoded, Header: http.Header{"X-Http-Method-Override": {"PUT"}}, Body: []byte("amount=5")}},
		{"_method=PUT in the query", amount, parsertest.Request{RawQuery: "_method=PUT", ContentType: urlencoded, Body: []byte("amount=5")}},
		{"Expect: 100-continue", amount, parsertest.Request{ContentType: urlencoded, Header: http.Header{"Expect": {"100-continue"}}, Body: []byte("amount=5")}},
		{"Transfer-Encoding: chunked", amount, parsertest.Request{ContentType: urlencoded, Header: http.Header{"Transfer-Encoding": {"chunked"}}, Body: []byte("8\r\namount=5\r\n0\r\n\r\n")}},
		{"JSON", js, jsonBody("application/json", `{"amount":5}`)},
		{"JSON, a repeated key", js, jsonBody("application/json", `{"amount":1,"amount":2}`)},
		{"JSON, the key in two cases", js, jsonBody("application/json", `{"amount":1,"AMOUNT":9}`)},
		{"JSON, Kelvin sign and long s", parsertest.Fields{JSON: []string{"/k", "/s"}}, jsonBody("application/json", `{"k":1,"\u212a":2,"s":1,"\u017f":3}`)},
		{"JSON, an object in two cases", parsertest.Fields{JSON: []string{"/payee/name", "/payee/iban"}}, jsonBody("application/json", `{"payee":{"name":"ACME"},"PAYEE":{"iban":"X"}}`)},
		{"JSON as text/plain", js, jsonBody("text/plain", `{"amount":5}`)},
		{"JSON without Content-Type", js, jsonBody("", `{"amount":5}`)},
		{"JSON as application/vnd.api+json", js, jsonBody("application/vnd.api+json", `{"amount":5}`)},
		{"JSON with charset=latin1", js, jsonBody("application/json; charset=latin1", `{"amount":5}`)},
		{"JSON and the form accessors", parsertest.Fields{Form: []string{"amount"}, JSON: []string{"/amount"}}, jsonBody("application/json", `{"amount":5}`)},
		{"JSON, trailing data", js, jsonBody("application/json", `{"amount":5} x`)},
		{"JSON, NaN", js, jsonBody("application/json", `{"amount":NaN}`)},
		{"JSON, a BOM", js, jsonBody("application/json", "\xef\xbb\xbf{\"amount\":5}")},
		{"JSON in UTF-16LE", js, jsonBody("application/json", "{\x00\"\x00a\x00m\x00o\x00u\x00n\x00t\x00\"\x00:\x005\x00}\x00")},
		{"JSON, a bare number", parsertest.Fields{JSON: []string{""}}, jsonBody("application/json", `5`)},
		{"JSON, numbers", parsertest.Fields{JSON: []string{"/a", "/b", "/c", "/d", "/e"}}, jsonBody("application/json", `{"a":9007199254740993,"b":1.0,"c":5e0,"d":-0,"e":1e21}`)},
		{"JSON, 1e400", js, jsonBody("application/json", `{"amount":1e400}`)},
		{"JSON, a lone surrogate", js, jsonBody("application/json", `{"amount":"\ud800"}`)},
		{"JSON, invalid UTF-8", js, jsonBody("application/json", "{\"amount\":\"\xff\"}")},
		{"JSON, __proto__", parsertest.Fields{Form: []string{"__proto__", "constructor"}, JSON: []string{"/__proto__/amount"}}, jsonBody("application/json", `{"__proto__":{"amount":5}}`)},
		{"JSON, an array index", parsertest.Fields{JSON: []string{"/items/0", "/items/00", "/items/-"}}, jsonBody("application/json", `{"items":["a","b"]}`)},
	}
}

func TestQuirks(t *testing.T) {
	ps := parsertest.Start(t)
	var b strings.Builder
	for _, c := range quirks() {
		reps, err := parsertest.ParseAll(context.Background(), ps, c.f, c.q)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		fmt.Fprintf(&b, "== %s\n%s\n", c.name, render(c.q))
		for _, r := range reps {
			fmt.Fprintf(&b, "  %-8s %-6s", r.Parser, r.Method)
			for _, k := range slices.Sorted(mapKeys(r.Values)) {
				fmt.Fprintf(&b, " %s=%v", k, r.Values[k])
			}
			// Only where an error came from: the messages differ between
			// versions of Node and Python, and say nothing the matrix uses.
			if r.Error != "" {
				fmt.Fprintf(&b, " ERROR(%s)", errorSource(r.Error))
			}
			if r.Warning != "" {
				fmt.Fprintf(&b, " WARNING(%s)", r.Warning)
			}
			b.WriteString("\n")
		}
	}
	golden := filepath.Join("testdata", "quirks.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test -run TestQuirks -update writes it)", err)
	}
	if got := b.String(); got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range max(len(gl), len(wl)) {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Errorf("%s:%d:\n got: %s\nwant: %s", golden, i+1, g, w)
			}
		}
		t.Errorf("the parsers' answers differ from %s (if the change is expected: go test -run TestQuirks -update)", golden)
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// errorSource is an error's first part, up to its first ": " (the apps
// start their errors with the accessor or the exception's class).
func errorSource(e string) string {
	src, _, _ := strings.Cut(e, ": ")
	return src
}

func render(q parsertest.Request) string {
	method := q.Method
	if method == "" {
		method = "POST"
	}
	s := method + " /"
	if q.RawQuery != "" {
		s += "?" + q.RawQuery
	}
	if q.ContentType != "" {
		s += " | Content-Type: " + q.ContentType
	}
	for _, k := range slices.Sorted(mapKeys(q.Header)) {
		for _, v := range q.Header[k] {
			s += " | " + k + ": " + v
		}
	}
	body := strconv.Quote(string(q.Body))
	if len(body) > 100 {
		body = body[:100] + "…"
	}
	return s + " | " + body
}
