package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

var updateOCSF = flag.Bool("update-ocsf", false, "rewrite testdata/ocsf/*.json from docs/audit.md's samples")

// ocsfSamples are the audit lines of docs/audit.md's "One sample of each
// event", by event, and the phone approval's events the page has no
// sample of.
func ocsfSamples(t *testing.T) map[string]string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	samples := map[string]string{
		"approval.pushed":    `{"time":"2026-12-06T15:17:50.1Z","level":"INFO","msg":"audit","schema":"stepgate.audit/1","number_matching":true,"digest":"4a445b00baf934993fe54c757f0cfa6b0a55df06534cde220612b53e2681c8e6","api":"decoupled","approval_id":"q8Hc0VwJm2TfR4sLx9bNeA","event":"approval.pushed","user":"alice","client_ip":"127.0.0.1","flow_id":"5d0c1f7e-3b8a-4c55-9a0e-2f6b7d1e9c40"}`,
		"approval.timed_out": `{"time":"2026-12-06T15:19:50.1Z","level":"INFO","msg":"audit","schema":"stepgate.audit/1","reason":"push timed out","digest":"4a445b00baf934993fe54c757f0cfa6b0a55df06534cde220612b53e2681c8e6","api":"decoupled","approval_id":"q8Hc0VwJm2TfR4sLx9bNeA","event":"approval.timed_out","user":"alice","client_ip":"127.0.0.1","flow_id":"5d0c1f7e-3b8a-4c55-9a0e-2f6b7d1e9c40"}`,
	}
	heading := regexp.MustCompile("(?m)^`([a-z]+\\.[a-z_]+)`\\n\\n```json\\n(.+)\\n```")
	for _, m := range heading.FindAllStringSubmatch(string(doc), -1) {
		samples[m[1]] = m[2]
	}
	if len(samples) < 20 {
		t.Fatalf("found %d samples in docs/audit.md, want one of each event", len(samples))
	}
	return samples
}

// TestOCSFGoldenEvents holds the OCSF form of one event of each kind to a
// golden file (go test -run TestOCSFGoldenEvents -update-ocsf rewrites them).
func TestOCSFGoldenEvents(t *testing.T) {
	for event, line := range ocsfSamples(t) {
		t.Run(event, func(t *testing.T) {
			var f map[string]any
			if err := json.Unmarshal([]byte(line), &f); err != nil {
				t.Fatalf("sample: %v", err)
			}
			ev := ocsfEvent(f, "v0.0.0-test")
			checkOCSF(t, ev, line)
			got, err := json.MarshalIndent(ev, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join("testdata", "ocsf", event+".json")
			if *updateOCSF {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update-ocsf to write it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("OCSF form of %s differs from %s:\n%s", event, golden, got)
			}
		})
	}
}

// approvalRef is the form of an approval reference (id.key): its key opens
// a held request, so it is never in any log line.
var approvalRef = regexp.MustCompile(`[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}`)

// checkOCSF holds one OCSF event to what every consumer needs: the class,
// its type_uid, the time in milliseconds, the schema version, and no
// approval reference.
func checkOCSF(t testing.TB, ev map[string]any, from string) {
	t.Helper()
	num := func(k string) int {
		switch v := ev[k].(type) {
		case int:
			return v
		case int64:
			return int(v)
		case float64:
			return int(v)
		}
		t.Errorf("OCSF event without a numeric %s: %s", k, from)
		return -1
	}
	class, activity := num("class_uid"), num("activity_id")
	md0, _ := ev["metadata"].(map[string]any)
	event, _ := md0["event_code"].(string)
	if m, ok := ocsfMappings[event]; ok && class != m.class || !ok && class != classBase {
		t.Errorf("class_uid %d for %q, want its row's class (Authentication 3002, HTTP Activity 4002), or Base Event (0) without a row: %s", class, event, from)
	}
	if got := num("type_uid"); got != class*100+activity {
		t.Errorf("type_uid %d, want class_uid*100+activity_id = %d: %s", got, class*100+activity, from)
	}
	if got := num("category_uid"); got != class/1000 {
		t.Errorf("category_uid %d, want %d: %s", got, class/1000, from)
	}
	if ms := num("time"); ms < 1_700_000_000_000 {
		t.Errorf("time %d is not milliseconds since the epoch: %s", ms, from)
	}
	num("severity_id")
	num("status_id")
	md, _ := ev["metadata"].(map[string]any)
	if md == nil || md["version"] != ocsfVersion || md["product"] == nil {
		t.Errorf("metadata %v, want version %s and the product: %s", md, ocsfVersion, from)
	}
	b, _ := json.Marshal(ev)
	if approvalRef.Match(b) {
		t.Errorf("an approval reference in an OCSF event: %s", b)
	}
}

// checkOCSFLines maps every audit line of logs to OCSF and checks it, and
// checks every OCSF line a stack in ocsf mode wrote: every event the
// end-to-end suites emit passes through here.
func checkOCSFLines(t testing.TB, logs string) {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		switch {
		case m["msg"] == "audit":
			checkOCSF(t, ocsfEvent(m, "test"), line)
		case m["class_uid"] != nil:
			checkOCSF(t, m, line)
		}
	}
}

// ocsfLines are the OCSF events in logs.
func ocsfLines(logs string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["class_uid"] != nil {
			out = append(out, m)
		}
	}
	return out
}

func TestOCSFModeWritesOCSFEventsWithoutSecrets(t *testing.T) {
	s := newStack(t, withEnv("STEPGATE_AUDIT_FORMAT", "ocsf"))
	run := opsScenario(t, s)
	logs := s.Logs.String()
	if strings.Contains(logs, `"msg":"audit"`) {
		t.Error("a stepgate.audit/1 line in ocsf mode")
	}
	events := ocsfLines(logs)
	kinds := map[string]bool{}
	for _, ev := range events {
		kinds[fmt.Sprint(ev["metadata"].(map[string]any)["event_code"])] = true
	}
	for _, want := range []string{"mfa.started", "mfa.completed", "mfa.otp_failed", "mfa.rate_limited"} {
		if !kinds[want] {
			t.Errorf("no OCSF event for %s (got %v)", want, kinds)
		}
	}
	var ocsfText strings.Builder
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `"class_uid"`) {
			ocsfText.WriteString(line + "\n")
		}
	}
	parts := strings.Split(run.idToken, ".")
	secrets := append(append(append([]string{s.Env["STEPGATE_PINGONE_CLIENT_SECRET"], testKey, run.idToken}, parts...), run.otps...), append(run.cookies, run.csrf...)...)
	for _, v := range secrets {
		if len(v) > 3 && secretPattern(v).MatchString(ocsfText.String()) {
			t.Errorf("a secret (%d chars) in an OCSF event", len(v))
		}
	}
	// A completed step-up is an MFA logon that succeeded.
	for _, ev := range events {
		if ev["metadata"].(map[string]any)["event_code"] == "mfa.completed" &&
			(ev["class_uid"] != float64(3002) || ev["activity_id"] != float64(1) || ev["status_id"] != float64(1) || ev["is_mfa"] != true) {
			t.Errorf("mfa.completed as %v, want Authentication, Logon, Success, is_mfa", ev)
		}
	}
}

func TestOCSFModeTiesAnApprovalToItsForward(t *testing.T) {
	s, _ := newApproveStack(t, withEnv("STEPGATE_AUDIT_FORMAT", "ocsf"))
	b := s.browser("alice")
	b.follow(b.passChallenge(s, b.send("/payments/transfer", transfer)))
	byEvent := map[string]map[string]any{}
	for _, ev := range ocsfLines(s.Logs.String()) {
		byEvent[fmt.Sprint(ev["metadata"].(map[string]any)["event_code"])] = ev
	}
	req, appr, fwd := byEvent["approval.required"], byEvent["approval.approved"], byEvent["approval.forwarded"]
	if req == nil || appr == nil || fwd == nil {
		t.Fatalf("OCSF events %v, want approval.required, .approved and .forwarded", byEvent)
	}
	corr := func(ev map[string]any) any { return ev["metadata"].(map[string]any)["correlation_uid"] }
	if corr(req) == nil || corr(req) != corr(appr) || corr(appr) != corr(fwd) {
		t.Errorf("correlation_uid %v %v %v, want the approval id on all three", corr(req), corr(appr), corr(fwd))
	}
	if fwd["class_uid"] != float64(4002) || fwd["activity_id"] != float64(6) || fwd["action_id"] != float64(1) {
		t.Errorf("approval.forwarded as %v, want HTTP Activity, Post, Allowed", fwd)
	}
	if req["action_id"] != float64(2) {
		t.Errorf("approval.required as %v, want action Denied (held)", req)
	}
	if strings.Contains(s.Logs.String(), "ACME") {
		t.Error("a value of the held request in the OCSF events")
	}
}

// An event without a row of its own is a Base Event: a configuration
// reload or a refused signal passed off as an MFA sign-in would mislead
// every SIEM's authentication views.
func TestOCSFAnEventWithoutARowIsABaseEvent(t *testing.T) {
	for _, event := range []string{"config.reloaded", "signal.refused", "some.future_event"} {
		e := ocsfEvent(map[string]any{"time": "2026-12-06T09:00:00Z", "level": "INFO", "msg": "audit", "event": event,
			"user": "alice", "client_ip": "192.0.2.7", "changed": []any{"rules"}}, "dev")
		if e["class_uid"] != classBase || e["type_uid"] != 99 || e["category_uid"] != 0 {
			t.Errorf("%s: class %v, type %v, category %v; want a Base Event (0, 99, 0)", event, e["class_uid"], e["type_uid"], e["category_uid"])
		}
		if _, ok := e["is_mfa"]; ok {
			t.Errorf("%s: carries is_mfa", event)
		}
		if u, _ := e["unmapped"].(map[string]any); u["user"] != "alice" || u["changed"] == nil {
			t.Errorf("%s: unmapped = %v; want the user and the event's own fields there", event, u)
		}
	}
}

// auditFields is an audit line as its JSON decodes, whatever the kinds of
// its attributes: the OCSF form's unmapped fields are what the JSON line
// says (an array stays an array, an error its message).
func TestAuditFieldsAreTheDecodedJSONLine(t *testing.T) {
	r := slog.NewRecord(time.Time{}, slog.LevelInfo, "audit", 0)
	r.AddAttrs(slog.String("event", "config.reloaded"), slog.Any("changed", []string{"rules", "cookie keys"}),
		slog.Duration("took", 1500*time.Millisecond), slog.Any("error", errors.New("store down")),
		slog.Time("at", time.Date(2026, 12, 6, 9, 0, 0, 5, time.UTC)), slog.Int("n", 3), slog.Bool("ok", true),
		slog.Any("limits", map[string]int{"otp": 5}))
	var buf bytes.Buffer
	if err := slog.NewJSONHandler(&buf, nil).Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal(buf.Bytes(), &want); err != nil {
		t.Fatal(err)
	}
	got := auditFields(r, nil)
	delete(got, "time") // the record's own time: a zero one, which slog omits
	delete(got, "schema")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("auditFields = %v\nthe JSON line decodes to %v", got, want)
	}
}
