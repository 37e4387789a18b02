package pingonesim

import (
	"sync"
	"time"
)

// Clock is the simulator's clock, safe for concurrent use. A stopped clock
// (NewClock) moves only when advanced: tests use it so that nothing
// depends on the wall clock. A running clock (NewRunningClock) follows the
// wall clock, shifted by whatever Advance added: demo and simulate modes use
// it, so that POST /_sim/clock works while the gateway's own tokens, minted
// on the wall clock, stay valid.
type Clock struct {
	mu      sync.Mutex
	t       time.Time     // a stopped clock's time
	offset  time.Duration // a running clock's lead over the wall clock
	running bool
}

// NewClock returns a Clock stopped at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// NewRunningClock returns a Clock that follows the wall clock.
func NewRunningClock() *Clock { return &Clock{running: true} }

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return time.Now().Add(c.offset)
	}
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		c.offset += d
		return
	}
	c.t = c.t.Add(d)
}
