package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/proxy/clientip"
	"github.com/stepgate/stepgate/proxy/identity"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/session"
)

// fakeDoor owns one path and answers 204 about the request in asked.
type fakeDoor struct {
	path  string
	asked *Request
}

func (*fakeDoor) Name() string                { return "fake" }
func (d *fakeDoor) Owns(r *http.Request) bool { return r.URL.Path == d.path }
func (d *fakeDoor) ServeCheck(w http.ResponseWriter, _ *http.Request) Served {
	w.WriteHeader(http.StatusNoContent)
	return Served{Decision: decisionAllow, User: "alice", Asked: d.asked}
}

func TestWithDoorsServesEachDoorsRequestsAndRecordsThemLikeTheProxys(t *testing.T) {
	var access bytes.Buffer
	store, err := session.NewStore(session.Options{Keys: [][]byte{bytes.Repeat([]byte{7}, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.Parse("test", "/admin/ mfa", rules.Defaults{Action: rules.Allow, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	up, _ := url.Parse("http://app.internal:8082")
	tr := &memTransport{body: []byte("ok")}
	gw, err := New(Config{
		AccessLog: &access, Upstream: up, Transport: tr, Rules: set, ClientIP: clientip.New(nil),
		Identity: identity.NewHeader("X-Forwarded-User"), StepUps: store, Challenge: nopChallenger{},
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: metrics.New(prometheus.NewRegistry(), "test"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if h := gw.WithDoors(); h != http.Handler(gw) {
		t.Fatalf("without doors the handler is %T, not the gateway", h)
	}
	described := &fakeDoor{path: "/.stepgate/described", asked: &Request{Method: "POST", Target: "/admin/x?token=secret"}}
	undescribed := &fakeDoor{path: "/.stepgate/undescribed"}
	h := gw.WithDoors(described, undescribed)

	type line struct{ Method, Path, Decision, User string }
	for _, tc := range []struct {
		name, target string
		forwarded    bool
		want         line
	}{
		{"a door's check is logged as the request it was asked about, without the query",
			"/.stepgate/described?x=1", false, line{"POST", "/admin/x", "allow", "alice"}},
		{"a door that read no description logs the check itself",
			"/.stepgate/undescribed", false, line{"GET", "/.stepgate/undescribed", "allow", "alice"}},
		{"every other request goes through the proxy door",
			"/public", true, line{"GET", "/public", "allow", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			access.Reset()
			tr.last = nil
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", tc.target, nil))
			if (tr.last != nil) != tc.forwarded {
				t.Fatalf("forwarded: %v, want %v", tr.last != nil, tc.forwarded)
			}
			var got line
			if err := json.Unmarshal(access.Bytes(), &got); err != nil {
				t.Fatalf("access line %q: %v", access.String(), err)
			}
			if got != tc.want {
				t.Fatalf("access line %+v, want %+v", got, tc.want)
			}
		})
	}
}
