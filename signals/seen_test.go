package signals

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/store"
)

// Event ids are forgotten oldest first: when full only the oldest goes
// (never a random one, which could then be replayed), and each after its
// ttl.
func TestSeenIDsForgetTheOldestFirst(t *testing.T) {
	now := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	s := newSeenIDs(3, time.Hour, func() time.Time { return now })
	for i := range 5 {
		s.add(fmt.Sprint(i))
		now = now.Add(time.Minute)
	}
	for i, want := range []bool{false, false, true, true, true} {
		if got := s.has(fmt.Sprint(i)); got != want {
			t.Errorf("after 5 ids in a set of 3: has(%d) = %v, want %v", i, got, want)
		}
	}
	s.remove("3")
	s.add("3") // remembered again: its new time counts
	now = now.Add(58 * time.Minute)
	// An hour after id 2 and id 3's first time: 2 goes; 3's old place in
	// line goes without taking 3 (remembered since); 4 is 59 minutes old.
	s.add("5")
	for id, want := range map[string]bool{"2": false, "3": true, "4": true, "5": true} {
		if got := s.has(id); got != want {
			t.Errorf("an hour on: has(%s) = %v, want %v", id, got, want)
		}
	}
	if len(s.m) != 3 {
		t.Errorf("%d ids kept, want 3", len(s.m))
	}
}

type downRevoker struct{}

func (downRevoker) Revoke(context.Context, store.Revocation) error { return errors.New("store down") }

// A batch the store did not take is answered 503, remembered nowhere and
// audited as revoked nowhere: PingOne sends it again, and only the
// delivery that was stored says "revoked".
func TestAPingOneBatchTheStoreRefusesIsNotAuditedAsRevoked(t *testing.T) {
	var logs bytes.Buffer
	p, err := NewPingOne(PingOneOptions{Header: "X-Secret", Secret: "0123456789abcdef0123456789abcdef", Actions: []string{"USER.DELETED"},
		Revoker: downRevoker{}, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	body := `[{"id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","action":{"type":"USER.DELETED"},"resources":[{"type":"USER","id":"5a4f3e2d-1c0b-4a9f-8e7d-6c5b4a3f2e1d"}]}]`
	for range 2 {
		req := httptest.NewRequest(http.MethodPost, "/signals/pingone", strings.NewReader(body))
		req.Header.Set("X-Secret", "0123456789abcdef0123456789abcdef")
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, req)
		if rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503 (the batch is sent again)", rec.Code)
		}
	}
	if strings.Contains(logs.String(), "session.revoked") {
		t.Errorf("a revocation the store refused is audited as done:\n%s", logs.String())
	}
}
