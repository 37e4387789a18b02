package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisRevocations keeps revocations in Redis, announces them on a pub/sub
// channel, and keeps an in-process view in step with both, so that the
// request path reads only memory:
//
//   - Revoke stores the revocation (with RevocationTTL) and publishes it in
//     one transaction; every replica's subscription applies it within
//     milliseconds.
//   - Run subscribes, then loads every stored revocation (after each
//     (re)subscription, and every RefreshEvery): a message missed while
//     disconnected is found by the next load.
//   - Run pings through the subscription's own connection. Redis answers
//     in order, so a pong proves that every revocation published before
//     the ping was sent has been applied; the view is then confirmed
//     complete up to the ping's send time. Without pongs the view ages and
//     goes stale after MaxStaleness.
//   - Redis restarted without persistence has forgotten every revocation.
//     An epoch key, which exists as long as Redis keeps its data, tells:
//     a replica that finds another epoch (or none) than it last saw puts
//     back every revocation it holds (stored and published) before setting
//     the epoch again, and so does a replica whose own revocation Redis did
//     not store. A replica that has never seen an epoch and finds none
//     (a fleet's first start, or a replica started while Redis came back
//     empty) waits RestoreWait for the others to put theirs back before
//     its view counts as complete, so its mfa paths stay closed meanwhile.
type RedisRevocations struct {
	s            *Redis
	view         *Revocations
	log          *slog.Logger
	pingEvery    time.Duration
	refreshEvery time.Duration
	downAfter    time.Duration
	restoreWait  time.Duration

	// epoch is the store's epoch as the latest load saw it ("" before one
	// did); only load touches it, and loads run one at a time.
	epoch     string
	unstored  atomic.Bool // a revocation applied here that Redis may not hold
	restoring atomic.Bool // waiting for other replicas to put revocations back

	gen     atomic.Int64 // subscription generation; bumped on every (re)subscribe and error
	synced  atomic.Int64 // generation whose full load completed
	seen    atomic.Int64 // UnixNano of the latest pong (health, not freshness)
	loading atomic.Bool  // a full load is running
}

// RedisRevocationsOptions tunes the sync; zero values take the defaults.
type RedisRevocationsOptions struct {
	PingEvery    time.Duration // default 250ms
	RefreshEvery time.Duration // default 1m
	// DownAfter is how long without a pong before Down reports true;
	// default 2s.
	DownAfter time.Duration
	// RestoreWait is how long a replica that finds Redis without an epoch,
	// and never saw one, waits for replicas that knew the revocations to
	// put them back; default 2s (they reconnect within PingEvery or so).
	RestoreWait time.Duration
	Logger      *slog.Logger
}

// Revocations returns the Redis-backed revoker feeding view.
func (s *Redis) Revocations(view *Revocations, o RedisRevocationsOptions) *RedisRevocations {
	if o.PingEvery <= 0 {
		o.PingEvery = 250 * time.Millisecond
	}
	if o.RefreshEvery <= 0 {
		o.RefreshEvery = time.Minute
	}
	if o.DownAfter <= 0 {
		o.DownAfter = 2 * time.Second
	}
	if o.RestoreWait <= 0 {
		o.RestoreWait = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	rr := &RedisRevocations{
		s: s, view: view, log: o.Logger, pingEvery: o.PingEvery,
		refreshEvery: o.RefreshEvery, downAfter: o.DownAfter, restoreWait: o.RestoreWait,
	}
	rr.synced.Store(-1)
	return rr
}

func (rr *RedisRevocations) channel() string { return rr.s.prefix + "revocations" }

// epochKey exists while Redis keeps its data; it is outside the "rv:"
// space the loads scan.
func (rr *RedisRevocations) epochKey() string { return rr.s.prefix + "rv-epoch" }

// Revoke implements Revoker: stored and published, then applied here at
// once. On error it is applied here anyway (this replica refuses it), and
// the error says the other replicas may not know.
func (rr *RedisRevocations) Revoke(ctx context.Context, r Revocation) error {
	now := rr.view.now()
	kind, id, stamp := "s", r.Session, now.Add(RevocationTTL)
	switch {
	case r.User != "":
		kind, id, stamp = "u", r.User, now
	case r.Subject != "":
		kind, id, stamp = "p", r.Subject, now
	}
	msg := kind + " " + strconv.FormatInt(stamp.UnixNano(), 10) + " " + id
	local := rr.apply(msg)
	ctx, done := rr.s.call(ctx, "revoke")
	pipe := rr.s.c.TxPipeline()
	pipe.Set(ctx, rr.s.key("rv:"+kind+":", id), msg, RevocationTTL)
	pipe.Publish(ctx, rr.channel(), msg)
	_, err := pipe.Exec(ctx)
	done(err)
	if err != nil {
		// The next load after Redis answers again puts it back.
		rr.unstored.Store(true)
		// Both, so that a local refusal (a full set) is not reported as
		// "this replica refuses it".
		return errors.Join(local, fmt.Errorf("store: revoke: %w", err))
	}
	return local
}

// apply adds one revocation message ("u <nanos> user", "p <nanos> PingOne
// user id" or "s <nanos> id").
func (rr *RedisRevocations) apply(msg string) error {
	kind, rest, _ := strings.Cut(msg, " ")
	stamp, id, ok := strings.Cut(rest, " ")
	n, err := strconv.ParseInt(stamp, 10, 64)
	if !ok || err != nil || id == "" {
		return fmt.Errorf("store: malformed revocation message")
	}
	switch kind {
	case "u":
		return rr.view.addUser(id, time.Unix(0, n))
	case "p":
		return rr.view.addSubject(id, time.Unix(0, n))
	case "s":
		return rr.view.addSession(id, time.Unix(0, n))
	}
	return fmt.Errorf("store: malformed revocation message")
}

// Down reports that Redis has not answered the subscription's pings for
// DownAfter, or that the latest call failed: new challenges and approvals
// should fail closed.
func (rr *RedisRevocations) Down() bool {
	return rr.s.now().Sub(time.Unix(0, rr.seen.Load())) > rr.downAfter || rr.s.Failing()
}

// Reached reports that Redis answered and the view was loaded and
// confirmed at least once since start.
func (rr *RedisRevocations) Reached() bool {
	return rr.seen.Load() != 0 && rr.synced.Load() >= 0 && !rr.view.Stale()
}

// Restoring reports that this replica found Redis without revocations and
// is waiting RestoreWait for the replicas that knew them to put them back.
func (rr *RedisRevocations) Restoring() bool { return rr.restoring.Load() }

// Run keeps the view in sync until ctx ends.
func (rr *RedisRevocations) Run(ctx context.Context) {
	ps := rr.s.c.Subscribe(ctx, rr.channel())
	defer ps.Close()
	go rr.ping(ctx, ps)
	refresh := time.NewTicker(rr.refreshEvery)
	defer refresh.Stop()
	msgs := make(chan any)
	go func() {
		defer close(msgs)
		for {
			m, err := ps.ReceiveTimeout(ctx, 4*rr.pingEvery)
			if err != nil {
				m = err
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
			if err != nil {
				// Connection refused answers at once: pace the retries.
				select {
				case <-time.After(rr.pingEvery):
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	up := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-refresh.C:
			rr.view.Sweep()
			rr.startLoad(ctx)
		case m, ok := <-msgs:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *redis.Subscription:
				rr.gen.Add(1)
				rr.startLoad(ctx)
			case *redis.Message:
				if err := rr.apply(m.Payload); err != nil {
					rr.log.Warn("store: revocation not applied", "error", err.Error())
				}
			case *redis.Pong:
				n, err := strconv.ParseInt(m.Payload, 10, 64)
				if err != nil {
					continue
				}
				rr.seen.Store(rr.s.now().UnixNano())
				rr.s.mark(nil)
				if !up {
					up = true
					rr.log.Info("store: redis reachable again")
				}
				if rr.synced.Load() == rr.gen.Load() {
					rr.view.confirm(time.Unix(0, n))
				} else {
					// After an error on a connection that survived (a
					// paused server), no new subscription will announce
					// itself: load again now that Redis answers.
					rr.startLoad(ctx)
				}
			case error:
				if ctx.Err() != nil {
					return
				}
				rr.gen.Add(1) // whatever comes next must load again
				if up && rr.Down() {
					up = false
					rr.log.Warn("store: redis unreachable: challenge starts and approvals refused, limits per replica",
						"error", m.Error())
				}
			}
		}
	}
}

// ping sends a ping carrying its send time through the subscription.
func (rr *RedisRevocations) ping(ctx context.Context, ps *redis.PubSub) {
	t := time.NewTicker(rr.pingEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, rr.s.timeout)
		_ = ps.Ping(pctx, strconv.FormatInt(rr.s.now().UnixNano(), 10))
		cancel()
	}
}

// startLoad starts a full load for the current generation unless one is
// running (which, if it started under an older generation, will not mark
// the view synced; the next pong starts another).
func (rr *RedisRevocations) startLoad(ctx context.Context) {
	if !rr.loading.CompareAndSwap(false, true) {
		return
	}
	gen := rr.gen.Load()
	go func() {
		defer rr.loading.Store(false)
		rr.load(ctx, gen)
	}()
}

// load reads every stored revocation into the view; when it completes and
// no resubscription happened meanwhile, generation gen is synced and the
// view is complete up to the load's start.
func (rr *RedisRevocations) load(ctx context.Context, gen int64) {
	start := rr.s.now()
	if err := rr.restore(ctx); err != nil {
		if ctx.Err() == nil {
			rr.log.Warn("store: putting revocations back failed", "error", err.Error())
		}
		return
	}
	if err := rr.loadAll(ctx); err != nil {
		if ctx.Err() == nil {
			rr.log.Warn("store: loading revocations failed", "error", err.Error())
		}
		return
	}
	if rr.gen.Load() == gen {
		rr.synced.Store(gen)
		rr.view.confirm(start)
	}
}

func (rr *RedisRevocations) loadAll(ctx context.Context) error {
	var cursor uint64
	match := rr.s.prefix + "rv:*"
	for {
		sctx, done := rr.s.call(ctx, "revocations_scan")
		keys, next, err := rr.s.c.Scan(sctx, cursor, match, 1000).Result()
		if err == nil && len(keys) > 0 {
			var vals []any
			vals, err = rr.s.c.MGet(sctx, keys...).Result()
			for _, v := range vals {
				if msg, ok := v.(string); ok {
					if aerr := rr.apply(msg); aerr != nil {
						err = aerr
					}
				}
			}
		}
		done(err)
		if err != nil {
			return fmt.Errorf("store: load revocations: %w", err)
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// restore puts this replica's revocations back into Redis when Redis lost
// them (its epoch changed or vanished) or never stored one of them, and
// sets the epoch when there is none. It runs before every full load.
func (rr *RedisRevocations) restore(ctx context.Context) error {
	epoch, err := rr.readEpoch(ctx)
	if err != nil {
		return err
	}
	lost := rr.epoch != "" && epoch != rr.epoch
	if lost || rr.unstored.Load() {
		rr.unstored.Store(false)
		n, err := rr.putBack(ctx)
		if err != nil {
			rr.unstored.Store(true)
			return err
		}
		if lost {
			rr.log.Warn("store: redis lost the revocations (restarted without persistence?): this replica put back what it holds",
				"revocations", n)
		}
	}
	if epoch != "" {
		rr.epoch = epoch
		return nil
	}
	if rr.epoch == "" {
		// Nothing tells a fleet's first start from a replica started while
		// Redis came back empty: give the replicas that knew the
		// revocations time to put them back before this view counts as
		// complete.
		rr.restoring.Store(true)
		rr.log.Info("store: redis holds no revocations yet: waiting for other replicas to put theirs back; mfa paths refused meanwhile",
			"wait", rr.restoreWait.String())
		t := time.NewTimer(rr.restoreWait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		rr.restoring.Store(false)
	}
	cctx, done := rr.s.call(ctx, "revocations_epoch")
	err = rr.s.c.SetNX(cctx, rr.epochKey(), rand.Text(), 0).Err()
	done(err)
	if err != nil {
		return fmt.Errorf("store: set revocation epoch: %w", err)
	}
	if epoch, err = rr.readEpoch(ctx); err != nil {
		return err
	}
	rr.epoch = epoch
	return nil
}

func (rr *RedisRevocations) readEpoch(ctx context.Context) (string, error) {
	cctx, done := rr.s.call(ctx, "revocations_epoch")
	epoch, err := rr.s.c.Get(cctx, rr.epochKey()).Result()
	done(err)
	switch {
	case errors.Is(err, redis.Nil):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("store: read revocation epoch: %w", err)
	}
	return epoch, nil
}

// putBack stores and publishes every revocation of the view that Redis
// does not hold (a newer revocation of the same user wins), and reports
// how many the view holds.
func (rr *RedisRevocations) putBack(ctx context.Context) (int, error) {
	msgs, ttls := rr.view.messages()
	const batch = 500
	for i := 0; i < len(msgs); i += batch {
		cctx, done := rr.s.call(ctx, "revocations_restore")
		pipe := rr.s.c.Pipeline()
		for j := i; j < min(i+batch, len(msgs)); j++ {
			kind, rest, _ := strings.Cut(msgs[j], " ")
			_, id, _ := strings.Cut(rest, " ")
			pipe.SetNX(cctx, rr.s.key("rv:"+kind+":", id), msgs[j], ttls[j])
			pipe.Publish(cctx, rr.channel(), msgs[j])
		}
		_, err := pipe.Exec(cctx)
		done(err)
		if err != nil {
			return i, fmt.Errorf("store: put revocations back: %w", err)
		}
	}
	return len(msgs), nil
}
