//go:build unix

package upstreamtest

import (
	"bufio"
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

//go:embed apps
var apps embed.FS

// Request is one request as the upstream's app saw it.
type Request struct {
	Server string `json:"server"`
	Method string `json:"method"`
	// Target is the request target as the server reports it (REQUEST_URI,
	// raw_path and query, req.url, ...).
	Target string `json:"target"`
	Proto  string `json:"proto"`
	// Headers maps lower-case names to values (repeated headers joined with
	// ", "). nginx records only the headers listed in its log format, and
	// an empty value there means absent.
	Headers map[string]string `json:"headers"`
	BodyLen flexInt           `json:"body_len"`
}

// Header returns one recorded header ("" when absent).
func (r Request) Header(name string) string { return r.Headers[strings.ToLower(name)] }

// String is a short form for failure messages.
func (r Request) String() string {
	return fmt.Sprintf("%s %s %s %v body=%d", r.Method, r.Target, r.Proto, r.Headers, r.BodyLen)
}

// flexInt reads a JSON number or a numeric string (nginx logs $content_length
// as a string, "" when there is none, and verbatim when it is not a number:
// that reads as -1).
type flexInt int64

func (n *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*n = 0
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		v = -1
	}
	*n = flexInt(v)
	return nil
}

// Server is one running upstream.
type Server struct {
	Name string // the Kind's name
	Addr string // 127.0.0.1:port
	URL  string // http://127.0.0.1:port
	Dir  string // its temporary directory

	t     testing.TB
	syncs int
	log   string
	proc  *Process
}

// syncPrefix starts the target of Sync's own requests, which Requests
// leaves out.
const syncPrefix = "/.upstreamtest/sync/"

// Sync sends the server one request of its own, directly, and waits until
// its app has recorded it: requests that were answered before Sync was
// called are then in the log too. nginx writes its log line only when it
// frees the request, after the response and after any lingering close:
// close the test's connections before Sync.
func (s *Server) Sync() {
	s.t.Helper()
	s.syncs++
	target := syncPrefix + strconv.Itoa(s.syncs)
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(s.URL + target)
	if err != nil {
		s.t.Fatalf("%s: sync request: %v", s.Name, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, r := range s.records() {
			if r.Target == target {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: its sync request %s was never recorded; output:\n%s", s.Name, target, s.Output())
		}
		<-tick.C
	}
}

// Requests reads every request the server's app has recorded so far (Sync
// first to be sure of the latest).
// Saw reports whether the server has recorded a request that pred accepts
// (without the sync request of Sync: for a test waiting on one request).
func (s *Server) Saw(pred func(Request) bool) bool {
	for _, r := range s.records() {
		if pred(r) {
			return true
		}
	}
	return false
}

func (s *Server) Requests() []Request {
	s.t.Helper()
	var out []Request
	for _, r := range s.records() {
		if !strings.HasPrefix(r.Target, syncPrefix) {
			out = append(out, r)
		}
	}
	return out
}

func (s *Server) records() []Request {
	s.t.Helper()
	data, err := os.ReadFile(s.log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		s.t.Fatalf("%s: read request log: %v", s.Name, err)
	}
	var out []Request
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var r Request
		if err := json.Unmarshal(line, &r); err != nil {
			s.t.Fatalf("%s: request log line %q: %v", s.Name, line, err)
		}
		for k, v := range r.Headers {
			if v == "" {
				delete(r.Headers, k)
			}
		}
		out = append(out, r)
	}
	return out
}

// Output is what the server process wrote to stdout and stderr so far (for
// failure messages).
func (s *Server) Output() string { return s.proc.Output() }

// Kind is one kind of upstream the matrix can start.
type Kind struct {
	Name    string
	Package string // the Debian package that provides it
	start   func(s *Server, port int) (*exec.Cmd, error)
	binary  string
}

// Kinds lists every upstream this package can start, in a fixed order.
// Java servers (Tomcat, Jetty) are left out: a JVM's start-up alone would
// take most of the matrix's time budget in CI.
func Kinds() []Kind {
	return []Kind{
		{Name: "hypercorn", Package: "python3-hypercorn", binary: python, start: startHypercorn},
		{Name: "http.server", Package: "python3", binary: python, start: startHTTPServer},
		{Name: "apache2", Package: "apache2", binary: "/usr/sbin/apache2", start: startApache},
		{Name: "apache2-h2c", Package: "apache2", binary: "/usr/sbin/apache2", start: startApacheH2C},
		{Name: "nginx", Package: "nginx", binary: "/usr/sbin/nginx", start: startNginx},
		{Name: "php", Package: "php-cli", binary: "php", start: startPHP},
		{Name: "node", Package: "nodejs", binary: "node", start: startNode},
	}
}

// Start starts one upstream of this kind and waits until it accepts
// connections; it stops when the test ends.
func (k Kind) Start(t testing.TB) *Server {
	t.Helper()
	bin := k.binary
	if !filepath.IsAbs(bin) {
		p, err := exec.LookPath(bin)
		if err != nil {
			Missing(t, k.Name, bin, k.Package)
		}
		bin = p
	}
	if _, err := os.Stat(bin); err != nil {
		Missing(t, k.Name, bin, k.Package)
	}
	if k.Name == "hypercorn" {
		if err := exec.Command(python, "-c", "import hypercorn").Run(); err != nil {
			Missing(t, k.Name, "python module hypercorn", k.Package)
		}
	}

	// Not t.TempDir: its parent is private to this user, and Apache and
	// nginx drop root for their workers, which must still reach the app.
	dir, err := os.MkdirTemp("", "upstreamtest-"+strings.ReplaceAll(k.Name, ".", "")+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &Server{Name: k.Name, Dir: dir, t: t, log: filepath.Join(dir, "requests.jsonl")}
	// The workers may run as another user: the log must be writable by
	// them.
	if err := os.WriteFile(s.log, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.log, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := copyApps(dir); err != nil {
		t.Fatal(err)
	}

	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.URL = "http://" + s.Addr
	cmd, err := k.start(s, port)
	if err != nil {
		t.Fatalf("%s: %v", k.Name, err)
	}
	cmd.Dir = dir
	// The kind's own variables (set by start) come after these and win.
	cmd.Env = append([]string{"UPSTREAMTEST_LOG=" + s.log, "PYTHONDONTWRITEBYTECODE=1"}, cmd.Env...)
	s.proc = Launch(t, k.Name, cmd, s.Addr)
	return s
}

// Process is a server program started by Launch.
type Process struct {
	Name string
	Addr string

	out    string
	exited chan struct{}
}

// Output is what the process wrote to stdout and stderr so far (for failure
// messages).
func (p *Process) Output() string {
	b, _ := os.ReadFile(p.out)
	return string(b)
}

// Launch starts cmd, a server that is to listen on addr (a 127.0.0.1 port
// from FreePort), and waits until it accepts connections: Spawn, then
// WaitReady.
func Launch(t testing.TB, name string, cmd *exec.Cmd, addr string) *Process {
	t.Helper()
	p := Spawn(t, name, cmd, addr)
	p.WaitReady(t)
	return p
}

// Spawn starts cmd, a server that is to listen on addr, without waiting for
// it (start several, then WaitReady on each). The process gets its own
// process group, which is ended (SIGTERM, then SIGKILL) when the test ends,
// workers included. cmd.Env is added to this process's environment (its
// entries win); its output goes to a file in a temporary directory, read by
// Output.
func Spawn(t testing.TB, name string, cmd *exec.Cmd, addr string) *Process {
	t.Helper()
	outDir, err := os.MkdirTemp("", "upstreamtest-out-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(outDir) })
	p := &Process{Name: name, Addr: addr, out: filepath.Join(outDir, "output.log"), exited: make(chan struct{})}
	out, err := os.Create(p.out)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), cmd.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its own group, so its workers stop with it
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("%s: start %s: %v", name, cmd.Path, err)
	}
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		stop(cmd.Process.Pid, p.exited)
		out.Close()
	})
	return p
}

// WaitReady waits until the process accepts connections on its address; a
// process that exits first or does not listen within 30 s fails the test,
// with its output.
func (p *Process) WaitReady(t testing.TB) {
	t.Helper()
	if err := waitListening(p.Addr, p.exited, 30*time.Second); err != nil {
		t.Fatalf("%s on %s: %v; output:\n%s", p.Name, p.Addr, err, p.Output())
	}
}

// stop ends the server's process group: SIGTERM, then SIGKILL if it has not
// exited within a few seconds. Only the group this package started.
func stop(pid int, exited <-chan struct{}) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
	}
	// Workers that outlive their master (a killed Apache) go too.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// waitListening polls addr until it accepts a TCP connection, the process
// exits, or the deadline passes.
func waitListening(addr string, exited <-chan struct{}, within time.Duration) error {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening after %v: %w", within, err)
		}
		select {
		case <-exited:
			return errors.New("the process exited before it listened")
		case <-tick.C:
		}
	}
}

// FreePort returns a loopback port for a server this test process starts.
//
// A port that was merely free a moment ago is not enough: go test runs
// several test binaries at once, and between one binary's check and its
// server's bind another binary may pick the same port — its server then
// answers in place of ours (a "rack" that was really another binary's PHP).
// So ports come from 20000–29999, below the kernel's ephemeral range (no
// port-0 listener or outgoing connection is given one), and each is
// reserved for this process's lifetime by an exclusive lock on a file
// named for it, which every test binary respects and the kernel releases
// when the process ends.
func FreePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	dir := filepath.Join(os.TempDir(), "stepgate-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	for range 2000 {
		port := 20000 + rand.IntN(10000)
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close() // another test binary holds it
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			f.Close() // in use by something else
			continue
		}
		l.Close()
		reserved = append(reserved, f) // held until the process ends
		return port, nil
	}
	return 0, errors.New("find a free port: none free in 20000-29999")
}

var (
	portsMu  sync.Mutex
	reserved []*os.File
)

func copyApps(dir string) error {
	entries, err := apps.ReadDir("apps")
	if err != nil {
		return fmt.Errorf("read embedded apps: %w", err)
	}
	for _, e := range entries {
		b, err := apps.ReadFile("apps/" + e.Name())
		if err != nil {
			return fmt.Errorf("read embedded app %s: %w", e.Name(), err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(e.Name(), ".cgi") {
			mode = 0o755
		}
		p := filepath.Join(dir, e.Name())
		if err := os.WriteFile(p, b, mode); err != nil {
			return fmt.Errorf("write app: %w", err)
		}
		if err := os.Chmod(p, mode); err != nil { // the umask may have taken bits
			return fmt.Errorf("write app: %w", err)
		}
	}
	return nil
}

// Missing fails the test under CI=true (where .ci/run installs every
// package) and skips it loudly elsewhere: name is the program, what the
// file or module that was not found, pkg the Debian package that provides it.
func Missing(t testing.TB, name, what, pkg string) {
	t.Helper()
	msg := fmt.Sprintf("NO %s FOUND (%s): the tests that need %s did NOT run. Install it (Debian: apt-get install %s).",
		strings.ToUpper(name), what, name, pkg)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip("\n\n******** " + msg + " ********\n")
}
