package pingonesim

import (
	"testing"
	"time"
)

func TestStoppedClockMovesOnlyWhenAdvanced(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := NewClock(start)
	if got := c.Now(); !got.Equal(start) {
		t.Fatalf("Now = %v, want %v", got, start)
	}
	c.Advance(time.Hour)
	if got := c.Now(); !got.Equal(start.Add(time.Hour)) {
		t.Fatalf("after Advance(1h): %v", got)
	}
}

// A running clock must keep up with the wall clock: demo mode's gateway
// mints login_hint_tokens on the wall clock, and a clock stopped at start-up
// would reject them as issued in the future a few minutes later.
func TestRunningClockFollowsTheWallClockPlusAdvances(t *testing.T) {
	c := NewRunningClock()
	before := time.Now()
	got := c.Now()
	if got.Before(before) || got.Sub(before) > time.Second {
		t.Fatalf("running clock %v is not the wall clock %v", got, before)
	}
	c.Advance(16 * time.Minute)
	lead := c.Now().Sub(time.Now())
	if lead < 15*time.Minute || lead > 17*time.Minute {
		t.Fatalf("after Advance(16m) the clock leads the wall clock by %v", lead)
	}
}
