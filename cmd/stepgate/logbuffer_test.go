package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBufferLogsLeavesNonFileWritersUnbuffered(t *testing.T) {
	var buf bytes.Buffer
	w, closeFn := bufferLogs(&buf)
	defer closeFn()
	fmt.Fprintln(w, "line")
	if got := buf.String(); got != "line\n" {
		t.Errorf("buffer holds %q right after the write, want %q", got, "line\n")
	}
}

func TestBufferLogsKeepsEveryLineWholeAndInOrderPerWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, closeFn := bufferLogs(f)
	const writers, lines = 8, 2000
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				// Long lines cross the 64 KiB buffer boundary often.
				fmt.Fprintf(w, "{\"writer\":%d,\"n\":%d,\"pad\":%q}\n", g, i, strings.Repeat("x", 200))
			}
		}()
	}
	wg.Wait()
	closeFn() // as serve does on shutdown: nothing may be left behind
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	sc := bufio.NewScanner(bytes.NewReader(b))
	n := 0
	for sc.Scan() {
		var g, i int
		if _, err := fmt.Sscanf(sc.Text(), "{\"writer\":%d,\"n\":%d,", &g, &i); err != nil || !strings.HasSuffix(sc.Text(), "x\"}") {
			t.Fatalf("line %d is not whole: %.80q", n, sc.Text())
		}
		if i != next[g] {
			t.Fatalf("writer %d: got line %d, want %d", g, i, next[g])
		}
		next[g]++
		n++
	}
	if n != writers*lines {
		t.Errorf("got %d lines after close, want %d", n, writers*lines)
	}
}

func TestBufferLogsFlushesAnIdleLineWithoutClose(t *testing.T) {
	r, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer pw.Close()
	w, closeFn := bufferLogs(pw)
	defer closeFn()
	fmt.Fprintln(w, "lonely line")
	// The read blocks until the flusher writes; the deadline only turns a
	// missing flush into a failure instead of a hang.
	if err := r.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil || line != "lonely line\n" {
		t.Errorf("read %q, %v from the pipe; want the line, flushed within %v", line, err, logFlushInterval)
	}
}

func TestBufferLogsWritesNonAccessLinesAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, closeFn := bufferLogs(f)
	defer closeFn()
	access := `{"time":"2026-11-21T09:00:00.123456789Z","level":"INFO","msg":"request","method":"GET"}` + "\n"
	audit := `{"time":"2026-11-21T09:00:00.223456789Z","level":"INFO","msg":"audit","event":"mfa.started"}` + "\n"
	fmt.Fprint(w, access)
	fmt.Fprint(w, audit)
	// No Close and no wait: the audit line must already be in the file,
	// and the access line before it, in order.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), access+audit; got != want {
		t.Errorf("file holds %q right after an audit line, want %q", got, want)
	}
}

func TestIsAccessLineMatchesTheGatewaysRequestLine(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.LogAttrs(context.Background(), slog.LevelInfo, "request", slog.String("path", "/x"))
	if !isAccessLine(buf.Bytes()) {
		t.Errorf("isAccessLine(%q) = false, want true", buf.String())
	}
	buf.Reset()
	log.Info("audit", "event", "request")
	if isAccessLine(buf.Bytes()) {
		t.Errorf("isAccessLine(%q) = true, want false", buf.String())
	}
}
