package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// syscallsPerRequest counts, with strace -c, the system calls process pid
// makes (all threads) while n requests of t run, divided by n. It backs the
// instruction counts' premise that every subject leaves the kernel the same
// work per request.
func syscallsPerRequest(pid int, t instrTarget, n int) (float64, error) {
	dir, err := os.MkdirTemp("", "stepgate-strace-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "summary")
	cmd := exec.Command("strace", "-c", "-f", "-p", strconv.Itoa(pid), "-o", out)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("strace: %w", err)
	}
	// strace says "Process N attached with M threads" once every thread is
	// traced; requests sent before that would not be counted.
	sc := bufio.NewScanner(stderr)
	attached := false
	for !attached && sc.Scan() {
		attached = strings.Contains(sc.Text(), "attached")
	}
	if !attached {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return 0, errors.New("strace did not attach (ptrace not permitted here?)")
	}
	go func() {
		for sc.Scan() { // keep draining: strace blocks on a full pipe
		}
	}()
	runErr := drive(t, n)
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil && !strings.Contains(err.Error(), "interrupt") {
		return 0, fmt.Errorf("strace: %w", err)
	}
	if runErr != nil {
		return 0, runErr
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return 0, err
	}
	// The summary's last line: "100.00  <seconds> <usecs/call> <calls> <errors> total".
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[len(f)-1] == "total" {
			calls, err := strconv.Atoi(f[3])
			if err != nil {
				return 0, fmt.Errorf("strace summary %q: %w", line, err)
			}
			return float64(calls) / float64(n), nil
		}
	}
	return 0, fmt.Errorf("no total in the strace summary:\n%s", b)
}
