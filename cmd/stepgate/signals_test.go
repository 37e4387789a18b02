package main

// Revocation from the identity provider (issue 26, docs/signals.md): a
// PingOne webhook batch ends a user's step-ups on every replica sharing a
// real redis-server; every request that cannot be believed is refused with
// a clear answer and an audit line, and changes nothing.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
	"github.com/stepgate/stepgate/store/redistest"
)

const testWebhookSecret = "webhook-secret-0123456789abcdefghijklmnop"

// pingOneEvent is an ACTIVITY-format event as PingOne's webhooks send it
// (the fields stepgate reads, plus the usual others).
func pingOneEvent(id, action, userID string) map[string]any {
	return map[string]any{
		"id":         id,
		"recordedAt": "2026-11-21T09:00:00.000Z",
		"action":     map[string]any{"type": action, "description": action},
		"resources":  []any{map[string]any{"type": "USER", "id": userID, "name": "user " + userID[:8]}},
		"result":     map[string]any{"status": "SUCCESS"},
		"actors":     map[string]any{"client": map[string]any{"type": "CLIENT", "name": "PingOne Admin Console"}},
	}
}

// webhookFixture is a batch of n events (PingOne sends up to 500): noise
// for other users and actions stepgate ignores, with the given events at
// the end.
func webhookFixture(n int, last ...map[string]any) []map[string]any {
	var out []map[string]any
	for i := range n - len(last) {
		action := []string{"USER.ACCESS_ALLOWED", "OTP.CHECK_SUCCESS", "USER.UPDATED", "SESSION.CREATED"}[i%4]
		out = append(out, pingOneEvent(fmt.Sprintf("evt-noise-%04d", i), action, fmt.Sprintf("00000000-0000-4000-8000-%012d", i)))
	}
	return append(out, last...)
}

func postWebhook(t *testing.T, s *stack, secret string, body []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.Signals+"/signals/pingone", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if secret != "" {
		req.Header.Set("X-Stepgate-Webhook-Secret", secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("answer is not JSON: %d %q", resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func signalStacks(t *testing.T) []*stack {
	srv := redistest.Start(t)
	return redisStacks(t, srv, 2, "STEPGATE_SIGNALS_LISTEN", "127.0.0.1:0", "STEPGATE_PINGONE_WEBHOOK_SECRET", testWebhookSecret)
}

func TestPingOneWebhookOf500EventsChallengesTheUserAgainOnBothReplicas(t *testing.T) {
	stacks := signalStacks(t)
	alice := stacks[0].stepUpAlice("/admin/")
	for i, s := range stacks {
		if r := alice.on(s).get("/admin/"); r.StatusCode != http.StatusOK {
			t.Fatalf("before the webhook, replica %d: %d", i, r.StatusCode)
		}
	}
	batch := webhookFixture(500, pingOneEvent("evt-alice-device", "DEVICE.DELETED", pingonesim.DemoAliceID))
	code, ans := postWebhook(t, stacks[1], testWebhookSecret, mustJSON(t, batch))
	if code != http.StatusOK || ans["revoked"] != 1.0 || ans["ignored"] != 499.0 {
		t.Fatalf("webhook of 500 events: %d %v, want 200 with 1 revoked and 499 ignored", code, ans)
	}
	// Posted to replica 1, refused on both (replica 0 through Redis).
	took := waitRefused(t, alice, stacks, "/admin/", http.StatusFound, 10*time.Second)
	t.Logf("refused on both replicas %v after the webhook", took)
	if ev := stacks[1].Logs.Events("session.revoked"); len(ev) != 1 || ev[0]["by"] != "pingone" || ev[0]["event_id"] != "evt-alice-device" {
		t.Errorf("session.revoked audit lines: %v", ev)
	}

	// PingOne delivers at least once: the same batch again changes
	// nothing, and a step-up done since stays valid everywhere.
	stacks[0].Clock.Advance(2 * time.Second)
	again := stacks[0].stepUpAlice("/admin/")
	code, ans = postWebhook(t, stacks[1], testWebhookSecret, mustJSON(t, batch))
	if code != http.StatusOK || ans["duplicates"] != 500.0 || ans["revoked"] != 0.0 {
		t.Fatalf("the same batch again: %d %v, want 200 with 500 duplicates", code, ans)
	}
	for i, s := range stacks {
		if r := again.on(s).get("/admin/"); r.StatusCode != http.StatusOK {
			t.Errorf("a step-up after the revocation, replica %d, after a redelivery: %d", i, r.StatusCode)
		}
	}
}

func TestPingOneWebhookRefusesWhatItCannotBelieveAndChangesNothing(t *testing.T) {
	stacks := signalStacks(t)
	s := stacks[0]
	alice := s.stepUpAlice("/admin/")
	revokeAlice := pingOneEvent("evt-1", "USER.DELETED", pingonesim.DemoAliceID)
	tests := []struct {
		name    string
		secret  string
		body    []byte
		code    int
		errCode string
	}{
		{"no secret", "", mustJSON(t, []any{revokeAlice}), http.StatusUnauthorized, "unauthorized"},
		{"a wrong secret", testWebhookSecret + "x", mustJSON(t, []any{revokeAlice}), http.StatusUnauthorized, "unauthorized"},
		{"a batch of 501 events", testWebhookSecret, mustJSON(t, webhookFixture(501, revokeAlice)), http.StatusRequestEntityTooLarge, "too_many_events"},
		{"not JSON", testWebhookSecret, []byte(`[{"id":`), http.StatusBadRequest, "malformed"},
		{"an object, not an array", testWebhookSecret, mustJSON(t, revokeAlice), http.StatusBadRequest, "malformed"},
		{"an event without an id", testWebhookSecret, []byte(`[{"action":{"type":"USER.DELETED"}}]`), http.StatusBadRequest, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.Logs.Events("signal.refused"))
			code, ans := postWebhook(t, s, tt.secret, tt.body)
			if code != tt.code || ans["error"] != tt.errCode || ans["message"] == "" {
				t.Errorf("got %d %v, want %d %q with a message", code, ans, tt.code, tt.errCode)
			}
			if n := len(s.Logs.Events("signal.refused")); n != before+1 {
				t.Errorf("signal.refused audit lines: %d new, want 1", n-before)
			}
		})
	}
	t.Run("an event for no PingOne user", func(t *testing.T) {
		bad := pingOneEvent("evt-2", "USER.DELETED", pingonesim.DemoAliceID)
		bad["resources"] = []any{map[string]any{"type": "USER", "id": "alice"}}
		code, ans := postWebhook(t, s, testWebhookSecret, mustJSON(t, []any{bad}))
		refused, _ := ans["refused"].([]any)
		if code != http.StatusOK || ans["revoked"] != 0.0 || len(refused) != 1 || !strings.Contains(fmt.Sprint(refused[0]), "unknown subject") {
			t.Errorf("got %d %v, want 200 with the event refused as an unknown subject", code, ans)
		}
		ev := s.Logs.Events("signal.refused")
		if len(ev) == 0 || ev[len(ev)-1]["reason"] != "unknown subject" {
			t.Errorf("no signal.refused line for the unknown subject: %v", ev)
		}
	})
	// Nothing above changed anything: alice is still stepped up on both.
	for i, st := range stacks {
		if r := alice.on(st).get("/admin/"); r.StatusCode != http.StatusOK {
			t.Errorf("after refused webhooks, replica %d: %d, want 200", i, r.StatusCode)
		}
	}
	if ev := s.Logs.Events("session.revoked"); len(ev) != 0 {
		t.Errorf("a refused webhook revoked: %v", ev)
	}
}
