package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"sync"
	"time"
)

// logFlushInterval bounds how long a log line waits in the buffer.
const logFlushInterval = 100 * time.Millisecond

// logBuffer batches access-log lines on their way to stdout. With one such
// line per request, one write(2) to the container runtime's pipe per line
// was the largest single cost stepgate added to a proxied request (bench/);
// batching makes it one write per 64 KiB or per logFlushInterval.
//
// Only access lines wait: any other line (audit events, warnings, errors)
// flushes the buffer at once, itself and every line before it, so security
// events are never delayed and order is kept. Lines are never interleaved
// (every Write holds the lock), Close flushes, so a graceful shutdown loses
// nothing; a crash can lose at most logFlushInterval of access lines.
type logBuffer struct {
	mu   sync.Mutex
	w    *bufio.Writer
	stop context.CancelFunc
	done chan struct{}
}

// bufferLogs returns w wrapped in a logBuffer when w is a file or pipe (the
// process's stdout); other writers (tests' buffers) are only serialised,
// with a no-op close, so that what was logged is readable at once. Either
// way one Write is one whole line: slog's handler and the gateway's access
// log write to it side by side.
func bufferLogs(w io.Writer) (io.Writer, func()) {
	if _, ok := w.(*os.File); !ok {
		return &lockedWriter{w: w}, func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &logBuffer{w: bufio.NewWriterSize(w, 64<<10), stop: cancel, done: make(chan struct{})}
	go b.flushEvery(ctx, logFlushInterval)
	return b, b.Close
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.w.Write(p)
	if err == nil && !isAccessLine(p) {
		err = b.w.Flush()
	}
	return n, err
}

// accessMsg is how the gateway's per-request line starts, after the time and
// level keys that slog's JSON handler writes first.
var accessMsg = []byte(`,"msg":"request",`)

func isAccessLine(p []byte) bool {
	return bytes.Contains(p[:min(len(p), 96)], accessMsg)
}

func (b *logBuffer) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	_ = b.w.Flush()
}

func (b *logBuffer) flushEvery(ctx context.Context, d time.Duration) {
	defer close(b.done)
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			b.flush()
			return
		case <-t.C:
			b.flush()
		}
	}
}

// lockedWriter serialises Writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Close stops the flusher and writes out what is buffered.
func (b *logBuffer) Close() {
	b.stop()
	<-b.done
}
