package proxy

import (
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// clientBodyError marks an error reading the client's request body, so that
// the ReverseProxy error handler can tell a client at fault (a broken
// chunked body, a body shorter than its Content-Length, a body that stops
// arriving) from an upstream at fault: the first is the client's 400 or
// 408, the second the operator's 502.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string { return "client request body: " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }

// timedOut reports whether the body stopped arriving (the idle deadline).
func (e *clientBodyError) timedOut() bool {
	var ne interface{ Timeout() bool }
	return errors.Is(e.err, os.ErrDeadlineExceeded) || (errors.As(e.err, &ne) && ne.Timeout())
}

// clientBody wraps a request body. Each Read gives the client idle more
// time to send the next bytes (a connection read deadline set through
// http.ResponseController), so a body that trickles or stalls cannot hold
// a client and an upstream connection for longer than idle between bytes;
// the whole body may still take as long as it needs. The deadline is on the
// real clock: it is the connection's, not a decision's.
type clientBody struct {
	body io.ReadCloser
	ctl  *http.ResponseController
	idle time.Duration // 0: no idle limit
	done atomic.Bool   // the deadline is lifted for good (Close may run on another goroutine)
	// failed is the first read error. A read error on the connection also
	// cancels the request's context, so the transport may report that
	// instead of the body error it came from.
	failed atomic.Pointer[clientBodyError]
}

// err is the first error reading the body, nil if none.
func (b *clientBody) err() *clientBodyError {
	if b == nil {
		return nil
	}
	return b.failed.Load()
}

// IdleBody is body under the idle limit of a forwarded body (see
// clientBody), for a door that reads a body itself: each read gives the
// sender idle more time (0: no limit), over w's connection.
func IdleBody(body io.ReadCloser, w http.ResponseWriter, idle time.Duration) io.ReadCloser {
	return newClientBody(body, w, idle)
}

func newClientBody(body io.ReadCloser, w http.ResponseWriter, idle time.Duration) *clientBody {
	return &clientBody{body: body, ctl: http.NewResponseController(w), idle: idle}
}

func (b *clientBody) Read(p []byte) (int, error) {
	if b.idle > 0 && !b.done.Load() {
		_ = b.ctl.SetReadDeadline(time.Now().Add(b.idle))
	}
	n, err := b.body.Read(p)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		b.clearDeadline()
	default:
		b.clearDeadline()
		be := &clientBodyError{err: err}
		b.failed.CompareAndSwap(nil, be)
		err = be
	}
	return n, err
}

func (b *clientBody) Close() error {
	b.clearDeadline()
	return b.body.Close()
}

// clearDeadline lifts the idle deadline once the body is over: net/http
// then reads the connection in the background to notice a client that goes
// away, and a deadline left behind would end that read and cancel a
// response still streaming (server-sent events).
func (b *clientBody) clearDeadline() {
	if b.idle > 0 && b.done.CompareAndSwap(false, true) {
		_ = b.ctl.SetReadDeadline(time.Time{})
	}
}
