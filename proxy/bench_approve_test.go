package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/proxy/approve"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/store"
)

// The approve path's cost per request (docs/design.md §14), reported beside
// the others, not gated: a payment form post of ~100 bytes, either held
// (no approval yet: read, digest, seal, store, answer) or forwarded (an
// unused approval consumed first, as an API client's retry).

const benchPayment = "amount=500&currency=EUR&payee=ACME+GmbH&iban=DE00123456780000000000&reference=INV-2026-0042"

func approveBenchGateway(b *testing.B) (*Gateway, *approve.Gate, *store.Memory) {
	b.Helper()
	e := newBenchEnv(b, slog.LevelInfo)
	set, err := rules.Parse("bench", "/admin/ mfa max_age=15m; POST /payments/transfer approve "+
		"show=Amount:form.amount,Currency:form.currency,Payee:form.payee template=transaction "+
		"vars=sum:form.amount,currency:form.currency,recipient:form.payee",
		rules.Defaults{Action: rules.Allow, MaxAge: time.Hour, ACR: "MFA-Only"})
	if err != nil {
		b.Fatal(err)
	}
	now := func() time.Time { return benchEpoch }
	st := store.NewMemory(store.MemoryOptions{Now: now})
	gate := approve.New(st, [][]byte{[]byte("bench digest key")}, 0, now)
	cfg := e.gw.cfg
	cfg.Rules, cfg.Approvals = set, gate
	gw, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return gw, gate, st
}

func paymentRequest() *http.Request {
	r, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "http://gw.example/payments/transfer", strings.NewReader(benchPayment))
	r.RequestURI = "/payments/transfer"
	r.RemoteAddr = "127.0.0.1:54321"
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Accept", "application/json")
	r.Header.Set("X-Forwarded-User", "alice")
	r.Header.Set("Cookie", "theme=dark; lang=en")
	return r
}

func BenchmarkGatewayApproveHold(b *testing.B) {
	gw, _, _ := approveBenchGateway(b)
	w := &sinkWriter{h: http.Header{}}
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		w.reset()
		gw.ServeHTTP(w, paymentRequest())
		if w.code != http.StatusSeeOther {
			b.Fatalf("status %d, want the stub's 303", w.code)
		}
	}
}

func BenchmarkGatewayApproveForward(b *testing.B) {
	gw, gate, st := approveBenchGateway(b)
	w := &sinkWriter{h: http.Header{}}
	q := &approve.Request{User: "alice", Method: "POST", Path: "/payments/transfer", Match: "/payments/transfer",
		ContentType: "application/x-www-form-urlencoded", Body: []byte(benchPayment)}
	// The approval binds the canonical request (docs/design.md §14.2).
	if err := q.Canonicalize(http.Header{"Content-Type": {q.ContentType}}, nil, false); err != nil {
		b.Fatal(err)
	}
	digest := gate.Digest(q)
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		// Part of the loop: one approval per forward (what the challenge
		// records once the user approved).
		_ = st.Approve(context.Background(), digest, time.Minute)
		w.reset()
		gw.ServeHTTP(w, paymentRequest())
		if w.code != http.StatusOK && w.code != 0 {
			b.Fatalf("status %d, want 200", w.code)
		}
	}
}
