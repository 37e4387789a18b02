package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/stepgate/stepgate/proxy/approve"
	"github.com/stepgate/stepgate/proxy/reqpath"
	"github.com/stepgate/stepgate/proxy/rules"
)

// MethodOverride is the method override an application honours
// (STEPGATE_METHOD_OVERRIDE, docs/design.md §14.3). Rails, Laravel, Symfony
// and Express's method-override turn a POST into the method a _method field
// or an X-HTTP-Method-Override header names: a rule that names methods
// would otherwise be matched against the POST stepgate saw while the
// application runs a DELETE.
type MethodOverride string

const (
	// MethodOverrideNone: the application honours none. Override headers
	// are stripped, and a _method field is refused where it could change
	// the rule (the query on every path; a POST form body on a path whose
	// rules name methods, and every held request).
	MethodOverrideNone MethodOverride = "none"
	// MethodOverrideHeader: X-HTTP-Method-Override on a POST names the
	// method; rules match it and the application receives it in that one
	// spelling. _method fields are refused as with none.
	MethodOverrideHeader MethodOverride = "header"
	// MethodOverrideForm: a POST form's _method field names the method;
	// rules match it. Override headers are stripped, a _method in the
	// query is refused. Needs the body: the proxy door only, or ext_authz
	// with the body.
	MethodOverrideForm MethodOverride = "form"
)

// Reasons of effectiveMethod that are not a 400.
const (
	reasonOverrideTooLarge = "a form too large to look for a method override" // 413
	reasonBodyStalled      = "request body stalled"                           // 408
)

// rejectStatus is the status of a rejected request: 400 unless its reason
// says the body was too large or stopped arriving.
func rejectStatus(reason string) (status int, message string) {
	switch reason {
	case reasonOverrideTooLarge:
		return http.StatusRequestEntityTooLarge, "request_too_large"
	case reasonBodyStalled:
		return http.StatusRequestTimeout, "request_timeout"
	}
	return http.StatusBadRequest, "bad_request"
}

// headerMethodOverride is the override header, canonical.
const headerMethodOverride = "X-Http-Method-Override"

// overrideMethods are the methods an override may name.
var overrideMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// effectiveMethod is the method the application will act on, or a fixed
// reason to refuse the request.
func (g *Gateway) effectiveMethod(q *Request, p reqpath.Path, set *rules.Set) (method, reason string) {
	method = q.Method
	if p.Query != "" && queryHasMethodField(p.Query) {
		// Symfony reads _method from the query too.
		return "", "a _method override in the query"
	}
	if method != http.MethodPost {
		return method, ""
	}
	if g.cfg.MethodOverride == MethodOverrideHeader {
		switch vs := q.Header[headerMethodOverride]; len(vs) {
		case 0:
		case 1:
			// Header values lose their surrounding whitespace in every
			// server; letters only, and folded as ASCII, as in the form.
			m := approve.OverrideMethod(strings.TrimSpace(vs[0]))
			if !slices.Contains(overrideMethods, m) {
				return "", "a method override header naming no method"
			}
			method = m
		default:
			return "", "two method override headers"
		}
	}
	if !set.MethodMatters(p.Match) {
		return method, ""
	}
	if set.Match(method, p.Match).Action == rules.Approve {
		// The approve path reads this body itself, under the same
		// grammar, and refuses a _method it was not told to honour.
		return method, ""
	}
	ct := q.Header.Get("Content-Type")
	mt, _, _ := strings.Cut(ct, ";")
	form := isFormType(mt)
	if !form && !approve.ReadAsJSON(mt) {
		return method, ""
	}
	if q.req == nil || q.req.Body == nil || q.req.Body == http.NoBody {
		if form && g.cfg.MethodOverride == MethodOverrideForm && q.req == nil {
			// A front door's check without the body: the method cannot
			// be known, and the rules say it matters.
			return "", "a form POST whose _method stepgate cannot see"
		}
		return method, ""
	}
	body, reason := g.readOverrideBody(q)
	if reason != "" {
		return "", reason
	}
	if !form {
		// Laravel and Express's method-override (on req.body) take a JSON
		// _method too; stepgate honours none, so it refuses one.
		if approve.JSONNamesMethod(ct, body) != nil {
			return "", "a JSON body that names a _method, or that does not parse strictly"
		}
		return method, ""
	}
	v, found, err := approve.MethodField(ct, body)
	switch {
	case err != nil:
		return "", "a form that could name its method two ways"
	case !found:
		return method, ""
	case g.cfg.MethodOverride != MethodOverrideForm:
		return "", "a _method override the application is not set to honour"
	}
	m := approve.OverrideMethod(v)
	if !slices.Contains(overrideMethods, m) {
		return "", "a _method naming no method"
	}
	return m, ""
}

// readOverrideBody reads the proxy door's request body (bounded, with the
// body idle limit) and puts it back for forwarding.
func (g *Gateway) readOverrideBody(q *Request) ([]byte, string) {
	limit := g.cfg.MethodOverrideMaxBody
	if limit <= 0 {
		limit = 64 << 10
	}
	r := q.req
	if r.ContentLength > limit {
		return nil, reasonOverrideTooLarge
	}
	var src io.Reader = r.Body
	if q.w != nil {
		src = newClientBody(r.Body, q.w, g.cfg.BodyIdleTimeout)
	}
	b, err := io.ReadAll(io.LimitReader(src, limit+1))
	var be *clientBodyError
	switch {
	case errors.As(err, &be) && be.timedOut():
		return nil, reasonBodyStalled
	case err != nil:
		return nil, "an unreadable request body"
	case int64(len(b)) > limit:
		return nil, reasonOverrideTooLarge
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	r.TransferEncoding = nil
	r.Header.Del("Transfer-Encoding")
	return b, ""
}

func isFormType(mt string) bool {
	mt = strings.TrimSpace(mt)
	return strings.EqualFold(mt, "application/x-www-form-urlencoded") || strings.EqualFold(mt, "multipart/form-data")
}

// queryHasMethodField reports a query field any parser reads as _method.
// A query without "method" in any case and without a '%' has none, and
// costs no allocation to rule out.
func queryHasMethodField(raw string) bool {
	if !mayNameMethod(raw) {
		return false
	}
	return approve.QueryNamesMethod(raw)
}

func mayNameMethod(raw string) bool {
	const word = "method"
	for i := 0; i < len(raw); i++ {
		if raw[i] == '%' {
			return true
		}
		if i+len(word) <= len(raw) && strings.EqualFold(raw[i:i+len(word)], word) {
			return true
		}
	}
	return false
}
