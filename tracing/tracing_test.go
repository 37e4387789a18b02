package tracing

import (
	"strings"
	"testing"
)

func TestFromEnv(t *testing.T) {
	const endpoint = "OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318"
	for _, tt := range []struct {
		name    string
		env     []string
		on      bool
		sampler string // the sampler's Description, when on
		err     string // a part of the error; "" for none
	}{
		{name: "off without an endpoint", env: nil},
		{name: "off when disabled", env: []string{endpoint, "OTEL_SDK_DISABLED=TRUE"}},
		{name: "the default sampler is parent-based", env: []string{endpoint}, on: true, sampler: "ParentBased{root:AlwaysOnSampler"},
		{name: "sampler names in any case", env: []string{endpoint, "OTEL_TRACES_SAMPLER=TraceIdRatio", "OTEL_TRACES_SAMPLER_ARG=0.25"}, on: true, sampler: "TraceIDRatioBased{0.25}"},
		{name: "parent-based ratio", env: []string{endpoint, "OTEL_TRACES_SAMPLER=ParentBased_TraceIdRatio", "OTEL_TRACES_SAMPLER_ARG=0.5"}, on: true, sampler: "ParentBased{root:TraceIDRatioBased{0.5}"},
		{name: "a bad ratio", env: []string{endpoint, "OTEL_TRACES_SAMPLER=traceidratio", "OTEL_TRACES_SAMPLER_ARG=2"}, err: "OTEL_TRACES_SAMPLER_ARG"},
		{name: "an unknown sampler", env: []string{endpoint, "OTEL_TRACES_SAMPLER=jaeger_remote"}, err: "OTEL_TRACES_SAMPLER"},
		{name: "credentials in the endpoint are refused, and not repeated", env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=https://user:s3cr3t@collector"}, err: "OTEL_EXPORTER_OTLP_HEADERS"},
		{name: "a header without '=' is named by position, not value", env: []string{endpoint, "OTEL_EXPORTER_OTLP_HEADERS=api-key=ok,Bearer s3cr3t"}, err: "item 2 is not key=value"},
		{name: "a header with a bad escape is named by key, not value", env: []string{endpoint, "OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%zzs3cr3t"}, err: `item 1 (key "authorization")`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, on, err := FromEnv(tt.env)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("FromEnv() error = %v, want one saying %q", err, tt.err)
				}
				if strings.Contains(err.Error(), "s3cr3t") {
					t.Errorf("the error repeats a secret: %v", err)
				}
				return
			}
			if err != nil || on != tt.on {
				t.Fatalf("FromEnv() = on %v, %v; want on %v", on, err, tt.on)
			}
			if on && !strings.HasPrefix(o.Sampler.Description(), tt.sampler) {
				t.Errorf("sampler = %s, want %s…", o.Sampler.Description(), tt.sampler)
			}
		})
	}
}
