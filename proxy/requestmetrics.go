package proxy

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepgate/stepgate/metrics"
)

// decisions are every decision label the gateway uses, in index order.
var decisions = [...]string{
	decisionAllow, decisionDeny, decisionStepUp, decisionRequired,
	decisionRejected, decisionNoIdent, decisionInternal,
}

func decisionIndex(d string) int {
	for i, s := range decisions {
		if s == d {
			return i
		}
	}
	return -1
}

// requestMetrics records stepgate_requests_total and
// stepgate_request_duration_seconds for one request. The label children are
// looked up once and kept: WithLabelValues hashes its labels and takes a
// lock, on every request, for the same few dozen series.
type requestMetrics struct {
	m        *metrics.Metrics
	duration [len(decisions)]prometheus.Observer
	counts   [len(decisions)][len(statusLabels)]atomic.Pointer[prometheus.Counter]
}

func newRequestMetrics(m *metrics.Metrics) *requestMetrics {
	rm := &requestMetrics{m: m}
	for i, d := range decisions {
		rm.duration[i] = m.RequestDuration.WithLabelValues(d)
	}
	return rm
}

func (rm *requestMetrics) observe(decision string, code int, d time.Duration) {
	i := decisionIndex(decision)
	if i < 0 || code < 0 || code >= len(statusLabels) {
		rm.m.Requests.WithLabelValues(decision, statusLabel(code)).Inc()
		rm.m.RequestDuration.WithLabelValues(decision).Observe(d.Seconds())
		return
	}
	slot := &rm.counts[i][code]
	c := slot.Load()
	if c == nil {
		// Two requests may both get here; WithLabelValues returns the same
		// child to both, so either store is right.
		child := rm.m.Requests.WithLabelValues(decision, statusLabels[code])
		c = &child
		slot.Store(c)
	}
	(*c).Inc()
	rm.duration[i].Observe(d.Seconds())
}
