// Package tracing sets up OpenTelemetry traces for stepgate from the
// standard OTEL_* variables (docs/design.md §10): an OTLP exporter over
// HTTP/protobuf or gRPC, a sampler and a resource. Traces are off unless an
// exporter is configured, and the request path then pays nothing for them
// (every package takes a nil trace.Tracer to mean off).
//
// It must never put a secret in a span: attribute values come from the
// request path's own fixed labels, and a user is hashed (User) unless the
// operator chose otherwise.
package tracing

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Options are the OTEL_* variables stepgate reads.
type Options struct {
	// Endpoint is the traces endpoint as a URL: for http/protobuf the full
	// URL spans are posted to, for grpc the collector's address.
	Endpoint string
	Protocol string // "http/protobuf" or "grpc"
	Headers  map[string]string
	Sampler  sdktrace.Sampler
	// Resource attributes: service.name first.
	ServiceName string
	Attributes  []attribute.KeyValue
	// Timeout bounds one export (OTEL_EXPORTER_OTLP_TRACES_TIMEOUT or
	// OTEL_EXPORTER_OTLP_TIMEOUT, in milliseconds; default 10 s).
	Timeout time.Duration
}

// FromEnv reads the OTEL_* variables of environ (os.Environ's form). ok is
// false when traces are off: OTEL_SDK_DISABLED=true, OTEL_TRACES_EXPORTER=none,
// or neither OTEL_TRACES_EXPORTER=otlp nor an OTLP endpoint
// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT) set.
func FromEnv(environ []string) (o Options, ok bool, err error) {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, found := strings.Cut(kv, "="); found && strings.HasPrefix(k, "OTEL_") {
			env[k] = strings.TrimSpace(v)
		}
	}
	if strings.EqualFold(env["OTEL_SDK_DISABLED"], "true") {
		return o, false, nil
	}
	exporter := strings.ToLower(env["OTEL_TRACES_EXPORTER"])
	switch exporter {
	case "none":
		return o, false, nil
	case "", "otlp":
	default:
		return o, false, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: stepgate exports traces with otlp (or none)", exporter)
	}
	signal, base := env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"], env["OTEL_EXPORTER_OTLP_ENDPOINT"]
	if exporter == "" && signal == "" && base == "" {
		return o, false, nil
	}
	o.Protocol = first(env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"], env["OTEL_EXPORTER_OTLP_PROTOCOL"], "http/protobuf")
	switch o.Protocol {
	case "http/protobuf":
		// The signal's own endpoint is used as it is; the base one gets
		// /v1/traces (OTLP exporter specification).
		switch {
		case signal != "":
			o.Endpoint = signal
		case base != "":
			o.Endpoint = strings.TrimSuffix(base, "/") + "/v1/traces"
		default:
			o.Endpoint = "http://localhost:4318/v1/traces"
		}
	case "grpc":
		o.Endpoint = first(signal, base, "http://localhost:4317")
	default:
		return o, false, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: want http/protobuf or grpc", o.Protocol)
	}
	u, err := url.Parse(o.Endpoint)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return o, false, errors.New("OTLP traces endpoint: want an http:// or https:// URL")
	case u.User != nil:
		// It would be logged at start-up with the endpoint.
		return o, false, fmt.Errorf("OTLP traces endpoint %s: credentials go in OTEL_EXPORTER_OTLP_HEADERS, not in the URL", u.Redacted())
	}
	if o.Headers, err = keyValues(first(env["OTEL_EXPORTER_OTLP_TRACES_HEADERS"], env["OTEL_EXPORTER_OTLP_HEADERS"])); err != nil {
		return o, false, fmt.Errorf("OTEL_EXPORTER_OTLP_HEADERS: %w", err)
	}
	o.Timeout = 10 * time.Second
	if t := first(env["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"], env["OTEL_EXPORTER_OTLP_TIMEOUT"]); t != "" {
		ms, err := strconv.Atoi(t)
		if err != nil || ms <= 0 {
			return o, false, fmt.Errorf("OTEL_EXPORTER_OTLP_TIMEOUT=%q: want milliseconds", t)
		}
		o.Timeout = time.Duration(ms) * time.Millisecond
	}
	if o.Sampler, err = sampler(env["OTEL_TRACES_SAMPLER"], env["OTEL_TRACES_SAMPLER_ARG"]); err != nil {
		return o, false, err
	}
	attrs, err := keyValues(env["OTEL_RESOURCE_ATTRIBUTES"])
	if err != nil {
		return o, false, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	o.ServiceName = first(env["OTEL_SERVICE_NAME"], attrs["service.name"], "stepgate")
	delete(attrs, "service.name")
	for k, v := range attrs {
		o.Attributes = append(o.Attributes, attribute.String(k, v))
	}
	return o, true, nil
}

// sampler is OTEL_TRACES_SAMPLER's sampler; the default is
// parentbased_always_on, as the specification says.
func sampler(name, arg string) (sdktrace.Sampler, error) {
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: want a ratio from 0 to 1", arg)
		}
		return r, nil
	}
	name = strings.ToLower(name)
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		if name == "traceidratio" {
			return sdktrace.TraceIDRatioBased(r), nil
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	}
	return nil, fmt.Errorf("OTEL_TRACES_SAMPLER=%q: want always_on, always_off, traceidratio or parentbased_ one of them", name)
}

// keyValues parses the W3C-baggage-like "k1=v1,k2=v2" list of
// OTEL_RESOURCE_ATTRIBUTES and OTEL_EXPORTER_OTLP_HEADERS (values
// percent-decoded).
func keyValues(s string) (map[string]string, error) {
	// Errors name an item by position and key, never by value: the
	// exporter's headers carry credentials.
	out := map[string]string{}
	i := 0
	for item := range strings.SplitSeq(s, ",") {
		i++
		if strings.TrimSpace(item) == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("item %d is not key=value", i)
		}
		dv, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("item %d (key %q): the value has a bad %%-escape", i, k)
		}
		out[k] = dv
	}
	return out, nil
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// Provider is a running tracer provider.
type Provider struct {
	tp *sdktrace.TracerProvider
}

// New starts the exporter (it connects lazily) and the batch span processor.
func New(ctx context.Context, o Options, version string) (*Provider, error) {
	var exp sdktrace.SpanExporter
	var err error
	switch o.Protocol {
	case "grpc":
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpointURL(o.Endpoint), otlptracegrpc.WithTimeout(o.Timeout)}
		if len(o.Headers) > 0 {
			opts = append(opts, otlptracegrpc.WithHeaders(o.Headers))
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	default:
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(o.Endpoint), otlptracehttp.WithTimeout(o.Timeout)}
		if len(o.Headers) > 0 {
			opts = append(opts, otlptracehttp.WithHeaders(o.Headers))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: otlp exporter: %w", err)
	}
	attrs := append([]attribute.KeyValue{
		attribute.String("service.name", o.ServiceName),
		attribute.String("service.version", version),
	}, o.Attributes...)
	res := resource.NewSchemaless(attrs...)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(o.Sampler),
		sdktrace.WithResource(res),
	)
	return &Provider{tp: tp}, nil
}

// Tracer is stepgate's tracer.
func (p *Provider) Tracer() trace.Tracer {
	return p.tp.Tracer("github.com/stepgate/stepgate")
}

// Shutdown exports what is left, within ctx.
func (p *Provider) Shutdown(ctx context.Context) error {
	return p.tp.Shutdown(ctx)
}

// User returns how a user is named in spans: "plain" keeps the name,
// "omit" drops it, and "hash" (the default) is the first 16 bytes of
// HMAC-SHA256 under key, in hex — the same user has the same value on every
// replica sharing the key, and a name cannot be looked up from it without
// the key.
func User(mode string, key []byte) (func(string) string, error) {
	switch mode {
	case "plain":
		return func(u string) string { return u }, nil
	case "omit":
		return func(string) string { return "" }, nil
	case "", "hash":
		if len(key) == 0 {
			return nil, errors.New("tracing: a key is needed to hash users")
		}
		k := append([]byte(nil), key...)
		return func(u string) string {
			if u == "" {
				return ""
			}
			m := hmac.New(sha256.New, k)
			m.Write([]byte(u))
			return hex.EncodeToString(m.Sum(nil)[:16])
		}, nil
	}
	return nil, fmt.Errorf("tracing: user mode %q: want hash, plain or omit", mode)
}
