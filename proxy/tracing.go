package proxy

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/stepgate/stepgate/proxy/clientip"
	"github.com/stepgate/stepgate/proxy/reqpath"
)

// Front doors as spans name them (stepgate.door).
const (
	DoorProxy        = "proxy"
	DoorForwardAuth  = "forward-auth"
	DoorExtAuthz     = "ext-authz"
	DoorExtAuthzGRPC = "ext-authz-grpc"
)

// Span attributes (docs/design.md §10). Values are stepgate's own labels,
// the rule as written in the configuration, the hashed (or configured)
// user and status codes: never a header value, a path's query, a cookie,
// a token, an OTP or what an approval shows.
const (
	attrDoor     = "stepgate.door"
	attrDecision = "stepgate.decision"
	attrOutcome  = "stepgate.outcome"
	attrRule     = "stepgate.rule"
	attrAction   = "stepgate.rule.action"
	attrUser     = "stepgate.user"
	attrMethod   = "http.request.method"
	attrStatus   = "http.response.status_code"
)

var traceContext = propagation.TraceContext{}

// startSpan starts the server span of a request through an HTTP door: its
// parent is the W3C trace context in h (the request's own, or, for a
// front proxy's check, the original request's as the proxy passed it).
func (g *Gateway) startSpan(r *http.Request, h http.Header, door, method string) (*http.Request, trace.Span) {
	ctx, span := g.startSpanContext(r.Context(), h, r.RemoteAddr, door, method)
	return r.WithContext(ctx), span
}

// startSpanContext is startSpan on a context: a span context already in ctx
// is the parent, else the one in h — when peer is inside
// STEPGATE_TRUSTED_PROXIES. From any other peer (stepgate at the edge)
// the trace starts anew, linked to the client's: a client must not pick
// the trace its spans join, nor turn sampling on or off.
func (g *Gateway) startSpanContext(ctx context.Context, h http.Header, peer, door, method string) (context.Context, trace.Span) {
	opts := serverSpan
	if !trace.SpanContextFromContext(ctx).IsValid() && h.Get("Traceparent") != "" {
		if p, ok := clientip.ParsePeer(peer); ok && g.cfg.ClientIP.Trusted(p) {
			ctx = traceContext.Extract(ctx, propagation.HeaderCarrier(h))
		} else if sc := trace.SpanContextFromContext(traceContext.Extract(ctx, propagation.HeaderCarrier(h))); sc.IsValid() {
			opts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer), trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: sc})}
		}
	}
	ctx, span := g.tracer.Start(ctx, spanName(door), opts...)
	// A span that is not recording (not sampled) takes no attributes:
	// building them cost a request as much as the span itself.
	if span.IsRecording() {
		if !reqpath.ValidMethod(method) {
			method = "_OTHER"
		}
		span.SetAttributes(attribute.String(attrDoor, door), attribute.String(attrMethod, method))
	}
	return ctx, span
}

var serverSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}

// spanName is a door's span name, without a concatenation per request.
func spanName(door string) string {
	switch door {
	case DoorProxy:
		return "stepgate " + DoorProxy
	case DoorForwardAuth:
		return "stepgate " + DoorForwardAuth
	case DoorExtAuthz:
		return "stepgate " + DoorExtAuthz
	case DoorExtAuthzGRPC:
		return "stepgate " + DoorExtAuthzGRPC
	}
	return "stepgate " + door
}

// noteDecision records the rule a decision matched on the request's span.
func noteDecision(ctx context.Context, d *Decision) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	switch d.Verdict {
	case Reject, Asterisk, Internal:
		return // decided before any rule was matched
	}
	rule := d.Rule.Path
	if rule == "" {
		rule = "(default)"
	}
	span.SetAttributes(attribute.String(attrRule, rule), attribute.String(attrAction, d.Rule.Action.String()))
}

// endSpan ends a request's span with the decision and its outcome.
func (g *Gateway) endSpan(span trace.Span, decision, user string, status int) {
	if span.IsRecording() {
		attrs := []attribute.KeyValue{
			attribute.String(attrDecision, decision),
			attribute.String(attrOutcome, outcome(decision)),
			attribute.Int(attrStatus, status),
		}
		if u := g.traceUser(user); u != "" {
			attrs = append(attrs, attribute.String(attrUser, u))
		}
		span.SetAttributes(attrs...)
		if status >= 500 {
			span.SetStatus(codes.Error, decision)
		}
	}
	span.End()
}

// outcome sorts decision labels into what happened to the request.
func outcome(decision string) string {
	switch decision {
	case decisionAllow, decisionStepUp, decisionApproved:
		return "forwarded"
	case decisionRequired, decisionApprovalRequired:
		return "challenged"
	case decisionInternal:
		return "served"
	}
	return "refused"
}

// startUpstreamSpan starts the client span of the call to the upstream.
// Only under a recording span: a request whose trace is not sampled goes to
// the upstream without a span of its own and without stepgate's
// traceparent (the client's trace context, if any, passes through as it
// came, sampled flag and all), which saves the span, a copy of the request
// and the header written and parsed again upstream.
func (g *Gateway) startUpstreamSpan(r *http.Request) (*http.Request, trace.Span) {
	ctx, span := g.tracer.Start(r.Context(), "upstream", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String(attrMethod, r.Method)))
	return r.WithContext(ctx), span
}

func (g *Gateway) endUpstreamSpan(span trace.Span, w http.ResponseWriter) {
	if rec, ok := w.(*recorder); ok && span.IsRecording() {
		span.SetAttributes(attribute.Int(attrStatus, rec.code))
		if rec.code >= 500 {
			span.SetStatus(codes.Error, "upstream")
		}
	}
	span.End()
}

// injectTrace gives the upstream stepgate's trace context in place of the
// client's: traceparent names stepgate's upstream span, and tracestate is
// the trace's as extracted (W3C trace context carries it along), never a
// second copy of the client's lines.
func injectTrace(out *http.Request) {
	delete(out.Header, "Traceparent")
	delete(out.Header, "Tracestate")
	traceContext.Inject(out.Context(), propagation.HeaderCarrier(out.Header))
}
