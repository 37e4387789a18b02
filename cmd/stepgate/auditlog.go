package main

import (
	"context"
	"log/slog"
)

// auditSchema is the version of the audit lines' schema (docs/audit.md,
// docs/audit.schema.json). A minor change (a new event, a new optional
// field) keeps it; a major change (a field removed, renamed or retyped, an
// event's meaning changed) makes it stepgate.audit/2.
const auditSchema = "stepgate.audit/1"

// auditHandler adds "schema" to every audit line (msg "audit"), first after
// msg, whichever package writes the line: events added later carry it
// without a change of their own.
type auditHandler struct{ slog.Handler }

func (h auditHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message != "audit" {
		return h.Handler.Handle(ctx, r)
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
	return auditHandler{h.Handler.WithAttrs(attrs)}
}

func (h auditHandler) WithGroup(name string) slog.Handler {
	return auditHandler{h.Handler.WithGroup(name)}
}
