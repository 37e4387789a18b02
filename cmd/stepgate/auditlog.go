package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"time"
)

// auditSchema is the version of the audit lines' schema (docs/audit.md,
// docs/audit.schema.json). A minor change (a new event, a new optional
// field) keeps it; a major change (a field removed, renamed or retyped, an
// event's meaning changed) makes it stepgate.audit/2.
const auditSchema = "stepgate.audit/1"

// auditHandler adds "schema" to every audit line (msg "audit"), first after
// msg, whichever package writes the line: events added later carry it
// without a change of their own. With ocsf set (STEPGATE_AUDIT_FORMAT=ocsf)
// it writes each audit event as an OCSF event instead; every other line
// goes to the JSON handler as it is.
type auditHandler struct {
	slog.Handler
	ocsf  *ocsfWriter
	attrs []slog.Attr // from WithAttrs, for the OCSF form
}

func (h auditHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message != "audit" {
		return h.Handler.Handle(ctx, r)
	}
	if h.ocsf != nil {
		return h.ocsf.write(auditFields(r, h.attrs))
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(slog.String("schema", auditSchema))
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(a)
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h auditHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return auditHandler{Handler: h.Handler.WithAttrs(attrs), ocsf: h.ocsf, attrs: append(slices.Clip(h.attrs), attrs...)}
}

func (h auditHandler) WithGroup(name string) slog.Handler {
	return auditHandler{Handler: h.Handler.WithGroup(name), ocsf: h.ocsf, attrs: h.attrs}
}

// auditFields is an audit record as the fields of its JSON line (the form
// the OCSF mapping reads, so that it maps a logged line and a record alike).
func auditFields(r slog.Record, pre []slog.Attr) map[string]any {
	m := map[string]any{
		"time":   r.Time.UTC().Format(time.RFC3339Nano),
		"level":  r.Level.String(),
		"msg":    r.Message,
		"schema": auditSchema,
	}
	add := func(a slog.Attr) bool {
		v := a.Value.Resolve()
		switch v.Kind() {
		case slog.KindString:
			m[a.Key] = v.String()
		case slog.KindInt64:
			m[a.Key] = float64(v.Int64()) // as a decoded JSON line has it
		case slog.KindUint64:
			m[a.Key] = float64(v.Uint64())
		case slog.KindFloat64:
			m[a.Key] = v.Float64()
		case slog.KindBool:
			m[a.Key] = v.Bool()
		case slog.KindDuration:
			m[a.Key] = float64(v.Duration()) // nanoseconds, as slog writes it
		case slog.KindTime:
			m[a.Key] = v.Time().Format(time.RFC3339Nano)
		case slog.KindAny:
			// As slog's JSON handler: an error's message, anything else
			// marshalled (a []string is an array, not "[a b]").
			if err, ok := v.Any().(error); ok {
				m[a.Key] = err.Error()
				break
			}
			var decoded any
			if b, err := json.Marshal(v.Any()); err == nil && json.Unmarshal(b, &decoded) == nil {
				m[a.Key] = decoded
			} else {
				m[a.Key] = v.String()
			}
		default:
			m[a.Key] = v.String()
		}
		return true
	}
	for _, a := range pre {
		add(a)
	}
	r.Attrs(add)
	return m
}
