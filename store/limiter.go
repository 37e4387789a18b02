package store

import (
	"context"
	"math"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limiter is one abuse limit keyed by user, address or flow; it matches the
// challenge package's Limiter.
type Limiter interface {
	Allow(key string) (ok bool, retryAfter time.Duration)
}

// gcraScript is the generic cell rate algorithm: one key holds the
// theoretical arrival time (TAT) in microseconds of the server's clock, so
// every replica counts against one bucket, by one clock, atomically. ARGV[1]
// is the emission interval and ARGV[2] the burst. It answers 0 when the
// request is admitted, else the microseconds to wait. The key lives only as
// long as it holds state (at most burst × interval).
var gcraScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local newtat = tat + interval
local allowAt = newtat - burst * interval
if now < allowAt then return math.ceil(allowAt - now) end
redis.call('SET', KEYS[1], string.format('%d', newtat), 'PX', math.ceil((newtat - now) / 1000) + 1)
return 0
`)

// RedisLimiter is a limit shared by every replica: n per period per key,
// exact across replicas. When Redis does not answer in time it asks Local,
// the replica's own limiter, so a store outage never lifts a limit.
type RedisLimiter struct {
	s        *Redis
	name     string
	interval time.Duration
	burst    int
	local    Limiter
}

// Limiter returns a limit of n per period named name (which scopes its
// keys), falling back to local when Redis fails.
func (s *Redis) Limiter(name string, n int, per time.Duration, local Limiter) *RedisLimiter {
	return &RedisLimiter{s: s, name: name, interval: per / time.Duration(max(n, 1)), burst: n, local: local}
}

// Allow implements Limiter.
func (l *RedisLimiter) Allow(key string) (bool, time.Duration) {
	if l.s.skipWhileFailing() {
		return l.local.Allow(key)
	}
	wait, err := l.s.gcra(l.s.key("l:"+l.name+":", key), l.interval, l.burst)
	if err != nil {
		return l.local.Allow(key)
	}
	if wait == 0 {
		return true, 0
	}
	return false, retryAfter(wait)
}

// gcra runs the script for one key; wait is 0 when admitted.
func (s *Redis) gcra(key string, interval time.Duration, burst int) (time.Duration, error) {
	ctx, done := s.call(context.Background(), "limit")
	us, err := gcraScript.Run(ctx, s.c, []string{key}, interval.Microseconds(), burst).Int64()
	done(err)
	if err != nil {
		return 0, err
	}
	return time.Duration(us) * time.Microsecond, nil
}

// RedisRate is a single process-wide cap (the PingOne call cap) shared by
// every replica: rate per second with a burst. It falls back to Local.
type RedisRate struct {
	s        *Redis
	key      string
	interval time.Duration
	burst    int
	local    interface{ Allow() bool }
}

// Rate returns a global cap of perSecond calls with burst, named name.
func (s *Redis) Rate(name string, perSecond float64, burst int, local interface{ Allow() bool }) *RedisRate {
	return &RedisRate{
		s: s, key: s.key("r:", name), burst: max(burst, 1), local: local,
		interval: time.Duration(float64(time.Second) / perSecond),
	}
}

// Allow reports whether one more call may be made now.
func (r *RedisRate) Allow() bool {
	if r.s.skipWhileFailing() {
		return r.local.Allow()
	}
	wait, err := r.s.gcra(r.key, r.interval, r.burst)
	if err != nil {
		return r.local.Allow()
	}
	return wait == 0
}

// retryAfter rounds up to whole seconds, at least one, as Retry-After needs.
func retryAfter(d time.Duration) time.Duration {
	s := math.Ceil(d.Seconds())
	if s < 1 {
		s = 1
	}
	if s > 86400 {
		s = 86400
	}
	return time.Duration(s) * time.Second
}
