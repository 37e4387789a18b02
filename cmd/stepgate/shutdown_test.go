package main

// Graceful shutdown with a real process and a real SIGTERM (docs/design.md §10).
//
// How the process is made: the test binary re-executes itself with
// STEPGATE_TEST_RUN_MAIN=1, and TestMain then calls main() instead of the
// tests. That runs exactly the production entry point (signal wiring, exit
// code) without needing a Go toolchain or a separate build at test time, and
// under `go test -race` the child is race-checked too.

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

const runMainEnv = "STEPGATE_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		// Not a stepgate setting: main would refuse it as unknown.
		os.Unsetenv(runMainEnv)
		main() // exits non-zero itself on error
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is a stepgate process started from the test binary.
type child struct {
	cmd          *exec.Cmd
	proxy, admin string // host:port
	out          *syncBuffer
	exited       chan error
}

// startChild runs stepgate with env (plus PATH/HOME-like basics from the
// test's own environment, minus any STEPGATE_ variable) and waits for its
// "listening" log line.
func startChild(t *testing.T, env map[string]string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STEPGATE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, runMainEnv+"=1")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, out: &syncBuffer{}, exited: make(chan error, 1)}
	cmd.Stderr = c.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Only if the test failed before the process exited on its own.
		select {
		case <-c.exited:
		default:
			_ = cmd.Process.Kill()
			<-c.exited
		}
	})

	addrs := make(chan [2]string, 1)
	// The pipe is read to the end so the child never blocks on a full pipe;
	// Wait runs only after that, as os/exec requires.
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			c.out.Write([]byte(line + "\n"))
			var m struct {
				Msg       string `json:"msg"`
				ProxyAddr string `json:"proxy_addr"`
				AdminAddr string `json:"admin_addr"`
			}
			if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "listening" {
				select {
				case addrs <- [2]string{m.ProxyAddr, m.AdminAddr}:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		c.exited <- cmd.Wait()
		close(c.exited)
	}()
	select {
	case a := <-addrs:
		c.proxy, c.admin = a[0], a[1]
	case err := <-c.exited:
		t.Fatalf("stepgate exited before listening (%v):\n%s", err, c.out.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("stepgate did not log its listening addresses:\n%s", c.out.String())
	}
	return c
}

// closer closes a channel once, from the test or its cleanup.
type closer struct {
	ch   chan struct{}
	once sync.Once
}

func newCloser() *closer { return &closer{ch: make(chan struct{})} }
func (c *closer) close() { c.once.Do(func() { close(c.ch) }) }

func TestSIGTERMDrainsThenFinishesInFlightRequestsAndExitsZero(t *testing.T) {
	tenant := pingonesim.DemoTenant()
	clock := pingonesim.NewClock(time.Now())
	sim := httptest.NewServer(pingonesim.New(pingonesim.Options{Tenant: tenant, Clock: clock}))
	t.Cleanup(sim.Close)

	slowStarted, sseStarted := make(chan struct{}), make(chan struct{})
	release, sseMore := newCloser(), newCloser()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			close(slowStarted)
			<-release.ch
			io.WriteString(w, "slow done")
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			fl := w.(http.Flusher)
			io.WriteString(w, "data: 1\n\n")
			fl.Flush()
			close(sseStarted)
			<-sseMore.ch
			for _, n := range []string{"2", "3"} {
				io.WriteString(w, "data: "+n+"\n\n")
				fl.Flush()
			}
		default:
			io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(up.Close)
	// Runs before up.Close (cleanups are last-in first-out), so a failing
	// test never leaves a handler blocked.
	t.Cleanup(func() { release.close(); sseMore.close() })

	const drain = 3 * time.Second
	c := startChild(t, map[string]string{
		"STEPGATE_UPSTREAM":              up.URL,
		"STEPGATE_PINGONE_AUTH_BASE":     sim.URL,
		"STEPGATE_PINGONE_ENV_ID":        tenant.EnvID,
		"STEPGATE_PINGONE_CLIENT_ID":     tenant.Apps[0].ClientID,
		"STEPGATE_PINGONE_CLIENT_SECRET": tenant.Apps[0].Secret,
		"STEPGATE_COOKIE_KEYS":           testKey,
		"STEPGATE_COOKIE_SECURE":         "false",
		"STEPGATE_LISTEN":                "127.0.0.1:0",
		"STEPGATE_ADMIN_LISTEN":          "127.0.0.1:0",
		"STEPGATE_SHUTDOWN_DRAIN":        drain.String(),
		"STEPGATE_SHUTDOWN_TIMEOUT":      "10s",
		"STEPGATE_RULES":                 "/admin/ mfa",
	})
	proxy, admin := "http://"+c.proxy, "http://"+c.admin
	if code, body := pollStatus(t, admin+"/readyz", http.StatusOK, 10*time.Second); code != http.StatusOK {
		t.Fatalf("not ready: %d %q\n%s", code, body, c.out.String())
	}
	// Fresh connections for every request, so "refused" below is about the
	// listener, not a kept-alive connection.
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

	// In flight before the signal: a slow response and an open SSE stream.
	type result struct {
		code int
		body string
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := client.Get(proxy + "/slow")
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		slow <- result{resp.StatusCode, string(b), err}
	}()
	req, _ := http.NewRequest(http.MethodGet, proxy+"/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	sse, err := client.Do(req)
	if err != nil {
		t.Fatalf("SSE: %v", err)
	}
	defer sse.Body.Close()
	events := bufio.NewReader(sse.Body)
	readEvent := func() string {
		t.Helper()
		for {
			line, err := events.ReadString('\n')
			if err != nil {
				t.Fatalf("SSE stream ended early: %v", err)
			}
			if d, ok := strings.CutPrefix(strings.TrimSpace(line), "data: "); ok {
				return d
			}
		}
	}
	if got := readEvent(); got != "1" {
		t.Fatalf("first SSE event = %q, want 1", got)
	}
	for name, ch := range map[string]chan struct{}{"slow request": slowStarted, "SSE stream": sseStarted} {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s never reached the upstream", name)
		}
	}

	// SIGTERM: readiness fails at once.
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	signalled := time.Now()
	if code, body := pollStatus(t, admin+"/readyz", http.StatusServiceUnavailable, drain/2); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after SIGTERM: got %d %q, want 503 within %v", code, body, drain/2)
	}
	// During the drain new connections are still served, so clients the
	// load balancer has not yet taken away see no errors.
	if time.Since(signalled) < drain/2 {
		resp, err := client.Get(proxy + "/during-drain")
		if err != nil {
			t.Fatalf("new request during the drain: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("new request during the drain: got %d, want 200", resp.StatusCode)
		}
	} else {
		t.Logf("machine too slow to probe inside the drain window; skipped that check")
	}

	// After the drain the listener closes while the in-flight requests are
	// still held: new connections are refused.
	deadline := time.Now().Add(drain + 10*time.Second)
	for {
		conn, err := net.DialTimeout("tcp", c.proxy, time.Second)
		if err != nil {
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Logf("dial after drain: %v", err)
			}
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("proxy listener still accepts connections %v after SIGTERM", time.Since(signalled))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := time.Since(signalled); d < drain {
		t.Errorf("listener closed %v after SIGTERM, before the %v drain", d, drain)
	}
	select {
	case err := <-c.exited:
		t.Fatalf("stepgate exited (%v) while requests were in flight:\n%s", err, c.out.String())
	default:
	}

	// The in-flight work finishes: the slow response and the rest of the stream.
	release.close()
	sseMore.close()
	select {
	case r := <-slow:
		if r.err != nil || r.code != http.StatusOK || r.body != "slow done" {
			t.Errorf("slow request: %d %q %v, want 200 \"slow done\"", r.code, r.body, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("slow request never completed")
	}
	for _, want := range []string{"2", "3"} {
		if got := readEvent(); got != want {
			t.Errorf("SSE event = %q, want %s", got, want)
		}
	}

	select {
	case err := <-c.exited:
		if err != nil {
			t.Fatalf("exit: %v, want status 0\n%s", err, c.out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("stepgate did not exit after its requests finished:\n%s", c.out.String())
	}
	if out := c.out.String(); !strings.Contains(out, `"msg":"stopped"`) {
		t.Errorf("no \"stopped\" log line:\n%s", out)
	}
}

func TestSIGTERMWithANeverEndingStreamExitsZeroAfterTheTimeout(t *testing.T) {
	tenant := pingonesim.DemoTenant()
	sim := httptest.NewServer(pingonesim.New(pingonesim.Options{Tenant: tenant, Clock: pingonesim.NewClock(time.Now())}))
	t.Cleanup(sim.Close)
	streaming := make(chan struct{})
	var once sync.Once
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		once.Do(func() { close(streaming) })
		<-r.Context().Done() // never ends by itself
	}))
	t.Cleanup(up.Close)

	const timeout = time.Second
	c := startChild(t, map[string]string{
		"STEPGATE_UPSTREAM":              up.URL,
		"STEPGATE_PINGONE_AUTH_BASE":     sim.URL,
		"STEPGATE_PINGONE_ENV_ID":        tenant.EnvID,
		"STEPGATE_PINGONE_CLIENT_ID":     tenant.Apps[0].ClientID,
		"STEPGATE_PINGONE_CLIENT_SECRET": tenant.Apps[0].Secret,
		"STEPGATE_COOKIE_KEYS":           testKey,
		"STEPGATE_COOKIE_SECURE":         "false",
		"STEPGATE_LISTEN":                "127.0.0.1:0",
		"STEPGATE_ADMIN_LISTEN":          "127.0.0.1:0",
		"STEPGATE_SHUTDOWN_DRAIN":        "0s",
		"STEPGATE_SHUTDOWN_TIMEOUT":      timeout.String(),
		"STEPGATE_RULES":                 "/admin/ mfa",
	})
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Get("http://" + c.proxy + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	select {
	case <-streaming:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not start")
	}

	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.exited:
		if err != nil {
			t.Fatalf("exit: %v, want status 0 once the shutdown timeout cut the stream\n%s", err, c.out.String())
		}
	case <-time.After(timeout + 10*time.Second):
		t.Fatalf("stepgate did not exit after the shutdown timeout:\n%s", c.out.String())
	}
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Error("the stream ended cleanly; want it cut by the shutdown")
	}
}
