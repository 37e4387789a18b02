package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// slogAccessLine is the line slog's JSONHandler writes for e: the format
// the hand-written encoder must reproduce byte for byte.
func slogAccessLine(t testing.TB, e *accessEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	rec := slog.NewRecord(e.time, slog.LevelInfo, "request", 0)
	client := ""
	if e.client.IsValid() {
		client = e.client.String()
	}
	rec.AddAttrs(
		slog.String("method", e.method),
		slog.String("path", e.path),
		slog.Int("status", e.status),
		slog.String("decision", e.decision),
		slog.String("user", e.user),
		slog.String("client_ip", client),
		slog.Duration("duration", e.duration),
		slog.Float64("duration_ms", float64(e.duration.Microseconds())/1000))
	if err := slog.NewJSONHandler(&buf, nil).Handle(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestAccessLineIsSlogJSON(t *testing.T) {
	base := accessEntry{
		time: time.Date(2026, 11, 21, 9, 3, 4, 120_000_000, time.UTC), method: "GET", path: "/admin/",
		status: 200, decision: decisionStepUp, user: "alice", client: netip.MustParseAddr("203.0.113.7"),
		duration: 1234567 * time.Nanosecond,
	}
	cases := map[string]func(e *accessEntry){
		"plain":               func(*accessEntry) {},
		"quotes and slashes":  func(e *accessEntry) { e.path = `/a"b\c/` },
		"control characters":  func(e *accessEntry) { e.user = "al\x00i\x1fce\n\r\t\x7f" },
		"invalid UTF-8":       func(e *accessEntry) { e.path = "/\xff\xfe/\xc3" },
		"line separators":     func(e *accessEntry) { e.user = "a\u2028b\u2029c" },
		"HTML characters":     func(e *accessEntry) { e.path = "/<script>&amp;</script>" },
		"non-ASCII":           func(e *accessEntry) { e.user = "zoë 日本 🙂" },
		"no client":           func(e *accessEntry) { e.client = netip.Addr{} },
		"IPv6 client":         func(e *accessEntry) { e.client = netip.MustParseAddr("2001:db8::1") },
		"IPv4-mapped client":  func(e *accessEntry) { e.client = netip.MustParseAddr("::ffff:192.0.2.1") },
		"zoned client":        func(e *accessEntry) { e.client = netip.MustParseAddr("fe80::1%eth0") },
		"empty strings":       func(e *accessEntry) { e.user, e.path = "", "" },
		"non-UTC time":        func(e *accessEntry) { e.time = e.time.In(time.FixedZone("CET", 3600)) },
		"whole-second time":   func(e *accessEntry) { e.time = e.time.Truncate(time.Second) },
		"odd status":          func(e *accessEntry) { e.status = 499 },
		"zero duration":       func(e *accessEntry) { e.duration = 0 },
		"one nanosecond":      func(e *accessEntry) { e.duration = 1 },
		"long duration":       func(e *accessEntry) { e.duration = 36 * time.Hour },
		"negative duration":   func(e *accessEntry) { e.duration = -1500 }, // a clock stepped back
		"negative below 1 ms": func(e *accessEntry) { e.duration = -500 * time.Microsecond },
		"round milliseconds":  func(e *accessEntry) { e.duration = 120 * time.Millisecond },
		"trailing zero":       func(e *accessEntry) { e.duration = 1230 * time.Microsecond },
		"beyond float64":      func(e *accessEntry) { e.duration = time.Duration(1<<62 + 12345) },
		"truncated long path": func(e *accessEntry) { e.path = string(bytes.Repeat([]byte("a"), 512)) + "…" },
	}
	var last atomic.Pointer[stamp] // reused across the cases, as the gateway does across lines
	for name, change := range cases {
		t.Run(name, func(t *testing.T) {
			e := base
			change(&e)
			got := appendAccessLine(nil, &e, nil)
			if want := slogAccessLine(t, &e); !bytes.Equal(got, want) {
				t.Fatalf("access line differs from slog's:\n got %s\nwant %s", got, want)
			}
			for range 2 { // formatting the stamp, then reusing it
				if again := appendAccessLine(nil, &e, &last); !bytes.Equal(again, got) {
					t.Fatalf("with the stamp reused:\n got %s\nwant %s", again, got)
				}
			}
			var v map[string]any
			if err := json.Unmarshal(got, &v); err != nil {
				t.Fatalf("not JSON: %v: %s", err, got)
			}
		})
	}
}

// FuzzAccessLine holds the encoder to slog's output for any strings a
// client can put in a request line or an upstream IdP in a user name.
func FuzzAccessLine(f *testing.F) {
	f.Add("GET", "/admin/", "alice", 200, int64(1500))
	f.Add("P\"OST", "/\xff\u2028<>&\\", "\x00\x1f\x7f", 599, int64(-1))
	// One reused time stamp across the whole run, as the gateway keeps
	// one: every line, whether its second and zone are the last line's or
	// not, must still print as slog does.
	var last atomic.Pointer[stamp]
	zones := []*time.Location{time.UTC, time.FixedZone("", 3600), time.FixedZone("", -(9*3600 + 30*60)), time.FixedZone("", 0)}
	f.Fuzz(func(t *testing.T, method, path, user string, status int, ns int64) {
		at := time.Unix(1795000000+ns%3, ns%1e9).In(zones[uint64(ns)%uint64(len(zones))])
		if ns%17 == 0 {
			at = time.Unix(ns, 0).UTC() // any second, years beyond 9999 included
		}
		e := &accessEntry{
			time: at, method: method, path: path, status: status,
			decision: decisionAllow, user: user, client: netip.MustParseAddr("2001:db8::7"), duration: time.Duration(ns),
		}
		for _, reuse := range []*atomic.Pointer[stamp]{nil, &last} {
			if got, want := appendAccessLine(nil, e, reuse), slogAccessLine(t, e); !bytes.Equal(got, want) {
				t.Fatalf("access line differs from slog's:\n got %q\nwant %q", got, want)
			}
		}
	})
}
