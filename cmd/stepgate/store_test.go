package main

// The shared store (docs/design.md §15, issue 14): three stepgate instances sharing
// one real redis-server, started by the test on a loopback port. Limits are
// exact across them, a revocation on one is refused on the others within a
// second, and Redis faults fail closed.

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepgate/stepgate/store/redistest"
)

const testAdminToken = "test-admin-token-0123456789abcdefghijklmnop"

// redisStacks starts n gateways sharing one simulator (and clock) and srv.
func redisStacks(t *testing.T, srv *redistest.Server, n int, kv ...string) []*stack {
	t.Helper()
	env := append([]string{
		"STEPGATE_STORE", "redis", "STEPGATE_REDIS_URL", srv.URL(),
		"STEPGATE_ADMIN_TOKEN", testAdminToken, "STEPGATE_LOG_LEVEL", "info",
	}, kv...)
	first := newStack(t, withEnv(env...))
	stacks := []*stack{first}
	for range n - 1 {
		stacks = append(stacks, newStack(t, withSim(first), withEnv(env...)))
	}
	for _, s := range stacks {
		waitStoreOK(t, s)
	}
	return stacks
}

// waitStoreOK polls /readyz until it reports the store confirmed.
func waitStoreOK(t *testing.T, s *stack) {
	t.Helper()
	waitReadyz(t, s, "store: redis ok", 10*time.Second)
}

func waitReadyz(t *testing.T, s *stack, want string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		_, body := readyz(t, s)
		if strings.Contains(body, want) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never said %q within %v; last: %q", want, within, body)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

func readyz(t *testing.T, s *stack) (int, string) {
	t.Helper()
	resp, err := http.Get(s.Admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// on returns a copy of b that talks to stack s (same cookies).
func (b *browser) on(s *stack) *browser {
	c := *b
	c.base = s.Proxy
	return &c
}

// revoke posts to s's /revoke with token.
func revoke(t *testing.T, s *stack, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.Admin+"/revoke", strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// lastSessionID is the session id of the newest step-up completed on s.
func lastSessionID(t *testing.T, s *stack) string {
	t.Helper()
	ev := s.Logs.Events("mfa.completed")
	if len(ev) == 0 {
		t.Fatal("no mfa.completed event")
	}
	id, _ := ev[len(ev)-1]["session_id"].(string)
	if id == "" {
		t.Fatal("mfa.completed without session_id")
	}
	return id
}

// waitRefused polls path with b on each stack until each answers want
// (the refusal), within d, and returns how long it took.
func waitRefused(t *testing.T, b *browser, stacks []*stack, path string, want int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for i, s := range stacks {
		for {
			r := b.on(s).get(path)
			if r.StatusCode == want {
				break
			}
			if time.Since(start) > within {
				t.Fatalf("replica %d still answers %d for %s %v after the revocation, want %d", i, r.StatusCode, path, within, want)
			}
			time.Sleep(10 * time.Millisecond) // polling with a deadline
		}
	}
	return time.Since(start)
}

func TestRedisStoreStartLimitIsExactAcrossThreeReplicas(t *testing.T) {
	srv := redistest.Start(t)
	stacks := redisStacks(t, srv, 3)
	var started, limited int
	for i := range 15 { // five per replica: per-replica limits would admit all 15
		s := stacks[i%3]
		b := s.browser("alice")
		b.get("/.stepgate/challenge?return=/admin/")
		// Every POST outcome is a 303; the page it leads to says whether
		// the flow started (a device list) or was refused (429).
		switch r := b.submit("action", "start"); r.StatusCode {
		case http.StatusOK:
			started++
		case http.StatusTooManyRequests:
			limited++
			if r.Header.Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After on replica %d", i%3)
			}
		default:
			t.Fatalf("start %d on replica %d: %d %s", i, i%3, r.StatusCode, r.Body)
		}
	}
	if started != 5 || limited != 10 {
		t.Fatalf("three replicas admitted %d starts and refused %d, want 5 and 10 (the limit of 5 is global)", started, limited)
	}
	// The limit is per user: bob still starts.
	b := stacks[1].browser("bob")
	b.get("/.stepgate/challenge?return=/admin/")
	if r := b.post("action", "start"); r.StatusCode != http.StatusSeeOther {
		t.Errorf("another user's start: %d", r.StatusCode)
	}
}

func TestRedisStoreRevocationOnOneReplicaIsRefusedOnTheOthersWithinASecond(t *testing.T) {
	srv := redistest.Start(t)
	stacks := redisStacks(t, srv, 3)

	t.Run("by session on the admin listener", func(t *testing.T) {
		b := stacks[0].stepUpAlice("/admin/")
		for i, s := range stacks {
			if r := b.on(s).get("/admin/"); r.StatusCode != http.StatusOK {
				t.Fatalf("before revocation, replica %d: %d", i, r.StatusCode)
			}
		}
		code, body := revoke(t, stacks[0], testAdminToken, `{"session":"`+lastSessionID(t, stacks[0])+`"}`)
		if code != http.StatusOK {
			t.Fatalf("revoke: %d %s", code, body)
		}
		took := waitRefused(t, b, stacks, "/admin/", http.StatusFound, time.Second)
		t.Logf("a session revoked on replica 0 was refused on all three within %v", took)
	})

	t.Run("by user on another replica's admin listener", func(t *testing.T) {
		stacks[0].Clock.Advance(2 * time.Second) // a new step-up, after the one revoked above
		b := stacks[2].stepUpAlice("/admin/")
		if code, body := revoke(t, stacks[1], testAdminToken, `{"user":"alice"}`); code != http.StatusOK {
			t.Fatalf("revoke: %d %s", code, body)
		}
		took := waitRefused(t, b, stacks, "/admin/", http.StatusFound, time.Second)
		t.Logf("a user revoked on replica 1 was refused on all three within %v", took)
		// A step-up completed after the revocation is valid everywhere.
		stacks[0].Clock.Advance(2 * time.Second)
		again := stacks[0].stepUpAlice("/admin/")
		for i, s := range stacks {
			if r := again.on(s).get("/admin/"); r.StatusCode != http.StatusOK {
				t.Errorf("a step-up after the user's revocation, replica %d: %d", i, r.StatusCode)
			}
		}
	})

	t.Run("by logout", func(t *testing.T) {
		stacks[0].Clock.Advance(2 * time.Second)
		b := stacks[1].stepUpAlice("/admin/")
		stolen := stacks[1].browser("alice") // a copy of the cookie, kept by someone else
		stolen.setCookie("stepgate", b.cookie("stepgate"))
		if r := stolen.on(stacks[2]).get("/admin/"); r.StatusCode != http.StatusOK {
			t.Fatalf("copied cookie before logout: %d", r.StatusCode)
		}
		if r := b.postForm("/.stepgate/logout", url.Values{}); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("logout: %d %s", r.StatusCode, r.Body)
		}
		took := waitRefused(t, stolen, stacks, "/admin/", http.StatusFound, time.Second)
		t.Logf("a logged-out step-up's copied cookie was refused on all three within %v", took)
	})

	t.Run("the endpoint wants the admin token", func(t *testing.T) {
		for _, tc := range []struct {
			name, token string
		}{
			{"no token", ""},
			{"a wrong token", "wrong-token-0123456789abcdefghijklmnopq"},
			{"a prefix of the token", testAdminToken[:20]},
		} {
			if code, _ := revoke(t, stacks[0], tc.token, `{"user":"bob"}`); code != http.StatusUnauthorized {
				t.Errorf("%s: %d, want 401", tc.name, code)
			}
		}
		for _, body := range []string{`{}`, `{"user":"a","session":"b"}`, `{"user":"a","x":1}`, `not json`, `{"user":"a\u0000"}`} {
			if code, _ := revoke(t, stacks[0], testAdminToken, body); code != http.StatusBadRequest {
				t.Errorf("body %s: %d, want 400", body, code)
			}
		}
		for i, s := range stacks {
			if strings.Contains(s.Logs.String(), testAdminToken) {
				t.Errorf("replica %d logged the admin token", i)
			}
		}
	})
}

// Redis without persistence restarts empty: the replicas that knew a
// revocation put it back, so a replica started afterwards refuses the
// revoked step-up too (issue 22, 7b).
func TestRedisStoreRevocationSurvivesAnEmptyRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	stacks := redisStacks(t, srv, 2)
	b := stacks[0].stepUpAlice("/admin/")
	if code, body := revoke(t, stacks[1], testAdminToken, `{"session":"`+lastSessionID(t, stacks[0])+`"}`); code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, body)
	}
	waitRefused(t, b, stacks, "/admin/", http.StatusFound, time.Second)

	srv.Restart() // empty, as Redis without persistence comes back
	third := newStack(t, withSim(stacks[0]), withEnv(
		"STEPGATE_STORE", "redis", "STEPGATE_REDIS_URL", srv.URL(),
		"STEPGATE_ADMIN_TOKEN", testAdminToken, "STEPGATE_LOG_LEVEL", "info"))
	stacks = append(stacks, third)
	for _, s := range stacks {
		waitStoreOK(t, s)
	}
	for i, s := range stacks {
		if r := b.on(s).get("/admin/"); r.StatusCode != http.StatusFound {
			t.Errorf("replica %d after Redis restarted empty: %d, want 302 (the revoked step-up refused)", i, r.StatusCode)
		}
	}
	restored := 0
	for _, s := range stacks[:2] {
		restored += strings.Count(s.Logs.String(), "redis lost the revocations")
	}
	if restored == 0 {
		t.Error("no replica logged that Redis lost the revocations and it put them back")
	}
}

func TestRevocationWithTheMemoryStoreHoldsOnThatReplica(t *testing.T) {
	s := newStack(t, withEnv("STEPGATE_ADMIN_TOKEN", testAdminToken))
	b := s.stepUpAlice("/admin/")
	if code, body := revoke(t, s, testAdminToken, `{"session":"`+lastSessionID(t, s)+`"}`); code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if r := b.get("/admin/"); r.StatusCode != http.StatusFound {
		t.Fatalf("revoked step-up: %d, want 302 to the challenge", r.StatusCode)
	}
	// Allow paths forward no step-up headers for it either.
	b.get("/")
	if h := s.LastRequest().Header.Get("X-Stepgate-User"); h != "" {
		t.Errorf("a revoked step-up still sent X-Stepgate-User=%q on an allow path", h)
	}
	if _, body := readyz(t, s); !strings.Contains(body, "store: memory") {
		t.Errorf("/readyz does not name the store: %q", body)
	}

	// Without a token the endpoint does not exist.
	plain := newStack(t)
	if code, _ := revoke(t, plain, "", `{"user":"alice"}`); code != http.StatusNotFound {
		t.Errorf("/revoke without STEPGATE_ADMIN_TOKEN: %d, want 404", code)
	}
}

// assertUnavailable checks a fail-closed answer: 503 with Retry-After.
func assertUnavailable(t *testing.T, what string, r response) {
	t.Helper()
	if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("%s: got %d (Retry-After %q), want 503 with Retry-After: %.300s",
			what, r.StatusCode, r.Header.Get("Retry-After"), r.Body)
	}
}

func TestRedisStoreFaultsFailClosed(t *testing.T) {
	for _, fault := range []struct {
		name        string
		apply, undo func(*redistest.Server)
	}{
		{"killed", (*redistest.Server).Kill, (*redistest.Server).Restart},
		{"paused with SIGSTOP", (*redistest.Server).Pause, (*redistest.Server).Resume},
	} {
		t.Run(fault.name, func(t *testing.T) {
			srv := redistest.Start(t)
			stacks := redisStacks(t, srv, 2, "STEPGATE_STORE_MAX_STALENESS", "3s", "STEPGATE_REDIS_TIMEOUT", "200ms")
			alice := stacks[0].stepUpAlice("/admin/")
			// alice, in a second browser, is mid-flow when Redis goes: her
			// OTP check still works (limits fall back to the replica's own).
			midFlow := stacks[0].browser("alice")
			midFlow.get("/.stepgate/challenge?return=/admin/")
			r := midFlow.follow(midFlow.post("action", "start"))
			ids := deviceIDs(r.Body)
			r = midFlow.post("action", "select", "device", ids[0])
			if r.StatusCode != http.StatusSeeOther {
				t.Fatalf("midFlow select: %d", r.StatusCode)
			}
			midFlow.follow(r)

			fault.apply(srv)
			faultAt := time.Now()

			// Within the staleness bound a stepped-up user keeps working.
			if r := alice.on(stacks[1]).get("/admin/"); r.StatusCode != http.StatusOK && time.Since(faultAt) < 2*time.Second {
				t.Fatalf("stepped-up user right after the fault: %d", r.StatusCode)
			}
			// A new challenge fails closed at once: its limit call fails.
			bob := stacks[1].browser("bob")
			bob.get("/.stepgate/challenge?return=/admin/")
			assertUnavailable(t, "start with Redis "+fault.name, bob.submit("action", "start"))
			waitReadyz(t, stacks[1], "challenge starts and approvals refused", 5*time.Second)
			if n := len(stacks[1].Sim.Inbox("bob")); n != 0 {
				t.Errorf("%d messages sent to bob with the store down", n)
			}
			// The flow already under way completes (OTP limit per replica).
			if r := midFlow.post("action", "otp", "otp", stacks[0].latestOTP("alice")); r.StatusCode != http.StatusSeeOther {
				t.Errorf("the mid-flow OTP with Redis %s: %d, want 303 (limits fall back, never refuse everything)", fault.name, r.StatusCode)
			}

			// Past the staleness bound, mfa paths fail closed on every
			// replica; allow paths work, without step-up headers.
			for i, s := range stacks {
				deadline := time.Now().Add(8 * time.Second)
				for {
					r := alice.on(s).get("/admin/")
					if r.StatusCode == http.StatusServiceUnavailable {
						assertUnavailable(t, "mfa path with a stale view", r)
						break
					}
					if r.StatusCode != http.StatusOK || time.Now().After(deadline) {
						t.Fatalf("replica %d, mfa path with Redis %s for %v: %d, want 200 then 503",
							i, fault.name, time.Since(faultAt).Round(time.Millisecond), r.StatusCode)
					}
					time.Sleep(20 * time.Millisecond) // polling with a deadline
				}
				if r := alice.on(s).get("/"); r.StatusCode != http.StatusOK {
					t.Errorf("replica %d, allow path with a stale view: %d", i, r.StatusCode)
				}
				if h := s.LastRequest().Header.Get("X-Stepgate-User"); h != "" {
					t.Errorf("replica %d forwarded step-up headers with a stale view", i)
				}
				waitReadyz(t, s, "mfa paths refused", time.Second)
			}
			if n := promCounter(t, stacks[0].Admin, "stepgate_store_errors_total", nil); n == 0 {
				t.Error("stepgate_store_errors_total did not move")
			}

			// Back: everything works again without a restart of stepgate.
			fault.undo(srv)
			for _, s := range stacks {
				waitStoreOK(t, s)
			}
			for i, s := range stacks {
				if r := alice.on(s).get("/admin/"); r.StatusCode != http.StatusOK {
					t.Errorf("replica %d after Redis came back: %d", i, r.StatusCode)
				}
			}
			bob.get("/.stepgate/challenge?return=/admin/")
			if r := bob.post("action", "start"); r.StatusCode != http.StatusSeeOther {
				t.Errorf("start after Redis came back: %d", r.StatusCode)
			}
		})
	}
}

func TestRedisStoreUnreachableAtStartKeepsTheReplicaUnready(t *testing.T) {
	srv := redistest.Start(t)
	srv.Kill()          // its port is now closed
	base := newStack(t) // the simulator and upstream; its own gateway is not used
	base.Env["STEPGATE_STORE"] = "redis"
	base.Env["STEPGATE_REDIS_URL"] = srv.URL()
	_, admin, _ := startWithoutWaiting(t, base)
	s := &stack{t: t, Admin: admin}

	// Keys load, but without a store answer the replica stays unready: its
	// revocation view is empty and unconfirmed.
	waitReadyz(t, s, "store not reached since start", 5*time.Second)
	if code, _ := readyz(t, s); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz without Redis since start: %d, want 503", code)
	}
	srv.Restart()
	waitStatus(t, admin+"/readyz", http.StatusOK, 10*time.Second)
	waitStoreOK(t, s)
}

// TestRedisStoreApprovalIsHeldSharedAndUsedOnceAcrossReplicas: a request
// held on one replica is approved on another, and when every replica
// receives the approved retry at once, exactly one forwards it; with Redis
// gone, approve-rule requests fail closed.
func TestRedisStoreApprovalIsHeldSharedAndUsedOnceAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	stacks := redisStacks(t, srv, 3, "STEPGATE_RULES", approveTestRules)
	code, approvalURL := payByAPI(t, stacks[0].Proxy)
	if code != http.StatusUnauthorized || approvalURL == "" {
		t.Fatalf("held on replica 0: %d", code)
	}
	// The user approves on replica 1, which finds the held request in Redis.
	alice := stacks[1].browser("alice")
	r := alice.follow(alice.get(approvalURL))
	if !strings.Contains(r.Body, "<dd>250.00</dd>") {
		t.Fatalf("replica 1 does not show the request held on replica 0: %d %s", r.StatusCode, r.Body)
	}
	r = alice.follow(alice.post("action", "start"))
	alice.follow(alice.post("action", "select", "device", deviceIDs(r.Body)[0]))
	if r := alice.post("action", "otp", "otp", stacks[1].latestOTP("alice")); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("OTP: %d", r.StatusCode)
	}
	// Every replica gets the identical retry at once, several times.
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range 4 {
		for _, s := range stacks {
			wg.Go(func() {
				if code, _ := payByAPI(t, s.Proxy); code == http.StatusOK {
					ok.Add(1)
				}
			})
		}
	}
	wg.Wait()
	forwarded := 0
	for _, s := range stacks {
		for _, q := range s.Requests() {
			if q.Method == "POST" && q.RequestURI == "/api/payments" {
				forwarded++
			}
		}
	}
	if ok.Load() != 1 || forwarded != 1 {
		t.Fatalf("the approved request passed %d times and reached upstreams %d times, want once", ok.Load(), forwarded)
	}
	srv.Kill()
	code, _ = payByAPI(t, stacks[2].Proxy)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("an approve-rule request with Redis gone: %d, want 503", code)
	}
}

// With Redis down, each refusal says what is paused (issue 22, 6): a
// step-up (its start, and an mfa path once the view is stale) says step-up
// verification is paused, an approval says approvals are; programs get
// the one machine-readable code, store_unavailable, with the same words.
func TestRedisDownPagesSayWhatIsPaused(t *testing.T) {
	const stepUp, approvals = "Step-up verification is paused", "Approvals are not available"
	srv := redistest.Start(t)
	s := redisStacks(t, srv, 1, "STEPGATE_RULES", approveTestRules,
		"STEPGATE_STORE_MAX_STALENESS", "1s", "STEPGATE_REDIS_TIMEOUT", "200ms")[0]
	srv.Kill()
	says := func(t *testing.T, what string, r response, want, not string) {
		t.Helper()
		assertUnavailable(t, what, r)
		if !strings.Contains(r.Body, want) || strings.Contains(r.Body, not) {
			t.Errorf("%s: the page does not say %q (or says %q): %.600s", what, want, not, r.Body)
		}
	}

	bob := s.browser("bob")
	bob.get("/.stepgate/challenge?return=/admin/")
	says(t, "a step-up start", bob.submit("action", "start"), stepUp, approvals)

	says(t, "an approval", s.browser("alice").send("/payments/transfer", transfer), approvals, stepUp)

	deadline := time.Now().Add(8 * time.Second)
	for {
		r := bob.get("/admin/")
		if r.StatusCode == http.StatusServiceUnavailable {
			says(t, "an mfa path with a stale view", r, stepUp, approvals)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mfa path with Redis down: %d, want 503 once the view is stale", r.StatusCode)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	req, _ := http.NewRequest(http.MethodGet, s.Proxy+"/admin/", nil)
	req.Header.Set("Accept", "application/json")
	r := bob.do(req)
	if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(r.Body, `"error":"store_unavailable"`) ||
		!strings.Contains(r.Body, stepUp) {
		t.Errorf("an API client on an mfa path with a stale view: %d %s, want 503 store_unavailable saying %q", r.StatusCode, r.Body, stepUp)
	}
}
