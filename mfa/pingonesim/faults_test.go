package pingonesim

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func (h *harness) jwks(ctx context.Context) (resp, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.env()+"/as/jwks", nil)
	res, err := h.srv.Client().Do(req)
	if err != nil {
		return resp{}, err
	}
	res.Body.Close()
	return h.do(req), nil
}

func TestFaults(t *testing.T) {
	t.Parallel()
	get := func(h *harness, p string) resp {
		req, _ := http.NewRequest(http.MethodGet, h.env()+p, nil)
		return h.do(req)
	}
	tests := []struct {
		name  string
		fault Fault
		check func(t *testing.T, r resp)
	}{
		{"status answers a PingOne error with that status", Fault{Op: "jwks", Kind: "status", Status: 502}, func(t *testing.T, r resp) {
			if r.status != 502 || str(r.body, "code") != "UNEXPECTED_ERROR" || str(r.body, "id") == "" {
				t.Errorf("= %d %s", r.status, r.raw)
			}
		}},
		{"status defaults to 503", Fault{Op: "jwks", Kind: "status"}, func(t *testing.T, r resp) {
			if r.status != 503 {
				t.Errorf("= %d, want 503", r.status)
			}
		}},
		{"rate_limit answers 429 REQUEST_LIMITED with Retry-After", Fault{Op: "jwks", Kind: "rate_limit", RetryAfter: 7}, func(t *testing.T, r resp) {
			if r.status != 429 || str(r.body, "code") != "REQUEST_LIMITED" || r.header.Get("Retry-After") != "7" {
				t.Errorf("= %d %s Retry-After %q", r.status, r.raw, r.header.Get("Retry-After"))
			}
		}},
		{"rate_limit defaults Retry-After to 1", Fault{Op: "jwks", Kind: "rate_limit"}, func(t *testing.T, r resp) {
			if r.header.Get("Retry-After") != "1" {
				t.Errorf("Retry-After = %q, want 1", r.header.Get("Retry-After"))
			}
		}},
		{"malformed answers 200 with invalid JSON", Fault{Op: "jwks", Kind: "malformed"}, func(t *testing.T, r resp) {
			if r.status != 200 || json.Valid([]byte(r.raw)) || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
				t.Errorf("= %d %q", r.status, r.raw)
			}
		}},
		{"a catch-all fault applies to every op", Fault{Kind: "status", Status: 500}, func(t *testing.T, r resp) {
			if r.status != 500 {
				t.Errorf("= %d, want 500", r.status)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			tt.fault.Count = 1
			h.sim.SetFault(tt.fault)
			tt.check(t, get(h, "/as/jwks"))
			if r := get(h, "/as/jwks"); r.status != 200 || !json.Valid([]byte(r.raw)) {
				t.Errorf("after Count=1 was used up: %d %s", r.status, r.raw)
			}
		})
	}
}

func TestFaultScopeAndClearing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	get := func(p string) int {
		req, _ := http.NewRequest(http.MethodGet, h.env()+p, nil)
		return h.do(req).status
	}
	h.sim.SetFault(Fault{Op: "token", Kind: "status", Status: 503})
	if got := get("/as/jwks"); got != 200 {
		t.Errorf("a token fault hit jwks: %d", got)
	}
	h.sim.SetFault(Fault{Op: "jwks", Kind: "status", Status: 502})
	h.sim.SetFault(Fault{Kind: "status", Status: 500})
	if got := get("/as/jwks"); got != 502 {
		t.Errorf("the op's own fault should win over the catch-all: %d", got)
	}
	if got := get("/as/.well-known/openid-configuration"); got != 500 {
		t.Errorf("catch-all on discovery = %d, want 500", got)
	}
	h.sim.SetFault(Fault{Op: "jwks", Kind: "status", Status: 504})
	if got := get("/as/jwks"); got != 504 {
		t.Errorf("SetFault should replace the op's fault: %d", got)
	}
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/_sim/inbox", nil)
	if r := h.do(req); r.status != 200 {
		t.Errorf("faults reached /_sim/: %d", r.status)
	}
	h.sim.ClearFaults()
	if got := get("/as/jwks"); got != 200 {
		t.Errorf("after ClearFaults: %d", got)
	}
}

func TestDropClosesTheConnection(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.sim.SetFault(Fault{Op: "authorize", Kind: "drop", Count: 1})
	req, _ := http.NewRequest(http.MethodGet, h.env()+"/as/authorize", nil)
	res, err := h.srv.Client().Do(req)
	if err == nil {
		res.Body.Close()
		t.Fatalf("dropped request got a response: %d", res.StatusCode)
	}
	if r, _ := h.start("alice", nil); str(r.body, "id") == "" {
		t.Error("authorize after the drop did not work")
	}
}

func TestLatencyDelaysAndStopsWithTheClient(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)

	h.sim.SetFault(Fault{Op: "jwks", Kind: "latency", Latency: 30 * time.Millisecond, Count: 1})
	start := time.Now()
	if r, err := h.jwks(context.Background()); err != nil || r.status != 200 {
		t.Fatalf("delayed jwks: %v %d", err, r.status)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("latency fault took %v, want ≥ 30ms", d)
	}

	// An hour of latency must not hold the handler once the client gives up:
	// the cancelled request fails fast and the server still closes cleanly.
	h.sim.SetFault(Fault{Op: "jwks", Kind: "latency", Latency: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := h.jwks(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	done := make(chan struct{})
	go func() { h.srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server close blocked on a latency fault after the client left")
	}
}
