package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepgate/stepgate/session"
	"github.com/stepgate/stepgate/store"
	"github.com/stepgate/stepgate/store/redistest"
)

// viewCheck is the gateway's view of revocations, as cmd/stepgate wires it.
type viewCheck struct{ v *store.Revocations }

func (c viewCheck) Revoked(su session.StepUp) bool {
	return c.v.Stale() || c.v.Revoked(su.User, su.ID, su.AuthTime)
}
func (c viewCheck) Stale() bool { return c.v.Stale() }

// BenchmarkGatewaySteppedUpRedisStore is BenchmarkGatewaySteppedUp with the
// Redis store configured (STEPGATE_STORE=redis): a real redis-server feeds
// the in-process revocation view, and the benchmark fails if any request
// made a call to Redis (docs/design.md §15: no round trip per request).
func BenchmarkGatewaySteppedUpRedisStore(b *testing.B) {
	srv := redistest.Start(b)
	var calls atomic.Int64
	rs, err := store.NewRedis(store.RedisOptions{URL: srv.URL(), Observe: func(op string, _ time.Duration, _ error) {
		if !strings.HasPrefix(op, "revocations_") { // the sync's own periodic load
			calls.Add(1)
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer rs.Close()
	view := store.NewRevocations(store.RevocationsOptions{MaxStaleness: 10 * time.Second, Now: func() time.Time { return benchEpoch }})
	sync := rs.Revocations(view, store.RedisRevocationsOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sync.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for _, id := range []string{"revoked-1", "revoked-2", "revoked-3"} {
		if err := sync.Revoke(ctx, store.Revocation{Session: id}); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for view.Stale() {
		if time.Now().After(deadline) {
			b.Fatal("revocation view not confirmed by Redis")
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}

	e := newBenchEnv(b, slog.LevelInfo)
	e.gw.cfg.Revocations = viewCheck{view}
	before := calls.Load()
	runHandler(b, e.gw, e.request("/admin/report", true), http.StatusOK)
	if n := calls.Load() - before; n != 0 {
		b.Fatalf("%d calls to Redis during %d stepped-up requests, want none", n, b.N)
	}
	if e.transport.last.Header.Get(HeaderUser) != "alice" {
		b.Fatal("the step-up was not forwarded")
	}
}
