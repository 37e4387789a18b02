package main

import (
	"go.opentelemetry.io/otel/trace"

	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/proxy/challenge"
	"github.com/stepgate/stepgate/proxy/ratelimit"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/session"
	"github.com/stepgate/stepgate/store"
)

// stores is the state kept between requests (docs/design.md §15): in this process
// (STEPGATE_STORE=memory), or in Redis/Valkey shared by every replica.
type stores struct {
	kind      string
	approvals store.Approvals
	revoker   store.Revoker
	view      *store.Revocations
	redis     *store.Redis            // nil with the memory store
	sync      *store.RedisRevocations // nil with the memory store
	once      atomic.Bool             // the store answered since start
}

// now is the gateway's clock (step-ups' AuthTime); connections to Redis
// run on real time.
func newStores(cfg config, s settings, m *metrics.Metrics, log *slog.Logger, now func() time.Time, tracer trace.Tracer) (*stores, error) {
	st := &stores{kind: cfg.Store}
	if cfg.Store != "redis" {
		st.approvals = store.NewMemory(store.MemoryOptions{Now: now})
		st.view = store.NewRevocations(store.RevocationsOptions{Now: now})
		st.revoker = st.view
		return st, nil
	}
	r, err := store.NewRedis(store.RedisOptions{
		URL: cfg.RedisURL, Password: cfg.RedisPassword, RootCAs: s.redisCAs, Timeout: cfg.RedisTimeout,
		Observe: m.ObserveStore, Now: time.Now, Tracer: tracer,
	})
	if err != nil {
		return nil, fmt.Errorf("STEPGATE_REDIS_URL: %w", err)
	}
	// Freshness is about real time whatever clock the rest runs on: it
	// measures how long ago Redis last confirmed the view.
	st.view = store.NewRevocations(store.RevocationsOptions{MaxStaleness: cfg.StoreMaxStaleness, Now: now, Wall: time.Now})
	st.redis, st.approvals = r, r
	st.sync = r.Revocations(st.view, store.RedisRevocationsOptions{
		DownAfter: min(2*time.Second, cfg.StoreMaxStaleness), Logger: log,
	})
	st.revoker = st.sync
	return st, nil
}

// run keeps the revocation view in step with Redis until ctx ends.
func (st *stores) run(ctx context.Context) {
	if st.sync != nil {
		st.sync.Run(ctx)
	}
}

func (st *stores) close() {
	if st.redis != nil {
		_ = st.redis.Close()
	}
}

// limiter is the abuse limit name: the replica's own limiter, or with
// Redis a limit exact across replicas that falls back to it.
func (st *stores) limiter(name string, n int, per time.Duration, local *ratelimit.Limiter) challenge.Limiter {
	if st.redis == nil {
		return local
	}
	return st.redis.Limiter(name, n, per, local)
}

// pingOneCap is the cap on calls to PingOne: global with Redis.
func (st *stores) pingOneCap(perSecond float64, burst int) interface{ Allow() bool } {
	local := rate.NewLimiter(rate.Limit(perSecond), burst)
	if st.redis == nil {
		return local
	}
	return st.redis.Rate("pingone", perSecond, burst, local)
}

// reached reports whether the shared store has answered since start: until
// then the replica is not ready (its revocation view is empty and
// unconfirmed). Later outages do not make it unready (see /readyz).
func (st *stores) reached() bool {
	if st.sync == nil || st.once.Load() {
		return true
	}
	if st.sync.Reached() {
		st.once.Store(true)
		return true
	}
	return false
}

// down reports that the shared store is unreachable: flows do not start.
func (st *stores) down() bool { return st.sync != nil && st.sync.Down() }

// status is the store's line on /readyz.
func (st *stores) status() string {
	if st.sync == nil {
		return "store: memory (this replica only)"
	}
	unconfirmed := "never confirmed since start"
	if st.reached() {
		unconfirmed = "unconfirmed for " + st.view.Unconfirmed().Round(time.Second).String()
	}
	switch {
	case st.sync.Restoring():
		return "store: redis holds no revocations yet, waiting for the other replicas to put theirs back: mfa paths refused (503)"
	case st.view.Stale():
		return "store: redis unreachable, revocations " + unconfirmed + ": mfa paths refused (503), limits per replica"
	case st.sync.Down():
		return "store: redis unreachable: challenge starts and approvals refused (503), limits per replica"
	}
	return "store: redis ok"
}

// revocationCheck adapts the view to what the gateway asks of a step-up.
// A stale view refuses every step-up (allow paths then forward no
// step-up headers; mfa paths answer 503 before asking).
type revocationCheck struct{ v *store.Revocations }

func (c revocationCheck) Revoked(su session.StepUp) bool {
	return c.v.Stale() || c.v.Revoked(su.User, su.ID, su.AuthTime) ||
		su.Subject != "" && c.v.RevokedSubject(su.Subject, su.AuthTime)
}

func (c revocationCheck) Stale() bool { return c.v.Stale() }

// logoutRevoker revokes the step-up a logout request carries.
func (st *stores) logoutRevoker(sessions *session.Store, log *slog.Logger) func(r *http.Request) error {
	return func(r *http.Request) error {
		su, ok := sessions.StepUp(r)
		if !ok {
			return nil
		}
		err := st.revoker.Revoke(r.Context(), store.Revocation{Session: su.ID})
		log.LogAttrs(r.Context(), slog.LevelInfo, "audit", slog.String("event", "session.revoked"),
			slog.String("by", "logout"), slog.String("user", su.User), slog.String("session_id", su.ID),
			slog.Bool("stored", err == nil))
		return err
	}
}

// printStore is -check-config's account of the store (docs/design.md §15).
func printStore(w io.Writer, cfg config, s settings, getenv func(string) string) {
	if cfg.Store == "redis" {
		fmt.Fprintf(w, "store: redis %s (shared by every replica; call timeout %s; mfa paths refused after %s without Redis)\n",
			store.RedactURL(cfg.RedisURL), cfg.RedisTimeout, cfg.StoreMaxStaleness)
	} else {
		fmt.Fprintln(w, "store: memory (limits, approvals and revocations hold on this replica only)")
		if approveRules(s) > 0 {
			where := ""
			if getenv("KUBERNETES_SERVICE_HOST") != "" {
				where = " (running in Kubernetes)"
			}
			fmt.Fprintf(w, "warning: %d approve rule(s) with STEPGATE_STORE=memory%s: with more than one replica an approval "+
				"could be used once per replica; set STEPGATE_STORE=redis\n", approveRules(s), where)
		}
		if n := decoupledRules(s); n > 0 {
			fmt.Fprintf(w, "warning: %d approve rule(s) with api=decoupled and STEPGATE_STORE=memory: a poll URL works only on "+
				"the replica that answered the 202; set STEPGATE_STORE=redis for more than one replica\n", n)
		}
	}
	if cfg.AdminToken != "" {
		fmt.Fprintln(w, "revocation: POST /revoke on the admin listener (STEPGATE_ADMIN_TOKEN set)")
	} else {
		fmt.Fprintln(w, "revocation: POST /revoke off (STEPGATE_ADMIN_TOKEN not set); logout still revokes")
	}
}

// decoupledRules counts approve rules with api=decoupled (docs/design.md §18).
func decoupledRules(s settings) int {
	n := 0
	for _, r := range s.rules.Rules() {
		if r.Action == rules.Approve && r.API == rules.APIDecoupled {
			n++
		}
	}
	return n
}

// approveRules counts rules whose action is approve (docs/design.md §14), by name,
// so the check works for whichever rule set this build parses.
func approveRules(s settings) int {
	n := 0
	for _, r := range s.rules.Rules() {
		if r.Action.String() == "approve" {
			n++
		}
	}
	return n
}
