package store

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// RedisOptions configures a Redis store.
type RedisOptions struct {
	// URL is redis://[user:password@]host:port[/db] or rediss:// (TLS).
	URL string
	// Password, when set, overrides any password in URL.
	Password string
	// RootCAs, optional, verifies a rediss:// server (default: the
	// system's roots).
	RootCAs *x509.CertPool
	// Timeout bounds every call (dial, read, write and the whole
	// operation); default 500ms.
	Timeout time.Duration
	// MaxValueBytes bounds one held request; default 1 MiB.
	MaxValueBytes int
	// Prefix starts every key and the revocation channel; default
	// "stepgate:". Deployments sharing one Redis use different prefixes.
	Prefix string
	// Observe, optional, is told the outcome and latency of every call.
	Observe func(op string, d time.Duration, err error)
	// Now is the clock for deadlines sent to Redis; nil means time.Now.
	Now func() time.Time
	// Tracer, optional, records a client span per call (its op and
	// outcome; never a key or a value): nil means traces are off.
	Tracer trace.Tracer
}

// Redis is the shared store: Redis or Valkey. Every call is bounded by
// RedisOptions.Timeout and never retried, so a slow or paused server costs
// a caller at most one timeout, and a command that arrives after its caller
// gave up changes nothing a caller could act on twice.
type Redis struct {
	c        *redis.Client
	timeout  time.Duration
	maxValue int
	prefix   string
	observe  func(op string, d time.Duration, err error)
	now      func() time.Time
	tracer   trace.Tracer

	lastOK, lastErr  atomic.Int64 // UnixNano of the latest success and failure
	lastProbe        atomic.Int64 // UnixNano of the latest limit call let try Redis while failing
	offset, offsetAt atomic.Int64 // server clock minus ours (ns), and when measured
}

var _ Approvals = (*Redis)(nil)

// ParseRedisURL checks a Redis URL: redis:// or rediss:// with a host.
func ParseRedisURL(raw string) (*redis.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("not a URL")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, errors.New("want a redis:// or rediss:// (TLS) URL")
	}
	if u.Hostname() == "" {
		return nil, errors.New("the URL has no host")
	}
	if u.Query().Has("skip_verify") {
		return nil, errors.New("skip_verify is refused: the server's certificate is always verified (set STEPGATE_REDIS_CA_FILE for a private CA)")
	}
	o, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	return o, nil
}

// RedactURL is the URL without its password, for logs and -check-config.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid)"
	}
	return u.Redacted()
}

// quietLibrary silences go-redis's own logger, which is process-wide and
// writes plain text; stepgate logs the store's state itself (JSON, once per
// change). Done once, before the first client exists, so no client reads
// the logger while it changes.
var quietLibrary sync.Once

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// NewRedis returns a Redis store. It does not connect: the first call does.
func NewRedis(o RedisOptions) (*Redis, error) {
	quietLibrary.Do(func() { redis.SetLogger(discardLogger{}) })
	opt, err := ParseRedisURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("store: redis url: %w", err)
	}
	if o.Timeout <= 0 {
		o.Timeout = 500 * time.Millisecond
	}
	if o.MaxValueBytes <= 0 {
		o.MaxValueBytes = 1 << 20
	}
	if o.Prefix == "" {
		o.Prefix = "stepgate:"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Observe == nil {
		o.Observe = func(string, time.Duration, error) {}
	}
	if o.Password != "" {
		opt.Password = o.Password
	}
	if opt.TLSConfig != nil && o.RootCAs != nil {
		opt.TLSConfig.RootCAs = o.RootCAs
	}
	opt.DialTimeout = o.Timeout
	opt.ReadTimeout = o.Timeout
	opt.WriteTimeout = o.Timeout
	opt.PoolTimeout = o.Timeout
	opt.ContextTimeoutEnabled = true
	// No retries: a retried write could apply twice, and a caller waiting
	// on a sick server should fail closed at once rather than wait longer.
	opt.MaxRetries = -1
	opt.PoolSize = 32
	opt.ClientName = "stepgate"
	opt.DisableIdentity = true // CLIENT SETINFO is not on older servers and Valkey forks
	return &Redis{
		c: redis.NewClient(opt), timeout: o.Timeout, maxValue: o.MaxValueBytes,
		prefix: o.Prefix, observe: o.Observe, now: o.Now, tracer: o.Tracer,
	}, nil
}

// Close closes the connection pool.
func (s *Redis) Close() error { return s.c.Close() }

// Ping checks that the server answers within the timeout.
func (s *Redis) Ping(ctx context.Context) error {
	ctx, done := s.call(ctx, "ping")
	err := s.c.Ping(ctx).Err()
	done(err)
	return err
}

// call bounds one operation by the timeout and returns the function that
// records its outcome.
//
// An operation that failed because its caller gave up (a client hung up, or
// the caller's own deadline came first) says nothing about Redis: it is
// neither a failure nor a success, and is not observed. Counted as a
// failure, any user could make the store report failing for everyone (other
// users' challenge starts refused, /readyz unready, shared limits moved to
// each replica's own) by closing connections mid-request.
func (s *Redis) call(parent context.Context, op string) (context.Context, func(error)) {
	var span trace.Span
	if s.tracer != nil && trace.SpanContextFromContext(parent).IsValid() { // a request's call, not a background one
		parent, span = s.tracer.Start(parent, "redis "+op, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("db.system.name", "redis"), attribute.String("db.operation.name", op)))
	}
	ctx, cancel := context.WithTimeout(parent, s.timeout)
	start := time.Now()
	return ctx, func(err error) {
		cancel()
		if errors.Is(err, redis.Nil) {
			err = nil
		}
		if span != nil {
			if err != nil {
				span.SetStatus(codes.Error, "redis "+op)
			}
			span.End()
		}
		if err != nil && parent.Err() != nil {
			return
		}
		s.mark(err)
		s.observe(op, time.Since(start), err)
	}
}

func (s *Redis) mark(err error) {
	if err != nil && !errors.Is(err, ErrLate) {
		s.lastErr.Store(s.now().UnixNano())
	} else {
		s.lastOK.Store(s.now().UnixNano())
	}
}

// Failing reports that the latest call to Redis failed.
func (s *Redis) Failing() bool { return s.lastErr.Load() > s.lastOK.Load() }

// probeEvery is how often, while Redis is failing, one limit check tries
// it again; the others use the replica's own limiter at once, so an outage
// does not add a timeout to every check (several run per challenge).
const probeEvery = time.Second

// skipWhileFailing reports whether a limit check should not try Redis now.
func (s *Redis) skipWhileFailing() bool {
	if !s.Failing() {
		return false
	}
	now, last := s.now().UnixNano(), s.lastProbe.Load()
	if now-last < int64(probeEvery) {
		return true
	}
	return !s.lastProbe.CompareAndSwap(last, now)
}

// key names a key of one kind; client-chosen parts longer than 128 bytes
// are stored as their SHA-256, so no key grows with what a client sends.
func (s *Redis) key(kind, id string) string {
	if len(id) > 128 {
		sum := sha256.Sum256([]byte(id))
		id = "#" + hex.EncodeToString(sum[:])
	}
	return s.prefix + kind + id
}

// Hold implements Approvals.
func (s *Redis) Hold(ctx context.Context, id string, sealed []byte, ttl time.Duration) error {
	if len(sealed) > s.maxValue {
		return ErrTooLarge
	}
	ctx, done := s.call(ctx, "hold")
	err := s.c.Set(ctx, s.key(heldPrefix, id), sealed, ttlOf(ttl)).Err()
	done(err)
	if err != nil {
		return fmt.Errorf("store: hold: %w", err)
	}
	return nil
}

// Held implements Approvals.
func (s *Redis) Held(ctx context.Context, id string) ([]byte, error) {
	ctx, done := s.call(ctx, "held")
	b, err := s.c.Get(ctx, s.key(heldPrefix, id)).Bytes()
	done(err)
	switch {
	case errors.Is(err, redis.Nil):
		return nil, ErrNotFound
	case err != nil:
		return nil, fmt.Errorf("store: held: %w", err)
	}
	return b, nil
}

// Drop implements Approvals.
func (s *Redis) Drop(ctx context.Context, id string) error {
	ctx, done := s.call(ctx, "drop")
	err := s.c.Del(ctx, s.key(heldPrefix, id)).Err()
	done(err)
	if err != nil {
		return fmt.Errorf("store: drop: %w", err)
	}
	return nil
}

// Approve implements Approvals. Approving again only renews the one key:
// it never makes an approval usable twice.
func (s *Redis) Approve(ctx context.Context, digest string, ttl time.Duration) error {
	ctx, done := s.call(ctx, "approve")
	err := s.c.Set(ctx, s.key(approvalPrefix, digest), "1", ttlOf(ttl)).Err()
	done(err)
	if err != nil {
		return fmt.Errorf("store: approve: %w", err)
	}
	return nil
}

// consumeScript deletes an approval, so exactly one caller sees 1. It does
// nothing (-1) when it runs after ARGV[1], a deadline in microseconds of the
// server's clock: a command held up by a paused server or network, run after
// its caller gave up (and refused the request), must not use up the approval
// the user will retry with.
var consumeScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now > tonumber(ARGV[1]) then return -1 end
return redis.call('DEL', KEYS[1])
`)

// ErrLate reports an operation that reached the server after its caller's
// deadline and was therefore not applied.
var ErrLate = errors.New("store: operation reached the server after its deadline, not applied")

// clockEvery is how often the offset between our clock and the server's is
// measured again.
const clockEvery = 30 * time.Second

// Consume implements Approvals. The script's deadline is the caller's own
// give-up time minus half the timeout, translated to the server's
// clock: a consume the server applies leaves its answer that long to come
// back, so a caller never times out on an approval the server used up.
func (s *Redis) Consume(ctx context.Context, digest string) (bool, error) {
	ctx, done := s.call(ctx, "consume")
	offset, err := s.serverOffset(ctx)
	if err != nil {
		done(err)
		return false, fmt.Errorf("store: consume: %w", err)
	}
	giveUp, _ := ctx.Deadline()
	deadline := giveUp.Add(-s.timeout / 2).Add(offset)
	n, err := consumeScript.Run(ctx, s.c, []string{s.key(approvalPrefix, digest)}, deadline.UnixMicro()).Int64()
	if err == nil && n < 0 {
		err = ErrLate
	}
	done(err)
	if err != nil {
		return false, fmt.Errorf("store: consume: %w", err)
	}
	return n == 1, nil
}

// serverOffset is the server's clock minus ours, measured with TIME (to
// within half a round trip) at most every clockEvery.
func (s *Redis) serverOffset(ctx context.Context) (time.Duration, error) {
	if at := s.offsetAt.Load(); at != 0 && s.now().Sub(time.Unix(0, at)) < clockEvery {
		return time.Duration(s.offset.Load()), nil
	}
	t0 := s.now()
	server, err := s.c.Time(ctx).Result()
	t1 := s.now()
	if err != nil {
		return 0, err
	}
	off := server.Sub(t0.Add(t1.Sub(t0) / 2))
	s.offset.Store(int64(off))
	s.offsetAt.Store(t1.UnixNano())
	return off, nil
}

// ttlOf keeps a zero or negative ttl from meaning "forever" to Redis.
func ttlOf(ttl time.Duration) time.Duration {
	if ttl < time.Millisecond {
		return time.Millisecond
	}
	return ttl
}
