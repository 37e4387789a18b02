package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestMemoryApprovalIsUsedOnceEvenWhenConsumersRace(t *testing.T) {
	s := NewMemory(MemoryOptions{})
	ctx := context.Background()
	if err := s.Approve(ctx, "d1", time.Minute); err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			if ok, err := s.Consume(ctx, "d1"); err == nil && ok {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if got := wins.Load(); got != 1 {
		t.Fatalf("approval used %d times, want 1", got)
	}
}

func TestMemoryApprovingTwiceBeforeUseStillGivesOneUse(t *testing.T) {
	s := NewMemory(MemoryOptions{})
	ctx := context.Background()
	_ = s.Approve(ctx, "d", time.Minute)
	_ = s.Approve(ctx, "d", time.Minute)
	first, _ := s.Consume(ctx, "d")
	second, _ := s.Consume(ctx, "d")
	if !first || second {
		t.Fatalf("consume = %v, %v; want true, false", first, second)
	}
}

func TestMemoryEntriesExpireAtTheirTTL(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	s := NewMemory(MemoryOptions{Now: c.now})
	ctx := context.Background()
	_ = s.Hold(ctx, "h", []byte("sealed"), time.Minute)
	_ = s.Approve(ctx, "d", time.Minute)
	c.add(59 * time.Second)
	if _, err := s.Held(ctx, "h"); err != nil {
		t.Fatalf("held before ttl: %v", err)
	}
	c.add(time.Second)
	if _, err := s.Held(ctx, "h"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("held at ttl: err = %v, want ErrNotFound", err)
	}
	if ok, _ := s.Consume(ctx, "d"); ok {
		t.Fatal("an expired approval was consumed")
	}
}

func TestMemoryStaysWithinItsEntryAndByteBounds(t *testing.T) {
	s := NewMemory(MemoryOptions{MaxEntries: 100, MaxBytes: 10_000})
	ctx := context.Background()
	for i := range 100_000 {
		_ = s.Hold(ctx, fmt.Sprint("h", i), make([]byte, 1000), time.Hour)
		_ = s.Approve(ctx, fmt.Sprint("d", i), time.Hour)
		if s.Len() > 200 || s.Bytes() > 10_000 { // 100 held requests and 100 approvals
			t.Fatalf("after %d inserts: %d entries, %d bytes", i, s.Len(), s.Bytes())
		}
	}
	// The newest survive.
	if _, err := s.Held(ctx, "h99999"); err != nil {
		t.Fatalf("newest held request evicted: %v", err)
	}
	if err := s.Hold(ctx, "big", make([]byte, 10_001), time.Hour); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized hold: err = %v, want ErrTooLarge", err)
	}
}

func TestMemoryDropForgetsAHeldRequest(t *testing.T) {
	s := NewMemory(MemoryOptions{})
	ctx := context.Background()
	_ = s.Hold(ctx, "h", []byte("x"), time.Hour)
	_ = s.Drop(ctx, "h")
	if _, err := s.Held(ctx, "h"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	if s.Bytes() != 0 {
		t.Fatalf("bytes = %d after drop", s.Bytes())
	}
}

func TestMemoryHeldRequestsNeverEvictApprovals(t *testing.T) {
	s := NewMemory(MemoryOptions{MaxEntries: 10, MaxBytes: 1000})
	ctx := context.Background()
	_ = s.Approve(ctx, "given", time.Hour)
	for i := range 1000 { // a flood of held requests, in entries and bytes
		_ = s.Hold(ctx, fmt.Sprint("h", i), make([]byte, 900), time.Hour)
	}
	if ok, _ := s.Consume(ctx, "given"); !ok {
		t.Fatal("held requests evicted an approval")
	}
}
