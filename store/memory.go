package store

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// MemoryOptions bounds a Memory store.
type MemoryOptions struct {
	// MaxEntries bounds the held requests, and separately the approvals;
	// default 10,000 each. The least recently used is evicted first.
	MaxEntries int
	// MaxBytes bounds the bytes of held requests; default 64 MiB.
	MaxBytes int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Memory is the embedded store: one process, bounded, least-recently-used
// eviction. Approvals in it are single-use on this replica only.
//
// Held requests and approvals are kept apart, each with its own bound, so
// that requests being held (large, and as many as clients send) can never
// evict an approval a user has just given.
type Memory struct {
	mu        sync.Mutex
	now       func() time.Time
	held      space
	approvals space
}

// space is one bounded LRU map.
type space struct {
	maxEntries int
	maxBytes   int64 // 0: no byte bound
	bytes      int64
	lru        *list.List // of *memEntry, most recent at front
	m          map[string]*list.Element
}

type memEntry struct {
	key     string
	value   []byte
	expires time.Time
}

// NewMemory returns an empty Memory store.
func NewMemory(o MemoryOptions) *Memory {
	if o.MaxEntries <= 0 {
		o.MaxEntries = 10_000
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 64 << 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Memory{
		now:       o.Now,
		held:      space{maxEntries: o.MaxEntries, maxBytes: o.MaxBytes, lru: list.New(), m: map[string]*list.Element{}},
		approvals: space{maxEntries: o.MaxEntries, lru: list.New(), m: map[string]*list.Element{}},
	}
}

// Hold implements Approvals.
func (s *Memory) Hold(_ context.Context, id string, sealed []byte, ttl time.Duration) error {
	if int64(len(sealed)) > s.held.maxBytes {
		return ErrTooLarge
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held.put(id, append([]byte(nil), sealed...), s.now().Add(ttl))
	return nil
}

// Held implements Approvals.
func (s *Memory) Held(_ context.Context, id string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.held.get(id, s.now())
	if !ok {
		return nil, ErrNotFound
	}
	return append([]byte(nil), e.value...), nil
}

// Drop implements Approvals.
func (s *Memory) Drop(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held.delete(id)
	return nil
}

// Approve implements Approvals.
func (s *Memory) Approve(_ context.Context, digest string, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.approvals.put(digest, nil, s.now().Add(ttl))
	return nil
}

// Consume implements Approvals.
func (s *Memory) Consume(_ context.Context, digest string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.approvals.get(digest, s.now()); !ok {
		return false, nil
	}
	s.approvals.delete(digest)
	return true, nil
}

// Len reports the number of entries kept, held requests and approvals
// (expired ones included until they are touched or evicted).
func (s *Memory) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held.m) + len(s.approvals.m)
}

// Bytes reports the bytes of held requests kept.
func (s *Memory) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held.bytes
}

// get returns a live entry and marks it recently used; an expired one is
// removed.
func (sp *space) get(key string, now time.Time) (*memEntry, bool) {
	el, ok := sp.m[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*memEntry)
	if !now.Before(e.expires) {
		sp.remove(el)
		return nil, false
	}
	sp.lru.MoveToFront(el)
	return e, true
}

func (sp *space) put(key string, value []byte, expires time.Time) {
	sp.delete(key)
	sp.m[key] = sp.lru.PushFront(&memEntry{key: key, value: value, expires: expires})
	sp.bytes += int64(len(value))
	for len(sp.m) > sp.maxEntries || (sp.maxBytes > 0 && sp.bytes > sp.maxBytes) {
		sp.remove(sp.lru.Back())
	}
}

func (sp *space) delete(key string) {
	if el, ok := sp.m[key]; ok {
		sp.remove(el)
	}
}

func (sp *space) remove(el *list.Element) {
	e := sp.lru.Remove(el).(*memEntry)
	delete(sp.m, e.key)
	sp.bytes -= int64(len(e.value))
}
