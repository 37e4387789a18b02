package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/mfa"
	"github.com/stepgate/stepgate/mfa/jwks"
	"github.com/stepgate/stepgate/proxy"
	"github.com/stepgate/stepgate/proxy/approve"
	"github.com/stepgate/stepgate/proxy/authzgrpc"
	"github.com/stepgate/stepgate/proxy/challenge"
	"github.com/stepgate/stepgate/proxy/decoupled"
	"github.com/stepgate/stepgate/proxy/extauthz"
	"github.com/stepgate/stepgate/proxy/forwardauth"
	"github.com/stepgate/stepgate/proxy/identity"
	"github.com/stepgate/stepgate/proxy/ratelimit"
	"github.com/stepgate/stepgate/proxy/reqpath"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/session"
	"github.com/stepgate/stepgate/store"
	"github.com/stepgate/stepgate/tracing"
)

// run is the whole program; main only calls it. Tests call it with their
// own environment, arguments and a context they cancel (standing in for
// SIGTERM). environ is os.Environ's list, not a getenv function: a
// STEPGATE_ name stepgate does not know must be found to be reported.
func run(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "demo":
			return runDemo(ctx, args[1:], stdout, stderr)
		case "simulate":
			return runSimulate(ctx, args[1:], stdout, stderr)
		case "approve-call":
			return runApproveCall(ctx, args[1:], os.Stdin, stdout, stderr)
		case "version":
			if len(args) > 1 {
				return fmt.Errorf("version takes no arguments, got %q", args[1])
			}
			printVersion(stdout, currentVersion())
			return nil
		}
	}
	fs := flag.NewFlagSet("stepgate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	checkConfig := fs.Bool("check-config", false, "validate the configuration, print the effective rules and identity mapping, and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // asked for help: the usage is printed, and that is success
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unknown argument %q (commands: demo, simulate, approve-call, version)", fs.Arg(0))
	}
	if *showVersion {
		printVersion(stdout, currentVersion())
		return nil
	}
	getenv := lookupEnv(environ)
	cfg, loadErr := loadConfig(environ)
	s, err := cfg.validate(os.ReadFile)
	if err := mergeProblems(loadErr, err); err != nil {
		if !slices.ContainsFunc(environ, func(kv string) bool { return strings.HasPrefix(kv, envPrefix) }) {
			return fmt.Errorf("%w\nno configuration found: stepgate is configured by STEPGATE_* environment variables (docs/configuration.md).\n"+
				"To try it without PingOne or an IdP, run: stepgate demo", err)
		}
		return err
	}
	if *checkConfig {
		issuer := s.authBase + "/" + cfg.PingOneEnvID + "/as"
		if cfg.PingOneCustomDomain {
			issuer = s.authBase + "/as"
		}
		upstream := "none (the front proxy forwards)"
		if s.upstream != nil {
			upstream = s.upstream.Redacted()
		}
		fmt.Fprintf(stdout, "configuration ok\nupstream: %s\nfront doors: %s\npingone: %s\n",
			upstream, cfg.describeDoors(s), issuer)
		// The order rules.Set.Match tries them in: the longest path, then a
		// rule that names methods before one that does not.
		fmt.Fprintln(stdout, "rules (the longest matching path wins; on one path, a rule naming the method before one naming none):")
		approves := 0
		for _, r := range s.rules.Rules() {
			fmt.Fprintf(stdout, "  %s\n", r)
			if r.Action == rules.Approve {
				approves++
			}
		}
		if len(s.rules.Rules()) == 0 {
			fmt.Fprintln(stdout, "  (none)")
		}
		fmt.Fprintf(stdout, "default action (where no rule matches): %s (STEPGATE_DEFAULT_ACTION)\n",
			strings.TrimPrefix(s.rules.Default().String(), "default "))
		if protectsNothing(s.rules) {
			fmt.Fprintln(stdout, "warning: nothing is protected: every request is allowed (STEPGATE_ALLOW_UNPROTECTED=true)")
		}
		if approves > 0 {
			fmt.Fprintf(stdout, "approve rules: %d; held request bodies up to %d bytes\n", approves, cfg.ApproveMaxBody)
		}
		fmt.Fprintf(stdout, "identity: %s\n", cfg.describeIdentity())
		fmt.Fprintf(stdout, "pingone user: %s\n", cfg.describeMapping(s.mapping))
		printStore(stdout, cfg, s, getenv)
		if s.tracesOn {
			fmt.Fprintf(stdout, "traces: otlp %s to %s, service %s (users in spans: %s)\n", s.traces.Protocol, s.traces.Endpoint, s.traces.ServiceName, cfg.TraceUser)
		} else {
			fmt.Fprintln(stdout, "traces: off (no OTLP exporter configured by OTEL_*)")
		}
		return nil
	}
	// SIGHUP reloads the rules, cookie keys and admin token (reload.go).
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	defer signal.Stop(sig)
	hup := make(chan struct{})
	go func() {
		for range sig {
			select {
			case hup <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return serve(ctx, cfg, s, stdout, &serveOptions{environ: environ, hup: hup}, time.Now)
}

// usage is the top of `stepgate -h`.
const usage = `stepgate: step-up MFA through PingOne in front of a web application.

Usage:
  stepgate                 serve, configured by STEPGATE_* environment variables (docs/configuration.md)
  stepgate -check-config   validate the configuration, explain it, and exit
  stepgate version         print the version, VCS revision, commit time and Go version
                           (stepgate -version does the same)
  stepgate demo [flags]    run a complete demo on loopback (simulator, IdP, app, stepgate);
                           flags -idp-addr -sim-addr -app-addr -proxy-addr -admin-addr -log-level
  stepgate approve-call [-H 'Name: value'] [-d BODY] METHOD URL
                           send a request to an approve rule with api=decoupled, wait for its
                           approval on the phone (asking for a code if needed), print the answer
  stepgate simulate [-addr 127.0.0.1:8081]
                           run the PingOne simulator alone with the demo tenant

Flags:
`

// Page-load flow reads allowed per minute (burst the same): see
// challenge.Limits.ReadPerFlow. One user can so spend at most
// pageReadsPerUser of the PingOne cap in a burst, then one call every 2 s.
const (
	pageReadsPerFlow = 20
	pageReadsPerUser = 30
)

// gateway is a built, not yet serving, stepgate.
type gateway struct {
	proxy http.Handler
	authz *authzgrpc.Server // ext_authz over gRPC; nil unless STEPGATE_AUTHZ_GRPC_LISTEN
	admin http.Handler
	// signals serves the identity provider's events (signals.go); nil
	// unless STEPGATE_SIGNALS_LISTEN.
	signals http.Handler
	client  *mfa.Client
	idKeys  *jwks.Cache // upstream IdP keys, jwt identity only
	// approvals holds requests awaiting approval and single-use approvals
	// (docs/design.md §14), in the store STEPGATE_STORE chose.
	approvals store.Approvals
	stores    *stores
	// phone answers api=decoupled approve rules; nil without one.
	phone    *decoupled.Service
	draining atomic.Bool
	log      *slog.Logger
	metrics  *metrics.Metrics

	// What a reload replaces (reload.go).
	rules      *rules.Live
	cookies    *session.Store
	digests    *approve.Gate
	adminToken *adminToken
	gw         *proxy.Gateway
}

// apply puts a reloaded configuration's rules, cookie keys and admin token
// in force (docs/design.md §9.1). Everything is checked before anything is
// swapped, so a refusal changes nothing.
func (g *gateway) apply(c config, s settings) error {
	if err := g.gw.CanServe(s.rules); err != nil {
		return err
	}
	if err := g.cookies.SetKeys(s.cookieKeys); err != nil {
		return fmt.Errorf("STEPGATE_COOKIE_KEYS: %w", err)
	}
	g.digests.SetKeys(approvalDigestKeys(s.cookieKeys))
	g.rules.Store(s.rules)
	g.adminToken.set(c.AdminToken)
	return nil
}

// build wires every piece from validated settings.
// build wires the gateway. access receives the per-request access lines
// (nil: none); it must serialise writes with log's handler.
func build(cfg config, s settings, log *slog.Logger, access io.Writer, reg *prometheus.Registry, now func() time.Time, tracer trace.Tracer) (*gateway, error) {
	m := metrics.New(reg, currentVersion().Version)
	g := &gateway{log: log, metrics: m, rules: rules.NewLive(s.rules), adminToken: &adminToken{}}
	g.adminToken.set(cfg.AdminToken)
	st, err := newStores(cfg, s, m, log, now, tracer)
	if err != nil {
		return nil, err
	}
	g.stores, g.approvals = st, st.approvals

	pingoneHTTP := &http.Client{
		Timeout:   cfg.PingOneTimeout,
		Transport: newTransport(nil, cfg.PingOneTimeout, 16),
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	client, err := mfa.New(mfa.Config{
		AuthBase:     s.authBase,
		EnvID:        cfg.PingOneEnvID,
		CustomDomain: cfg.PingOneCustomDomain,
		ClientID:     cfg.PingOneClientID,
		ClientSecret: mfa.Secret(cfg.PingOneClientSecret),
		RequestKey:   s.requestKey,
		Scopes:       cfg.PingOneScopes,
		ResponseType: cfg.PingOneResponseType,
		Timeout:      cfg.PingOneTimeout,
		HTTPClient:   pingoneHTTP,
		Now:          now,
		Logger:       log,
		Limiter:      st.pingOneCap(cfg.PingOneRateLimit, int(2*cfg.PingOneRateLimit)+1),
		Observe:      m.ObservePingOne,
		Tracer:       tracer,
	})
	if err != nil {
		return nil, fmt.Errorf("pingone client: %w", err)
	}
	g.client = client

	store, err := session.NewStore(session.Options{
		Keys: s.cookieKeys, CookieName: s.cookieName, Secure: cfg.CookieSecure, Now: now,
	})
	if err != nil {
		return nil, fmt.Errorf("session store: %w", err)
	}

	var ident identity.Source
	switch cfg.Identity {
	case "jwt":
		g.idKeys = jwks.New(jwks.Options{URL: cfg.IdentityJWKSURL, Client: pingoneHTTP, Now: now})
		ident, err = identity.NewJWT(identity.JWTOptions{
			Header: cfg.IdentityJWTHeader, Issuer: cfg.IdentityIssuer, Audience: cfg.IdentityAudience,
			Claim: cfg.IdentityClaim, Keyfunc: g.idKeys.Keyfunc, Now: now, AnyPeer: cfg.IdentityJWTAnyPeer,
		})
		if err != nil {
			return nil, fmt.Errorf("identity: %w", err)
		}
	default:
		ident = identity.NewHeader(cfg.IdentityHeader)
	}

	mo := s.mapping
	mo.Source = ident
	mo.UpstreamSource = "header " + http.CanonicalHeaderKey(cfg.IdentityHeader)
	if cfg.Identity == "jwt" {
		mo.UpstreamSource = "claim " + cfg.IdentityClaim
	}
	mapping, err := identity.NewMapping(mo)
	if err != nil {
		return nil, fmt.Errorf("STEPGATE_PINGONE_USER_FROM: %w", err)
	}

	pages, err := challenge.NewPages(cfg.TemplatesDir)
	if err != nil {
		return nil, err
	}
	pages.AppName = cfg.AppName
	if pages.AppName == "" && s.upstream != nil {
		// A host name says which application; a sidecar's loopback
		// address or "localhost" says nothing to the user, nor should an
		// internal IP address appear on the page.
		if h := s.upstream.Hostname(); h != "localhost" && net.ParseIP(h) == nil {
			pages.AppName = h
		}
	}
	// Each remembered key costs ~390 B; five limiters of 20k keys stay
	// under ~40 MB at worst, inside a sidecar's memory limit. Eviction is
	// least-recently-used, so an attacker rotating keys only evicts
	// themselves and idle users (the per-user limit still binds a user).
	const maxKeys = 20_000
	limiter := func(name string, n int, per time.Duration) challenge.Limiter {
		l, b := ratelimit.Every(n, per)
		return st.limiter(name, n, per, ratelimit.New(ratelimit.Options{Limit: l, Burst: b, MaxKeys: maxKeys, Now: now}))
	}
	ruleFor := func(method, ret string) rules.Rule {
		if method == "" {
			method = http.MethodGet
		}
		if i := strings.IndexByte(ret, '?'); i >= 0 {
			ret = ret[:i]
		}
		set := g.rules.Load()
		p, err := reqpath.Parse(method, ret)
		if err != nil {
			return set.Match(method, "/")
		}
		return set.Match(method, p.Match)
	}
	// Held requests and approvals (approve rules): in this process,
	// bounded; see the store package.
	approvals := approve.New(g.approvals, approvalDigestKeys(s.cookieKeys), cfg.ApproveMaxBody, now)
	g.cookies, g.digests = store, approvals
	revocations := revocationCheck{st.view}
	// A revocation ends the user's held requests too, not only step-ups.
	approvals.SetRevoked(func(user, subject string, at time.Time) bool {
		return st.view.Revoked(user, "", at) || subject != "" && st.view.RevokedSubject(subject, at)
	})
	// A user's budgets are one each, whether spent on the challenge page
	// or on the phone flow: built once and handed to both (in memory,
	// limiter builds a new bucket set on every call).
	startPerUser := limiter("start_user", cfg.LimitStartsPerUser, cfg.LimitWindow)
	sendPerUser := limiter("send_user", cfg.LimitSendsPerUser, cfg.LimitWindow)
	otpPerUser := limiter("otp_user", cfg.LimitOTPPerUser, cfg.LimitWindow)
	chal, err := challenge.New(challenge.Config{
		PingOne:   client,
		Store:     store,
		Approvals: approvals,
		RuleFor:   ruleFor,
		Limits: challenge.Limits{
			StartPerUser: startPerUser,
			StartPerIP:   limiter("start_ip", cfg.LimitStartsPerIP, cfg.LimitWindow),
			OTPPerUser:   otpPerUser,
			// Polls stay per replica: they only pace one browser's page.
			PollPerFlow: ratelimit.New(ratelimit.Options{Limit: 1, Burst: 3, MaxKeys: maxKeys, Now: now}),
			SendPerUser: sendPerUser,
			// Page loads of a pending flow: a person needs a handful per
			// flow (one after each action, a no-JS push page every 4 s).
			ReadPerFlow: limiter("read_flow", pageReadsPerFlow, time.Minute),
			ReadPerUser: limiter("read_user", pageReadsPerUser, time.Minute),
		},
		Mapping:      mapping,
		MappingCheck: mappingVars,
		Revoke:       st.logoutRevoker(store, log),
		StoreDown:    st.down,
		AllowBypass:  cfg.AllowMFABypass,
		Verified: func(r *http.Request, user, method, ret string) bool {
			su, ok := store.StepUp(r)
			return ok && !revocations.Revoked(su) && proxy.Fresh(su, user, ruleFor(method, ret), now())
		},
		SignInURL: cfg.IdPSignInURL,
		Pages:     pages,
		Logger:    log,
		Metrics:   m,
		Now:       now,
	})
	if err != nil {
		return nil, err
	}

	// Phone approvals (approve rules with api=decoupled, docs/design.md
	// §18): the flow is driven here, its state sealed in the store beside
	// the held request, so a poll on any replica sharing it answers.
	var phone *decoupled.Service
	if decoupledRules(s) > 0 {
		phone, err = decoupled.New(decoupled.Config{
			PingOne: client,
			Gate:    approvals,
			Mapping: mapping,
			Limits: decoupled.Limits{
				StartPerUser: startPerUser,
				SendPerUser:  sendPerUser,
				OTPPerUser:   otpPerUser,
				// A client polls every Retry-After (2 s); a burst of 10
				// leaves room for retries, and every replica counts
				// against one bucket with Redis.
				PollPerApproval: limiter("poll_approval", 10, 20*time.Second),
			},
			StoreDown:   st.down,
			AllowBypass: cfg.AllowMFABypass,
			RuleFor:     ruleFor,
			MaxWait:     cfg.ApproveWaitMax,
			MaxWaiters:  cfg.ApproveWaiters,
			Logger:      log,
			Metrics:     m,
			Now:         now,
		})
		if err != nil {
			return nil, err
		}
		g.phone = phone
	}

	var upstreamTLS *tls.Config
	if cfg.UpstreamCAFile != "" {
		pem, err := os.ReadFile(cfg.UpstreamCAFile)
		if err != nil {
			return nil, fmt.Errorf("STEPGATE_UPSTREAM_CA_FILE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("STEPGATE_UPSTREAM_CA_FILE: no certificate found")
		}
		upstreamTLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	gw, err := proxy.New(proxy.Config{
		Upstream:     s.upstream,
		UpstreamHost: cfg.UpstreamHost,
		PreserveHost: cfg.PreserveHost,
		Transport:    newTransport(upstreamTLS, cfg.UpstreamTimeout, 512),
		LiveRules:    g.rules,
		ClientIP:     s.trusted,
		Identity:     ident,
		StepUps:      store,
		Revocations:  revocations,
		Challenge:    chal,
		Approvals:    approvals,
		Decoupled: func() proxy.Decoupled {
			if phone == nil {
				return nil
			}
			return phone
		}(),
		// A person approves a few actions a minute; twice the start limit
		// per window leaves room for retries and bounds what one user can
		// hold in the store.
		ApproveHoldLimit: limiter("hold_user", 2*cfg.LimitStartsPerUser, cfg.LimitWindow),
		IDTokenHeader:    cfg.IDTokenHeader,
		IdentityHeader: func() string {
			if cfg.Identity == "header" {
				return cfg.IdentityHeader
			}
			return ""
		}(),
		PingOneUserHeader: mapping.Header(),
		PassIdentityHeaders: func() []string {
			if cfg.Identity == "jwt" {
				// The JWT is read after the identity families are removed.
				return append(slices.Clone(s.passIdentity), cfg.IdentityJWTHeader)
			}
			return s.passIdentity
		}(),
		CaseInsensitivePaths:  cfg.CaseInsensitive,
		Doors:                 s.doors,
		BodyIdleTimeout:       cfg.BodyIdleTimeout,
		MethodOverride:        proxy.MethodOverride(cfg.MethodOverride),
		MethodOverrideMaxBody: cfg.ApproveMaxBody,
		ResponseHeaderTimeout: cfg.UpstreamTimeout,
		AccessLog:             access,
		Logger:                log,
		Metrics:               m,
		Now:                   now,
		Tracer:                tracer,
		TraceUser:             s.traceUser,
		// FlushInterval stays 0: ReverseProxy already flushes every write
		// of a response without Content-Length or of text/event-stream;
		// -1 would also flush (and arm a timer for) every sized response.
	})
	if err != nil {
		return nil, err
	}
	// The front doors besides the proxy: adapters over gw's decision
	// (docs/design.md §16).
	var doors []proxy.Door
	if s.doors.ForwardAuth {
		doors = append(doors, forwardauth.New(gw))
	}
	if s.doors.ExtAuthz {
		doors = append(doors, extauthz.New(extauthz.Config{
			Checker:         gw,
			ClientIP:        s.trusted,
			WithBody:        s.doors.ExtAuthzBody,
			MaxBody:         approvals.MaxBody(),
			BodyIdleTimeout: cfg.BodyIdleTimeout,
		}))
	}
	g.proxy, g.gw = gw.WithDoors(doors...), gw
	if cfg.AuthzGRPCListen != "" {
		g.authz = authzgrpc.New(gw.Recorded(), s.doors.ExtAuthzBody)
		g.authz.TraceContext = tracer != nil
	}

	admin := http.NewServeMux()
	admin.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	admin.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	admin.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if reason := g.notReady(); reason != "" {
			http.Error(w, "not ready: "+reason+"\n"+st.status(), http.StatusServiceUnavailable)
			return
		}
		// A store outage does not make a replica unready: every replica
		// shares it, and allow paths and (within the staleness bound)
		// stepped-up users still work. The body says what is refused.
		_, _ = io.WriteString(w, "ready\n"+st.status()+"\n")
	})
	if s.requestKey != nil {
		admin.Handle("GET /jwks.json", requestKeyJWKS(s.requestKey, log))
	}
	// A reload may set or change the token (STEPGATE_ADMIN_TOKEN_FILE): the
	// endpoint answers 404 while there is none.
	admin.Handle("POST /revoke", revokeHandler(g.adminToken, st.revoker, log))
	if cfg.Pprof {
		admin.HandleFunc("GET /debug/pprof/", pprof.Index)
		admin.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		admin.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		admin.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		admin.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	g.admin = admin
	if cfg.SignalsListen != "" {
		if g.signals, err = signalsHandler(cfg, st.revoker, m, log, now, client.Issuer()); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// requestKeyJWKS serves the public key of the request-object key, for the
// PingOne application's jwksUrl (docs/pingone-setup.md, "PingOne request object").
func requestKeyJWKS(k *mfa.RequestKey, log *slog.Logger) http.Handler {
	log.Info("request object signed with own key", "alg", k.Alg(), "kid", k.KeyID(), "jwks_path", "/jwks.json")
	if k.Alg() != "RS256" {
		log.Warn("PingOne documents only HS256/384/512 and RS256/384/512 request objects; " +
			k.Alg() + " is unverified, use an RSA key if PingOne refuses it")
	}
	body := k.JWKS()
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(body)
	})
}

func (g *gateway) notReady() string {
	switch {
	case g.draining.Load():
		return "shutting down"
	case !g.client.Ready():
		return "pingone signing keys not loaded"
	case g.idKeys != nil && !g.idKeys.Ready():
		return "identity provider keys not loaded"
	case !g.stores.reached():
		return "store not reached since start"
	}
	return ""
}

// loadKeys fetches the signing keys until they load or ctx ends, backing off.
func (g *gateway) loadKeys(ctx context.Context) {
	delay := time.Second
	for {
		err := g.client.LoadKeys(ctx)
		if err == nil && g.idKeys != nil {
			err = g.idKeys.Refresh(ctx)
		}
		if err == nil {
			g.log.Info("signing keys loaded")
			return
		}
		g.log.Warn("signing keys not loaded yet", "error", err.Error(), "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
}

// newTransport is tuned for one busy upstream: Go's default keeps two idle
// connections per host, which under load churns connections into TIME_WAIT.
func newTransport(tlsConfig *tls.Config, responseTimeout time.Duration, idle int) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: responseTimeout,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          idle * 2,
		MaxIdleConnsPerHost:   idle,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     tlsConfig != nil,
	}
}

// listeners can be handed in by tests and demo mode; nil means listen on the
// configured addresses.
type listeners struct {
	proxy, admin, authz, signals net.Listener
}

// serveOptions are what run, the demo and tests give serve besides the
// configuration. The zero value listens on the configured addresses and
// never reloads.
type serveOptions struct {
	listeners
	// environ is the environment the configuration was read from: a
	// reload reads it again (nil: no reloads).
	environ []string
	// hup asks for a reload, as SIGHUP does.
	hup <-chan struct{}
	// poll, for tests, replaces the STEPGATE_RELOAD_INTERVAL ticker.
	poll <-chan time.Time
	// reloaded, for tests, is told every reload's outcome.
	reloaded func(reloadResult)
}

// serve runs the proxy and admin listeners until ctx ends, then drains and
// shuts down gracefully (docs/design.md §10).
func serve(ctx context.Context, cfg config, s settings, stdout io.Writer, o *serveOptions, now func() time.Time) error {
	level, _ := parseLevel(cfg.LogLevel)
	stdout, flushLogs := bufferLogs(stdout)
	defer flushLogs()
	audit := auditHandler{Handler: slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level})}
	if cfg.AuditFormat == "ocsf" {
		audit.ocsf = &ocsfWriter{w: stdout, version: currentVersion().Version}
	}
	log := slog.New(audit)
	var access io.Writer // access lines are INFO lines
	if cfg.AccessLog && level <= slog.LevelInfo {
		access = stdout
	}
	var tracer trace.Tracer // nil: traces are off
	if s.tracesOn {
		tp, err := tracing.New(ctx, s.traces, currentVersion().Version)
		if err != nil {
			return err
		}
		defer func() {
			// Spans still batched are sent, within a bound: a collector
			// that is down must not hold the exit up.
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tp.Shutdown(sctx); err != nil {
				log.Warn("traces: export at shutdown failed", "error", err.Error())
			}
		}()
		tracer = tp.Tracer()
		log.Info("traces on", "protocol", s.traces.Protocol, "endpoint", s.traces.Endpoint)
	}
	g, err := build(cfg, s, log, access, prometheus.NewRegistry(), now, tracer)
	if err != nil {
		return err
	}
	if g.phone != nil {
		defer g.phone.Close()
	}
	if o == nil {
		o = &serveOptions{}
	}
	ls := &o.listeners
	if ls.proxy == nil {
		if ls.proxy, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("STEPGATE_LISTEN: %w (set STEPGATE_LISTEN to a free address)", err)
		}
	}
	if ls.admin == nil {
		if ls.admin, err = net.Listen("tcp", cfg.AdminListen); err != nil {
			ls.proxy.Close()
			return fmt.Errorf("STEPGATE_ADMIN_LISTEN: %w (set STEPGATE_ADMIN_LISTEN to a free address)", err)
		}
	}
	var signalsSrv *http.Server
	if g.signals != nil {
		if ls.signals == nil {
			if ls.signals, err = net.Listen("tcp", cfg.SignalsListen); err != nil {
				ls.proxy.Close()
				ls.admin.Close()
				return fmt.Errorf("STEPGATE_SIGNALS_LISTEN: %w (set STEPGATE_SIGNALS_LISTEN to a free address)", err)
			}
		}
		signalsSrv = &http.Server{
			Handler:           g.signals,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    16 << 10,
		}
	}
	var authzSrv *grpc.Server
	if g.authz != nil {
		if ls.authz == nil {
			if ls.authz, err = net.Listen("tcp", cfg.AuthzGRPCListen); err != nil {
				ls.proxy.Close()
				ls.admin.Close()
				return fmt.Errorf("STEPGATE_AUTHZ_GRPC_LISTEN: %w (set STEPGATE_AUTHZ_GRPC_LISTEN to a free address)", err)
			}
		}
		authzSrv, err = newAuthzServer(cfg)
		if err != nil {
			ls.proxy.Close()
			ls.admin.Close()
			ls.authz.Close()
			return err
		}
		g.authz.Register(authzSrv)
	}
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	proxySrv := &http.Server{
		Handler:           g.proxy,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
	}
	adminSrv := &http.Server{
		Handler:           g.admin,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          errLog,
	}
	keysCtx, stopKeys := context.WithCancel(context.Background())
	defer stopKeys()
	go g.loadKeys(keysCtx)
	storeDone := make(chan struct{})
	go func() { defer close(storeDone); g.stores.run(keysCtx) }()
	defer func() { stopKeys(); <-storeDone; g.stores.close() }()

	if o.environ != nil {
		rl := &reloader{environ: o.environ, target: g, log: log, metrics: g.metrics, cfg: cfg, s: s}
		var w *fileWatch
		poll := o.poll
		if files := watchedFiles(cfg, o.environ); len(files) > 0 && (poll != nil || cfg.ReloadInterval > 0) {
			w = newFileWatch(files)
			if poll == nil {
				t := time.NewTicker(cfg.ReloadInterval)
				defer t.Stop()
				poll = t.C
			}
			log.Info("watching files for changes", "files", files, "interval", cfg.ReloadInterval.String())
		}
		stopReload := make(chan struct{})
		reloadDone := make(chan struct{})
		go func() { defer close(reloadDone); reloadLoop(stopReload, rl, w, o.hup, poll, o.reloaded) }()
		defer func() { close(stopReload); <-reloadDone }()
	}

	errc := make(chan error, 4)
	if signalsSrv != nil {
		signalsSrv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
		go func() { errc <- signalsSrv.Serve(ls.signals) }()
		log.Info("signals receivers listening", "addr", ls.signals.Addr().String())
		defer signalsSrv.Close()
	}
	if authzSrv != nil {
		go func() { errc <- authzSrv.Serve(ls.authz) }()
		log.Info("ext_authz gRPC listening", "addr", ls.authz.Addr().String())
	}
	go func() {
		var err error
		if cfg.TLSCertFile != "" {
			err = proxySrv.ServeTLS(ls.proxy, cfg.TLSCertFile, cfg.TLSKeyFile)
		} else {
			err = proxySrv.Serve(ls.proxy)
		}
		errc <- err
	}()
	go func() { errc <- adminSrv.Serve(ls.admin) }()
	upstream := ""
	if s.upstream != nil {
		upstream = s.upstream.Redacted()
	}
	log.Info("listening", "proxy_addr", ls.proxy.Addr().String(), "admin_addr", ls.admin.Addr().String(),
		"upstream", upstream, "front_doors", cfg.FrontDoors, "version", currentVersion().Version)

	select {
	case err := <-errc:
		proxySrv.Close()
		adminSrv.Close()
		if authzSrv != nil {
			authzSrv.Stop()
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	// Fail readiness first so the load balancer stops sending new traffic,
	// keep serving while it notices, then finish in-flight requests.
	g.draining.Store(true)
	log.Info("shutting down: draining", "drain", cfg.ShutdownDrain.String())
	time.Sleep(cfg.ShutdownDrain)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if authzSrv != nil {
		stopGRPC(sctx, authzSrv)
	}
	if g.phone != nil {
		// A client waiting with Prefer: wait is answered now with the
		// approval's state (a 202 with Connection: close, usually): the
		// approval lives on in the store, and its next poll goes to a
		// replica that is not stopping (docs/agents.md).
		g.phone.Close()
	}
	if signalsSrv != nil {
		_ = signalsSrv.Shutdown(sctx)
	}
	proxyErr := proxySrv.Shutdown(sctx)
	adminErr := adminSrv.Shutdown(sctx)
	err = errors.Join(proxyErr, adminErr)
	if err != nil {
		proxySrv.Close()
		adminSrv.Close()
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err != nil {
		// Streams that never end (server-sent events, WebSockets) are what
		// the timeout is for: cutting them is a normal stop, exit 0.
		log.Warn("shutdown timeout: closed the connections still open", "timeout", cfg.ShutdownTimeout.String())
	}
	log.Info("stopped")
	return nil
}

// newAuthzServer is the ext_authz gRPC server: TLS with the proxy
// listener's certificate when there is one, bounded messages (an approve
// rule's body plus headers), and connections that cannot idle forever.
func newAuthzServer(cfg config) (*grpc.Server, error) {
	opts := append(authzgrpc.ServerOptions(),
		grpc.MaxRecvMsgSize(int(max(4<<20, cfg.ApproveMaxBody+(1<<20)))),
		grpc.ConnectionTimeout(10*time.Second),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 5 * time.Minute}),
		grpc.MaxConcurrentStreams(1024),
	)
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("STEPGATE_TLS_CERT_FILE: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	}
	return grpc.NewServer(opts...), nil
}

// stopGRPC finishes in-flight checks, or cuts them when ctx ends.
func stopGRPC(ctx context.Context, s *grpc.Server) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.Stop()
		<-done
	}
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("want debug, info, warn or error")
	}
	return l, nil
}

// approvalDigestKey keys approval digests (proxy/approve): derived from the
// sealing cookie key, which every replica sharing a store already shares,
// and separate from it by a label, so that one key never serves two uses.
// approvalDigestKeys derives one digest key from each cookie key, the
// current first: an API client's retry across a key roll still finds the
// approval its user gave under the previous key.
func approvalDigestKeys(cookieKeys [][]byte) [][]byte {
	out := make([][]byte, len(cookieKeys))
	for i, k := range cookieKeys {
		out[i] = approvalDigestKey(k)
	}
	return out
}

func approvalDigestKey(cookieKey []byte) []byte {
	m := hmac.New(sha256.New, cookieKey)
	m.Write([]byte("stepgate approval digest v1"))
	return m.Sum(nil)
}
