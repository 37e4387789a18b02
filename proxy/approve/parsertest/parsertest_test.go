//go:build unix

package parsertest_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stepgate/stepgate/proxy/approve/parsertest"
)

const urlencoded = "application/x-www-form-urlencoded"

// want is one parser's expected value for one accessor key.
type want map[string]parsertest.Value

func str(s string) parsertest.Value { return parsertest.Value{Present: true, Kind: "string", Text: s} }
func num(s string) parsertest.Value { return parsertest.Value{Present: true, Kind: "number", Text: s} }

var absent = parsertest.Value{}

// Facts about the real parsers, each checked against every parser that
// has a say: they fail when a parser is not really consulted (an echo that
// parsed by itself would not fold a.b into a_b for PHP alone, nor answer
// "2" for Django and "1" for Flask).
func TestTheParsersBehaveAsTheFrameworksDo(t *testing.T) {
	ps := parsertest.Start(t)
	if got, want := len(ps), len(parsertest.Names()); got != want {
		t.Fatalf("Start gave %d parsers, want %d", got, want)
	}
	ctx := context.Background()
	amount := parsertest.Fields{Form: []string{"amount"}, Query: []string{"amount"}}
	tests := []struct {
		name   string
		f      parsertest.Fields
		q      parsertest.Request
		method map[string]string // parser -> effective method; POST when not named
		want   map[string]want   // parser -> keys to check
	}{
		{
			name: "every parser reads amount=5&payee=ACME from an urlencoded body",
			f:    parsertest.Fields{Form: []string{"amount", "payee"}},
			q:    parsertest.Request{ContentType: urlencoded, Body: []byte("amount=5&payee=ACME")},
			want: all(want{"post.amount": str("5"), "post.payee": str("ACME")}),
		},
		{
			name: "PHP folds a.b into a_b, the others keep the name",
			f:    parsertest.Fields{Form: []string{"a.b", "a_b"}},
			q:    parsertest.Request{ContentType: urlencoded, Body: []byte("a.b=1")},
			want: map[string]want{
				"php":     {"post.a_b": str("1"), "post.a.b": absent, "request.a_b": str("1")},
				"flask":   {"post.a.b": str("1"), "post.a_b": absent},
				"django":  {"post.a.b": str("1"), "post.a_b": absent},
				"express": {"post.a.b": str("1"), "post.a_b": absent},
				"rack":    {"post.a.b": str("1"), "post.a_b": absent},
				"go":      {"post.a.b": str("1"), "post.a_b": absent},
			},
		},
		{
			name: "PHP folds a space into an underscore",
			f:    parsertest.Fields{Form: []string{"a b", "a_b"}},
			q:    parsertest.Request{ContentType: urlencoded, Body: []byte("a+b=2")},
			want: map[string]want{
				"php":   {"post.a_b": str("2"), "post.a b": absent},
				"flask": {"post.a b": str("2"), "post.a_b": absent},
			},
		},
		{
			name: "PHP folds an unclosed [ into an underscore",
			f:    parsertest.Fields{Form: []string{"a[b", "a_b"}},
			q:    parsertest.Request{ContentType: urlencoded, Body: []byte("a%5Bb=3")},
			want: map[string]want{
				"php":    {"post.a_b": str("3"), "post.a[b": absent},
				"django": {"post.a[b": str("3"), "post.a_b": absent},
			},
		},
		{
			name: "a repeated field: Django, PHP and Rack take the last, Flask and Go the first, Express both",
			f:    amount,
			q:    parsertest.Request{ContentType: urlencoded, Body: []byte("amount=1&amount=2")},
			want: map[string]want{
				"php":     {"post.amount": str("2")},
				"flask":   {"post.amount": str("1"), "request.amount": str("1")},
				"django":  {"post.amount": str("2")},
				"express": {"post.amount": {Present: true, Kind: "array", Text: `["1","2"]`}},
				"rack":    {"post.amount": str("2")},
				"go":      {"post.amount": str("1")},
			},
		},
		{
			name: "Flask's request.values and PHP's $_REQUEST merge the query and the body",
			f:    parsertest.Fields{Form: []string{"amount", "payee"}, Query: []string{"payee"}},
			q:    parsertest.Request{RawQuery: "payee=EVIL", ContentType: urlencoded, Body: []byte("amount=5")},
			want: map[string]want{
				"php":   {"post.amount": str("5"), "post.payee": absent, "get.payee": str("EVIL"), "request.payee": str("EVIL"), "request.amount": str("5")},
				"flask": {"post.amount": str("5"), "post.payee": absent, "get.payee": str("EVIL"), "request.payee": str("EVIL"), "request.amount": str("5")},
			},
		},
		{
			name: "on a clash Flask's request.values takes the query's value, PHP's $_REQUEST (request_order=GP) the body's",
			f:    amount,
			q:    parsertest.Request{RawQuery: "amount=9", ContentType: urlencoded, Body: []byte("amount=5")},
			want: map[string]want{
				"php":   {"post.amount": str("5"), "get.amount": str("9"), "request.amount": str("5")},
				"flask": {"post.amount": str("5"), "get.amount": str("9"), "request.amount": str("9")},
				"rack":  {"request.amount": str("5")},
				"go":    {"request.amount": str("5")},
			},
		},
		{
			name: "every parser reads {\"amount\":5}",
			f:    parsertest.Fields{JSON: []string{"/amount"}},
			q:    parsertest.Request{ContentType: "application/json", Body: []byte(`{"amount":5}`)},
			want: all(want{"json./amount": num("5")}),
		},
		{
			name: "Go's struct decoding matches {\"AMOUNT\":9} to the tag amount; a map does not",
			f:    parsertest.Fields{JSON: []string{"/amount"}},
			q:    parsertest.Request{ContentType: "application/json", Body: []byte(`{"AMOUNT":9}`)},
			want: map[string]want{
				"go":      {"json./amount": num("9"), "jsonmap./amount": absent},
				"php":     {"json./amount": absent},
				"flask":   {"json./amount": absent},
				"django":  {"json./amount": absent},
				"express": {"json./amount": absent},
				"rack":    {"json./amount": absent},
			},
		},
		{
			name: "PHP keeps 5.0 a float, JavaScript and Go print 5",
			f:    parsertest.Fields{JSON: []string{"/amount"}},
			q:    parsertest.Request{ContentType: "application/json", Body: []byte(`{"amount":5.0}`)},
			want: map[string]want{
				"php": {"json./amount": num("5.0")}, "flask": {"json./amount": num("5.0")}, "rack": {"json./amount": num("5.0")},
				"express": {"json./amount": num("5")}, "go": {"json./amount": num("5")},
			},
		},
		{
			name: "_method in the body overrides POST for Symfony, method-override and Rack::MethodOverride",
			f:    amount,
			q:    parsertest.Request{ContentType: urlencoded, Body: []byte("amount=5&_method=put")},
			method: map[string]string{
				"php": "PUT", "express": "PUT", "rack": "PUT", "flask": "POST", "django": "POST", "go": "POST",
			},
			want: all(want{"post.amount": str("5")}),
		},
		{
			name: "PHP parses no body but a POST's",
			f:    amount,
			q:    parsertest.Request{Method: "PUT", ContentType: urlencoded, Body: []byte("amount=5")},
			method: map[string]string{
				"php": "PUT", "express": "PUT", "rack": "PUT", "flask": "PUT", "django": "PUT", "go": "PUT",
			},
			want: map[string]want{
				"php": {"post.amount": absent}, "django": {"post.amount": absent},
				"flask": {"post.amount": str("5")}, "express": {"post.amount": str("5")},
				"rack": {"post.amount": str("5")}, "go": {"post.amount": str("5")},
			},
		},
		{
			// The raw writer sends both lines: Werkzeug's server keeps the
			// last Content-Type, the others the first.
			name: "a second Content-Type line reaches the servers",
			f:    amount,
			q: parsertest.Request{ContentType: "text/plain", Header: http.Header{"Content-Type": {urlencoded}},
				Body: []byte("amount=5")},
			want: map[string]want{
				"flask": {"post.amount": str("5")},
				"php":   {"post.amount": absent}, "django": {"post.amount": absent}, "express": {"post.amount": absent},
				"rack": {"post.amount": absent}, "go": {"post.amount": absent},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reps, err := parsertest.ParseAll(ctx, ps, tt.f, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			for i, rep := range reps {
				p := ps[i]
				if rep.Parser != p.Name() {
					t.Errorf("report %d is from %q, want %q", i, rep.Parser, p.Name())
				}
				if rep.Error != "" {
					t.Errorf("%s: error %q", p, rep.Error)
				}
				wantMethod := "POST"
				if tt.q.Method != "" {
					wantMethod = tt.q.Method
				}
				if m, ok := tt.method[p.Name()]; ok {
					wantMethod = m
				}
				if rep.Method != wantMethod {
					t.Errorf("%s: method %q, want %q", p, rep.Method, wantMethod)
				}
				for _, k := range p.Keys(tt.f) {
					if _, ok := rep.Values[k]; !ok {
						t.Errorf("%s: no entry for %s", p, k)
					}
				}
				for k, w := range tt.want[p.Name()] {
					if got := rep.Values[k]; got != w {
						t.Errorf("%s: %s = %v, want %v", p, k, got, w)
					}
				}
			}
		})
	}
}

func all(w want) map[string]want {
	m := map[string]want{}
	for _, n := range parsertest.Names() {
		m[n] = w
	}
	return m
}

// Every byte of a value comes back: a NUL, invalid UTF-8 and a multi-byte
// character in a form value, as PHP (which keeps bytes) and Go read them.
func TestValuesComeBackByteForByte(t *testing.T) {
	ps := parsertest.Start(t, "php", "go")
	f := parsertest.Fields{Form: []string{"payee"}}
	q := parsertest.Request{ContentType: urlencoded, Body: []byte("payee=A%00%FF%E2%82%AC+B")}
	for _, p := range ps {
		rep, err := p.Parse(context.Background(), f, q)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := rep.Values["post.payee"], str("A\x00\xff€ B"); got != want {
			t.Errorf("%s: post.payee = %v, want %v", p, got, want)
		}
	}
}

// A parser's server stops with the test that started it: afterwards no
// echo app answers on its port. (Dialing alone would not do: a dial to a
// free port in the ephemeral range can connect to itself.)
func TestParsersStopWhenTheTestEnds(t *testing.T) {
	var ps []*parsertest.Parser
	t.Run("start", func(t *testing.T) {
		ps = parsertest.Start(t)
		for _, p := range ps {
			if host, _, err := net.SplitHostPort(p.Addr()); err != nil || host != "127.0.0.1" {
				t.Errorf("%s listened on %q, not on 127.0.0.1", p, p.Addr())
			}
		}
	})
	if len(ps) == 0 {
		t.Skip("no parser started")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range ps {
		rep, err := p.Parse(ctx, parsertest.Fields{Form: []string{"amount"}}, parsertest.Request{ContentType: urlencoded, Body: []byte("amount=5")})
		if err == nil && rep.Method != "" {
			t.Errorf("%s still answers on %s after its test ended: %+v", p, p.Addr(), rep)
		}
	}
}

// 1000 requests per parser, all six at once, in well under the budget
// the approve tests need (their logs say how long each took).
func TestAThousandRequestsPerParser(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	ps := parsertest.Start(t)
	f := parsertest.Fields{Form: []string{"amount", "payee"}, Query: []string{"amount"}}
	q := parsertest.Request{RawQuery: "ref=1", ContentType: urlencoded, Body: []byte("amount=5&payee=ACME")}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	errs := make(chan error, len(ps))
	for _, p := range ps {
		go func() {
			t0 := time.Now()
			for range 1000 {
				rep, err := p.Parse(ctx, f, q)
				if err == nil && rep.Values["post.amount"] != str("5") {
					err = errors.New(p.Name() + ": post.amount = " + rep.Values["post.amount"].String())
				}
				if err != nil {
					errs <- err
					return
				}
			}
			t.Logf("%s: 1000 requests in %v", p, time.Since(t0).Round(time.Millisecond))
			errs <- nil
		}()
	}
	for range ps {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	t.Logf("all: %v", time.Since(start).Round(time.Millisecond))
}
