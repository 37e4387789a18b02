package main

// Traces (docs/design.md §10), received by an in-process OTLP collector: a
// loopback HTTP server that decodes what the exporter posts to /v1/traces
// with the collector's own protobuf types.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

// otlpReceiver collects the spans an OTLP/HTTP exporter sends it.
type otlpReceiver struct {
	URL string

	mu       sync.Mutex
	spans    []*tracepb.Span
	resource []*commonpb.KeyValue
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	rcv := &otlpReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want a protobuf POST to /v1/traces", http.StatusBadRequest)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rcv.mu.Lock()
		for _, rs := range req.ResourceSpans {
			rcv.resource = append(rcv.resource, rs.GetResource().GetAttributes()...)
			for _, ss := range rs.ScopeSpans {
				rcv.spans = append(rcv.spans, ss.Spans...)
			}
		}
		rcv.mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	rcv.URL = srv.URL
	return rcv
}

// trace returns the spans of a trace once want of them arrived (the batch
// processor exports every OTEL_BSP_SCHEDULE_DELAY; polling with a deadline
// is the synchronisation).
func (rcv *otlpReceiver) trace(t *testing.T, traceID []byte, want int) []*tracepb.Span {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got []*tracepb.Span
		rcv.mu.Lock()
		for _, s := range rcv.spans {
			if string(s.TraceId) == string(traceID) {
				got = append(got, s)
			}
		}
		rcv.mu.Unlock()
		if len(got) >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (rcv *otlpReceiver) all() ([]*tracepb.Span, []*commonpb.KeyValue) {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	return append([]*tracepb.Span(nil), rcv.spans...), append([]*commonpb.KeyValue(nil), rcv.resource...)
}

// traceparent is a new sampled W3C trace context: the header value, and
// the trace and parent span ids it names.
func traceparent(t *testing.T) (string, []byte, []byte) {
	t.Helper()
	tid, sid := make([]byte, 16), make([]byte, 8)
	_, _ = rand.Read(tid)
	_, _ = rand.Read(sid)
	return fmt.Sprintf("00-%x-%x-01", tid, sid), tid, sid
}

func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			if v := kv.Value.GetStringValue(); v != "" {
				return v
			}
			return fmt.Sprint(kv.Value.GetIntValue())
		}
	}
	return ""
}

// serverSpan is the one server span of a trace, whose parent must be parent.
func serverSpan(t *testing.T, spans []*tracepb.Span, parent []byte, door string) *tracepb.Span {
	t.Helper()
	var found []*tracepb.Span
	for _, s := range spans {
		if s.Kind == tracepb.Span_SPAN_KIND_SERVER {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d server spans in the trace, want 1: %v", door, len(found), spans)
	}
	s := found[0]
	if string(s.ParentSpanId) != string(parent) {
		t.Errorf("%s: the server span's parent is %x, want the caller's %x", door, s.ParentSpanId, parent)
	}
	if got := attr(s, "stepgate.door"); got != door {
		t.Errorf("stepgate.door = %q, want %q", got, door)
	}
	return s
}

func TestTracesFollowEveryRequestThroughEveryDoor(t *testing.T) {
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "20") // read by the SDK from the process
	rcv := newOTLPReceiver(t)
	s := newStack(t, withEnv(
		"STEPGATE_FRONT_DOORS", "proxy,forward-auth,ext-authz",
		"STEPGATE_TRUSTED_PROXIES", "127.0.0.1/32",
		"STEPGATE_AUTHZ_GRPC_LISTEN", "127.0.0.1:0",
		"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.URL,
		"OTEL_SERVICE_NAME", "stepgate-test",
	))
	grpcAddr := grpcAddrFromLogs(t, s)

	// A step-up through the challenge: its pages call PingOne.
	b := s.browser("alice")
	tp, tid, parent := traceparent(t)
	b.header = http.Header{"Traceparent": {tp}}
	r := b.get("/admin/")
	if r.StatusCode != http.StatusFound {
		t.Fatalf("GET /admin/: %d", r.StatusCode)
	}
	serverSpan(t, rcv.trace(t, tid, 1), parent, "proxy")
	b.header = nil
	r = b.follow(r)
	tp, tid, parent = traceparent(t)
	b.header = http.Header{"Traceparent": {tp}}
	r = b.post("action", "start") // PingOne authorize
	b.header = nil
	r = b.follow(r)
	spans := rcv.trace(t, tid, 2)
	srv := serverSpan(t, spans, parent, "proxy")
	var pingone int
	for _, sp := range spans {
		if strings.HasPrefix(sp.Name, "pingone ") {
			pingone++
			if sp.Kind != tracepb.Span_SPAN_KIND_CLIENT || len(sp.ParentSpanId) == 0 {
				t.Errorf("%s: kind %v, parent %x; want a client span in the request's trace", sp.Name, sp.Kind, sp.ParentSpanId)
			}
		}
	}
	if pingone == 0 {
		t.Errorf("no PingOne span in the trace of the challenge start: %v", spans)
	}
	_ = srv
	ids := deviceIDs(r.Body)
	r = b.follow(b.post("action", "select", "device", ids[0]))
	otp := s.latestOTP("alice")
	r = b.post("action", "otp", "otp", otp)
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("OTP: %d %s", r.StatusCode, r.Body)
	}

	// The proxy door, stepped up: the upstream's span is a child of
	// stepgate's, and the upstream receives its trace context.
	tp, tid, parent = traceparent(t)
	b.header = http.Header{"Traceparent": {tp}, "Tracestate": {"vendor=1"}}
	if r := b.get("/admin/"); r.StatusCode != http.StatusOK {
		t.Fatalf("stepped-up GET: %d", r.StatusCode)
	}
	b.header = nil
	spans = rcv.trace(t, tid, 2)
	srv = serverSpan(t, spans, parent, "proxy")
	if got := attr(srv, "stepgate.decision"); got != "stepped_up" {
		t.Errorf("stepgate.decision = %q, want stepped_up", got)
	}
	if got := attr(srv, "stepgate.rule"); got != "/admin/" {
		t.Errorf("stepgate.rule = %q, want /admin/", got)
	}
	if got := attr(srv, "stepgate.outcome"); got != "forwarded" {
		t.Errorf("stepgate.outcome = %q, want forwarded", got)
	}
	if got := attr(srv, "stepgate.user"); got == "" || got == "alice" {
		t.Errorf("stepgate.user = %q, want alice hashed", got)
	}
	var upstream *tracepb.Span
	for _, sp := range spans {
		if sp.Name == "upstream" {
			upstream = sp
		}
	}
	if upstream == nil || string(upstream.ParentSpanId) != string(srv.SpanId) {
		t.Fatalf("no upstream span under the server span: %v", spans)
	}
	up := s.LastRequest().Header
	if want := fmt.Sprintf("00-%x-%x-01", tid, upstream.SpanId); up.Get("Traceparent") != want {
		t.Errorf("upstream got traceparent %q, want %q", up.Get("Traceparent"), want)
	}
	if got := up.Values("Tracestate"); len(got) != 1 || got[0] != "vendor=1" {
		t.Errorf("upstream got tracestate %q, want the trace's (vendor=1) once, as W3C trace context carries it along", got)
	}

	// forward-auth (nginx): the sub-request carries the original's context.
	tp, tid, parent = traceparent(t)
	h := http.Header{"X-Original-Method": {"GET"}, "X-Original-Uri": {"/app/"}, "X-Forwarded-User": {"bob"}, "Traceparent": {tp}}
	if code := getStatus(t, s.Proxy+"/.stepgate/auth", h); code != http.StatusOK {
		t.Fatalf("forward-auth: %d", code)
	}
	srv = serverSpan(t, rcv.trace(t, tid, 1), parent, "forward-auth")
	if got := attr(srv, "stepgate.decision"); got != "allow" {
		t.Errorf("forward-auth decision = %q, want allow", got)
	}

	// ext_authz over HTTP.
	tp, tid, parent = traceparent(t)
	h = http.Header{"X-Forwarded-User": {"bob"}, "Traceparent": {tp}}
	if code := getStatus(t, s.Proxy+"/.stepgate/ext-authz/blocked", h); code != http.StatusForbidden {
		t.Fatalf("ext-authz: %d", code)
	}
	srv = serverSpan(t, rcv.trace(t, tid, 1), parent, "ext-authz")
	if got := attr(srv, "stepgate.outcome"); got != "refused" {
		t.Errorf("ext-authz outcome = %q, want refused", got)
	}

	// ext_authz over gRPC: Envoy's span (in the call's metadata) is the
	// parent; without one, the checked request's own context.
	c := authzClient(t, grpcAddr, nil)
	tp, tid, parent = traceparent(t)
	ctx := metadata.AppendToOutgoingContext(t.Context(), "traceparent", tp)
	if _, err := c.Check(ctx, envoyCheck("GET", "/app/", "x-forwarded-user", "bob")); err != nil {
		t.Fatal(err)
	}
	serverSpan(t, rcv.trace(t, tid, 1), parent, "ext-authz-grpc")
	tp, tid, parent = traceparent(t)
	check(t, c, envoyCheck("GET", "/app/", "x-forwarded-user", "bob", "traceparent", tp))
	serverSpan(t, rcv.trace(t, tid, 1), parent, "ext-authz-grpc")

	// No secret in any span: the client secret, the cookie key, the OTP,
	// the step-up cookie, the ID token the upstream received.
	secrets := map[string]string{
		"client secret": pingonesim.DemoTenant().Apps[0].Secret,
		"cookie key":    testKey,
		"otp":           otp,
		"id token":      up.Get("X-Stepgate-Id-Token"),
		"user":          "alice",
	}
	for _, ck := range b.Client.Jar.Cookies(mustURL(t, s.Proxy)) {
		secrets["cookie "+ck.Name] = ck.Value
	}
	all, resource := rcv.all()
	var values []string
	for _, kv := range resource {
		values = append(values, kv.Key+"="+kv.Value.String())
	}
	for _, sp := range all {
		values = append(values, sp.Name, sp.Status.GetMessage())
		for _, kv := range sp.Attributes {
			values = append(values, kv.Key+"="+kv.Value.String())
		}
		for _, ev := range sp.Events {
			values = append(values, ev.Name)
			for _, kv := range ev.Attributes {
				values = append(values, kv.Key+"="+kv.Value.String())
			}
		}
	}
	for name, secret := range secrets {
		if len(secret) < 4 {
			t.Fatalf("secret %s is too short to look for: %q", name, secret)
		}
		for _, v := range values {
			if strings.Contains(v, secret) {
				t.Errorf("a span carries the %s: %q", name, v)
			}
		}
	}
	if !strings.Contains(strings.Join(values, "\n"), "service.name=string_value:\"stepgate-test\"") {
		t.Errorf("resource lacks OTEL_SERVICE_NAME: %v", values[:min(len(values), 5)])
	}
}

// TestTracesAreOffUnlessConfigured: without OTEL_* nothing is exported and
// no traceparent of stepgate's reaches the upstream (the client's passes as
// it came).
func TestTracesAreOffUnlessConfigured(t *testing.T) {
	s := newStack(t)
	tp, _, _ := traceparent(t)
	b := s.browser("bob")
	b.header = http.Header{"Traceparent": {tp}}
	if r := b.get("/app/"); r.StatusCode != http.StatusOK {
		t.Fatalf("GET: %d", r.StatusCode)
	}
	if got := s.LastRequest().Header.Get("Traceparent"); got != tp {
		t.Errorf("upstream got traceparent %q, want the client's %q untouched", got, tp)
	}
	if strings.Contains(s.Logs.String(), "traces on") {
		t.Error("traces on without configuration")
	}
}

// TestATraceNotSampledCostsTheUpstreamNothing: with traces on but the
// request not sampled, stepgate records nothing, starts no upstream span
// and writes no traceparent of its own: the client's passes as it came,
// with its sampled flag, so the upstream follows the client's decision.
func TestATraceNotSampledCostsTheUpstreamNothing(t *testing.T) {
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
	rcv := newOTLPReceiver(t)
	s := newStack(t, withEnv(
		"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.URL,
		"OTEL_TRACES_SAMPLER", "parentbased_always_on",
	))
	tp, tid, _ := traceparent(t)
	notSampled := strings.TrimSuffix(tp, "-01") + "-00"
	b := s.browser("bob")
	for _, h := range []string{notSampled, ""} {
		b.header = http.Header{}
		if h != "" {
			b.header.Set("Traceparent", h)
		}
		if r := b.get("/app/"); r.StatusCode != http.StatusOK {
			t.Fatalf("GET: %d", r.StatusCode)
		}
		if h == "" {
			continue // sampled by parentbased_always_on: stepgate's own context goes up
		}
		if got := s.LastRequest().Header.Get("Traceparent"); got != notSampled {
			t.Errorf("upstream got traceparent %q, want the client's not-sampled %q untouched", got, notSampled)
		}
	}
	if got := s.LastRequest().Header.Get("Traceparent"); got == "" || strings.Contains(got, fmt.Sprintf("%x", tid)) {
		t.Errorf("a sampled request's upstream traceparent = %q, want stepgate's", got)
	}
	// Once the sampled request's spans are exported, the earlier request's
	// would have been too.
	parts := strings.Split(s.LastRequest().Header.Get("Traceparent"), "-")
	sampled, err := hex.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	if got := rcv.trace(t, sampled, 2); len(got) != 2 {
		t.Fatalf("the sampled request exported %d spans, want 2", len(got))
	}
	spans, _ := rcv.all()
	for _, sp := range spans {
		if string(sp.TraceId) == string(tid) {
			t.Errorf("a not-sampled request exported span %q", sp.Name)
		}
	}
}

// A client that reaches stepgate directly (a peer outside
// STEPGATE_TRUSTED_PROXIES) does not choose the trace its request joins,
// nor whether it is sampled: the trace starts anew, linked to the client's.
func TestAnUntrustedClientsTraceparentIsALinkNotTheParent(t *testing.T) {
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
	rcv := newOTLPReceiver(t)
	s := newStack(t, withEnv(
		"STEPGATE_TRUSTED_PROXIES", "10.0.0.0/8", // the test's loopback client is not a trusted proxy
		"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.URL,
	))
	for _, flags := range []string{"01", "00"} { // sampled, and a try to turn sampling off
		tp, tid, _ := traceparent(t)
		tp = tp[:len(tp)-2] + flags
		req, _ := http.NewRequest(http.MethodGet, s.Proxy+"/", nil)
		req.Header.Set("Traceparent", tp)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		var span *tracepb.Span
		deadline := time.Now().Add(10 * time.Second)
		for span == nil && time.Now().Before(deadline) {
			spans, _ := rcv.all()
			for _, sp := range spans {
				for _, l := range sp.Links {
					if sp.Kind == tracepb.Span_SPAN_KIND_SERVER && string(l.TraceId) == string(tid) {
						span = sp
					}
				}
			}
			if span == nil {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if span == nil {
			t.Fatalf("flags %s: no server span linked to the client's trace", flags)
		}
		if string(span.TraceId) == string(tid) || len(span.ParentSpanId) != 0 {
			t.Errorf("flags %s: the span is in trace %x under %x; want a new root, the client's trace only a link", flags, span.TraceId, span.ParentSpanId)
		}
	}
}
