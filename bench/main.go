// Command bench is stepgate's load benchmark (docs/design.md §13): one command that
// builds stepgate, starts on loopback a small upstream, a bare
// httputil.ReverseProxy and stepgate, mints a real step-up cookie through a
// challenge against the PingOne simulator, and drives the same load at each:
//
//	go run ./bench            # under 4 minutes once built; the table goes to stdout and bench/results/latest.md
//
// On a 2-core machine the load generators run on core 0 and the upstream plus
// the subject on core 1 (taskset, GOMAXPROCS=1), so requests per second
// measure CPU per request. wrk (closed loop, keep-alive) gives throughput;
// an open-loop generator of our own gives latency at a fixed rate (half the
// bare proxy's peak), measured from each request's scheduled start so that a
// stalled subject cannot hide its queueing delay.
//
// It must never be run against anything but the processes it starts itself.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
	"github.com/stepgate/stepgate/session"
)

type options struct {
	src       string
	out       string
	duration  time.Duration
	warmup    time.Duration
	runs      int
	conns     int
	openLoop  time.Duration
	levels    []string
	loadCore  string
	subjCore  string
	noPin     bool
	skipLarge bool
	hold      bool
	instr     string // "on", "off" or "only"
	runs64k   int
	openRuns  int
	cgDir     string
	traces    bool
}

func main() {
	var o options
	var levels string
	flag.StringVar(&o.src, "src", ".", "stepgate module directory to build (e.g. a git worktree of an older commit)")
	flag.StringVar(&o.out, "out", "bench/results/latest.md", "file the results table is written to")
	flag.DurationVar(&o.duration, "d", 2*time.Second, "duration of each measured wrk run")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "warm-up before each target's first run")
	flag.IntVar(&o.runs, "runs", 6, "measured runs per target with the 1 KiB body (medians are reported)")
	flag.IntVar(&o.runs64k, "runs-64k", 3, "measured runs per target with the 64 KiB body")
	flag.IntVar(&o.conns, "c", 16, "wrk keep-alive connections")
	flag.DurationVar(&o.openLoop, "open", 2*time.Second, "duration of each open-loop latency run (0 skips)")
	flag.IntVar(&o.openRuns, "open-runs", 5, "open-loop runs per target (the median p99 added is reported)")
	flag.StringVar(&levels, "levels", "info,warn", "stepgate log levels to measure (info is the production default)")
	flag.StringVar(&o.loadCore, "load-core", "0", "CPU list for the load generators")
	flag.StringVar(&o.subjCore, "subject-core", "1", "CPU list for upstream and subjects")
	flag.BoolVar(&o.noPin, "no-pin", false, "do not pin processes with taskset")
	flag.BoolVar(&o.skipLarge, "skip-64k", false, "measure only the 1 KiB response")
	flag.StringVar(&o.instr, "instructions", "on", "count instructions per request under valgrind: on, off, or only (no wrk or open-loop runs; exits 1 when a target is missed, as CI's gate)")
	flag.BoolVar(&o.traces, "traces", false, "also count instructions with traces on (OTEL_*), not sampled and every request sampled, to a collector on loopback (rows reported, not gated)")
	flag.IntVar(&instrRequests, "instructions-requests", instrRequests, "requests each instruction count is taken over")
	flag.IntVar(&instrRounds, "instructions-rounds", instrRounds, "rounds of counts per target, interleaved and averaged")
	flag.StringVar(&o.cgDir, "callgrind-dir", "", "keep the callgrind dumps of the instruction counts here, one per target and process, for callgrind_annotate")
	flag.BoolVar(&o.hold, "hold", false, "start everything, print each target's wrk command and pprof address, and wait for Ctrl-C instead of measuring")
	flag.Parse()
	o.levels = strings.Split(levels, ",")
	if o.instr != "on" && o.instr != "off" && o.instr != "only" {
		log.Fatalf("bench: -instructions %q: want on, off or only", o.instr)
	}
	if err := run(o); err != nil {
		log.Fatalf("bench: %v", err)
	}
}

// target is one thing the load is driven against.
type target struct {
	name    string
	base    string // http://127.0.0.1:port
	path    string // "/" + size is appended
	headers []string
	proc    *os.Process // the process whose CPU and RSS are reported; nil for none
	admin   string      // stepgate admin URL, for goroutine counts
	// baseline is the index of the bare-proxy target that received the
	// same request (headers included); ratios are taken against it.
	baseline int
}

type result struct {
	rps                []float64
	p50, p90, p99      []time.Duration
	cpuPer10k          []float64
	rssMiB             float64
	openP50, openP99   []time.Duration
	openBareP50        []time.Duration // the baseline's, in the same runs
	openBareP99        []time.Duration
	openAdded          []time.Duration // per run: p99 − the baseline's p99
	openRate           float64
	openErrs           int
	goroutinesBefore   int
	goroutinesAfter    int
	openErr, benchNote string
}

func run(o options) error {
	start := time.Now()
	firstLoad = loadAvg()
	if !o.noPin {
		if _, err := exec.LookPath("taskset"); err != nil {
			return errors.New("taskset not found (util-linux); use -no-pin to run unpinned")
		}
		// Pin this process (the open-loop generator and the simulator)
		// with wrk on the load core.
		if out, err := exec.Command("taskset", "-a", "-p", "-c", o.loadCore, strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
			return fmt.Errorf("taskset self: %v: %s", err, out)
		}
	}
	runtime.GOMAXPROCS(1)
	if _, err := exec.LookPath("wrk"); err != nil && o.instr != "only" && !o.hold {
		return errors.New("wrk not found: apt-get install -y wrk")
	}

	tmp, err := os.MkdirTemp("", "stepgate-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "stepgate")
	fmt.Fprintf(os.Stderr, "building stepgate from %s\n", o.src)
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/stepgate")
	build.Dir = o.src
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build stepgate: %w", err)
	}
	// The upstream and the bare proxy are their own small program, built
	// from the standard library alone: compiled into this one, they would
	// carry the simulator and the session store, whose globals and heap
	// the collector would scan in the baseline too.
	baseline := filepath.Join(tmp, "baseline")
	build = exec.Command("go", "build", "-trimpath", "-o", baseline, "./bench/baseline")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build the baseline (run the bench from the repository's root): %w", err)
	}

	var procs []*exec.Cmd
	defer func() {
		for _, c := range procs {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}()
	pin := func(args ...string) *exec.Cmd {
		if o.noPin {
			return exec.Command(args[0], args[1:]...)
		}
		return exec.Command("taskset", append([]string{"-c", o.subjCore}, args...)...)
	}

	// The simulator runs here, on the load core: it is only used to mint
	// the cookie, before any measurement.
	tenant := pingonesim.DemoTenant()
	sim := pingonesim.New(pingonesim.Options{Tenant: tenant})
	simSrv := httptest.NewServer(sim)
	defer simSrv.Close()

	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	up := pin(baseline, "-mode=upstream")
	up.Env = append(os.Environ(), "GOMAXPROCS=1")
	if up.ExtraFiles, err = lnFiles(upLn); err != nil {
		return err
	}
	up.Stderr = os.Stderr
	if err := up.Start(); err != nil {
		return fmt.Errorf("start upstream: %w", err)
	}
	procs = append(procs, up)
	upURL := "http://" + upLn.Addr().String()
	upLn.Close()

	bareLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	bare := pin(baseline, "-mode=bare", upURL)
	bare.Env = append(os.Environ(), "GOMAXPROCS=1")
	if bare.ExtraFiles, err = lnFiles(bareLn); err != nil {
		return err
	}
	bare.Stderr = os.Stderr
	if err := bare.Start(); err != nil {
		return fmt.Errorf("start bare proxy: %w", err)
	}
	procs = append(procs, bare)
	bareURL := "http://" + bareLn.Addr().String()
	bareLn.Close()

	cookieKey := "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=" // fixed, loopback only
	type gw struct {
		level, proxy, admin string
		cmd                 *exec.Cmd
	}
	var gws []gw
	stepgateEnv := func(level, upstream, listen, admin string) []string {
		return append(os.Environ(),
			"GOMAXPROCS=1",
			"STEPGATE_UPSTREAM="+upstream,
			"STEPGATE_PINGONE_ENV_ID="+tenant.EnvID,
			"STEPGATE_PINGONE_CLIENT_ID="+tenant.Apps[0].ClientID,
			"STEPGATE_PINGONE_CLIENT_SECRET="+tenant.Apps[0].Secret,
			"STEPGATE_PINGONE_AUTH_BASE="+simSrv.URL,
			"STEPGATE_PINGONE_ACR_VALUES=MFA-Only",
			"STEPGATE_COOKIE_KEYS="+cookieKey,
			"STEPGATE_COOKIE_SECURE=false",
			"STEPGATE_RULES=/admin/ mfa max_age=1h; /blocked deny",
			"STEPGATE_LISTEN="+listen,
			"STEPGATE_ADMIN_LISTEN="+admin,
			"STEPGATE_LOG_LEVEL="+level,
			"STEPGATE_SHUTDOWN_DRAIN=0s",
			"STEPGATE_PPROF="+strconv.FormatBool(o.hold),
		)
	}
	for _, level := range o.levels {
		pa, aa := freeAddr(), freeAddr()
		cmd := pin(bin)
		cmd.Env = stepgateEnv(level, upURL, pa, aa)
		// Logs go through a pipe, as to a container runtime, and are
		// drained on the load core.
		cmd.Stdout = io.Discard
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start stepgate: %w", err)
		}
		procs = append(procs, cmd)
		gws = append(gws, gw{level: level, proxy: "http://" + pa, admin: "http://" + aa, cmd: cmd})
	}
	for _, g := range gws {
		if err := waitReady(g.admin+"/readyz", 20*time.Second); err != nil {
			return fmt.Errorf("stepgate (log %s): %w", g.level, err)
		}
	}
	if err := waitReady(upURL+"/1k", 20*time.Second); err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	if err := waitReady(bareURL+"/1k", 20*time.Second); err != nil {
		return fmt.Errorf("bare proxy: %w", err)
	}

	// A real step-up through the first gateway; every gateway shares the
	// cookie key, so the cookie opens on all of them.
	cookie, err := mintStepUp(gws[0].proxy, sim)
	if err != nil {
		return fmt.Errorf("mint step-up cookie: %w", err)
	}
	fmt.Fprintf(os.Stderr, "minted a step-up cookie through the challenge (%d bytes)\n", len(cookie))

	contract, err := contractValues(cookieKey, cookie)
	if err != nil {
		return fmt.Errorf("the step-up's §6 header values: %w", err)
	}
	ident := []string{"X-Forwarded-User: alice"}
	withCookie := []string{"X-Forwarded-User: alice", "Cookie: theme=dark; " + cookie + "; lang=en"}
	targets := []target{
		{name: "upstream (direct)", base: upURL, path: "/app/", headers: ident, proc: up.Process, baseline: 1},
		{name: "bare ReverseProxy", base: bareURL, path: "/app/", headers: ident, proc: bare.Process, baseline: 1},
		// The stepped-up requests carry a 1.6 KiB cookie: the bare proxy
		// gets the very same request, so that the ratio is stepgate's own.
		{name: "bare ReverseProxy, with the step-up cookie", base: bareURL, path: "/admin/", headers: withCookie, proc: bare.Process, baseline: 2},
	}
	for _, g := range gws {
		targets = append(targets,
			target{name: "stepgate allow (log " + g.level + ")", base: g.proxy, path: "/app/", headers: ident, proc: g.cmd.Process, admin: g.admin, baseline: 1},
			target{name: "stepgate mfa, stepped up (log " + g.level + ")", base: g.proxy, path: "/admin/", headers: withCookie, proc: g.cmd.Process, admin: g.admin, baseline: 2},
		)
	}
	// Every target must answer 200 with the upstream's body before any
	// number means anything (a 302 to the challenge would be very fast).
	for _, t := range targets {
		if err := check(t); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}

	if o.hold {
		return hold(o, targets)
	}
	instrTable := ""
	if o.instr != "off" {
		// System calls per request of the processes measured below by wrk
		// (not under valgrind, whose own calls would mix in).
		syscalls := map[string]float64{}
		if _, err := exec.LookPath("strace"); err == nil {
			for _, t := range targets[1:] {
				if strings.Contains(t.name, "log warn") {
					continue
				}
				n, err := syscallsPerRequest(t.proc.Pid, instrTarget{name: t.name, base: t.base, path: t.path, headers: t.headers}, 2000)
				if err != nil { // a supporting figure only: say so and go on
					fmt.Fprintf(os.Stderr, "system calls of %s not counted: %v\n", t.name, err)
					continue
				}
				syscalls[t.name] = n
			}
		}
		instrTable, err = countInstructions(instrEnv{baseline: baseline, bin: bin, stepgateEnv: stepgateEnv,
			withCookie: withCookie, ident: ident, core: o.subjCore, noPin: o.noPin, keepDir: o.cgDir, syscalls: syscalls, traces: o.traces, contract: contract})
		switch {
		case errors.Is(err, errNoValgrind) && o.instr == "on":
			fmt.Fprintf(os.Stderr, "instruction counts skipped: %v\n", err)
			instrTable = fmt.Sprintf("\nInstruction counts skipped: %v.\n", err)
		case err != nil:
			return fmt.Errorf("instruction counts: %w", err)
		}
		if o.instr == "only" {
			fmt.Print(instrTable)
			if strings.Contains(instrTable, "❌") {
				return errors.New("a target of docs/design.md §13 is missed by the instruction counts")
			}
			return nil
		}
	}

	sizes := []string{"1k", "64k"}
	if o.skipLarge {
		sizes = sizes[:1]
	}
	results := map[string]*result{}
	key := func(t target, size string) string { return t.name + "|" + size }
	for _, t := range targets {
		for _, s := range sizes {
			results[key(t, s)] = &result{goroutinesBefore: goroutines(t.admin)}
		}
	}
	// Runs are interleaved (run 1 of every target, then run 2, ...) so that
	// slow drift on a shared machine spreads over all targets alike, and
	// within a run each baseline is followed at once by the targets
	// compared with it: a ratio is taken between runs seconds apart.
	order := slices.Clone(targets)
	slices.SortStableFunc(order, func(a, b target) int { return a.baseline - b.baseline })
	for i := 0; i < o.runs; i++ {
		for _, s := range sizes {
			if s == "64k" && i >= o.runs64k {
				continue
			}
			for _, t := range order {
				if s == "64k" && strings.Contains(t.name, "log warn") {
					continue // the log level does not change the body copy
				}
				if t.proc == up.Process && i > 0 {
					continue // the upstream alone is context, not compared: one run
				}
				r := results[key(t, s)]
				if i == 0 && o.warmup > 0 {
					if _, err := runWrk(o, t, s, o.warmup); err != nil {
						return err
					}
				}
				w, err := runWrk(o, t, s, o.duration)
				if err != nil {
					return err
				}
				if w.requests == 0 {
					return fmt.Errorf("%s: wrk completed no request", t.name)
				}
				r.rps = append(r.rps, w.rps)
				r.p50 = append(r.p50, w.p50)
				r.p90 = append(r.p90, w.p90)
				r.p99 = append(r.p99, w.p99)
				r.cpuPer10k = append(r.cpuPer10k, w.cpu.Seconds()/float64(w.requests)*10000)
				fmt.Fprintf(os.Stderr, "run %d/%d %-40s %4s %9.0f req/s p99 %v\n", i+1, o.runs, t.name, s, w.rps, w.p99)
			}
		}
	}
	// Open loop at half the bare proxy's peak, 1 KiB: each stepgate target
	// paired with its bare baseline, requests dealt alternately to the two
	// (see openLoop); interleaved runs, median of the per-run p99 added
	// (one p99 over a few seconds on a shared machine is mostly whoever
	// else was scheduled then).
	if o.openLoop > 0 {
		rate := median(results[key(targets[1], "1k")].rps) / 2
		for i := 0; i < o.openRuns; i++ {
			for _, t := range targets {
				if t.admin == "" {
					continue
				}
				r := results[key(t, "1k")]
				base := targets[t.baseline]
				ol, err := openLoop([]target{base, t}, rate, o.openLoop, o.conns)
				if err != nil {
					r.openErr = err.Error()
					continue
				}
				r.openRate, r.openErrs = rate, r.openErrs+ol[0].errs+ol[1].errs
				r.openP50, r.openP99 = append(r.openP50, ol[1].p50), append(r.openP99, ol[1].p99)
				r.openBareP50, r.openBareP99 = append(r.openBareP50, ol[0].p50), append(r.openBareP99, ol[0].p99)
				r.openAdded = append(r.openAdded, ol[1].p99-ol[0].p99)
				fmt.Fprintf(os.Stderr, "open loop %d/%d %-40s %6.0f req/s p99 %v (bare, same moments: %v) errors %d\n",
					i+1, o.runs, t.name, rate, ol[1].p99, ol[0].p99, ol[0].errs+ol[1].errs)
			}
		}
	}
	time.Sleep(time.Second) // let closed load-generator connections end
	for _, t := range targets {
		for _, s := range sizes {
			r := results[key(t, s)]
			r.goroutinesAfter = goroutines(t.admin)
			if t.proc != nil {
				r.rssMiB = peakRSS(t.proc.Pid)
			}
		}
	}

	table := report(o, targets, sizes, results, key, time.Since(start)) + instrTable
	fmt.Print(table)
	if o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(o.out, []byte(table), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "written to %s\n", o.out)
	}
	return nil
}

// hold prints how to load each target by hand and waits for an interrupt:
// for profiling stepgate under the benchmark's own load.
func hold(o options, targets []target) error {
	for _, t := range targets {
		args := []string{"taskset", "-c", o.loadCore, "wrk", "-t1", "-c" + strconv.Itoa(o.conns), "-d10s"}
		for _, h := range t.headers {
			args = append(args, "-H", strconv.Quote(h))
		}
		fmt.Printf("# %s (pid %d)\n%s %s\n", t.name, t.proc.Pid, strings.Join(args, " "), t.base+t.path+"1k")
		if t.admin != "" {
			fmt.Printf("# go tool pprof -seconds 10 %s/debug/pprof/profile\n", t.admin)
		}
	}
	fmt.Println("# holding; Ctrl-C ends every process")
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	<-ch
	return nil
}

func lnFiles(ln net.Listener) ([]*os.File, error) {
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return nil, err
	}
	return []*os.File{f}, nil
}

// freeAddr returns a loopback address that was free a moment ago; stepgate
// takes its listen address from the environment.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitReady polls u until it answers 200 or d has passed (polling a
// process's start-up, not synchronising).
func waitReady(u string, d time.Duration) error {
	c := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		resp, err := c.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v", u, d)
}

func check(t target) error {
	for _, s := range []string{"1k", "64k"} {
		req, _ := http.NewRequest(http.MethodGet, t.base+t.path+s, nil)
		for _, h := range t.headers {
			k, v, _ := strings.Cut(h, ": ")
			req.Header.Set(k, v)
		}
		c := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		want := 1024
		if s == "64k" {
			want = 64 << 10
		}
		if resp.StatusCode != http.StatusOK || len(body) != want {
			return fmt.Errorf("GET %s%s: status %d, %d bytes; want 200 with %d bytes", t.path, s, resp.StatusCode, len(body), want)
		}
	}
	return nil
}

// mintStepUp runs a whole SMS step-up for alice through the challenge pages
// (the sequence of cmd/stepgate's stepUpAlice) and returns "name=value" of
// the step-up cookie.
func mintStepUp(proxyURL string, sim *pingonesim.Server) (string, error) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var csrf string
	do := func(method, path string, form url.Values) (*http.Response, string, error) {
		var body io.Reader
		if form != nil {
			form.Set("csrf", csrf)
			body = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequest(method, proxyURL+path, body)
		req.Header.Set("X-Forwarded-User", "alice")
		req.Header.Set("Accept", "text/html")
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", proxyURL)
			req.Header.Set("Sec-Fetch-Site", "same-origin")
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if m := csrfRE.FindSubmatch(b); m != nil {
			csrf = string(m[1])
		}
		return resp, string(b), nil
	}
	follow := func(resp *http.Response, err error) (*http.Response, string, error) {
		if err != nil {
			return nil, "", err
		}
		loc := resp.Header.Get("Location")
		if loc == "" {
			return nil, "", fmt.Errorf("%s: status %d without Location", resp.Request.URL.Path, resp.StatusCode)
		}
		return do(http.MethodGet, loc, nil)
	}
	resp, _, err := do(http.MethodGet, "/admin/1k", nil)
	if err != nil {
		return "", err
	}
	if _, _, err = follow(resp, nil); err != nil {
		return "", err
	}
	resp, _, err = do(http.MethodPost, "/.stepgate/challenge", url.Values{"action": {"start"}})
	_, page, err := follow(resp, err)
	if err != nil {
		return "", err
	}
	m := deviceRE.FindStringSubmatch(page)
	if m == nil {
		return "", errors.New("no device offered on the challenge page")
	}
	resp, _, err = do(http.MethodPost, "/.stepgate/challenge", url.Values{"action": {"select"}, "device": {m[1]}})
	if _, _, err = follow(resp, err); err != nil {
		return "", err
	}
	msgs := sim.Inbox("alice")
	if len(msgs) == 0 {
		return "", errors.New("no OTP delivered")
	}
	resp, _, err = do(http.MethodPost, "/.stepgate/challenge", url.Values{"action": {"otp"}, "otp": {msgs[0].OTP}})
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusSeeOther {
		return "", fmt.Errorf("OTP answered %d, want 303", resp.StatusCode)
	}
	u, _ := url.Parse(proxyURL)
	for _, ck := range jar.Cookies(u) {
		if ck.Name == "stepgate" {
			return ck.Name + "=" + ck.Value, nil
		}
	}
	return "", errors.New("no step-up cookie after the OTP")
}

var (
	csrfRE   = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	deviceRE = regexp.MustCompile(`name="device" value="([^"]+)"`)
)

type wrkResult struct {
	rps           float64
	requests      int64
	p50, p90, p99 time.Duration
	cpu           time.Duration // subject CPU during the run
}

var (
	wrkRPS   = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkTotal = regexp.MustCompile(`(\d+) requests in`)
	wrkPct   = regexp.MustCompile(`(?m)^\s+(50|90|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkErrs  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)|Socket errors: .*`)
)

func runWrk(o options, t target, size string, d time.Duration) (wrkResult, error) {
	args := []string{"wrk", "-t1", "-c" + strconv.Itoa(o.conns), "-d" + strconv.Itoa(max(1, int(d.Seconds()))) + "s", "--latency"}
	for _, h := range t.headers {
		args = append(args, "-H", h)
	}
	args = append(args, t.base+t.path+size)
	var cmd *exec.Cmd
	if o.noPin {
		cmd = exec.Command(args[0], args[1:]...)
	} else {
		cmd = exec.Command("taskset", append([]string{"-c", o.loadCore}, args...)...)
	}
	cpu0 := procCPU(t.proc)
	out, err := cmd.CombinedOutput()
	cpu1 := procCPU(t.proc)
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v: %s", err, out)
	}
	var r wrkResult
	m := wrkRPS.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk output without Requests/sec: %s", out)
	}
	r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := wrkTotal.FindSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	for _, m := range wrkPct.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(m[3])]
		dur := time.Duration(v * float64(unit))
		switch string(m[1]) {
		case "50":
			r.p50 = dur
		case "90":
			r.p90 = dur
		case "99":
			r.p99 = dur
		}
	}
	if m := wrkErrs.Find(out); m != nil {
		return r, fmt.Errorf("%s: wrk saw errors: %s", t.name, m)
	}
	r.cpu = cpu1 - cpu0
	return r, nil
}

// procCPU is the user+system CPU time of a process, from /proc.
func procCPU(p *os.Process) time.Duration {
	if p == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15, in clock ticks (100 per second on Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// peakRSS is VmHWM, the process's peak resident set, in MiB.
func peakRSS(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// goroutines reads go_goroutines from stepgate's /metrics (-1 if none).
func goroutines(admin string) int {
	if admin == "" {
		return -1
	}
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return -1
}

type openResult struct {
	p50, p99 time.Duration
	errs     int
}

// openLoop sends GETs at a fixed total rate for d, whatever the subjects do,
// and measures each latency from the request's scheduled send time. The
// schedule is dealt round-robin over targets: request i goes to
// targets[i%len(targets)], so that a subject and its baseline are measured
// in the same moments, under the same neighbours, and a burst of noise on
// this shared machine lands on both alike.
func openLoop(targets []target, rate float64, d time.Duration, conns int) ([]openResult, error) {
	type sink struct {
		c   *http.Client
		hdr http.Header
		u   string
		lat []time.Duration
	}
	sinks := make([]*sink, len(targets))
	for i, t := range targets {
		// At most 4×conns connections per target, as wrk2 keeps a fixed
		// set: a request that finds them all busy waits, and that wait
		// counts in its latency (measured from the schedule), instead of
		// opening ever more connections while a stalled subject falls
		// behind.
		tr := &http.Transport{MaxConnsPerHost: 4 * conns, MaxIdleConns: 4 * conns, MaxIdleConnsPerHost: 4 * conns, IdleConnTimeout: time.Minute}
		defer tr.CloseIdleConnections()
		hdr := http.Header{}
		for _, h := range t.headers {
			k, v, _ := strings.Cut(h, ": ")
			hdr.Set(k, v)
		}
		sinks[i] = &sink{
			c: &http.Client{Transport: tr, Timeout: 10 * time.Second,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
			hdr: hdr, u: t.base + t.path + "1k",
		}
	}
	// Half a second at the same rate first, unmeasured, so that the
	// connections exist before the measured schedule starts.
	warm := int(rate / 2)
	d += time.Duration(warm) * time.Duration(float64(time.Second)/rate)
	n := int(rate * d.Seconds())
	if n < 100*len(targets) {
		return nil, errors.New("rate too low for an open-loop run")
	}
	interval := time.Duration(float64(time.Second) / rate)
	lat := make([]time.Duration, n)
	errsBy := make([]atomic.Int64, len(targets))
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), d+15*time.Second)
	defer cancel()
	start := time.Now().Add(100 * time.Millisecond)
	for i := 0; i < n; i++ {
		at := start.Add(time.Duration(i) * interval)
		if w := time.Until(at); w > 0 {
			time.Sleep(w) // pacing the schedule, not synchronising
		}
		wg.Add(1)
		go func(i int, at time.Time) {
			defer wg.Done()
			s := sinks[i%len(sinks)]
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.u, nil)
			req.Header = s.hdr.Clone()
			resp, err := s.c.Do(req)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			lat[i] = time.Since(at)
			if err != nil {
				errsBy[i%len(sinks)].Add(1)
			}
		}(i, at)
	}
	wg.Wait()
	for i := warm; i < n; i++ {
		s := sinks[i%len(sinks)]
		s.lat = append(s.lat, lat[i])
	}
	out := make([]openResult, len(sinks))
	for i, s := range sinks {
		slices.Sort(s.lat)
		out[i] = openResult{p50: s.lat[len(s.lat)/2], p99: s.lat[len(s.lat)*99/100], errs: int(errsBy[i].Load())}
	}
	return out, nil
}

// pairedRatio is the median over runs of v[i]/base[i]: run i of a target and
// of its baseline ran seconds apart, so each quotient sees one state of the
// machine.
func pairedRatio(v, base []float64) float64 {
	var q []float64
	for i := range min(len(v), len(base)) {
		if base[i] > 0 {
			q = append(q, v[i]/base[i])
		}
	}
	return median(q)
}

func median[T float64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func report(o options, targets []target, sizes []string, results map[string]*result, key func(target, string) string, took time.Duration) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "## stepgate load benchmark\n\n")
	fmt.Fprintf(&b, "%s, %d CPUs (%s), %s; %s; load average before/after the run: %s.\n",
		runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), cpuModel(), runtime.Version(), kernel(), loadAvg())
	pinning := "load generators (wrk -t1, open loop) on CPU " + o.loadCore + "; upstream and subjects on CPU " + o.subjCore + ", GOMAXPROCS=1"
	if o.noPin {
		pinning = "unpinned"
	}
	fmt.Fprintf(&b, "%s. wrk: %d keep-alive connections, %d × %v runs (64 KiB: %d) after a %v warm-up (the upstream alone: one run); interleaved runs, each baseline followed at once by the targets compared with it. Took %v.\n\n",
		pinning, o.conns, o.runs, o.duration, min(o.runs, o.runs64k), o.warmup, took.Round(time.Second))
	fmt.Fprintf(&b, "req/s, latencies and CPU are medians over the runs. Ratios (× bare) are to the bare proxy given the same request (allow rows to the first bare row, stepped-up rows to the one with the cookie), taken run by run and the median reported. CPU is the subject process's own (user+system, /proc).\n\n")
	fmt.Fprintf(&b, "| target | body | req/s | **× bare** | p50 | p90 | p99 | subject CPU s / 10k req | **CPU × bare** | peak RSS MiB |\n")
	fmt.Fprintf(&b, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range sizes {
		for _, t := range targets {
			r := results[key(t, s)]
			if len(r.rps) == 0 {
				continue
			}
			bare := results[key(targets[t.baseline], s)]
			cpuRatio := "–"
			if t.name != targets[0].name {
				cpuRatio = fmt.Sprintf("**%.2f**", pairedRatio(r.cpuPer10k, bare.cpuPer10k))
			}
			fmt.Fprintf(&b, "| %s | %s | %.0f | **%.2f** | %s | %s | %s | %.3f | %s | %.1f |\n",
				t.name, sizeLabel(s), median(r.rps), pairedRatio(r.rps, bare.rps), ms(median(r.p50)), ms(median(r.p90)), ms(median(r.p99)),
				median(r.cpuPer10k), cpuRatio, r.rssMiB)
		}
	}
	if o.openLoop > 0 {
		rate := median(results[key(targets[1], "1k")].rps) / 2
		fmt.Fprintf(&b, "\nOpen loop, 1 KiB, %.0f req/s in all (half the bare proxy's peak), %d × %v runs, medians; latency from the scheduled send time. "+
			"Each stepgate target shares its runs with its bare baseline, requests dealt alternately to the two, so both see the same moments of this machine; "+
			"p99 added is the median over runs of (stepgate p99 − bare p99) within a run.\n\n", rate, o.openRuns, o.openLoop)
		fmt.Fprintf(&b, "| target | p50 | p99 | bare p50, same runs | bare p99, same runs | **p99 added** | errors |\n|---|---:|---:|---:|---:|---:|---:|\n")
		for _, t := range targets {
			if t.admin == "" {
				continue
			}
			r := results[key(t, "1k")]
			if r.openErr != "" {
				fmt.Fprintf(&b, "| %s | – | – | – | – | – | %s |\n", t.name, r.openErr)
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | **%+.3f ms** | %d |\n", t.name, ms(median(r.openP50)), ms(median(r.openP99)),
				ms(median(r.openBareP50)), ms(median(r.openBareP99)), float64(median(r.openAdded))/1e6, r.openErrs)
		}
	}
	fmt.Fprintf(&b, "\nTargets (docs/design.md §13), closed loop 1 KiB, log info (the default): ")
	var verdicts []string
	for _, t := range targets {
		if t.admin == "" {
			continue
		}
		r := results[key(t, "1k")]
		want := 0.95
		if strings.Contains(t.name, "mfa") {
			want = 0.90
		}
		ratio := pairedRatio(r.rps, results[key(targets[t.baseline], "1k")].rps)
		v := fmt.Sprintf("%s %.2f ≥ %.2f %s", t.name, ratio, want, pass(ratio >= want))
		if o.openLoop > 0 && r.openErr == "" {
			added := median(r.openAdded)
			v += fmt.Sprintf(", p99 added %.3f ms ≤ 1 ms %s", float64(added)/1e6, pass(added <= time.Millisecond))
		}
		verdicts = append(verdicts, v)
	}
	fmt.Fprintf(&b, "\n\n- %s\n", strings.Join(verdicts, "\n- "))
	fmt.Fprintf(&b, "\nstepgate goroutines (go_goroutines on /metrics) before → after all load: ")
	var gs []string
	for _, t := range targets {
		if t.admin != "" && strings.Contains(t.name, "allow") {
			r := results[key(t, "1k")]
			gs = append(gs, fmt.Sprintf("%s %d → %d", strings.TrimPrefix(t.name, "stepgate allow "), r.goroutinesBefore, r.goroutinesAfter))
		}
	}
	fmt.Fprintf(&b, "%s (the difference is idle keep-alive connections, one reader goroutine each).\n", strings.Join(gs, "; "))
	return b.String()
}

func pass(ok bool) string {
	if ok {
		return "✅"
	}
	return "❌"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }

func sizeLabel(s string) string {
	if s == "64k" {
		return "64 KiB"
	}
	return "1 KiB"
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return "Linux " + strings.TrimSpace(string(b))
}

var firstLoad string

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	now := f[0]
	if firstLoad == "" {
		return now
	}
	return firstLoad + " / " + now
}

// contractValues are the §6 header values stepgate forwards for the bench's
// step-up cookie (name=value), opened with the bench's cookie key as
// stepgate opens it.
func contractValues(key, cookie string) ([]string, error) {
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return nil, err
	}
	store, err := session.NewStore(session.Options{Keys: [][]byte{k}})
	if err != nil {
		return nil, err
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Cookie", cookie)
	su, ok := store.Lookup(r)
	if !ok {
		return nil, errors.New("the minted cookie does not open")
	}
	return slices.Clone(su.HeaderValues()), nil
}
