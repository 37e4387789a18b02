package store

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// MemoryOptions bounds a Memory store.
type MemoryOptions struct {
	// MaxEntries bounds held requests and approvals together; default
	// 10,000. The least recently used entry is evicted first.
	MaxEntries int
	// MaxBytes bounds the bytes of held requests; default 64 MiB.
	MaxBytes int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Memory is the embedded store: one process, bounded, least-recently-used
// eviction. Approvals in it are single-use on this replica only.
type Memory struct {
	mu         sync.Mutex
	now        func() time.Time
	maxEntries int
	maxBytes   int64
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
		now: o.Now, maxEntries: o.MaxEntries, maxBytes: o.MaxBytes,
		lru: list.New(), m: make(map[string]*list.Element),
	}
}

// Held keys and approval keys live in separate spaces.
const (
	heldPrefix     = "h:"
	approvalPrefix = "a:"
)

// Hold implements Approvals.
func (s *Memory) Hold(_ context.Context, id string, sealed []byte, ttl time.Duration) error {
	if int64(len(sealed)) > s.maxBytes {
		return ErrTooLarge
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.put(heldPrefix+id, append([]byte(nil), sealed...), ttl)
	return nil
}

// Held implements Approvals.
func (s *Memory) Held(_ context.Context, id string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.get(heldPrefix + id)
	if !ok {
		return nil, ErrNotFound
	}
	return append([]byte(nil), e.value...), nil
}

// Drop implements Approvals.
func (s *Memory) Drop(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.m[heldPrefix+id]; ok {
		s.remove(el)
	}
	return nil
}

// Approve implements Approvals.
func (s *Memory) Approve(_ context.Context, digest string, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.put(approvalPrefix+digest, nil, ttl)
	return nil
}

// Consume implements Approvals.
func (s *Memory) Consume(_ context.Context, digest string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.get(approvalPrefix + digest); !ok {
		return false, nil
	}
	s.remove(s.m[approvalPrefix+digest])
	return true, nil
}

// Len reports the number of entries kept (expired ones included until they
// are touched or evicted).
func (s *Memory) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Bytes reports the bytes of held requests kept.
func (s *Memory) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// get returns a live entry and marks it recently used; an expired one is
// removed.
func (s *Memory) get(key string) (*memEntry, bool) {
	el, ok := s.m[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*memEntry)
	if !s.now().Before(e.expires) {
		s.remove(el)
		return nil, false
	}
	s.lru.MoveToFront(el)
	return e, true
}

func (s *Memory) put(key string, value []byte, ttl time.Duration) {
	if el, ok := s.m[key]; ok {
		s.remove(el)
	}
	e := &memEntry{key: key, value: value, expires: s.now().Add(ttl)}
	s.m[key] = s.lru.PushFront(e)
	s.bytes += int64(len(value))
	for len(s.m) > s.maxEntries || s.bytes > s.maxBytes {
		s.remove(s.lru.Back())
	}
}

func (s *Memory) remove(el *list.Element) {
	e := s.lru.Remove(el).(*memEntry)
	delete(s.m, e.key)
	s.bytes -= int64(len(e.value))
}
