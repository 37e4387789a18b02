package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/mfa"
	"github.com/stepgate/stepgate/proxy/approve"
	"github.com/stepgate/stepgate/proxy/decoupled"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/store"

	"github.com/prometheus/client_golang/prometheus"
)

// benchPingOne answers every flow with a push still waiting, from memory:
// the poll's own cost, without PingOne's round trip (which a real poll adds
// on top, once per poll).
type benchPingOne struct {
	mu sync.Mutex
	n  int
}

func (p *benchPingOne) pending(id string) *mfa.Flow {
	return &mfa.Flow{ID: id, Status: mfa.StatusPushConfirmationRequired, SelectedDeviceID: "d1",
		Devices: []mfa.Device{{ID: "d1", Type: "MOBILE"}}}
}
func (p *benchPingOne) Start(context.Context, mfa.StartRequest) (*mfa.Flow, *mfa.Pending, error) {
	p.mu.Lock()
	p.n++
	id := fmt.Sprint("flow-", p.n)
	p.mu.Unlock()
	return p.pending(id), &mfa.Pending{FlowID: id, Challenged: true}, nil
}
func (p *benchPingOne) Read(_ context.Context, q *mfa.Pending) (*mfa.Flow, error) {
	return p.pending(q.FlowID), nil
}
func (p *benchPingOne) SelectDevice(_ context.Context, q *mfa.Pending, _ string) (*mfa.Flow, error) {
	return p.pending(q.FlowID), nil
}
func (p *benchPingOne) CheckOTP(context.Context, *mfa.Pending, mfa.Secret) (*mfa.Flow, error) {
	return nil, &mfa.Error{Kind: mfa.KindInvalid}
}
func (p *benchPingOne) Reset(context.Context, *mfa.Pending) (*mfa.Flow, error) { return nil, nil }
func (p *benchPingOne) Complete(context.Context, *mfa.Pending, *mfa.Flow) (*mfa.Result, error) {
	return &mfa.Result{AuthTime: benchEpoch, MFA: true}, nil
}

type apiChallenger struct{ nopChallenger }

func (apiChallenger) IsAPI(*http.Request) bool { return true }

// BenchmarkPhonePoll compares, in one run, a poll of a pending phone
// approval (GET /.stepgate/approvals/{ref}: limits, the sealed state and
// held request opened from the memory store, a release tried, the flow
// read, the 202 written) with a bare reverse proxy and the gateway's allow
// path, each with its p50 and p99.
func BenchmarkPhonePoll(b *testing.B) {
	e := newBenchEnv(b, slog.LevelInfo)
	set, err := rules.Parse("bench", "/admin/ mfa max_age=15m; DELETE /users/ approve api=decoupled show=User:path",
		rules.Defaults{Action: rules.Allow, MaxAge: time.Hour, ACR: "MFA-Only"})
	if err != nil {
		b.Fatal(err)
	}
	now := func() time.Time { return benchEpoch }
	gate := approve.New(store.NewMemory(store.MemoryOptions{Now: now}), [][]byte{[]byte("bench digest key")}, 0, now)
	svc, err := decoupled.New(decoupled.Config{PingOne: &benchPingOne{}, Gate: gate, Now: now,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: metrics.New(prometheus.NewRegistry(), "bench")})
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	cfg := e.gw.cfg
	cfg.Rules, cfg.Approvals, cfg.Decoupled, cfg.Challenge = set, gate, svc, apiChallenger{}
	gw, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	held := e.request("/users/42", false)
	held.Method = http.MethodDelete
	held.Header.Set("Accept", "application/json")
	w := &sinkWriter{h: http.Header{}}
	gw.ServeHTTP(w, held)
	loc := w.h.Get("Location")
	if w.code != http.StatusAccepted || !strings.HasPrefix(loc, decoupled.PathPrefix) {
		b.Fatalf("hold: %d %q", w.code, loc)
	}

	run := func(b *testing.B, serve func(http.ResponseWriter, *http.Request), path string, want int) {
		w := &sinkWriter{h: http.Header{}}
		lat := make([]time.Duration, 0, 1<<16)
		b.ReportAllocs()
		defer cpuPerOp(b)()
		for b.Loop() {
			w.reset()
			r := e.request(path, false)
			t0 := time.Now()
			serve(w, r)
			lat = append(lat, time.Since(t0))
			if w.code != want {
				b.Fatalf("%s: %d, want %d", path, w.code, want)
			}
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	}
	b.Run("bare", func(b *testing.B) { run(b, e.bare.ServeHTTP, "/static/app.css", http.StatusOK) })
	b.Run("allow", func(b *testing.B) { run(b, gw.ServeHTTP, "/static/app.css", http.StatusOK) })
	b.Run("poll", func(b *testing.B) { run(b, gw.ServeHTTP, loc, http.StatusAccepted) })
}
