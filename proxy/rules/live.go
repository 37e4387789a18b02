package rules

import "sync/atomic"

// Live is the rule set in force, which a reload replaces as a whole
// (docs/design.md §9.1). A request loads it once and decides on that set
// alone, so a swap never mixes two sets in one decision, and a request in
// flight finishes under the set it started with. Load is one atomic read:
// no lock, no allocation on the request path.
type Live struct{ p atomic.Pointer[Set] }

// NewLive returns a Live holding s.
func NewLive(s *Set) *Live {
	l := &Live{}
	l.p.Store(s)
	return l
}

// Load returns the set in force.
func (l *Live) Load() *Set { return l.p.Load() }

// Store puts s in force for every request that loads the set from now on.
func (l *Live) Store(s *Set) { l.p.Store(s) }
