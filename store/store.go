// Package store keeps the state that stepgate shares between requests and,
// with a shared backend, between replicas (docs/design.md §15):
// requests held while a user approves them and the single-use approvals of
// approve rules (§14).
//
// Every value it keeps is bounded (entries and bytes) and expires. It must
// never hand out one approval twice: Consume is atomic. It never sees a
// request in clear: held requests arrive sealed by the caller.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound reports a held request that does not exist or has expired.
var ErrNotFound = errors.New("store: not found")

// ErrTooLarge reports a value over the store's size bound.
var ErrTooLarge = errors.New("store: value too large")

// Approvals holds requests awaiting approval and the approvals themselves.
// Implementations are safe for concurrent use; every method may fail when a
// shared backend is unreachable, and callers then fail closed.
type Approvals interface {
	// Hold keeps a sealed held request under id until ttl has passed.
	Hold(ctx context.Context, id string, sealed []byte, ttl time.Duration) error
	// Held returns the sealed request held under id, or ErrNotFound.
	Held(ctx context.Context, id string) ([]byte, error)
	// Drop forgets the request held under id; a missing id is not an error.
	Drop(ctx context.Context, id string) error
	// Approve records one approval of the request with this digest,
	// usable once until ttl has passed. Approving again before it is used
	// does not make it usable twice.
	Approve(ctx context.Context, digest string, ttl time.Duration) error
	// Consume uses the approval of digest: it reports true to exactly one
	// caller per Approve, across every replica sharing the store.
	Consume(ctx context.Context, digest string) (bool, error)
}

// Key prefixes of the two spaces in a shared store: a held request's id
// and an approval's key never meet.
const (
	heldPrefix     = "h:"
	approvalPrefix = "a:"
)
