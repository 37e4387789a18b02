package main

// Stateless replicas (issue 8, docs/design.md §5): three real stepgate processes that
// share only their configuration and cookie keys, behind a round-robin
// balancer that opens a new connection for every request, so consecutive
// requests of one browser land on different processes. The processes are
// the test binary re-executed through TestMain (shutdown_test.go).

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

// balancer is a round-robin reverse proxy over replicas. It keeps the
// client's Host (so stepgate's same-origin checks see the public origin),
// and records which replica answered each request.
type balancer struct {
	srv *httptest.Server

	mu       sync.Mutex
	backends []*url.URL
	next     int
	log      []hop
}

// hop is one request the balancer passed on.
type hop struct {
	Method, Path string
	Replica      int
	Status       int
}

func newBalancer(t *testing.T, backends []string) *balancer {
	t.Helper()
	b := &balancer{}
	for _, s := range backends {
		b.set(len(b.backends), s)
	}
	// No keep-alive: every request is a new TCP connection to the replica
	// the balancer picked, as with a TCP-level balancer.
	tr := &http.Transport{DisableKeepAlives: true, ResponseHeaderTimeout: 10 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		i := b.next % len(b.backends)
		b.next++
		target := b.backends[i]
		b.mu.Unlock()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		(&httputil.ReverseProxy{
			Transport: tr,
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.Out.Host = pr.In.Host
			},
			ModifyResponse: func(resp *http.Response) error {
				resp.Header.Set("X-Test-Replica", fmt.Sprint(i))
				return nil
			},
		}).ServeHTTP(rec, r)
		b.mu.Lock()
		b.log = append(b.log, hop{r.Method, r.URL.Path, i, rec.code})
		b.mu.Unlock()
	}))
	t.Cleanup(b.srv.Close)
	return b
}

// set puts a replica's proxy address (host:port) in slot i.
func (b *balancer) set(i int, addr string) {
	u, _ := url.Parse("http://" + addr)
	b.mu.Lock()
	defer b.mu.Unlock()
	if i == len(b.backends) {
		b.backends = append(b.backends, u)
		return
	}
	b.backends[i] = u
}

// hops returns the requests recorded since mark (a len of an earlier hops).
func (b *balancer) hops(mark int) []hop {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]hop(nil), b.log[mark:]...)
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// replicaSet is a simulator, one upstream, replica processes and the
// balancer in front of them.
type replicaSet struct {
	t        *testing.T
	sim      *pingonesim.Server
	env      map[string]string
	replicas []*child
	lb       *balancer
	// front is a stack whose Proxy is the balancer: its browser helper
	// then drives the replicas as one site.
	front *stack
}

func newReplicaSet(t *testing.T, n int, cookieKeys string) *replicaSet {
	t.Helper()
	tenant := pingonesim.DemoTenant()
	// The replicas run on real time, so the simulator does too.
	sim := pingonesim.New(pingonesim.Options{Tenant: tenant, SigningKey: simKey()})
	simSrv := httptest.NewServer(sim)
	t.Cleanup(simSrv.Close)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream saw %s %s as %q", r.Method, r.RequestURI, r.Header.Get("X-Stepgate-User"))
	}))
	t.Cleanup(up.Close)
	rs := &replicaSet{t: t, sim: sim, env: map[string]string{
		"STEPGATE_UPSTREAM":              up.URL,
		"STEPGATE_PINGONE_AUTH_BASE":     simSrv.URL,
		"STEPGATE_PINGONE_ENV_ID":        tenant.EnvID,
		"STEPGATE_PINGONE_CLIENT_ID":     tenant.Apps[0].ClientID,
		"STEPGATE_PINGONE_CLIENT_SECRET": tenant.Apps[0].Secret,
		"STEPGATE_PINGONE_ACR_VALUES":    "MFA-Only",
		"STEPGATE_PINGONE_TIMEOUT":       "5s",
		"STEPGATE_COOKIE_SECURE":         "false",
		"STEPGATE_RULES":                 "/admin/ mfa",
		"STEPGATE_LISTEN":                "127.0.0.1:0",
		"STEPGATE_ADMIN_LISTEN":          "127.0.0.1:0",
		"STEPGATE_SHUTDOWN_DRAIN":        "0s",
		"STEPGATE_SHUTDOWN_TIMEOUT":      "5s",
	}}
	var addrs []string
	for range n {
		c := rs.start(cookieKeys)
		rs.replicas = append(rs.replicas, c)
		addrs = append(addrs, c.proxy)
	}
	rs.lb = newBalancer(t, addrs)
	rs.front = &stack{t: t, Sim: sim, Proxy: rs.lb.srv.URL, Logs: &syncBuffer{}}
	return rs
}

// start runs one replica with the given cookie keys and waits until ready.
func (rs *replicaSet) start(cookieKeys string) *child {
	rs.t.Helper()
	env := map[string]string{"STEPGATE_COOKIE_KEYS": cookieKeys}
	for k, v := range rs.env {
		env[k] = v
	}
	c := startChild(rs.t, env)
	waitStatus(rs.t, "http://"+c.admin+"/readyz", http.StatusOK, 15*time.Second)
	return c
}

// replace rolls replica i: start its successor with new keys, put it in
// the balancer, then SIGTERM the old process and check it exits cleanly.
func (rs *replicaSet) replace(i int, cookieKeys string) {
	rs.t.Helper()
	next := rs.start(cookieKeys)
	rs.lb.set(i, next.proxy)
	old := rs.replicas[i]
	rs.replicas[i] = next
	if err := old.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		rs.t.Fatal(err)
	}
	select {
	case err := <-old.exited:
		if err != nil {
			rs.t.Fatalf("replica %d exited with %v after SIGTERM:\n%s", i, err, old.out.String())
		}
	case <-time.After(15 * time.Second):
		rs.t.Fatalf("replica %d did not exit after SIGTERM", i)
	}
}

// logsOf returns the audit events of one kind across all current replicas,
// with the replica index in "replica".
func (rs *replicaSet) events(event string) []map[string]any {
	var out []map[string]any
	for i, c := range rs.replicas {
		for _, e := range c.out.Events(event) {
			e["replica"] = i
			out = append(out, e)
		}
	}
	return out
}

func TestStepUpAcrossThreeReplicasLandsEveryStepElsewhere(t *testing.T) {
	rs := newReplicaSet(t, 3, testKey)
	mark := len(rs.lb.hops(0))

	b := rs.front.stepUpAlice("/admin/")
	r := b.get("/admin/")
	if r.StatusCode != http.StatusOK || !strings.Contains(r.Body, `as "alice"`) {
		t.Fatalf("protected page through the balancer: got %d %q", r.StatusCode, r.Body)
	}

	hops := rs.lb.hops(mark)
	// GET page → GET challenge → POST start → GET devices → POST select →
	// GET OTP page → POST otp → GET page.
	if len(hops) != 8 {
		t.Fatalf("got %d requests through the balancer, want 8: %+v", len(hops), hops)
	}
	used := map[int]bool{}
	for i, h := range hops {
		used[h.Replica] = true
		if i > 0 && h.Replica == hops[i-1].Replica {
			t.Errorf("steps %d and %d (%s %s, %s %s) both on replica %d",
				i-1, i, hops[i-1].Method, hops[i-1].Path, h.Method, h.Path, h.Replica)
		}
	}
	if len(used) != 3 {
		t.Errorf("replicas used: %v, want all three", used)
	}
	// The processes' own logs agree: the flow started on one replica, the
	// device was chosen on another, and it completed on a third.
	started, selected, completed := rs.events("mfa.started"), rs.events("mfa.device_selected"), rs.events("mfa.completed")
	if len(started) != 1 || len(selected) != 1 || len(completed) != 1 {
		t.Fatalf("audit events started/selected/completed: %d/%d/%d, want 1/1/1", len(started), len(selected), len(completed))
	}
	if started[0]["flow_id"] != completed[0]["flow_id"] {
		t.Errorf("flow ids differ: started %v, completed %v", started[0]["flow_id"], completed[0]["flow_id"])
	}
	if a, s, c := started[0]["replica"], selected[0]["replica"], completed[0]["replica"]; a == s || s == c || a == c {
		t.Errorf("start, select and completion on replicas %v, %v, %v; want three different processes", a, s, c)
	}
	// Every replica served the protected page for this cookie.
	for range 3 {
		if r := b.get("/admin/"); r.StatusCode != http.StatusOK {
			t.Errorf("protected page on replica %s: got %d", r.Header.Get("X-Test-Replica"), r.StatusCode)
		}
	}
}

func TestCookieKeyRotationRolledAcrossReplicasKeepsUsersSteppedUp(t *testing.T) {
	oldKey, newKey := testKey, testKey2
	rs := newReplicaSet(t, 3, oldKey)

	// Users stepped up before the rotation, sealed with the old key.
	var users []*browser
	for range 2 {
		users = append(users, rs.front.stepUpAlice("/admin/"))
	}
	// checkAll asks each user's page three times: one request per replica,
	// whatever mix of old and new key sets the replicas have right now.
	checkAll := func(when string) {
		t.Helper()
		for u, b := range users {
			for range 3 {
				r := b.get("/admin/")
				if r.StatusCode != http.StatusOK {
					t.Fatalf("%s: user %d on replica %s: got %d, want 200", when, u, r.Header.Get("X-Test-Replica"), r.StatusCode)
				}
			}
		}
	}
	checkAll("before the rotation")

	// Phase 1: every replica learns the new key, still sealing with the
	// old one ("old,new"). Phase 2: they seal with the new key ("new,old").
	// A step-up completed at any moment (sealed by whichever replica
	// finished it) opens on every replica, because all of them hold both
	// keys before any of them seals with the new one.
	for _, phase := range []struct{ name, keys string }{
		{"phase 1 (old,new)", oldKey + "," + newKey},
		{"phase 2 (new,old)", newKey + "," + oldKey},
	} {
		for i := range rs.replicas {
			rs.replace(i, phase.keys)
			when := fmt.Sprintf("%s, after replica %d rolled", phase.name, i)
			checkAll(when)
			// A step-up done now, across mixed replicas, is one more user
			// who must stay stepped up for the rest of the roll.
			users = append(users, rs.front.stepUpAlice("/admin/"))
			checkAll(when + " and a new step-up")
		}
	}
	if got, want := len(users), 2+6; got != want {
		t.Fatalf("users: got %d, want %d", got, want)
	}

	// Phase 3: the old key is dropped ("new"). A step-up completed now is
	// certainly sealed with the new key and must survive; the two from
	// before the rotation were sealed with the old key and must no longer
	// open anywhere: back to the challenge, never let through.
	fresh := rs.front.stepUpAlice("/admin/")
	stale := users[:2]
	for i := range rs.replicas {
		rs.replace(i, newKey)
		for range 3 {
			if r := fresh.get("/admin/"); r.StatusCode != http.StatusOK {
				t.Fatalf("phase 3, replica %d rolled: a step-up sealed with the new key got %d on replica %s, want 200",
					i, r.StatusCode, r.Header.Get("X-Test-Replica"))
			}
		}
	}
	for u, b := range stale {
		for range 3 {
			r := b.get("/admin/")
			if r.StatusCode != http.StatusFound || !strings.Contains(r.Header.Get("Location"), "/.stepgate/challenge") {
				t.Fatalf("phase 3 done: user %d, sealed with the dropped key, got %d (Location %q) on replica %s, want 302 to the challenge",
					u, r.StatusCode, r.Header.Get("Location"), r.Header.Get("X-Test-Replica"))
			}
		}
	}
}
