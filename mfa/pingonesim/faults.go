package pingonesim

import (
	"net/http"
	"strconv"
	"time"
)

// Fault makes the PingOne surface misbehave, for tests of the client's
// resilience. Faults never touch /_sim/.
type Fault struct {
	Op         string        // "" = every op; else authorize, flows, resume, token, jwks, discovery
	Kind       string        // latency | status | rate_limit | malformed | drop
	Latency    time.Duration // for latency (waits on the real clock or until the request ctx ends)
	Status     int           // for status (default 503)
	RetryAfter int           // seconds, for rate_limit (default 1)
	Count      int           // how many requests it affects; 0 = until cleared
}

// SetFault adds the fault, replacing any fault for the same Op.
func (s *Server) SetFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[f.Op] = &f
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.faults)
}

// takeFault returns the fault that applies to op (its own before the
// catch-all), consuming one use of a counted fault.
func (s *Server) takeFault(op string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, key := range []string{op, ""} {
		f := s.faults[key]
		if f == nil {
			continue
		}
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				delete(s.faults, key)
			}
		}
		return *f, true
	}
	return Fault{}, false
}

// applyFault injects a fault for op, if any. It reports whether the request
// should still be served normally.
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, op string) bool {
	f, ok := s.takeFault(op)
	if !ok {
		return true
	}
	s.log.Info("pingonesim: fault", "op", op, "kind", f.Kind)
	switch f.Kind {
	case "latency":
		// The real clock on purpose: latency is about the client's timeouts,
		// which run on real time.
		t := time.NewTimer(f.Latency)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-r.Context().Done():
			return false
		}
	case "status":
		st := f.Status
		if st == 0 {
			st = http.StatusServiceUnavailable
		}
		code := codeRequestFailed
		if st >= 500 {
			code = codeUnexpectedError
		}
		writeError(w, st, code, "Injected fault: "+http.StatusText(st))
	case "rate_limit":
		ra := f.RetryAfter
		if ra <= 0 {
			ra = 1
		}
		w.Header().Set("Retry-After", strconv.Itoa(ra))
		writeError(w, http.StatusTooManyRequests, codeRequestLimited, "The request was rate limited.")
	case "malformed":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"id":"` + newUUID() + `","status":"OTP_REQ`))
	case "drop":
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = conn.Close()
			return false
		}
		// HTTP/2 cannot hijack; aborting the handler resets the stream.
		panic(http.ErrAbortHandler)
	default:
		return true
	}
	return false
}
