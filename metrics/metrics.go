// Package metrics defines stepgate's Prometheus metrics (docs/design.md §10) on a
// registry the caller owns. Labels carry only small fixed vocabularies
// (decisions, status codes, event names): never a raw path, user or client
// address, so cardinality stays bounded whatever clients send.
package metrics

import (
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every stepgate metric.
type Metrics struct {
	Requests        *prometheus.CounterVec   // decision, code
	RequestDuration *prometheus.HistogramVec // decision
	Challenges      *prometheus.CounterVec   // event: started, completed, failed, expired
	OTPChecks       *prometheus.CounterVec   // result: ok, wrong, error
	PingOneRequests *prometheus.CounterVec   // op, code
	PingOneDuration *prometheus.HistogramVec // op
	RateLimited     *prometheus.CounterVec   // limit
	Approvals       *prometheus.CounterVec   // event: required, approved, forwarded, expired, refused, and the phone's
	// ApprovalsWaiting is the clients waiting (Prefer: wait) on phone approvals.
	ApprovalsWaiting prometheus.Gauge
	// PingOneUnexpected counts flow content stepgate does not know, by
	// what: status, device_type.
	PingOneUnexpected *prometheus.CounterVec
	StoreErrors       *prometheus.CounterVec   // op
	StoreDuration     *prometheus.HistogramVec // op
	ConfigReloads     *prometheus.CounterVec   // result: applied, unchanged, invalid
	// Signals counts events from the identity provider's receivers
	// (docs/signals.md), by receiver (ssf, pingone) and result.
	Signals *prometheus.CounterVec
}

// New registers stepgate's metrics, build info and the Go and process
// collectors on reg.
func New(reg *prometheus.Registry, version string) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepgate_requests_total",
			Help: "Requests handled on the proxy listener, by decision and HTTP status code.",
		}, []string{"decision", "code"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stepgate_request_duration_seconds",
			Help:    "Time to answer a request on the proxy listener, upstream time included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"decision"}),
		Challenges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepgate_challenges_total",
			Help: "Step-up challenges by event: started, completed, failed, expired.",
		}, []string{"event"}),
		OTPChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepgate_otp_checks_total",
			Help: "One-time passcode checks by result: ok, wrong, error.",
		}, []string{"result"}),
		PingOneRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepgate_pingone_requests_total",
			Help: "Calls to PingOne by operation and HTTP status code (0 = no response).",
		}, []string{"op", "code"}),
		PingOneDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stepgate_pingone_request_duration_seconds",
			Help:    "Latency of calls to PingOne by operation.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"op"}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepgate_rate_limited_total",
			Help: "Requests refused by an abuse limit, by limit name.",
		}, []string{"limit"}),
		Approvals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepgate_approvals_total",
			Help: "Approve-rule events: required, approved, forwarded, expired, refused; phone approvals add requested, pushed, code_sent, denied, timed_out, cancelled.",
		}, []string{"event"}),
		ApprovalsWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "stepgate_approvals_waiting",
			Help: "Clients waiting with Prefer: wait on a phone approval (api=decoupled) on this replica.",
		}),
		PingOneUnexpected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepgate_pingone_unexpected_total",
			Help: "PingOne flow content stepgate does not know, by what: status, device_type.",
		}, []string{"what"}),
		StoreErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stepgate_store_errors_total",
			Help: "Failed calls to the shared store (Redis), by operation.",
		}, []string{"op"}),
		StoreDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stepgate_store_duration_seconds",
			Help:    "Latency of calls to the shared store (Redis), by operation.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"op"}),
	}
	m.ConfigReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "stepgate_config_reloads_total",
		Help: "Reloads of rules, cookie keys and admin token (SIGHUP or a file change), by result: applied, unchanged, invalid.",
	}, []string{"result"})
	m.Signals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "stepgate_signals_total",
		Help: "Security events received from an identity provider (shared signals, PingOne webhooks), by receiver and result: revoked, ignored, refused.",
	}, []string{"receiver", "result"})
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "stepgate_build_info",
		Help:        "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(m.Requests, m.RequestDuration, m.Challenges, m.OTPChecks,
		m.PingOneRequests, m.PingOneDuration, m.RateLimited, m.Approvals, m.ApprovalsWaiting, m.PingOneUnexpected,
		m.StoreErrors, m.StoreDuration, m.ConfigReloads, m.Signals, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Pre-create the fixed label values so every family is visible (at
	// zero) from the first scrape, which alerting rules rely on.
	for _, e := range []string{"started", "completed", "failed", "expired"} {
		m.Challenges.WithLabelValues(e)
	}
	for _, r := range []string{"ok", "wrong", "error"} {
		m.OTPChecks.WithLabelValues(r)
	}
	for _, e := range []string{"required", "approved", "forwarded", "expired", "refused"} {
		m.Approvals.WithLabelValues(e)
	}
	for _, r := range []string{"applied", "unchanged", "invalid"} {
		m.ConfigReloads.WithLabelValues(r)
	}
	for _, w := range []string{"status", "device_type"} {
		m.PingOneUnexpected.WithLabelValues(w)
	}
	return m
}

// ObservePingOne records one PingOne call; it matches mfa.Config.Observe.
func (m *Metrics) ObservePingOne(op string, code int, d time.Duration) {
	m.PingOneRequests.WithLabelValues(op, strconv.Itoa(code)).Inc()
	m.PingOneDuration.WithLabelValues(op).Observe(d.Seconds())
}

// ObserveStore records one call to the shared store; it matches
// store.RedisOptions.Observe.
func (m *Metrics) ObserveStore(op string, d time.Duration, err error) {
	m.StoreDuration.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		m.StoreErrors.WithLabelValues(op).Inc()
	}
}
