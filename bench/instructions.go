package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Instruction counts are this benchmark's noise-free figure. Requests per
// second on a shared 2-vCPU VM move ±15 % between identical runs; the
// instructions a process executes for the same requests do not, whatever
// the neighbours do. Each subject and its upstream run under valgrind's
// callgrind with instrumentation off; for every target it is switched on
// (callgrind_control) for a fixed number of requests after a warm-up, and
// the dumped totals, divided by that number, are the user-space
// instructions per request. Kernel work is not counted: every subject makes
// about the same system calls per request (read ×4, write ×2, a fraction of
// an epoll wait; counted with strace -c in the same run, see
// syscallsPerRequest), so the kernel's share is about the same in every row
// and the instruction ratio is close to the CPU ratio, if anything above it.

// The gate, tighter than docs/design.md §13's throughput targets (which
// allow 1.053 and 1.111): what the code reached, plus a margin above the
// run-to-run spread (allow 1.037-1.042, stepped up 1.084-1.091 over the
// runs of 2026-12-06 against the standard-library baseline of
// bench/baseline), so that the next cost added to the hot path is noticed
// here rather than once a target is missed. (The gate was 1.035 and 1.090
// against a baseline that carried the simulator, which counted about 3 %
// more than a bare proxy: these are tighter.)
const (
	gateAllow     = 1.052
	gateSteppedUp = 1.102
)

const (
	instrWarm  = 200
	instrConns = 4
)

// instrRequests is how many requests each count is taken over. The
// collector runs once per few hundred requests and costs as much as tens
// of requests at once, so a count over 2000 requests moved by ±1 % with
// where the cycles fell; over 8000 the spread is a quarter of that.
var instrRequests = 8000

// instrRounds is how many times each target is counted, the rounds
// interleaved and averaged: one count moved by about ±0.5 % with the
// machine's moment (time-driven work such as the runtime's scavenger runs
// per second, and valgrind makes a second hold few requests).
var instrRounds = 2

var errNoValgrind = errors.New("valgrind not found (apt-get install -y valgrind)")

type instrTarget struct {
	name     string
	gated    bool // a row with a target and CI's gate (traces' rows are reported only)
	base     string
	path     string
	headers  []string
	subject  *callgrind
	baseline int // index of the bare row given the same request
}

type instrRow struct {
	subject, upstream float64 // instructions per request
}

// callgrind is one process running under valgrind --tool=callgrind.
type callgrind struct {
	cmd      *exec.Cmd
	out      string // --callgrind-out-file; dumps are out.1, out.2, …
	lastDump string
	log      *bytes.Buffer
}

func startCallgrind(dir, name string, core string, noPin bool, env []string, ln net.Listener, args ...string) (*callgrind, error) {
	out := filepath.Join(dir, name+".callgrind")
	argv := append([]string{"valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=" + out}, args...)
	if !noPin {
		argv = append([]string{"taskset", "-c", core}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	// Go preempts goroutines with signals (SIGURG), which callgrind's
	// signal bookkeeping cannot follow (an assertion in threads.c fails
	// within seconds); cooperative preemption is enough for a proxy.
	cmd.Env = append(slices.Clip(env), "GODEBUG=asyncpreemptoff=1")
	cmd.Stdout = io.Discard
	log := new(bytes.Buffer)
	cmd.Stderr = log // valgrind's own lines; shown only if something fails
	if ln != nil {
		files, err := lnFiles(ln)
		if err != nil {
			return nil, err
		}
		cmd.ExtraFiles = files
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s under valgrind: %w", name, err)
	}
	return &callgrind{cmd: cmd, out: out, log: log}, nil
}

func (c *callgrind) control(args ...string) error {
	// vgdb, behind callgrind_control, may have to wait for a process that
	// sleeps in a system call (or be refused ptrace): bound the wait.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "callgrind_control", append(args, strconv.Itoa(c.cmd.Process.Pid))...).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("OK")) {
		return fmt.Errorf("callgrind_control %v: %v: %s", args, err, out)
	}
	return nil
}

// keepDumps moves target t's latest dumps (its subject's and the
// upstream's) under dir with names of their own, when asked to keep them.
func keepDumps(e instrEnv, dir string, i int, t instrTarget, up *callgrind) error {
	if e.keepDir == "" {
		return nil
	}
	slug := strings.Trim(notSlug.ReplaceAllString(t.name, "-"), "-")
	if err := os.Rename(t.subject.lastDump, filepath.Join(dir, fmt.Sprintf("%d-%s.callgrind", i+1, slug))); err != nil {
		return err
	}
	return os.Rename(up.lastDump, filepath.Join(dir, fmt.Sprintf("%d-%s-upstream.callgrind", i+1, slug)))
}

// notSlug is what a dump's file name replaces in a target's name.
var notSlug = regexp.MustCompile(`[^A-Za-z0-9]+`)

var callgrindTotal = regexp.MustCompile(`(?m)^(?:summary|totals):\s+(\d+)`)

// measureAll zeroes the counters of procs (instrumentation is on), runs fn,
// dumps, and returns the instructions each executed meanwhile.
func measureAll(procs []*callgrind, fn func() error) ([]float64, error) {
	for _, p := range procs {
		if err := p.control("-z"); err != nil {
			return nil, err
		}
	}
	if err := fn(); err != nil {
		return nil, err
	}
	out := make([]float64, len(procs))
	for i, p := range procs {
		before, _ := filepath.Glob(p.out + ".*")
		if err := p.control("-d"); err != nil {
			return nil, fmt.Errorf("%s: %w; valgrind said: %s", p.out, err, p.log.Bytes())
		}
		after, _ := filepath.Glob(p.out + ".*")
		var fresh []string
		for _, f := range after {
			if !slices.Contains(before, f) {
				fresh = append(fresh, f)
			}
		}
		if len(fresh) != 1 {
			return nil, fmt.Errorf("callgrind dump of %s: %d new files", p.out, len(fresh))
		}
		p.lastDump = fresh[0]
		b, err := os.ReadFile(fresh[0])
		if err != nil {
			return nil, err
		}
		m := callgrindTotal.FindSubmatch(b)
		if m == nil {
			return nil, fmt.Errorf("no totals in %s", fresh[0])
		}
		out[i], _ = strconv.ParseFloat(string(m[1]), 64)
	}
	return out, nil
}

// drive sends n GETs over instrConns keep-alive connections and fails on
// anything but 200 with the 1 KiB body.
func drive(t instrTarget, n int) error {
	tr := &http.Transport{MaxIdleConnsPerHost: instrConns, MaxConnsPerHost: instrConns}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var wg sync.WaitGroup
	errs := make(chan error, instrConns)
	for w := 0; w < instrConns; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += instrConns {
				req, _ := http.NewRequest(http.MethodGet, t.base+t.path+"1k", nil)
				for _, h := range t.headers {
					k, v, _ := strings.Cut(h, ": ")
					req.Header.Set(k, v)
				}
				resp, err := c.Do(req)
				if err != nil {
					errs <- err
					return
				}
				nb, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || nb != 1024 {
					errs <- fmt.Errorf("%s: status %d, %d bytes", t.name, resp.StatusCode, nb)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

type instrEnv struct {
	baseline, bin string // the baseline program (bench/baseline) and stepgate
	stepgateEnv   func(level, upstream, listen, admin string) []string
	withCookie    []string
	ident         []string
	core          string
	noPin         bool
	keepDir       string             // where the callgrind dumps are kept ("": removed)
	traces        bool               // also count stepgate with traces on, not sampled and sampled
	contract      []string           // the step-up's §6 header values, for the bare proxy that sends them
	syscalls      map[string]float64 // subject system calls per request, by target name (strace; may be empty)
}

// countInstructions starts a second upstream, bare proxy and stepgate (log
// info) under callgrind and returns the table of instructions per request.
func countInstructions(e instrEnv) (string, error) {
	for _, tool := range []string{"valgrind", "callgrind_control"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", errNoValgrind
		}
	}
	dir := e.keepDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "stepgate-callgrind-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	var procs []*callgrind
	defer func() {
		for _, p := range procs {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	}()
	listen := func() (net.Listener, string, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, "", err
		}
		return ln, "http://" + ln.Addr().String(), nil
	}
	goEnv := append(os.Environ(), "GOMAXPROCS=1")

	upLn, upURL, err := listen()
	if err != nil {
		return "", err
	}
	up, err := startCallgrind(dir, "upstream", e.core, e.noPin, goEnv, upLn, e.baseline, "-mode=upstream")
	upLn.Close()
	if err != nil {
		return "", err
	}
	procs = append(procs, up)
	bareLn, bareURL, err := listen()
	if err != nil {
		return "", err
	}
	bare, err := startCallgrind(dir, "bare", e.core, e.noPin, goEnv, bareLn, e.baseline, "-mode=bare", upURL)
	bareLn.Close()
	if err != nil {
		return "", err
	}
	procs = append(procs, bare)
	// The bare proxy again, sending what stepgate's contract sends on a
	// stepped-up request: the floor under stepgate's stepped-up row.
	floorLn, floorURL, err := listen()
	if err != nil {
		return "", err
	}
	floor, err := startCallgrind(dir, "bare-contract", e.core, e.noPin, goEnv, floorLn, append([]string{e.baseline, "-mode=bare-contract", upURL}, e.contract...)...)
	floorLn.Close()
	if err != nil {
		return "", err
	}
	procs = append(procs, floor)

	// Each stepgate: the default (traces off), and with -traces one whose
	// spans are never sampled and one that samples and exports every
	// request to a collector on loopback that accepts and drops them.
	type gateway struct {
		label, addr, admin string
		env                []string
		proc               *callgrind
	}
	gws := []*gateway{{label: "log info"}}
	if e.traces {
		sink := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.WriteHeader(http.StatusOK) // an empty ExportTraceServiceResponse
		}), ReadHeaderTimeout: 10 * time.Second}
		sinkLn, sinkURL, err := listen()
		if err != nil {
			return "", err
		}
		go func() { _ = sink.Serve(sinkLn) }()
		defer sink.Close()
		endpoint := "OTEL_EXPORTER_OTLP_ENDPOINT=" + sinkURL
		gws = append(gws,
			&gateway{label: "traces on, not sampled", env: []string{endpoint, "OTEL_TRACES_SAMPLER=always_off"}},
			&gateway{label: "traces on, every request sampled", env: []string{endpoint, "OTEL_TRACES_SAMPLER=always_on"}})
	}
	ready := []string{upURL + "/1k", bareURL + "/1k", floorURL + "/1k"}
	for i, g := range gws {
		g.addr, g.admin = freeAddr(), freeAddr()
		env := append(e.stepgateEnv("info", upURL, g.addr, g.admin), g.env...)
		p, err := startCallgrind(dir, fmt.Sprintf("stepgate-%d", i), e.core, e.noPin, env, nil, e.bin)
		if err != nil {
			return "", err
		}
		procs = append(procs, p)
		g.proc = p
		ready = append(ready, "http://"+g.admin+"/readyz")
	}
	for _, u := range ready {
		if err := waitReady(u, 2*time.Minute); err != nil {
			return "", fmt.Errorf("under valgrind: %w", err)
		}
	}

	// Instrumentation stays on from here (each callgrind_control call is a
	// ptrace round trip; fewer is steadier); counters are zeroed per target.
	for _, p := range procs {
		if err := p.control("-i", "on"); err != nil {
			return "", err
		}
	}
	targets := []instrTarget{
		{name: "bare ReverseProxy", base: bareURL, path: "/app/", headers: e.ident, subject: bare, baseline: 0},
		{name: "bare ReverseProxy, with the step-up cookie", base: bareURL, path: "/admin/", headers: e.withCookie, subject: bare, baseline: 1},
		{name: "bare ReverseProxy, with the step-up cookie, sending what stepgate sends (§6 headers, X-Real-Ip, Cookie without ours)", base: floorURL, path: "/admin/", headers: e.withCookie, subject: floor, baseline: 1},
	}
	for i, g := range gws {
		targets = append(targets,
			instrTarget{name: "stepgate allow (" + g.label + ")", gated: i == 0, base: "http://" + g.addr, path: "/app/", headers: e.ident, subject: g.proc, baseline: 0},
			instrTarget{name: "stepgate mfa, stepped up (" + g.label + ")", gated: i == 0, base: "http://" + g.addr, path: "/admin/", headers: e.withCookie, subject: g.proc, baseline: 1})
	}
	rows := make([]instrRow, len(targets))
	for round := range instrRounds {
		for i, t := range targets {
			if round == 0 {
				if err := drive(t, instrWarm); err != nil {
					return "", err
				}
			}
			n, err := measureAll([]*callgrind{t.subject, up}, func() error { return drive(t, instrRequests) })
			if err != nil {
				return "", err
			}
			per := float64(instrRequests * instrRounds)
			rows[i].subject += n[0] / per
			rows[i].upstream += n[1] / per
			if err := keepDumps(e, dir, i, t, up); err != nil {
				return "", err
			}
		}
	}
	for i, t := range targets {
		fmt.Fprintf(os.Stderr, "instructions %-45s subject %8.0f upstream %8.0f per request\n", t.name, rows[i].subject, rows[i].upstream)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\nUser-space instructions per request (valgrind callgrind, %d rounds of %d requests over %d keep-alive connections after %d unmeasured; "+
		"system calls per request counted with strace -c over 2000 requests of the unmodified processes, to show the kernel's share is about the same in every row). Deterministic: the figure to compare between commits.\n\n",
		instrRounds, instrRequests, instrConns, instrWarm)
	fmt.Fprintf(&b, "| target | subject | upstream | subject + upstream | **× bare** | subject system calls / request |\n|---|---:|---:|---:|---:|---:|\n")
	for i, t := range targets {
		r, base := rows[i], rows[t.baseline]
		sc := "–"
		if n, ok := e.syscalls[t.name]; ok {
			sc = fmt.Sprintf("%.2f", n)
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.0f | **%.3f** | %s |\n", t.name, r.subject, r.upstream, r.subject+r.upstream,
			(r.subject+r.upstream)/(base.subject+base.upstream), sc)
	}
	fmt.Fprintf(&b, "\nFrom the counts (kernel work per request being about the same in every row): ")
	var v []string
	for i, t := range targets {
		if !t.gated {
			continue
		}
		r, base := rows[i], rows[t.baseline]
		x := (r.subject + r.upstream) / (base.subject + base.upstream)
		want, gate := 0.95, gateAllow
		if strings.Contains(t.name, "mfa") {
			want, gate = 0.90, gateSteppedUp
		}
		v = append(v, fmt.Sprintf("%s: %+.1f %% user-space work, so throughput ≈ %.3f × bare or better (target ≥ %.2f; gate: at most %.3f × bare's work) %s",
			t.name, (x-1)*100, 1/x, want, gate, pass(1/x >= want && x <= gate)))
	}
	fmt.Fprintf(&b, "\n\n- %s\n", strings.Join(v, "\n- "))
	return b.String(), nil
}
