package mfa

import (
	"context"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

func TestFaultsOnStart(t *testing.T) {
	tests := []struct {
		name       string
		fault      pingonesim.Fault
		wantKind   ErrorKind
		wantStatus int
	}{
		{"a 503 from authorize is unavailable", pingonesim.Fault{Op: "authorize", Kind: "status", Status: 503}, KindUnavailable, 503},
		{"a 500 from authorize is unavailable", pingonesim.Fault{Op: "authorize", Kind: "status", Status: 500}, KindUnavailable, 500},
		{"malformed JSON from authorize is unavailable", pingonesim.Fault{Op: "authorize", Kind: "malformed"}, KindUnavailable, 0},
		{"a dropped connection is unavailable", pingonesim.Fault{Op: "authorize", Kind: "drop"}, KindUnavailable, 0},
		{"a 429 is rate limited", pingonesim.Fault{Op: "authorize", Kind: "rate_limit", RetryAfter: 7}, KindRateLimited, 429},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSimEnv(t, pingonesim.DemoTenant(), nil)
			e.sim.SetFault(tt.fault)
			_, p, err := e.client.Start(context.Background(), StartRequest{User: "alice"})
			if p != nil {
				t.Error("Start returned a Pending with an error")
			}
			ee := wantKind(t, err, tt.wantKind)
			if tt.wantStatus != 0 && ee.HTTPStatus != tt.wantStatus {
				t.Errorf("HTTP status = %d, want %d", ee.HTTPStatus, tt.wantStatus)
			}
			if tt.wantKind == KindRateLimited && ee.RetryAfter != 7*time.Second {
				t.Errorf("RetryAfter = %v, want 7s", ee.RetryAfter)
			}
		})
	}
}

func TestLatencyBeyondTheTimeoutFailsQuickly(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), func(c *Config) { c.Timeout = 150 * time.Millisecond })
	_, p := e.start("alice")
	// 3s, not more: the simulator only notices a client hang-up on a GET;
	// a POST handler sleeps out its latency and delays the server's Close.
	e.sim.SetFault(pingonesim.Fault{Op: "flows", Kind: "latency", Latency: 3 * time.Second})
	before := e.sim.Requests()
	began := time.Now()
	_, err := e.client.Read(context.Background(), p)
	wantKind(t, err, KindUnavailable)
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("Read took %v with a 150ms timeout", took)
	}
	if n := e.sim.Requests() - before; n != 1 {
		t.Errorf("requests = %d, want 1 (a timeout is not retried)", n)
	}
	began = time.Now()
	_, err = e.client.SelectDevice(context.Background(), p, pingonesim.DemoAliceSMSID)
	wantKind(t, err, KindUnavailable)
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("SelectDevice took %v with a 150ms timeout", took)
	}
}

func TestReadIsRetriedOnce(t *testing.T) {
	tests := []struct {
		name     string
		fault    pingonesim.Fault
		wantErr  bool
		wantReqs int64
	}{
		{"one 503 is absorbed by the retry", pingonesim.Fault{Op: "flows", Kind: "status", Status: 503, Count: 1}, false, 2},
		{"one dropped connection is absorbed by the retry", pingonesim.Fault{Op: "flows", Kind: "drop", Count: 1}, false, 2},
		{"two 503s in a row fail after one retry", pingonesim.Fault{Op: "flows", Kind: "status", Status: 503, Count: 2}, true, 2},
		{"malformed JSON is not retried", pingonesim.Fault{Op: "flows", Kind: "malformed", Count: 1}, true, 1},
		{"a 429 is not retried", pingonesim.Fault{Op: "flows", Kind: "rate_limit", Count: 1}, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSimEnv(t, pingonesim.DemoTenant(), nil)
			_, p := e.start("alice")
			e.sim.SetFault(tt.fault)
			before := e.sim.Requests()
			f, err := e.client.Read(context.Background(), p)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Read: %v, want error %v", err, tt.wantErr)
			}
			if err == nil && f.Status != StatusDeviceSelectionRequired {
				t.Errorf("status = %s", f.Status)
			}
			if n := e.sim.Requests() - before; n != tt.wantReqs {
				t.Errorf("requests = %d, want %d", n, tt.wantReqs)
			}
		})
	}
}

func TestActionsAreNotRetried(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	_, p := e.start("alice")
	e.sim.SetFault(pingonesim.Fault{Op: "flows", Kind: "status", Status: 502, Count: 1})
	before := e.sim.Requests()
	_, err := e.client.SelectDevice(context.Background(), p, pingonesim.DemoAliceSMSID)
	wantKind(t, err, KindUnavailable)
	if n := e.sim.Requests() - before; n != 1 {
		t.Errorf("requests = %d, want 1 (a POST may have had an effect)", n)
	}
}

func TestRateLimitBlocksLocallyUntilRetryAfter(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	ctx := context.Background()
	_, p := e.start("alice")
	e.sim.SetFault(pingonesim.Fault{Op: "flows", Kind: "rate_limit", RetryAfter: 30, Count: 1})
	_, err := e.client.Read(ctx, p)
	if ee := wantKind(t, err, KindRateLimited); ee.RetryAfter != 30*time.Second || ee.HTTPStatus != 429 {
		t.Errorf("error = %+v, want 429 with 30s", ee)
	}

	e.clock.Advance(10 * time.Second)
	before := e.sim.Requests()
	for _, call := range []func() error{
		func() error { _, err := e.client.Read(ctx, p); return err },
		func() error { _, err := e.client.SelectDevice(ctx, p, pingonesim.DemoAliceSMSID); return err },
		func() error { _, _, err := e.client.Start(ctx, StartRequest{User: "bob"}); return err },
	} {
		ee := wantKind(t, call(), KindRateLimited)
		if ee.RetryAfter != 20*time.Second || ee.HTTPStatus != 0 {
			t.Errorf("local block: %+v, want 20s left and no HTTP status", ee)
		}
	}
	if n := e.sim.Requests() - before; n != 0 {
		t.Errorf("%d requests sent while blocked", n)
	}

	e.clock.Advance(21 * time.Second)
	if _, err := e.client.Read(ctx, p); err != nil {
		t.Errorf("after Retry-After: %v", err)
	}
}

func TestLimiterRefusesWithoutARequest(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), func(c *Config) { c.Limiter = rate.NewLimiter(rate.Every(time.Hour), 1) })
	_, p := e.start("alice")
	before := e.sim.Requests()
	_, err := e.client.Read(context.Background(), p)
	if ee := wantKind(t, err, KindRateLimited); ee.RetryAfter <= 0 {
		t.Errorf("RetryAfter = %v, want > 0", ee.RetryAfter)
	}
	if n := e.sim.Requests() - before; n != 0 {
		t.Errorf("%d requests sent past the limiter", n)
	}
}

func TestCompletionFaults(t *testing.T) {
	tests := []struct {
		name     string
		rt       string
		fault    pingonesim.Fault
		wantKind ErrorKind
	}{
		{"a failing token endpoint is unavailable", ResponseTypeCode, pingonesim.Fault{Op: "token", Kind: "status", Status: 503}, KindUnavailable},
		{"a dropped token call is unavailable", ResponseTypeCode, pingonesim.Fault{Op: "token", Kind: "drop"}, KindUnavailable},
		{"malformed token JSON is unavailable", ResponseTypeCode, pingonesim.Fault{Op: "token", Kind: "malformed"}, KindUnavailable},
		{"an unreachable JWKS leaves the token unverified: unavailable, try later", ResponseTypeTokenIDToken, pingonesim.Fault{Op: "jwks", Kind: "status", Status: 500}, KindUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSimEnv(t, pingonesim.DemoTenant(), func(c *Config) { c.ResponseType = tt.rt })
			f, p := e.start("dave")
			e.sim.SetFault(tt.fault)
			_, err := e.client.Complete(context.Background(), p, f)
			wantKind(t, err, tt.wantKind)
		})
	}
}

func TestReadiness(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	e.sim.SetFault(pingonesim.Fault{Op: "jwks", Kind: "drop", Count: 1})
	if err := e.client.LoadKeys(context.Background()); err == nil {
		t.Fatal("LoadKeys: got nil with JWKS dropped")
	}
	if e.client.Ready() {
		t.Fatal("Ready() before any successful load")
	}
	if err := e.client.LoadKeys(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !e.client.Ready() {
		t.Fatal("Ready() = false after a load")
	}
}
