// Package redistest runs a real redis-server (Debian's package) for tests:
// on a free loopback port, with a temporary directory, no persistence, and
// stopped when the test ends. Without redis-server on PATH a test fails
// under CI=true (.ci/run installs it) and skips loudly elsewhere.
//
// It is for tests only and must never be imported by the program.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stepgate/stepgate/proxy/upstreamtest"
)

// Server is one redis-server process.
type Server struct {
	t    testing.TB
	Addr string // 127.0.0.1:port
	port int
	dir  string
	bin  string
	// TLSAddr and CAFile are set by StartTLS: the TLS port, and a PEM file
	// with the CA that signed the server's certificate (for 127.0.0.1).
	TLSAddr string
	CAFile  string
	tlsPort int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	paused bool
}

// Path finds redis-server (or valkey-server), or fails/skips the test.
func Path(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("STEPGATE_REDIS_SERVER"); p != "" {
		return p
	}
	for _, name := range []string{"redis-server", "valkey-server"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "NO redis-server FOUND: the tests of the Redis store did NOT run. " +
		"Install it (Debian: apt-get install redis-server) or set STEPGATE_REDIS_SERVER."
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip("\n\n******** " + msg + " ********\n")
	return ""
}

// Start runs a redis-server and waits until it answers PING.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, bin: Path(t), dir: t.TempDir()}
	s.port = freePort(t)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	s.start()
	t.Cleanup(s.Kill)
	return s
}

// StartTLS is Start with a TLS port as well, its certificate signed by a
// CA made for the test (CAFile).
func StartTLS(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, bin: Path(t), dir: t.TempDir()}
	s.port, s.tlsPort = freePort(t), freePort(t)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	s.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tlsPort))
	s.CAFile = WriteCerts(t, s.dir)
	s.start()
	t.Cleanup(s.Kill)
	return s
}

// freePort is a port reserved for this test process (upstreamtest.FreePort):
// a server restarted on it must not find another test binary's there.
func freePort(t testing.TB) int {
	p, err := upstreamtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr }

// TLSURL is the server's rediss:// URL (StartTLS only).
func (s *Server) TLSURL() string { return "rediss://" + s.TLSAddr }

func (s *Server) start() {
	s.t.Helper()
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--loglevel", "warning"}
	if s.tlsPort != 0 {
		args = append(args, "--tls-port", strconv.Itoa(s.tlsPort),
			"--tls-cert-file", filepath.Join(s.dir, "server.pem"), "--tls-key-file", filepath.Join(s.dir, "server-key.pem"),
			"--tls-ca-cert-file", s.CAFile, "--tls-auth-clients", "no")
	}
	cmd := exec.Command(s.bin, args...)
	logf, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited, s.paused = cmd, exited, false
	s.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ping(s.Addr) == nil {
			return
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server exited at start (port %d taken?):\n%s", s.port, out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server did not answer PING on %s", s.Addr)
		}
	}
}

// Kill stops the server (SIGKILL, as a crash); its data is gone.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, exited, paused := s.cmd, s.exited, s.paused
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	if paused {
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Restart starts a fresh, empty server on the same port.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// Pause SIGSTOPs the server: connections stay open, nothing answers.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP, true) }

// Resume SIGCONTs a paused server.
func (s *Server) Resume() { s.signal(syscall.SIGCONT, false) }

func (s *Server) signal(sig syscall.Signal, paused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatal("redis-server is not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal redis-server: %v", err)
	}
	s.paused = paused
}

// ping speaks just enough RESP to check the server answers.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("redis answered %q", line)
	}
	return nil
}
