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
//
// pingOneIssuer is the issuer of PingOne's ID tokens: an SSF iss_sub subject
// of that issuer names the PingOne user a step-up was done as.
func signalsHandler(cfg config, rv store.Revoker, m *metrics.Metrics, log *slog.Logger, now func() time.Time, pingOneIssuer string) (http.Handler, error) {
	mux := http.NewServeMux()
	if cfg.SSFIssuer != "" {
		ts, err := ssfTransforms(cfg.SSFUserTransform)
		if err != nil {
			return nil, err
		}
		o := signals.SSFOptions{
			Issuer: cfg.SSFIssuer, Audience: cfg.SSFAudience, JWKSURL: cfg.SSFJWKSURL, Bearer: cfg.SSFBearerToken,
			PingOneIssuer: pingOneIssuer, Transforms: ts, MaxAge: cfg.SSFMaxAge,
			Client: &http.Client{Timeout: 10 * time.Second, Transport: newTransport(nil, 10*time.Second, 2),
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
			Revoker: rv, Logger: log, Now: now,
			Count: func(result string) { m.Signals.WithLabelValues("ssf", result).Inc() },
		}
		// An iss_sub of the identity provider whose JWT names the user by
		// its sub is that user.
		if cfg.Identity == "jwt" && cfg.IdentityClaim == "sub" {
			o.UserIssuer = cfg.IdentityIssuer
		}
		s, err := signals.NewSSF(o)
		if err != nil {
			return nil, err
		}
		mux.Handle("POST /signals/ssf", s)
		log.Info("shared signals receiver on", "path", "/signals/ssf", "issuer", cfg.SSFIssuer)
	}
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
