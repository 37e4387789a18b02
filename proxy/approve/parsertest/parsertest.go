//go:build unix

package parsertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fields says what the test wants each parser to report. Names must be
// valid UTF-8: Python and JavaScript have no other strings to compare them
// with (and the JSON that carries them replaces the rest).
type Fields struct {
	// Form names fields read from the body: post.NAME, and request.NAME
	// where the framework has a merged accessor.
	Form []string
	// Query names fields read from the query: get.NAME.
	Query []string
	// JSON holds RFC 6901 pointers into a JSON body ("/amount",
	// "/payee/name", "" for the whole document): json.PTR.
	JSON []string
}

// Request is one request, written to the parser exactly.
type Request struct {
	Method string // "POST" when empty
	// Path is the request target's path, "/" when empty; RawQuery follows
	// a "?" when it is not empty.
	Path     string
	RawQuery string
	// ContentType is a Content-Type line, left out when empty; Header may
	// carry a second one (it is written after ContentType's).
	ContentType string
	// Header lines are written in the order of their sorted keys, as given
	// (not canonicalised). A Content-Length or Transfer-Encoding here
	// replaces the Content-Length the harness would add for Body, and Body
	// is then written as it is: the test frames the body itself.
	Header http.Header
	Body   []byte
}

// Report is what one framework would act on.
type Report struct {
	Parser string // "php", "flask", "django", "express", "rack", "go"
	// Method is the effective method: after the framework's method override
	// (Symfony's for php, Rack::MethodOverride, method-override for
	// express), the request's own for flask, django and go.
	Method string
	// Values holds an entry for every accessor key the parser has for the
	// requested fields (Present false when the accessor found nothing),
	// plus "override.header" (flask, django, go) when the request carried
	// X-HTTP-Method-Override.
	Values map[string]Value
	// Error is set when the framework refused the request or an accessor
	// failed: its parser raised (an app answers 400), the JSON body did not
	// decode where JSON was asked for, or the server itself answered with
	// something other than the app's report ("status 400: ..."). Values
	// may still hold what the accessors gave before or despite it.
	Error string
	// Warning is what the framework noted without refusing: PHP's
	// "Input variables exceeded 1000" (it drops the rest and goes on).
	Warning string
}

// Value is what one accessor returned.
type Value struct {
	Present bool
	// Kind is "string", "number", "bool", "null", "array" or "object" (a
	// PHP array is an "array" when array_is_list, else an "object"); a
	// JavaScript accessor that reaches the prototype chain can give
	// "function".
	Kind string
	// Text is the string's bytes, a number as the language prints its
	// native number (PHP's 5.0 is "5.0", Go's float64 5 is "5"), or an
	// array or object as the language's JSON encoder writes it, compactly.
	Text string
}

// String is a short form for failure messages.
func (v Value) String() string {
	if !v.Present {
		return "absent"
	}
	if v.Kind == "string" {
		return strconv.Quote(v.Text)
	}
	return v.Kind + " " + v.Text
}

// Parser is one running echo app.
type Parser struct {
	name     string
	addr     string
	output   func() string
	form     []string // accessor prefixes for Fields.Form
	query    []string // for Fields.Query
	jsonKeys []string // for Fields.JSON
}

// Name is the parser's name in Report.Parser.
func (p *Parser) Name() string { return p.name }

// Addr is the 127.0.0.1:port the parser's app listens on.
func (p *Parser) Addr() string { return p.addr }

// String is the parser's name.
func (p *Parser) String() string { return p.name }

// Output is what the parser's server process wrote so far (empty for the
// in-process go parser), for failure messages.
func (p *Parser) Output() string {
	if p.output == nil {
		return ""
	}
	return p.output()
}

// Keys lists the accessor keys p reports for f, in a fixed order.
func (p *Parser) Keys(f Fields) []string {
	var keys []string
	add := func(prefixes, names []string) {
		for _, n := range names {
			for _, pre := range prefixes {
				keys = append(keys, pre+"."+n)
			}
		}
	}
	add(p.form, f.Form)
	add(p.query, f.Query)
	add(p.jsonKeys, f.JSON)
	return keys
}

// defaultTimeout bounds one Parse whose context has no deadline.
const defaultTimeout = 20 * time.Second

// Parse sends q to the parser's app over one new loopback connection and
// returns its report. An error means the harness could not get an answer
// (connection, timeout, an app that did not answer with its report); a
// framework's refusal is Report.Error.
func (p *Parser) Parse(ctx context.Context, f Fields, q Request) (Report, error) {
	return p.ParseThrough(ctx, p.addr, f, q)
}

// ParseThrough sends q to addr — a proxy in front of the parser's app,
// such as stepgate — and returns the app's report. A proxy that answers
// itself (a refusal, a challenge) gives a Report with an empty Method and
// Error "status N: …".
func (p *Parser) ParseThrough(ctx context.Context, addr string, f Fields, q Request) (Report, error) {
	raw, err := p.encode(f, q)
	if err != nil {
		return Report{}, err
	}
	rep, err := p.roundTrip(ctx, addr, raw)
	if err != nil {
		return Report{}, fmt.Errorf("parsertest: %s: %w", p.name, err)
	}
	rep.Parser = p.name
	if rep.Values == nil {
		rep.Values = map[string]Value{}
	}
	for _, k := range p.Keys(f) {
		if _, ok := rep.Values[k]; !ok {
			rep.Values[k] = Value{}
		}
	}
	return rep, nil
}

// ParseAll sends q to every parser at once and returns their reports in
// the parsers' order.
func ParseAll(ctx context.Context, ps []*Parser, f Fields, q Request) ([]Report, error) {
	reps := make([]Report, len(ps))
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() { reps[i], errs[i] = p.Parse(ctx, f, q) })
	}
	wg.Wait()
	return reps, errors.Join(errs...)
}

// fieldsHeader carries Fields to the app: base64 of this JSON.
const fieldsHeader = "X-Matrix-Fields"

type wireFields struct {
	Form  []string `json:"form"`
	Query []string `json:"query"`
	JSON  []string `json:"json"`
}

// FieldsHeader is the request header that tells an echo app which fields
// to report (for a test that builds the request itself).
func FieldsHeader(f Fields) (name, value string) {
	spec, _ := json.Marshal(wireFields{Form: nonNil(f.Form), Query: nonNil(f.Query), JSON: nonNil(f.JSON)})
	return fieldsHeader, base64.StdEncoding.EncodeToString(spec)
}

func (p *Parser) encode(f Fields, q Request) ([]byte, error) {
	spec, err := json.Marshal(wireFields{Form: nonNil(f.Form), Query: nonNil(f.Query), JSON: nonNil(f.JSON)})
	if err != nil {
		return nil, fmt.Errorf("parsertest: encode fields: %w", err)
	}
	method := q.Method
	if method == "" {
		method = http.MethodPost
	}
	target := q.Path
	if target == "" {
		target = "/"
	}
	if q.RawQuery != "" {
		target += "?" + q.RawQuery
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\n", method, target)
	if !hasHeader(q.Header, "Host") {
		fmt.Fprintf(&b, "Host: %s\r\n", p.addr)
	}
	fmt.Fprintf(&b, "%s: %s\r\nConnection: close\r\n", fieldsHeader, base64.StdEncoding.EncodeToString(spec))
	if q.ContentType != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", q.ContentType)
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range q.Header {
			if !yield(k) {
				return
			}
		}
	}) {
		for _, v := range q.Header[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	if !hasHeader(q.Header, "Content-Length") && !hasHeader(q.Header, "Transfer-Encoding") {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(q.Body))
	}
	b.WriteString("\r\n")
	b.Write(q.Body)
	return b.Bytes(), nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func hasHeader(h http.Header, name string) bool {
	for k := range h {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// wireReport is the apps' answer: every value as kind and base64 text.
type wireReport struct {
	Method string `json:"method"`
	Values map[string]struct {
		Kind string `json:"kind"`
		B64  string `json:"b64"`
	} `json:"values"`
	Error   string `json:"error"`
	Warning string `json:"warning"`
}

// maxReply bounds an app's answer.
const maxReply = 16 << 20

func (p *Parser) roundTrip(ctx context.Context, addr string, raw []byte) (Report, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Report{}, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	// Written concurrently with the read: a server may answer (a 400, a
	// 413) before it has read a long body, and stop reading.
	wrote := make(chan error, 1)
	go func() {
		_, err := conn.Write(raw)
		wrote <- err
	}()
	cr := &countingReader{r: conn}
	br := bufio.NewReader(cr)
	resp, err := http.ReadResponse(br, nil)
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 {
		// 100 Continue (the test may send Expect), then the answer.
		resp, err = http.ReadResponse(br, nil)
	}
	if err != nil && cr.n == 0 && errors.Is(err, io.ErrUnexpectedEOF) {
		// PHP's server hangs up on a request it cannot parse (a
		// lower-case method): a refusal, not the harness's failure.
		<-wrote
		return Report{Error: "the server closed the connection without an answer"}, nil
	}
	if err != nil {
		if werr := <-wrote; werr != nil {
			err = fmt.Errorf("%w (writing the request: %v)", err, werr)
		}
		return Report{}, fmt.Errorf("read the answer: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	resp.Body.Close()
	if err != nil {
		return Report{}, fmt.Errorf("read the answer's body: %w", err)
	}
	conn.Close() // ends the writer too, if the server stopped reading
	<-wrote
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if resp.StatusCode == http.StatusInternalServerError || resp.StatusCode == http.StatusOK {
			// The apps answer 200 with their report: a 500 is the
			// harness's own bug, not a framework's refusal.
			return Report{}, fmt.Errorf("the app failed: %s: %s", resp.Status, snippet(body))
		}
		return Report{Error: fmt.Sprintf("status %d: %s", resp.StatusCode, snippet(body))}, nil
	}
	return DecodeReport(body)
}

// DecodeReport reads an echo app's report from the body of its answer (for
// a test that sends the request through a browser and a proxy itself).
func DecodeReport(body []byte) (Report, error) {
	var w wireReport
	if err := json.Unmarshal(body, &w); err != nil {
		return Report{}, fmt.Errorf("decode the app's report %q: %w", snippet(body), err)
	}
	rep := Report{Method: w.Method, Error: w.Error, Warning: w.Warning, Values: make(map[string]Value, len(w.Values))}
	for k, v := range w.Values {
		text, err := base64.StdEncoding.DecodeString(v.B64)
		if err != nil {
			return Report{}, fmt.Errorf("decode the app's value %s: %w", k, err)
		}
		rep.Values[k] = Value{Present: true, Kind: v.Kind, Text: string(text)}
	}
	return rep, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func snippet(b []byte) string {
	const n = 300
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}
