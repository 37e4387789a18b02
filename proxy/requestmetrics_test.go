package proxy

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepgate/stepgate/metrics"
)

// series reads every sample of the named family as "label=value,..." → value
// (counters) or sample count (histograms).
func series(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + ","
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func TestRequestMetricsCountEveryRequestUnderTheRightLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	rm := newRequestMetrics(metrics.New(reg, "test"))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { // the first observers of a series race to cache it
			defer wg.Done()
			for range 500 {
				rm.observe(decisionStepUp, 200, time.Millisecond)
			}
		}()
	}
	wg.Wait()
	rm.observe(decisionAllow, 499, time.Millisecond)
	rm.observe(decisionAllow, 200, 3*time.Second)
	rm.observe(decisionDeny, 1000, time.Millisecond) // no such status: "other"

	want := map[string]float64{
		"code=200,decision=stepped_up,": 4000,
		"code=499,decision=allow,":      1,
		"code=200,decision=allow,":      1,
		"code=other,decision=deny,":     1,
	}
	got := series(t, reg, "stepgate_requests_total")
	for k, v := range want {
		if got[k] != v {
			t.Errorf("stepgate_requests_total{%s} = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("series = %v, want exactly %v", got, want)
	}
	dur := series(t, reg, "stepgate_request_duration_seconds")
	if dur["decision=stepped_up,"] != 4000 || dur["decision=allow,"] != 2 || dur["decision=deny,"] != 1 {
		t.Errorf("duration sample counts = %v", dur)
	}
}
