//go:build unix

package parsertest_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/stepgate/stepgate/proxy/approve/parsertest"
)

const form = "application/x-www-form-urlencoded"

func mp(parts ...string) []byte {
	var b strings.Builder
	for i := 0; i < len(parts); i += 2 {
		fmt.Fprintf(&b, "--XB\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n", parts[i], parts[i+1])
	}
	b.WriteString("--XB--\r\n")
	return []byte(b.String())
}

func TestSmoke(t *testing.T) {
	ps := parsertest.Start(t)
	many := strings.Repeat("f=1&", 1000) + "amount=5"
	var distinct strings.Builder
	for i := range 1001 {
		fmt.Fprintf(&distinct, "f%d=1&", i)
	}
	distinct.WriteString("amount=5")
	amt := parsertest.Fields{Form: []string{"amount"}, Query: []string{"amount"}}
	js := parsertest.Fields{JSON: []string{"/amount"}}
	for _, c := range []struct {
		name string
		f    parsertest.Fields
		q    parsertest.Request
	}{
		{"folding", parsertest.Fields{Form: []string{"a_b", "a.b", "a b", "a[b"}}, parsertest.Request{ContentType: form, Body: []byte("a.b=1&a b=2&a[b=3")}},
		{"dup", amt, parsertest.Request{ContentType: form, Body: []byte("amount=1&amount=2")}},
		{"merge", amt, parsertest.Request{RawQuery: "amount=9", ContentType: form, Body: []byte("amount=5")}},
		{"merge GET", amt, parsertest.Request{Method: "GET", RawQuery: "amount=9", ContentType: form, Body: []byte("amount=5")}},
		{"PUT", amt, parsertest.Request{Method: "PUT", ContentType: form, Body: []byte("amount=5")}},
		{"PATCH multipart", amt, parsertest.Request{Method: "PATCH", ContentType: "multipart/form-data; boundary=XB", Body: mp("amount", "5")}},
		{"multipart", amt, parsertest.Request{ContentType: "multipart/form-data; boundary=XB", Body: mp("amount", "5", "amount", "6")}},
		{"no ctype", amt, parsertest.Request{Body: []byte("amount=5")}},
		{"text/plain", amt, parsertest.Request{ContentType: "text/plain", Body: []byte("amount=5")}},
		{"CASE ctype", amt, parsertest.Request{ContentType: "APPLICATION/X-WWW-FORM-URLENCODED", Body: []byte("amount=5")}},
		{"charset utf-16", amt, parsertest.Request{ContentType: form + "; charset=utf-16", Body: []byte("amount=5")}},
		{"array", amt, parsertest.Request{ContentType: form, Body: []byte("amount[]=5&amount[]=6")}},
		{"obj", amt, parsertest.Request{ContentType: form, Body: []byte("amount[x]=5")}},
		{"mixed", amt, parsertest.Request{ContentType: form, Body: []byte("amount=5&amount[]=6")}},
		{"semicolon", parsertest.Fields{Form: []string{"amount", "payee"}, Query: []string{"amount", "payee"}}, parsertest.Request{RawQuery: "amount=1;payee=Q", ContentType: form, Body: []byte("amount=5;payee=ACME")}},
		{"bad pct", amt, parsertest.Request{ContentType: form, Body: []byte("amount=5%zz&payee=%")}},
		{"plus nul", parsertest.Fields{Form: []string{"amount", "payee"}}, parsertest.Request{ContentType: form, Body: []byte("amount=5%00&payee=A+B")}},
		{"many", amt, parsertest.Request{ContentType: form, Body: []byte(many)}},
		{"many distinct", amt, parsertest.Request{ContentType: form, Body: []byte(distinct.String())}},
		{"nest", parsertest.Fields{Form: []string{"a"}}, parsertest.Request{ContentType: form, Body: []byte("a" + strings.Repeat("[x]", 70) + "=5")}},
		{"empty name", parsertest.Fields{Form: []string{""}}, parsertest.Request{ContentType: form, Body: []byte("=5&&")}},
		{"override body", amt, parsertest.Request{ContentType: form, Body: []byte("amount=5&_method=delete")}},
		{"override header", amt, parsertest.Request{ContentType: form, Header: http.Header{"X-Http-Method-Override": {"PUT"}}, Body: []byte("amount=5")}},
		{"override query", amt, parsertest.Request{RawQuery: "_method=PUT", ContentType: form, Body: []byte("amount=5")}},
		{"json", js, parsertest.Request{ContentType: "application/json", Body: []byte(`{"amount":5}`)}},
		{"json dup", js, parsertest.Request{ContentType: "application/json", Body: []byte(`{"amount":1,"amount":2}`)}},
		{"json case", js, parsertest.Request{ContentType: "application/json", Body: []byte(`{"amount":1,"AMOUNT":9}`)}},
		{"json kelvin", parsertest.Fields{JSON: []string{"/k", "/s"}}, parsertest.Request{ContentType: "application/json", Body: []byte(`{"k":1,"\u212a":2,"s":1,"\u017f":3}`)}},
		{"json nested merge", parsertest.Fields{JSON: []string{"/payee/name", "/payee/iban"}}, parsertest.Request{ContentType: "application/json", Body: []byte(`{"payee":{"name":"ACME"},"PAYEE":{"iban":"X"}}`)}},
		{"json text/plain", js, parsertest.Request{ContentType: "text/plain", Body: []byte(`{"amount":5}`)}},
		{"json no ctype", js, parsertest.Request{Body: []byte(`{"amount":5}`)}},
		{"json +json", js, parsertest.Request{ContentType: "application/vnd.api+json", Body: []byte(`{"amount":5}`)}},
		{"json trailing", js, parsertest.Request{ContentType: "application/json", Body: []byte(`{"amount":5} x`)}},
		{"json NaN", js, parsertest.Request{ContentType: "application/json", Body: []byte(`{"amount":NaN}`)}},
		{"json BOM", js, parsertest.Request{ContentType: "application/json", Body: []byte("\xef\xbb\xbf{\"amount\":5}")}},
		{"json utf16", js, parsertest.Request{ContentType: "application/json", Body: []byte("{\x00\"\x00a\x00m\x00o\x00u\x00n\x00t\x00\"\x00:\x005\x00}\x00")}},
		{"json top", parsertest.Fields{JSON: []string{""}}, parsertest.Request{ContentType: "application/json", Body: []byte(`5`)}},
		{"json nums", parsertest.Fields{JSON: []string{"/a", "/b", "/c", "/d", "/e"}}, parsertest.Request{ContentType: "application/json", Body: []byte(`{"a":9007199254740993,"b":1.0,"c":5e0,"d":-0,"e":1e21}`)}},
		{"json str", js, parsertest.Request{ContentType: "application/json", Body: []byte(`{"amount":"5\u0000"}`)}},
		{"json lone surrogate", js, parsertest.Request{ContentType: "application/json", Body: []byte(`{"amount":"\ud800"}`)}},
		{"json invalid utf8", js, parsertest.Request{ContentType: "application/json", Body: []byte("{\"amount\":\"\xff\"}")}},
		{"json and form", parsertest.Fields{Form: []string{"amount"}, JSON: []string{"/amount"}}, parsertest.Request{ContentType: "application/json", Body: []byte(`{"amount":5}`)}},
		{"json with charset", js, parsertest.Request{ContentType: "application/json; charset=latin1", Body: []byte(`{"amount":5}`)}},
		{"json proto", parsertest.Fields{Form: []string{"__proto__", "constructor"}, JSON: []string{"/__proto__/amount"}}, parsertest.Request{ContentType: "application/json", Body: []byte(`{"__proto__":{"amount":5}}`)}},
		{"dup ctype", amt, parsertest.Request{ContentType: "text/plain", Header: http.Header{"Content-Type": {form}}, Body: []byte("amount=5")}},
		{"dup ctype2", amt, parsertest.Request{ContentType: form, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("amount=5")}},
	} {
		reps, err := parsertest.ParseAll(context.Background(), ps, c.f, c.q)
		if err != nil {
			t.Error(err)
		}
		fmt.Printf("== %s\n", c.name)
		for _, r := range reps {
			var ks []string
			for k := range r.Values {
				ks = append(ks, k)
			}
			sort.Strings(ks)
			var b strings.Builder
			for _, k := range ks {
				fmt.Fprintf(&b, " %s=%v", k, r.Values[k])
			}
			e := ""
			if r.Error != "" {
				e = " ERR=" + r.Error
				if len(e) > 160 {
					e = e[:160]
				}
			}
			if r.Warning != "" {
				e += " WARN=" + r.Warning
			}
			fmt.Printf("  %-8s %-6s%s%s\n", r.Parser, r.Method, b.String(), e)
		}
	}
}
