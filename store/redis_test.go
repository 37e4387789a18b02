package store_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepgate/stepgate/proxy/ratelimit"
	"github.com/stepgate/stepgate/store"
	"github.com/stepgate/stepgate/store/redistest"
)

func newRedis(t *testing.T, srv *redistest.Server, timeout time.Duration) *store.Redis {
	t.Helper()
	s, err := store.NewRedis(store.RedisOptions{URL: srv.URL(), Timeout: timeout, MaxValueBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRedisApprovalIsConsumedOnceWhenThreeClientsRace(t *testing.T) {
	srv := redistest.Start(t)
	clients := []*store.Redis{
		newRedis(t, srv, time.Second), newRedis(t, srv, time.Second), newRedis(t, srv, time.Second),
	}
	ctx := context.Background()
	for round := range 20 {
		digest := "d" + string(rune('a'+round))
		if err := clients[round%3].Approve(ctx, digest, time.Minute); err != nil {
			t.Fatal(err)
		}
		// Approving again before use must not make two uses.
		if err := clients[(round+1)%3].Approve(ctx, digest, time.Minute); err != nil {
			t.Fatal(err)
		}
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 60 {
			wg.Go(func() {
				ok, err := clients[i%3].Consume(ctx, digest)
				if err != nil {
					t.Error(err)
				}
				if ok {
					wins.Add(1)
				}
			})
		}
		wg.Wait()
		if got := wins.Load(); got != 1 {
			t.Fatalf("round %d: approval consumed %d times across three clients, want exactly 1", round, got)
		}
	}
}

func TestRedisHeldRequestsExpireAndAreBounded(t *testing.T) {
	srv := redistest.Start(t)
	s := newRedis(t, srv, time.Second)
	ctx := context.Background()
	if err := s.Hold(ctx, "r1", []byte("sealed"), 150*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	got, err := s.Held(ctx, "r1")
	if err != nil || !bytes.Equal(got, []byte("sealed")) {
		t.Fatalf("Held: %q, %v", got, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := s.Held(ctx, "r1"); errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("held request still there long after its ttl")
		}
		time.Sleep(20 * time.Millisecond) // polling Redis's own expiry
	}
	if err := s.Hold(ctx, "big", make([]byte, 1025), time.Minute); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("held request over the size cap: got %v, want ErrTooLarge", err)
	}
	if err := s.Hold(ctx, "r2", []byte("x"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Drop(ctx, "r2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Held(ctx, "r2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("dropped request: got %v, want ErrNotFound", err)
	}
	if ok, err := s.Consume(ctx, "never-approved"); ok || err != nil {
		t.Errorf("consume of an unknown approval: %v, %v", ok, err)
	}
}

func TestRedisLimitIsExactAcrossClients(t *testing.T) {
	srv := redistest.Start(t)
	var ls []store.Limiter
	for range 3 {
		s := newRedis(t, srv, time.Second)
		local := ratelimit.New(ratelimit.Options{Limit: 1000, Burst: 1000})
		ls = append(ls, s.Limiter("start_user", 5, 10*time.Minute, local))
	}
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			if ok, _ := ls[i%3].Allow("u:alice"); ok {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	if got := admitted.Load(); got != 5 {
		t.Fatalf("admitted %d of 30 across three clients, want exactly 5", got)
	}
	ok, wait := ls[0].Allow("u:alice")
	if ok || wait < time.Minute || wait > 2*time.Minute+time.Second {
		t.Errorf("sixth start: ok=%v retryAfter=%v, want refused with ~2m (10m/5)", ok, wait)
	}
	if ok, _ := ls[1].Allow("u:bob"); !ok {
		t.Error("another user was refused")
	}
}

func TestRedisLimitFallsBackToTheLocalLimiterWhenRedisIsDown(t *testing.T) {
	srv := redistest.Start(t)
	var errs atomic.Int32
	s, err := store.NewRedis(store.RedisOptions{URL: srv.URL(), Timeout: 200 * time.Millisecond,
		Observe: func(op string, _ time.Duration, err error) {
			if err != nil {
				errs.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	local := ratelimit.New(ratelimit.Options{Limit: 0.001, Burst: 2, MaxKeys: 100})
	l := s.Limiter("otp_user", 10, time.Minute, local)
	srv.Kill()
	var admitted int
	start := time.Now()
	for range 5 {
		if ok, _ := l.Allow("u:alice"); ok {
			admitted++
		}
	}
	if admitted != 2 {
		t.Errorf("with Redis down admitted %d, want the local limiter's 2 (never unlimited)", admitted)
	}
	if n := errs.Load(); n < 1 || n > 2 {
		t.Errorf("store errors observed: %d, want the first call's (and at most one probe): "+
			"while Redis is failing the others go straight to the local limiter", n)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("five checks with Redis down took %v: each waited for Redis", took)
	}
	// Paused (SIGSTOP) rather than down: each call waits at most the
	// timeout, then falls back.
	srv.Restart()
	// A success clears the failing state; the paused server is then met
	// afresh by the next check.
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
	srv.Pause()
	defer srv.Resume()
	start = time.Now()
	ok, _ := l.Allow("u:carol")
	if took := time.Since(start); took > time.Second {
		t.Errorf("a call to a paused Redis took %v, want about the 200ms timeout", took)
	}
	if !ok {
		t.Error("first call of a new user with Redis paused was refused by the fallback")
	}
}

func TestRedisConsumeHeldUpByAPausedServerDoesNotUseTheApproval(t *testing.T) {
	srv := redistest.Start(t)
	s := newRedis(t, srv, 200*time.Millisecond)
	ctx := context.Background()
	if err := s.Approve(ctx, "d", time.Minute); err != nil {
		t.Fatal(err)
	}
	// Load the script first, so the queued command is the script itself
	// (EVALSHA) and not one Redis would refuse as unknown.
	if _, err := s.Consume(ctx, "warm-up"); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	ok, err := s.Consume(ctx, "d")
	if ok || err == nil {
		t.Fatalf("consume against a paused server: ok=%v err=%v, want a failure", ok, err)
	}
	// Stay paused past the consume's deadline, so the queued command, when
	// it finally runs, is late.
	time.Sleep(300 * time.Millisecond) // the pause itself is the fault under test
	srv.Resume()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, err = s.Consume(ctx, "d")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consume after resume: %v", err)
		}
	}
	if !ok {
		t.Fatal("the approval was used up by a consume that failed (lost)")
	}
	if ok, _ := s.Consume(ctx, "d"); ok {
		t.Fatal("approval consumed twice")
	}
}

func TestRedisRevocationReachesEveryViewWithinASecond(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var views []*store.Revocations
	var revokers []*store.RedisRevocations
	for range 3 {
		s := newRedis(t, srv, time.Second)
		v := store.NewRevocations(store.RevocationsOptions{MaxStaleness: 3 * time.Second})
		rr := s.Revocations(v, store.RedisRevocationsOptions{PingEvery: 50 * time.Millisecond})
		go rr.Run(ctx)
		views, revokers = append(views, v), append(revokers, rr)
	}
	waitFor(t, 5*time.Second, "views confirmed fresh", func() bool {
		for _, v := range views {
			if v.Stale() {
				return false
			}
		}
		return true
	})
	before := time.Now().Add(-time.Minute)
	if err := revokers[0].Revoke(ctx, store.Revocation{Session: "sid-1"}); err != nil {
		t.Fatal(err)
	}
	if err := revokers[1].Revoke(ctx, store.Revocation{User: "bob"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, time.Second, "revocations on every view", func() bool {
		for _, v := range views {
			if !v.Revoked("alice", "sid-1", before) || !v.Revoked("bob", "other", before) {
				return false
			}
		}
		return true
	})
	t.Logf("revocations reached all three views in %v", time.Since(start))
	if views[2].Revoked("bob", "other", time.Now().Add(2*time.Second)) {
		t.Error("a step-up completed after the user's revocation is refused")
	}

	// A view that starts later loads what was revoked before it existed.
	late := store.NewRevocations(store.RevocationsOptions{MaxStaleness: 3 * time.Second})
	go newRedis(t, srv, time.Second).Revocations(late, store.RedisRevocationsOptions{PingEvery: 50 * time.Millisecond}).Run(ctx)
	waitFor(t, 5*time.Second, "late view loaded", func() bool {
		return !late.Stale() && late.Revoked("x", "sid-1", before) && late.Revoked("bob", "", before)
	})

	// Redis gone: the views age and go stale after MaxStaleness.
	srv.Kill()
	waitFor(t, 6*time.Second, "views stale without Redis", func() bool {
		for _, v := range views {
			if !v.Stale() {
				return false
			}
		}
		return true
	})
	// Back, empty: views confirm again (their own entries kept).
	srv.Restart()
	waitFor(t, 6*time.Second, "views fresh again", func() bool {
		for _, v := range views {
			if v.Stale() {
				return false
			}
		}
		return true
	})
	if !views[2].Revoked("alice", "sid-1", before) {
		t.Error("a revocation was forgotten after Redis restarted")
	}
}

func TestRevocationViewIsBoundedAndFailsClosedWhenFull(t *testing.T) {
	v := store.NewRevocations(store.RevocationsOptions{MaxEntries: 100})
	ctx := context.Background()
	var full int
	for i := range 1000 {
		if err := v.Revoke(ctx, store.Revocation{Session: "s" + string(rune(i+256))}); errors.Is(err, store.ErrRevocationsFull) {
			full++
		}
	}
	if v.Len() > 100 {
		t.Errorf("view holds %d entries, bound is 100", v.Len())
	}
	if full != 900 || !v.Stale() {
		t.Errorf("full view: %d refusals, stale=%v; want 900 and stale (fail closed, never forget)", full, v.Stale())
	}
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

func TestRedisPingOneCapIsGlobal(t *testing.T) {
	srv := redistest.Start(t)
	var caps []*store.RedisRate
	for range 3 {
		s := newRedis(t, srv, time.Second)
		caps = append(caps, s.Rate("pingone", 0.01, 4, alwaysAllow{}))
	}
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			if caps[i%3].Allow() {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	if got := admitted.Load(); got != 4 {
		t.Fatalf("three replicas made %d calls under a global burst of 4, want 4", got)
	}
}

type alwaysAllow struct{}

func (alwaysAllow) Allow() bool { return true }

// BenchmarkRevocationsCheck is what the gateway adds per stepped-up request
// with a store configured: two map lookups under a read lock and a clock
// read, no network.
func BenchmarkRevocationsCheck(b *testing.B) {
	v := store.NewRevocations(store.RevocationsOptions{MaxStaleness: time.Hour})
	ctx := context.Background()
	for i := range 10_000 {
		_ = v.Revoke(ctx, store.Revocation{Session: "s" + strconv.Itoa(i)})
	}
	at := time.Now().Add(-time.Minute)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if v.Revoked("alice", "2b7f3c1e9a0d4e5f8a6b7c8d9e0f1a2b", at) {
				b.Fatal("revoked")
			}
		}
	})
}

func TestRedisFlappingNeverConsumesAnApprovalTwiceNorLosesOne(t *testing.T) {
	srv := redistest.Start(t)
	clients := []*store.Redis{
		newRedis(t, srv, 300*time.Millisecond), newRedis(t, srv, 300*time.Millisecond), newRedis(t, srv, 300*time.Millisecond),
	}
	ctx := context.Background()
	const n = 200
	for i := range n {
		if _, err := clients[0].Consume(ctx, "warm-up"); err != nil {
			t.Fatal(err)
		}
		if err := clients[i%3].Approve(ctx, "d"+strconv.Itoa(i), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	// Redis flaps (paused 400 ms, up 60 ms) while three clients race
	// to consume every approval, each caller failing closed on an error.
	stop := make(chan struct{})
	flapped := make(chan struct{})
	go func() {
		defer close(flapped)
		for {
			srv.Pause()
			select {
			case <-stop:
				srv.Resume()
				return
			case <-time.After(400 * time.Millisecond):
			}
			srv.Resume()
			select {
			case <-stop:
				return
			case <-time.After(60 * time.Millisecond):
			}
		}
	}()
	wins := make([]atomic.Int32, n)
	var failures atomic.Int32
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * time.Second)
	for c := range 3 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				for i := range n {
					ok, err := clients[c].Consume(ctx, "d"+strconv.Itoa(i))
					if err != nil {
						failures.Add(1)
					}
					if ok {
						wins[i].Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-flapped
	if failures.Load() == 0 {
		t.Fatal("no call failed: Redis did not flap")
	}
	// Once Redis is steady, every approval nobody won is still there:
	// failed (fail-closed) consumes did not use any up.
	for i := range n {
		if got := wins[i].Load(); got > 1 {
			t.Fatalf("approval %d consumed %d times while Redis flapped", i, got)
		}
		if wins[i].Load() == 1 {
			continue
		}
		var ok bool
		var err error
		for range 50 {
			if ok, err = clients[1].Consume(ctx, "d"+strconv.Itoa(i)); err == nil {
				break
			}
		}
		if err != nil || !ok {
			t.Errorf("approval %d, never won while Redis flapped, is gone afterwards (ok=%v err=%v): lost", i, ok, err)
		}
	}
	t.Logf("%d failed calls (fail closed) while Redis flapped", failures.Load())
}

func TestRedisOverTLSVerifiesTheServer(t *testing.T) {
	srv := redistest.StartTLS(t)
	pem, err := os.ReadFile(srv.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	ca := x509.NewCertPool()
	ca.AppendCertsFromPEM(pem)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		url    string
		roots  *x509.CertPool
		wantOK bool
	}{
		{"rediss with the CA that signed the server's certificate", srv.TLSURL(), ca, true},
		{"rediss with the system roots only", srv.TLSURL(), nil, false},
		{"plain redis to the TLS port", "redis://" + srv.TLSAddr, ca, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := store.NewRedis(store.RedisOptions{URL: tc.url, RootCAs: tc.roots, Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			err = s.Approve(ctx, "tls", time.Minute)
			if (err == nil) != tc.wantOK {
				t.Fatalf("approve: %v, want success %v", err, tc.wantOK)
			}
			if tc.wantOK {
				if ok, err := s.Consume(ctx, "tls"); !ok || err != nil {
					t.Fatalf("consume over TLS: %v %v", ok, err)
				}
			}
		})
	}
	if _, err := store.NewRedis(store.RedisOptions{URL: srv.TLSURL() + "?skip_verify=true"}); err == nil {
		t.Error("a URL turning certificate verification off was accepted")
	}
}

// TestACallersCancellationIsNotARedisFailure: a client that hangs up mid
// request cancels its context; that says nothing about Redis, so it must
// not make the store report failing (which refuses other users' challenge
// starts, reports /readyz unready and moves limits to the replica's own),
// nor count as a store error.
func TestACallersCancellationIsNotARedisFailure(t *testing.T) {
	srv := redistest.Start(t)
	var errs atomic.Int32
	s, err := store.NewRedis(store.RedisOptions{URL: srv.URL(), Timeout: time.Second,
		Observe: func(_ string, _ time.Duration, err error) {
			if err != nil {
				errs.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, tc := range []struct {
		name string
		ctx  context.Context
	}{
		{"canceled", canceled},
		{"past its own deadline", expired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := map[string]func() error{
				"hold":    func() error { return s.Hold(tc.ctx, "r", []byte("x"), time.Minute) },
				"held":    func() error { _, err := s.Held(tc.ctx, "r"); return err },
				"drop":    func() error { return s.Drop(tc.ctx, "r") },
				"approve": func() error { return s.Approve(tc.ctx, "d", time.Minute) },
				"consume": func() error { _, err := s.Consume(tc.ctx, "d"); return err },
				"ping":    func() error { return s.Ping(tc.ctx) },
			}
			for op, call := range calls {
				if err := call(); err == nil {
					t.Errorf("%s with a %s context: no error", op, tc.name)
				}
				if s.Failing() {
					t.Fatalf("%s with a %s context: the store reports failing", op, tc.name)
				}
			}
			if n := errs.Load(); n != 0 {
				t.Errorf("%d store errors observed for the callers' own cancellations", n)
			}
		})
	}
	// The control: a real failure still counts.
	srv.Kill()
	if err := s.Ping(context.Background()); err == nil {
		t.Fatal("ping with Redis killed: no error")
	}
	if !s.Failing() || errs.Load() == 0 {
		t.Errorf("a killed Redis: Failing %v, errors %d", s.Failing(), errs.Load())
	}
}

// Redis without persistence restarted empty forgets every revocation. The
// replicas that knew them put them back, and a replica that starts meanwhile
// finds them: a revoked step-up stays refused everywhere.
func TestRedisRevocationSurvivesAnEmptyRestart(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := func() (*store.Revocations, *store.RedisRevocations) {
		v := store.NewRevocations(store.RevocationsOptions{MaxStaleness: 3 * time.Second})
		rr := newRedis(t, srv, time.Second).Revocations(v, store.RedisRevocationsOptions{PingEvery: 50 * time.Millisecond})
		go rr.Run(ctx)
		return v, rr
	}
	a, ra := start()
	b, rb := start()
	fresh := func(vs ...*store.Revocations) func() bool {
		return func() bool {
			for _, v := range vs {
				if v.Stale() {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, 10*time.Second, "views confirmed fresh", fresh(a, b))
	before := time.Now().Add(-time.Minute)
	if err := ra.Revoke(ctx, store.Revocation{Session: "sid-1"}); err != nil {
		t.Fatal(err)
	}
	if err := rb.Revoke(ctx, store.Revocation{User: "bob"}); err != nil {
		t.Fatal(err)
	}
	revoked := func(v *store.Revocations) bool {
		return v.Revoked("alice", "sid-1", before) && v.Revoked("bob", "other", before)
	}
	waitFor(t, 5*time.Second, "revocations on both views", func() bool { return revoked(a) && revoked(b) })

	srv.Restart() // empty: no persistence
	// A replica started at once, before the others reconnected.
	c, _ := start()
	waitFor(t, 10*time.Second, "the new view confirmed", fresh(c))
	if !revoked(c) {
		t.Fatal("a replica started after Redis restarted empty accepts step-ups revoked before")
	}
	// And Redis holds them again: a view started later loads them.
	waitFor(t, 10*time.Second, "old views fresh again", fresh(a, b))
	d, _ := start()
	waitFor(t, 10*time.Second, "a later view confirmed", fresh(d))
	if !revoked(d) {
		t.Fatal("the revocations were not put back into Redis")
	}

	// A revocation Redis never stored (it was paused) reaches the others
	// once it answers again.
	srv.Pause()
	if err := ra.Revoke(ctx, store.Revocation{Session: "sid-2"}); err == nil {
		t.Fatal("revoke with Redis paused reported success")
	}
	srv.Resume()
	waitFor(t, 10*time.Second, "a revocation made while Redis was paused reaches the other views", func() bool {
		return b.Revoked("alice", "sid-2", before) && c.Revoked("alice", "sid-2", before) && d.Revoked("alice", "sid-2", before)
	})
	e, _ := start()
	waitFor(t, 10*time.Second, "a view started after the pause confirmed", fresh(e))
	if !e.Revoked("alice", "sid-2", before) {
		t.Fatal("a revocation made while Redis was paused was never stored")
	}
}
