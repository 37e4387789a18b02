package pingonesim

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"slices"
	"strconv"
)

// Push number matching (SOURCES C3): enabled per mobile app in PingOne's MFA
// policy, the user must pick (SELECT_NUMBER, one of three) or type
// (ENTER_MANUALLY) on the phone the number the accessing device shows.
//
// INFERRED, not from any source: where the flows API carries the number.
// The simulator puts it in PUSH_CONFIRMATION_REQUIRED as
//
//	"numberMatching": {"type": "SELECT_NUMBER", "number": "47"}
//
// a two-digit decimal string. A real tenant capture must confirm or
// replace this shape (SOURCES D1).
const (
	NumberMatchingSelect = "SELECT_NUMBER"
	NumberMatchingEnter  = "ENTER_MANUALLY"
)

// numberMatchingJSON is the flow's numberMatching object (INFERRED shape).
type numberMatchingJSON struct {
	Type   string `json:"type"`
	Number string `json:"number"`
}

// twoDigits returns a random number 10–99 as a string.
func twoDigits() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(90))
	return strconv.Itoa(int(n.Int64()) + 10)
}

// newPushNumbers draws the number to match and, for SELECT_NUMBER,
// the three choices the phone offers (the right one among two others),
// sorted so the position does not give it away.
func newPushNumbers(mode string) (number string, choices []string) {
	number = twoDigits()
	if mode != NumberMatchingSelect {
		return number, nil
	}
	choices = []string{number}
	for len(choices) < 3 {
		if n := twoDigits(); !slices.Contains(choices, n) {
			choices = append(choices, n)
		}
	}
	slices.Sort(choices)
	return number, choices
}

// PushNumber answers a number-matching push with the number the user
// picked or typed on the phone: the right number completes the flow, a
// wrong one fails it as a denial (and counts towards the push limit).
func (s *Server) PushNumber(flowID, number string) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.lookupLocked(flowID, now)
	if f == nil {
		return fmt.Errorf("pingonesim: push: flow %q not found", flowID)
	}
	if f.status != statusPush || f.pushNumber == "" {
		return fmt.Errorf("pingonesim: push: flow %q is not waiting for a number-matching push", flowID)
	}
	if number == f.pushNumber {
		s.completeLocked(f, amrFor(f.selected), now)
	} else {
		s.failLocked(f, "PUSH_DENIED", "The user chose the wrong number")
		s.pushFailedLocked(f, now)
	}
	s.log.Info("pingonesim: number-matching push answered", "flow", f.id, "matched", number == f.pushNumber)
	return nil
}
