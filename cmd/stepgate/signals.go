package main

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/signals"
	"github.com/stepgate/stepgate/store"
)

// signalsHandler is the STEPGATE_SIGNALS_LISTEN listener (docs/signals.md):
// the identity provider's receivers and nothing else, so that this one
// listener can be exposed to the provider while the admin listener (metrics,
// pprof, /revoke) stays private and the application's origin serves no
// stepgate endpoint a provider would call.
func signalsHandler(cfg config, rv store.Revoker, m *metrics.Metrics, log *slog.Logger, now func() time.Time) (http.Handler, error) {
	mux := http.NewServeMux()
	if cfg.PingOneWebhookSecret != "" {
		var actions []string
		for _, a := range strings.Split(cfg.PingOneWebhookActions, ",") {
			actions = append(actions, strings.TrimSpace(a))
		}
		p, err := signals.NewPingOne(signals.PingOneOptions{
			Header: cfg.PingOneWebhookHeader, Secret: cfg.PingOneWebhookSecret, Actions: actions,
			Revoker: rv, Logger: log, Now: now,
			Count: func(result string) { m.Signals.WithLabelValues("pingone", result).Inc() },
		})
		if err != nil {
			return nil, err
		}
		mux.Handle("POST /signals/pingone", p)
		log.Info("pingone webhook receiver on", "path", "/signals/pingone", "actions", actions)
	}
	return mux, nil
}
