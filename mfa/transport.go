package mfa

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// reply is a PingOne response that passed the status checks.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// call sends one request to PingOne and classifies the answer. Cookies of
// the flow in p go out in a Cookie header, and every Set-Cookie comes back
// into p. allow3xx lets /as/resume answer with a redirect; any other 3xx is
// KindUnavailable, because we never follow redirects.
func (c *Client) call(ctx context.Context, op string, p *Pending, method, target, contentType string, body []byte, allow3xx bool) (*reply, error) {
	return c.send(ctx, op, p, method, target, contentType, body, allow3xx, nil)
}

// send is call with an optional hook to add credentials to the request.
func (c *Client) send(ctx context.Context, op string, p *Pending, method, target, contentType string, body []byte, allow3xx bool, auth func(*http.Request)) (*reply, error) {
	if err := c.admit(op); err != nil {
		return nil, err
	}
	if !c.onAuthBase(target) {
		// Cannot happen with the URLs we build; a guard so that no code path
		// ever sends a flow's cookies off the auth host.
		return nil, newError(op, KindInvalid, errors.New("target is not on the auth base"))
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	status := 0                                                             // the answer's status, for the span; 0: none
	if c.cfg.Tracer != nil && trace.SpanContextFromContext(ctx).IsValid() { // a request's call, not a background one
		var span trace.Span
		ctx, span = c.cfg.Tracer.Start(ctx, "pingone "+op, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("stepgate.pingone.op", op),
				attribute.String("http.request.method", method), attribute.String("server.address", c.base.Hostname())))
		defer func() {
			// The op, the host and the status only: never the URL
			// (an authorize URL carries the signed request object).
			if status > 0 {
				span.SetAttributes(attribute.Int("http.response.status_code", status))
			}
			if status == 0 || status >= 400 {
				span.SetStatus(codes.Error, "pingone "+op)
			}
			span.End()
		}()
	}

	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, newError(op, KindInvalid, err)
	}
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth != nil {
		auth(req)
	}
	if p != nil {
		if h := cookieHeader(p.Cookies); h != "" {
			req.Header.Set("Cookie", h)
		}
	}

	start := c.cfg.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		c.observe(op, 0, c.cfg.Now().Sub(start))
		c.log.LogAttrs(ctx, slog.LevelWarn, "pingone call failed", slog.String("op", op), slog.String("error", err.Error()))
		return nil, newError(op, KindUnavailable, err)
	}
	defer resp.Body.Close()
	status = resp.StatusCode
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	d := c.cfg.Now().Sub(start)
	c.observe(op, resp.StatusCode, d)
	c.log.LogAttrs(ctx, slog.LevelDebug, "pingone call",
		slog.String("op", op), slog.Int("code", resp.StatusCode), slog.Duration("duration", d))
	if p != nil {
		p.Cookies = mergeCookies(p.Cookies, resp.Cookies(), c.cfg.Now())
	}
	if err != nil {
		e := newError(op, KindUnavailable, fmt.Errorf("read body: %w", err))
		e.HTTPStatus = resp.StatusCode
		return nil, e
	}
	if len(data) > maxBody {
		e := newError(op, KindUnavailable, fmt.Errorf("body larger than %d bytes", maxBody))
		e.HTTPStatus = resp.StatusCode
		return nil, e
	}
	r := &reply{status: resp.StatusCode, header: resp.Header, body: data}
	switch {
	case r.status >= 200 && r.status < 300:
		return r, nil
	case r.status >= 300 && r.status < 400 && allow3xx:
		return r, nil
	}
	return nil, c.statusError(op, r)
}

// admit refuses a call locally while a PingOne 429 is in force, or when the
// process-wide limiter says no. Neither sends a request.
func (c *Client) admit(op string) error {
	now := c.cfg.Now()
	c.mu.Lock()
	until := c.blockedUntil
	c.mu.Unlock()
	if now.Before(until) {
		e := newError(op, KindRateLimited, errors.New("pingone asked us to wait (earlier 429)"))
		e.RetryAfter = until.Sub(now)
		return e
	}
	if c.cfg.Limiter != nil && !c.cfg.Limiter.Allow() {
		e := newError(op, KindRateLimited, errors.New("local cap on pingone calls"))
		e.RetryAfter = time.Second
		return e
	}
	return nil
}

// pingError is PingOne's error body (docs/pingone.md §8.1); error and
// error_description are the OAuth form /as/token may use.
type pingError struct {
	ID      string `json:"id"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Details []struct {
		Code       string          `json:"code"`
		Target     string          `json:"target"`
		Message    string          `json:"message"`
		InnerError json.RawMessage `json:"innerError"`
	} `json:"details"`
	OAuthError string `json:"error"`
	OAuthDesc  string `json:"error_description"`
}

func (c *Client) statusError(op string, r *reply) *Error {
	e := newError(op, KindInvalid, nil)
	e.HTTPStatus = r.status
	var pe pingError
	if json.Unmarshal(r.body, &pe) == nil {
		e.Code, e.Message, e.CorrelationID = pe.Code, pe.Message, pe.ID
		if e.Code == "" {
			e.Code, e.Message = pe.OAuthError, pe.OAuthDesc
		}
		if len(pe.Details) > 0 {
			e.DetailCode, e.DetailTarget = pe.Details[0].Code, pe.Details[0].Target
		}
		for _, d := range pe.Details {
			if parameterName(d.Target) && !slices.Contains(e.Targets, d.Target) && len(e.Targets) < 8 {
				e.Targets = append(e.Targets, d.Target)
			}
		}
	}
	if e.CorrelationID == "" {
		e.CorrelationID = r.header.Get("Correlation-Id")
	}
	switch {
	case r.status == http.StatusTooManyRequests:
		e.Kind = KindRateLimited
		e.RetryAfter = retryAfter(r.header.Get("Retry-After"), c.cfg.Now())
		c.mu.Lock()
		if until := c.cfg.Now().Add(e.RetryAfter); until.After(c.blockedUntil) {
			c.blockedUntil = until
		}
		c.mu.Unlock()
	case r.status == http.StatusNotFound && (op != "authorize" && op != "token"):
		// Unknown or idle-expired flow (docs/pingone.md §5.1). On authorize or
		// token a 404 means a wrong environment, which starting again
		// would not fix.
		e.Kind = KindFlowExpired
	case op == "otp_check" && r.status == http.StatusBadRequest && e.DetailCode == "INVALID_OTP":
		e.Kind = KindWrongOTP
		var inner struct {
			AttemptsRemaining *int `json:"attemptsRemaining"`
		}
		if json.Unmarshal(pe.Details[0].InnerError, &inner) == nil && inner.AttemptsRemaining != nil {
			e.AttemptsRemaining = *inner.AttemptsRemaining
		}
	case r.status >= 300 && r.status < 400:
		e.Kind = KindUnavailable
		e.Err = errors.New("unexpected redirect")
	case r.status >= 500:
		e.Kind = KindUnavailable
	}
	return e
}

// retryAfter parses Retry-After as seconds or an HTTP date; absent or
// unreadable means 1s, and the result is capped at maxRetryAfter.
func retryAfter(v string, now time.Time) time.Duration {
	d := time.Second
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
		if n > int64(maxRetryAfter/time.Second) {
			n = int64(maxRetryAfter / time.Second)
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d <= 0 {
		d = time.Second
	}
	return min(d, maxRetryAfter)
}

// mergeCookies folds Set-Cookie headers into a flow's cookie list: replace by
// name, delete on Max-Age<0 (Max-Age=0 parses as -1) or an expiry in the
// past, and keep at most maxCookies cookies of at most maxCookieBytes each
// so the sealed flow cookie stays small.
func mergeCookies(have []Cookie, set []*http.Cookie, now time.Time) []Cookie {
	out := append([]Cookie(nil), have...)
	for _, sc := range set {
		i := -1
		for j, c := range out {
			if c.Name == sc.Name {
				i = j
				break
			}
		}
		expired := sc.MaxAge < 0 || (!sc.Expires.IsZero() && sc.MaxAge == 0 && sc.Expires.Before(now))
		if expired {
			if i >= 0 {
				out = append(out[:i], out[i+1:]...)
			}
			continue
		}
		if len(sc.Name)+len(sc.Value) > maxCookieBytes {
			continue
		}
		if i >= 0 {
			out[i].Value = sc.Value
			continue
		}
		if len(out) >= maxCookies {
			continue
		}
		out = append(out, Cookie{Name: sc.Name, Value: sc.Value})
	}
	return out
}

// cookieHeader renders the flow's cookies; http.Cookie.String drops invalid
// names and sanitises values, so a tampered Pending cannot inject headers.
func cookieHeader(cs []Cookie) string {
	parts := make([]string, 0, len(cs))
	for _, c := range cs {
		if s := (&http.Cookie{Name: c.Name, Value: c.Value}).String(); s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "; ")
}

func (c *Client) observe(op string, code int, d time.Duration) {
	if c.cfg.Observe != nil {
		c.cfg.Observe(op, code, d)
	}
}
