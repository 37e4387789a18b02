// Package ratelimit keeps one token bucket (golang.org/x/time/rate) per key —
// a canonical user, a client IP, a flow id — for stepgate's abuse limits
// (docs/design.md §8).
//
// Keys come from clients, so the key set must never grow with them: it is
// bounded by Options.MaxKeys with least-recently-used eviction, and keys
// longer than 256 bytes are stored as their SHA-256 digest. The package never
// reads the wall clock itself (the clock is Options.Now) and never sleeps or
// blocks a caller waiting for a token: it answers at once, with how long to
// wait.
package ratelimit

import (
	"crypto/sha256"
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

const (
	// maxKeyLen is the longest key stored as given; longer keys are hashed
	// so that a client cannot make each entry arbitrarily large.
	maxKeyLen = 256
	// maxShards spreads lock contention. Each shard evicts its own least
	// recently used key, which approximates a global LRU only when shards
	// are large, so small limiters use fewer shards (one below
	// 2*keysPerShard keys, where eviction order is exact).
	maxShards    = 16
	keysPerShard = 256
	// DefaultMaxKeys applies when Options.MaxKeys is zero or negative.
	DefaultMaxKeys = 100_000
	// maxRetryAfter caps retryAfter, also when the bucket can never refill
	// (Limit 0 or Burst 0).
	maxRetryAfter = 24 * time.Hour
)

// Options configures a Limiter.
type Options struct {
	Limit rate.Limit // tokens per second per key; rate.Inf admits everything
	Burst int        // bucket size; a new key starts full
	// MaxKeys bounds the number of keys remembered; the least recently used
	// key is forgotten first (and starts again with a full bucket).
	// Default DefaultMaxKeys.
	MaxKeys int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Limiter is a set of per-key token buckets. It is safe for concurrent use.
type Limiter struct {
	limit  rate.Limit
	burst  int
	now    func() time.Time
	seed   maphash.Seed
	shards []shard
}

// key is a stored key. Hashed keys live in their own space, so a short key
// that happens to equal the digest of a long one never shares its bucket.
type key struct {
	s      string
	hashed bool
}

// entry is one key's bucket and its place in the shard's LRU list.
type entry struct {
	key        key
	lim        *rate.Limiter
	prev, next *entry
}

// shard is a map plus an intrusive doubly-linked list, most recently used
// at root.next; root is a sentinel so that insertion and removal need no
// nil checks.
type shard struct {
	mu   sync.Mutex
	m    map[key]*entry
	root entry
	max  int
}

// New returns a Limiter.
func New(o Options) *Limiter {
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	n := max(1, min(maxShards, o.MaxKeys/keysPerShard))
	l := &Limiter{
		limit:  o.Limit,
		burst:  o.Burst,
		now:    o.Now,
		seed:   maphash.MakeSeed(),
		shards: make([]shard, n),
	}
	// Split MaxKeys exactly, so that Len can never exceed it.
	for i := range l.shards {
		s := &l.shards[i]
		s.max = o.MaxKeys / n
		if i < o.MaxKeys%n {
			s.max++
		}
		s.m = make(map[key]*entry)
		s.root.next = &s.root
		s.root.prev = &s.root
	}
	return l
}

// Every converts "n per period" into a rate and a burst of n: Every(5,
// 10*time.Minute) admits 5 at once, then one every 2 minutes. n <= 0 admits
// nothing; period <= 0 admits everything.
func Every(n int, per time.Duration) (rate.Limit, int) {
	if n <= 0 {
		return 0, 0
	}
	if per <= 0 {
		return rate.Inf, n
	}
	return rate.Every(per / time.Duration(n)), n
}

// Allow takes one token from key's bucket. When it refuses, retryAfter is
// how long until a token is available, rounded up to whole seconds (at
// least 1s) as a Retry-After header needs.
func (l *Limiter) Allow(k string) (ok bool, retryAfter time.Duration) {
	if l.limit == rate.Inf {
		return true, 0
	}
	now := l.now()
	lim := l.get(k)
	if lim.AllowN(now, 1) {
		return true, 0
	}
	return false, l.wait(lim, now)
}

// wait is how long until lim holds one token.
func (l *Limiter) wait(lim *rate.Limiter, now time.Time) time.Duration {
	if l.limit <= 0 || l.burst < 1 {
		return maxRetryAfter
	}
	need := 1 - lim.TokensAt(now)
	if need <= 0 {
		// A concurrent caller took the token between our two reads.
		return time.Second
	}
	secs := math.Ceil(need / float64(l.limit))
	if secs < 1 {
		secs = 1
	}
	d := time.Duration(secs) * time.Second
	if secs >= maxRetryAfter.Seconds() {
		d = maxRetryAfter
	}
	return d
}

// Len is the number of keys currently remembered.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// get returns k's bucket, creating it (and evicting the least recently used
// key of its shard if full) when k is new.
func (l *Limiter) get(k string) *rate.Limiter {
	kk := key{s: k}
	if len(k) > maxKeyLen {
		sum := sha256.Sum256([]byte(k))
		kk = key{s: string(sum[:]), hashed: true}
	}
	s := &l.shards[maphash.String(l.seed, kk.s)%uint64(len(l.shards))]
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[kk]; ok {
		s.unlink(e)
		s.pushFront(e)
		return e.lim
	}
	if len(s.m) >= s.max {
		old := s.root.prev
		s.unlink(old)
		delete(s.m, old.key)
	}
	if !kk.hashed {
		// The caller's string may point into a large buffer (a header);
		// keep only the key's own bytes alive.
		kk.s = strings.Clone(kk.s)
	}
	e := &entry{key: kk, lim: rate.NewLimiter(l.limit, l.burst)}
	s.m[kk] = e
	s.pushFront(e)
	return e.lim
}

func (s *shard) unlink(e *entry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
}

func (s *shard) pushFront(e *entry) {
	e.prev = &s.root
	e.next = s.root.next
	s.root.next.prev = e
	s.root.next = e
}
