package store

import (
	"context"
	"testing"
	"time"
)

// A PingOne user id is a UUID that the signal receivers and the ID token
// may spell in either case: a revocation must find the step-up whatever
// case either side used, or it fails open.
func TestASubjectIsRevokedWhateverItsCase(t *testing.T) {
	now := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	v := NewRevocations(RevocationsOptions{Now: func() time.Time { return now }})
	if err := v.Revoke(context.Background(), Revocation{Subject: "5A4F3E2D-1C0B-4A9F-8E7D-6C5B4A3F2E1D"}); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"5a4f3e2d-1c0b-4a9f-8e7d-6c5b4a3f2e1d", "5A4F3E2D-1C0B-4A9F-8E7D-6C5B4A3F2E1D", "5a4F3e2D-1c0B-4a9F-8e7D-6c5B4a3F2e1D"} {
		if !v.RevokedSubject(sub, now.Add(-time.Minute)) {
			t.Errorf("RevokedSubject(%s) = false after its revocation in upper case", sub)
		}
	}
	if v.RevokedSubject("5a4f3e2d-1c0b-4a9f-8e7d-6c5b4a3f2e1d", now.Add(time.Minute)) {
		t.Error("a step-up completed after the revocation is revoked too")
	}
}
