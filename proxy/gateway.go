// Package proxy is stepgate's request pipeline: it decides, once per request
// and on the same normalised path it forwards, whether a request is refused,
// passed through, or needs a fresh step-up, and forwards it upstream with the
// verified identity headers.
//
// It must never forward a request it could not parse unambiguously, never let
// a client-supplied X-Stepgate-* header reach the upstream, and never serve an
// mfa path without a valid step-up bound to the current upstream user.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"go.opentelemetry.io/otel/trace"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/proxy/approve"
	"github.com/stepgate/stepgate/proxy/clientip"
	"github.com/stepgate/stepgate/proxy/decoupled"
	"github.com/stepgate/stepgate/proxy/identity"
	"github.com/stepgate/stepgate/proxy/reqpath"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/session"
)

// ReservedPrefix is the path prefix stepgate serves itself; it is never
// proxied, in any letter case.
const ReservedPrefix = "/.stepgate/"

// StepUps is what the gateway needs from the session store.
type StepUps interface {
	// Lookup returns the request's valid step-up, shared with every
	// request that carries the same cookie: read only (session.Store.Lookup).
	Lookup(r *http.Request) (*session.StepUp, bool)
	StripCookies(h http.Header)
	// Approved returns the reference of a request the user has approved
	// and that waits to be forwarded (approve rules); ClearApproved drops it.
	Approved(r *http.Request) (string, bool)
	ClearApproved(w http.ResponseWriter)
}

// Revocations says, from process memory, whether a step-up was revoked
// server-side (docs/design.md §15). It must not make a network call.
type Revocations interface {
	Revoked(su session.StepUp) bool
	// Stale reports that this replica cannot confirm its view is current:
	// mfa paths then fail closed with 503.
	Stale() bool
}

// Challenger serves the challenge endpoints and answers requests that need a
// step-up.
type Challenger interface {
	// Serve answers a request under ReservedPrefix for an identified user
	// (user may be "" when the upstream IdP sent none).
	Serve(w http.ResponseWriter, r *http.Request, user string, client netip.Addr)
	// Require answers a request to an mfa path that has no valid step-up.
	Require(w http.ResponseWriter, r *http.Request, rule rules.Rule)
	// RequireApproval answers a request held under ref until its user
	// approves it; IsAPI tells whether that answer goes to a program.
	RequireApproval(w http.ResponseWriter, r *http.Request, rule rules.Rule, ref, user string)
	IsAPI(r *http.Request) bool
	// Error renders a user-facing error page (HTML or JSON by Accept).
	Error(w http.ResponseWriter, r *http.Request, status int, message string)
}

// Decoupled starts phone approvals and answers their polls; forward hands
// back a released request for the gateway to forward.
type Decoupled interface {
	Begin(w http.ResponseWriter, r *http.Request, ref string, h *approve.Held, client netip.Addr, forward decoupled.ForwardFunc) string
	Serve(w http.ResponseWriter, r *http.Request, user string, client netip.Addr, forward decoupled.ForwardFunc) string
}

// Config wires a Gateway. Every field is required unless marked optional.
type Config struct {
	Upstream *url.URL
	// UpstreamHost, optional, is the Host header sent upstream; "" means
	// the host of Upstream. The client's Host is never forwarded unless
	// PreserveHost is set: an upstream that routes by Host (virtual hosts)
	// would otherwise serve another site's paths under rules written for
	// this one.
	UpstreamHost string
	PreserveHost bool
	Transport    http.RoundTripper
	// Rules is the rule set; LiveRules, optional, replaces it with one a
	// reload can swap (every request loads it once). With LiveRules set,
	// Rules is ignored.
	Rules     *rules.Set
	LiveRules *rules.Live
	ClientIP  *clientip.Resolver
	Identity  identity.Source
	StepUps   StepUps
	Challenge Challenger
	// Approvals, optional, serves approve rules; required when the rules
	// have one. ApproveHoldLimit, optional, bounds the requests one user
	// may hold (keyed "u:"+user).
	Approvals        *approve.Gate
	ApproveHoldLimit interface {
		Allow(key string) (ok bool, retryAfter time.Duration)
	}
	// Decoupled, optional, answers programs on approve rules with
	// api=decoupled (202, stepgate asks the phone) and serves their polls
	// under /.stepgate/approvals/ (docs/design.md §18). Without it those
	// rules answer as api=url.
	Decoupled Decoupled
	// Revocations, optional: nil means nothing is revoked.
	Revocations   Revocations
	IDTokenHeader string // default X-Stepgate-Id-Token; "Authorization" sends "Bearer <token>"
	// IdentityHeader, with header identity, is removed in every spelling
	// from requests whose peer is not a trusted proxy.
	IdentityHeader string
	// PingOneUserHeader, optional, is the header the PingOne user is mapped
	// from (docs/design.md §17); it is treated like IdentityHeader.
	PingOneUserHeader string
	// PassIdentityHeaders, optional, are identity-family headers (Remote-User,
	// X-Auth-Request-Email, …) passed to the upstream from trusted peers;
	// every other one is removed from every peer (docs/design.md §17).
	// IdentityHeader and PingOneUserHeader are always passed from trusted
	// peers.
	PassIdentityHeaders []string
	// CaseInsensitivePaths marks an IIS-style upstream: paths that Windows
	// would read as another name (trailing dots, 8.3 names, streams) are
	// refused as well.
	CaseInsensitivePaths bool
	// AccessLog, optional, receives one JSON line per request, in the
	// format of slog's JSONHandler at level INFO with msg "request"; nil
	// means no access lines. Audit events and errors go to Logger. Writes
	// must be safe for concurrent use and serialised with Logger's.
	AccessLog     io.Writer
	Logger        *slog.Logger
	Metrics       *metrics.Metrics
	Now           func() time.Time
	FlushInterval time.Duration // optional; -1 flushes every write
	// Doors, optional, are the front doors served (docs/design.md §16); the
	// zero value means the proxy alone. Upstream and Transport are needed
	// only with the proxy door.
	Doors Doors
	// BodyIdleTimeout, optional, is the longest wait for the next bytes of
	// a request body; a body that stalls longer is answered 408. 0: none.
	BodyIdleTimeout time.Duration
	// MethodOverride is the method override the application honours
	// (docs/design.md §14.3): rules match the method it names, and every
	// other override is stripped or refused. "" means MethodOverrideNone.
	MethodOverride MethodOverride
	// MethodOverrideMaxBody bounds the POST form body read to find a
	// _method field (only on paths where the method matters); 0 means
	// 64 KiB.
	MethodOverrideMaxBody int64
	// Tracer, optional, records a span per request (docs/design.md §10):
	// nil means traces are off, and then nothing on the request path pays
	// for them. TraceUser, optional, is how a span names the user (hashed,
	// by default, in cmd/stepgate); nil leaves the user out.
	Tracer    trace.Tracer
	TraceUser func(user string) string
	// ResponseHeaderTimeout, optional, is the Transport's wait for the
	// upstream's response headers. With it, a stepped-up request whose
	// freshness outlasts that wait needs no timer until its response
	// turns out to be a stream (see forward). 0: always a timer.
	ResponseHeaderTimeout time.Duration
}

// Gateway is the proxy listener's handler.
type Gateway struct {
	cfg             Config
	proxy           *httputil.ReverseProxy
	log             *slog.Logger
	access          *accessLog // nil: no access lines
	rm              *requestMetrics
	now             func() time.Time
	tokenHeader     string
	identityHeaders []string // canonical forms: identity and PingOne-user headers
	identityHeader  string   // canonical form of the identity header, header identity only
	keepIdentity    []string // identity-family headers passed from trusted peers (canonical)
	foldedNames     []string // tokenHeader and identityHeaders under fold (classify)
	plainOff        bool     // a configured header folds to one of plainNames
	unsetNames      []string // lower case: the §6 headers Envoy removes when there is no step-up
	bearer          bool
	upstreamRawPath string // the upstream URL's escaped path, worked out once
	windowsPaths    bool
	origin          *http.CrossOriginProtection
	doors           Doors
	tracer          trace.Tracer        // nil: traces are off
	traceUser       func(string) string // the user as spans name it
}

// New builds a Gateway.
func New(cfg Config) (*Gateway, error) {
	if cfg.Doors == (Doors{}) {
		cfg.Doors.Proxy = true
	}
	switch {
	case cfg.Doors.Proxy && (cfg.Upstream == nil || cfg.Upstream.Scheme == "" || cfg.Upstream.Host == ""):
		return nil, errors.New("proxy: upstream must be an absolute URL")
	case cfg.Rules == nil && cfg.LiveRules == nil, cfg.ClientIP == nil, cfg.Identity == nil, cfg.StepUps == nil,
		cfg.Challenge == nil, cfg.Logger == nil, cfg.Metrics == nil, cfg.Doors.Proxy && cfg.Transport == nil:
		return nil, errors.New("proxy: incomplete configuration")
	}
	if cfg.LiveRules == nil {
		cfg.LiveRules = rules.NewLive(cfg.Rules)
	}
	cfg.Rules = nil // LiveRules is the one place the rules are read
	if cfg.Approvals == nil && hasApprove(cfg.LiveRules.Load()) {
		return nil, errors.New("proxy: approve rules need an approvals store")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.IDTokenHeader == "" {
		cfg.IDTokenHeader = HeaderIDToken
	}
	g := &Gateway{
		cfg:         cfg,
		log:         cfg.Logger,
		access:      newAccessLog(cfg.AccessLog),
		rm:          newRequestMetrics(cfg.Metrics),
		now:         cfg.Now,
		tokenHeader: http.CanonicalHeaderKey(cfg.IDTokenHeader),
		origin:      http.NewCrossOriginProtection(),
		doors:       cfg.Doors,
		tracer:      cfg.Tracer,
		traceUser:   cfg.TraceUser,
	}
	if g.traceUser == nil {
		g.traceUser = func(string) string { return "" }
	}
	g.bearer = g.tokenHeader == "Authorization"
	if cfg.Upstream != nil {
		g.upstreamRawPath = cfg.Upstream.EscapedPath()
	}
	g.identityHeader = http.CanonicalHeaderKey(cfg.IdentityHeader)
	for _, h := range []string{cfg.IdentityHeader, cfg.PingOneUserHeader} {
		if h != "" {
			g.identityHeaders = append(g.identityHeaders, http.CanonicalHeaderKey(h))
		}
	}
	g.keepIdentity = slices.Clone(g.identityHeaders)
	for _, h := range cfg.PassIdentityHeaders {
		g.keepIdentity = append(g.keepIdentity, http.CanonicalHeaderKey(h))
	}
	g.windowsPaths = cfg.CaseInsensitivePaths
	g.foldedNames = append(g.foldedNames, foldName(g.tokenHeader))
	for _, n := range append([]string{g.tokenHeader}, stepUpHeaderNames...) {
		if n != "Authorization" {
			g.unsetNames = append(g.unsetNames, strings.ToLower(n))
		}
	}
	for _, h := range g.identityHeaders {
		g.foldedNames = append(g.foldedNames, foldName(h))
	}
	g.notePlainCollisions()
	g.proxy = &httputil.ReverseProxy{
		Rewrite:        g.rewrite,
		Transport:      cfg.Transport,
		FlushInterval:  cfg.FlushInterval,
		ErrorHandler:   g.upstreamError,
		ModifyResponse: g.cutStreams,
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		// Without a pool ReverseProxy allocates (and the GC then clears
		// and sweeps) a 32 KiB copy buffer per request: the largest single
		// cost of a small proxied response.
		BufferPool: &bufferPool{},
	}
	return g, nil
}

// CanServe reports whether set could be put in force by a reload: approve
// rules need the approvals store this gateway was built with.
func (g *Gateway) CanServe(set *rules.Set) error {
	if g.cfg.Approvals == nil && hasApprove(set) {
		return errors.New("proxy: approve rules need an approvals store")
	}
	return nil
}

func hasApprove(set *rules.Set) bool {
	return slices.ContainsFunc(set.Rules(), func(r rules.Rule) bool { return r.Action == rules.Approve })
}

// bufferPool implements httputil.BufferPool. sync.Pool holds pointers
// (a []byte put in it would be boxed, an allocation per Put), and the
// interface hands out slices: so the *[]byte a buffer came in goes to a
// second pool when the buffer is handed out, and carries a buffer back in
// on Put. In a steady state neither allocates.
type bufferPool struct {
	p       sync.Pool // *[]byte holding a buffer
	holders sync.Pool // *[]byte holding nothing
}

const copyBufferSize = 32 << 10 // ReverseProxy's own default

func (b *bufferPool) Get() []byte {
	if bp, ok := b.p.Get().(*[]byte); ok {
		buf := *bp
		*bp = nil
		b.holders.Put(bp)
		return buf
	}
	return make([]byte, copyBufferSize)
}

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) != copyBufferSize {
		return
	}
	bp, ok := b.holders.Get().(*[]byte)
	if !ok {
		bp = new([]byte)
	}
	*bp = buf[:copyBufferSize]
	b.p.Put(bp)
}

// decision labels for metrics and logs.
const (
	decisionAllow    = "allow"
	decisionDeny     = "deny"
	decisionStepUp   = "stepped_up"
	decisionRequired = "mfa_required"
	decisionRejected = "rejected"
	decisionNoIdent  = "no_identity"
	decisionInternal = "stepgate"
	decisionStale    = "store_unavailable"
)

// forward carries the per-request facts that Rewrite needs. It is itself
// the context of the request handed to ReverseProxy (the request's own, with
// Value(forwardKey{}) answering the forward): one allocation fewer per
// proxied request than a context.WithValue.
type forward struct {
	context.Context
	check    *checked // a front door's check (ext_authz approve rules): record, do not forward
	path     reqpath.Path
	client   netip.Addr
	trusted  bool
	stepUp   *session.StepUp
	approval string      // digest of the approval this request uses, if any
	body     *clientBody // nil without a request body
	// until, on an mfa path, is when the step-up stops being fresh for
	// the rule: the response, a WebSocket or an event stream included, is
	// cut then, so a stream opened just in time cannot outlive max_age.
	until    time.Time
	cutLater bool          // until is armed by cutStreams, for streams only
	method   string        // the method the application acts on (Decision.Method)
	traced   bool          // under a recording span: the upstream gets stepgate's traceparent
	in       *http.Request // the request as received, for that challenge
	realIP   [1]string     // the X-Real-Ip header's value, in the forward's own allocation
}

type forwardKey struct{}

func (fw *forward) Value(key any) any {
	if key == (any)(forwardKey{}) {
		return fw
	}
	return fw.Context.Value(key)
}

// ServeHTTP answers the proxy listener through the proxy door (serve); the
// other doors on the listener are adapters served by WithDoors.
// What happens to a request is decide, then the door's switch on the verdict.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.serveDoor(w, r, nil)
}

// serveDoor serves r through door (nil: the proxy door) and counts, traces
// and logs it: every door on the proxy listener is recorded here alike.
func (g *Gateway) serveDoor(w http.ResponseWriter, r *http.Request, door Door) {
	start := g.now()
	rec := &recorder{ResponseWriter: w, code: http.StatusOK}
	name := DoorProxy
	if door != nil {
		name = door.Name()
	}
	var span trace.Span
	if g.tracer != nil {
		r, span = g.startSpan(r, r.Header, name, r.Method)
	}
	var s Served
	switch {
	case door != nil: // forward-auth, ext_authz (docs/design.md §16)
		s = door.ServeCheck(rec, r)
	case !g.doors.Proxy && !strings.HasPrefix(r.RequestURI, ReservedPrefix):
		s.Decision, s.User, s.Client = g.serveNoUpstream(rec, r)
	default:
		s.Decision, s.User, s.Client = g.serve(rec, r)
	}
	end := g.now()
	d := end.Sub(start)
	g.rm.observe(s.Decision, rec.code, d)
	if span != nil {
		g.endSpan(span, s.Decision, s.User, rec.code)
	}
	if g.access != nil {
		method, path := r.Method, ""
		switch {
		case s.Asked != nil: // a front door logs the request it was asked about
			method, path = s.Asked.Method, askedPath(s.Asked.Target)
		case rec.method != "": // a held request replayed: what the upstream acted on
			method, path = rec.method, rec.path
		default:
			path = logPath(r)
		}
		g.access.write(&accessEntry{
			time: end, method: method, path: path, status: rec.code,
			decision: s.Decision, user: s.User, client: s.Client, duration: d,
		})
	}
}

// Decide is the decision of docs/design.md §1, the same for every front
// door: normalise → strip → identify → match → step-up check. It does not
// read the body and writes nothing; the door carries the decision out.
func (g *Gateway) Decide(ctx context.Context, q Request) Decision {
	var d Decision
	g.decide(ctx, &q, &d)
	return d
}

// decide is Decide into d (a Decision is a few hundred bytes: the proxy
// door keeps it on its stack instead of copying it around), noted on the
// request's span when traces are on.
func (g *Gateway) decide(ctx context.Context, q *Request, d *Decision) {
	g.decideInto(ctx, q, d)
	if g.tracer != nil {
		noteDecision(ctx, d)
	}
}

func (g *Gateway) decideInto(ctx context.Context, q *Request, d *Decision) {
	d.req = q.req
	if d.req == nil {
		d.req = (&http.Request{
			Method: q.Method, Header: q.Header, Host: q.Host, RemoteAddr: q.Peer, RequestURI: q.Target,
			URL: &url.URL{}, Body: http.NoBody,
		}).WithContext(ctx)
	}

	// 1. Normalise: one decoded path that both the rules and the upstream see.
	p, err := reqpath.Parse(q.Method, q.Target)
	if err == nil && g.windowsPaths {
		err = reqpath.CheckWindows(p.Match)
	}
	if err != nil {
		d.Client, _ = g.cfg.ClientIP.Resolve(q.Peer, q.Header.Values("X-Forwarded-For"))
		d.set(Reject, decisionRejected, err.Error())
		return
	}
	d.Path = p
	if q.req == nil {
		d.req.URL.Path, d.req.URL.RawPath, d.req.URL.RawQuery = p.Match, p.Escaped, p.Query
	}
	if p.Match == "*" {
		d.set(Asterisk, decisionInternal, "")
		return
	}

	// 1b. The method the application will act on, after the one method
	// override it honours: rules match that one.
	// One set for the whole decision: a reload that swaps the rules now
	// applies from the next request on (docs/design.md §9.1).
	set := g.cfg.LiveRules.Load()
	method, reason := g.effectiveMethod(q, p, set)
	if reason != "" {
		d.Client, _ = g.cfg.ClientIP.Resolve(q.Peer, q.Header.Values("X-Forwarded-For"))
		d.set(Reject, decisionRejected, reason)
		return
	}
	d.Method = method

	// 2. Resolve the client address once, for logs, limits and pi.remoteIp
	// (from X-Forwarded-For as spelled canonically, which step 3 keeps).
	d.Client, d.Trusted = g.cfg.ClientIP.Resolve(q.Peer, q.Header["X-Forwarded-For"])

	// 3. Strip every header a client could use to impersonate stepgate, to
	// steer the upstream's routing or to frame the message another way;
	// from an untrusted peer every forwarding and identity header too, and
	// from a trusted one the identity families it does not pass on.
	g.stripRequest(q.Header, d.Trusted, d)
	if method != q.Method && g.cfg.MethodOverride == MethodOverrideHeader {
		// The override header went with the other spellings: the
		// application gets the one stepgate matched, in one spelling.
		q.Header[headerMethodOverride] = []string{method}
	}

	// 4. stepgate's own endpoints are never proxied.
	if hasReservedPrefix(p.Match) {
		d.User, _ = g.cfg.Identity.User(d.req, d.Trusted)
		d.set(Internal, decisionInternal, "")
		return
	}

	// 5. Match.
	d.Rule = set.Match(method, p.Match)
	switch d.Rule.Action {
	case rules.Deny:
		d.set(Deny, decisionDeny, "")
		return
	case rules.Allow:
		// Headers describe a valid step-up on every path that has one; the
		// identity is only worked out when a step-up cookie is present.
		if su, ok := g.cfg.StepUps.Lookup(d.req); ok {
			if user, err := g.cfg.Identity.User(d.req, d.Trusted); err == nil {
				d.User = user
				if g.fresh(su, user, rules.Rule{}) {
					d.StepUp = su
				}
			}
		} else if vs := q.Header[g.identityHeader]; g.identityHeader != "" && d.Trusted && len(vs) == 1 && identity.ValidUser(vs[0]) {
			// For the access line only (the upstream gets the header as
			// it is): a header identity from a trusted peer is a map
			// lookup; spelling variants went in step 2. A JWT identity
			// would cost a signature check, so it is not worked out here.
			d.User = vs[0]
		}
		d.set(Forward, decisionAllow, "")
		return
	}

	// 6. mfa and approve: an identity is a precondition, not something to
	// prompt for.
	user, err := g.cfg.Identity.User(d.req, d.Trusted)
	if err != nil || user == "" {
		reason := errString(err)
		if (err == nil || errors.Is(err, identity.ErrNoIdentity)) && d.droppedIdentity != "" {
			reason = "identity header " + d.droppedIdentity + " dropped: peer " + addrString(d.Client) +
				" is outside STEPGATE_TRUSTED_PROXIES"
		}
		g.audit(d.req, "identity.rejected", "", d.Client, slog.String("reason", reason))
		d.IdentityExpired = errors.Is(err, identity.ErrIdentityExpired)
		d.set(NoIdentity, decisionNoIdent, "")
		return
	}
	d.User = user
	if d.Rule.Action == rules.Approve {
		d.set(ApprovalRequired, decisionApprovalRequired, "")
		return
	}
	if g.cfg.Revocations != nil && g.cfg.Revocations.Stale() {
		// This replica cannot confirm its view of revocations is current.
		d.set(Unavailable, decisionStale, "")
		return
	}
	su, ok := g.cfg.StepUps.Lookup(d.req)
	if !ok || !g.fresh(su, user, d.Rule) {
		d.set(StepUpRequired, decisionRequired, "")
		return
	}
	d.StepUp = su
	d.set(Forward, decisionStepUp, "")
}

// serve is the proxy door: the decision, carried out by forwarding to the
// upstream (or answering here).
func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) (decision, user string, client netip.Addr) {
	var d Decision
	if err := checkFraming(r); err != nil { // only WebSocket upgrades; no body on GET/HEAD/DELETE/OPTIONS/TRACE
		d.Client, _ = g.cfg.ClientIP.Resolve(r.RemoteAddr, r.Header.Values("X-Forwarded-For"))
		d.set(Reject, decisionRejected, err.Error())
	} else {
		g.decide(r.Context(), &Request{Method: r.Method, Target: r.RequestURI, Host: r.Host, Header: r.Header, Peer: r.RemoteAddr, req: r, w: w}, &d)
	}
	switch d.Verdict {
	case Reject:
		g.audit(r, "request.rejected", "", d.Client, slog.String("reason", d.Reason))
		status, message := rejectStatus(d.Reason)
		if status != http.StatusBadRequest {
			w.Header().Set("Connection", "close") // the rest of the body is not read
		}
		g.cfg.Challenge.Error(w, r, status, message)
		return d.Label, "", d.Client
	case Asterisk:
		// OPTIONS * asks about the server, not a resource. net/http answers
		// it before any handler unless DisableGeneralOptionsHandler is set;
		// should it reach us, it is answered here, never forwarded.
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		w.WriteHeader(http.StatusNoContent)
		return d.Label, "", d.Client
	case Internal:
		if g.cfg.Decoupled != nil && strings.HasPrefix(d.Path.Match, decoupled.PathPrefix) {
			return g.cfg.Decoupled.Serve(w, r, d.User, d.Client, g.forwardHeld(d.Client, d.Trusted)), d.User, d.Client
		}
		g.cfg.Challenge.Serve(w, r, d.User, d.Client)
		return d.Label, d.User, d.Client
	}

	// A request the user has just approved is forwarded in place of the
	// browser's GET of its URL (approve rules), whatever the GET's rule.
	fw := &forward{path: d.Path, client: d.Client, trusted: d.Trusted, method: d.Method}
	if g.cfg.Approvals != nil && r.Method == http.MethodGet {
		if ref, ok := g.cfg.StepUps.Approved(r); ok {
			if decision, user, done := g.replay(w, r, ref, fw); done {
				return decision, user, d.Client
			}
		}
	}

	switch d.Verdict {
	case Deny:
		g.cfg.Challenge.Error(w, r, http.StatusForbidden, "forbidden")
		return d.Label, "", d.Client
	case NoIdentity:
		key := "no_identity"
		if d.IdentityExpired {
			key = "identity_expired"
		}
		g.cfg.Challenge.Error(w, r, http.StatusUnauthorized, key)
		return d.Label, "", d.Client
	case StepUpRequired:
		g.cfg.Challenge.Require(w, r, d.Rule)
		return d.Label, d.User, d.Client
	case Unavailable:
		w.Header().Set("Retry-After", "5")
		g.cfg.Challenge.Error(w, r, http.StatusServiceUnavailable, "stepup_unavailable")
		return d.Label, d.User, d.Client
	case ApprovalRequired:
		decision, user = g.approve(w, r, d.Rule, fw)
		return decision, user, d.Client
	}
	fw.stepUp = d.StepUp
	if d.Label == decisionStepUp {
		// Cut the response (streams included) when the step-up stops being
		// fresh for this rule.
		fw.until, fw.in = freshUntil(*d.StepUp, d.Rule), r
	}
	g.forward(w, r, fw)
	return d.Label, d.User, d.Client
}

// fresh reports whether a step-up is valid for this user and rule (docs/design.md §5).
// A zero rule (allow path) asks only that the step-up is still valid at all.
func (g *Gateway) fresh(su *session.StepUp, user string, rule rules.Rule) bool {
	if g.cfg.Revocations != nil && g.cfg.Revocations.Revoked(*su) {
		return false
	}
	return Fresh(*su, user, rule, g.now())
}

// Fresh reports whether a step-up is valid at now for this user and rule
// (docs/design.md §5); the challenge page uses it to send an already verified user on.
func Fresh(su session.StepUp, user string, rule rules.Rule, now time.Time) bool {
	if su.User != user || !now.Before(su.TokenExpiry) {
		return false
	}
	if rule.MaxAge > 0 && now.Sub(su.AuthTime) > rule.MaxAge {
		return false
	}
	if now.Before(su.AuthTime.Add(-time.Minute)) { // a step-up from the future is not ours
		return false
	}
	return acrSatisfies(su.ACR, rule.ACR)
}

// acrSatisfies reports whether a step-up's acr (the one sign-on policy
// PingOne ran) is one of the rule's policies. A rule's ACR is acr_values:
// names separated by spaces (acr=A,B in the rule), any of which will do.
func acrSatisfies(got, want string) bool {
	if want == "" {
		return true
	}
	if want == got && strings.IndexFunc(got, unicode.IsSpace) < 0 {
		return true // the one policy asked for (the common case), without splitting
	}
	for name := range strings.FieldsSeq(want) {
		if name == got {
			return true
		}
	}
	return false
}

// freshUntil is when a step-up stops satisfying an mfa rule: max_age after
// its auth_time, or its ID token's expiry if that comes first.
func freshUntil(su session.StepUp, rule rules.Rule) time.Time {
	until := su.TokenExpiry
	if rule.MaxAge > 0 {
		if t := su.AuthTime.Add(rule.MaxAge); t.Before(until) {
			until = t
		}
	}
	return until
}

func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, fw *forward) {
	if fw.check != nil { // a front door's check: the front proxy forwards
		fw.check.forwarded = true
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		// Marks the client's body errors as the client's, and gives up on
		// a body that stops arriving.
		fw.body = newClientBody(r.Body, w, g.cfg.BodyIdleTimeout)
		r.Body = fw.body
	}
	if g.tracer != nil && trace.SpanFromContext(r.Context()).IsRecording() {
		var span trace.Span
		r, span = g.startUpstreamSpan(r)
		defer g.endUpstreamSpan(span, w)
		fw.traced = true
	}
	fw.Context = r.Context()
	var ctx context.Context = fw
	if !fw.until.IsZero() {
		// The remaining freshness, measured on the gateway's clock, then
		// counted down on the real one. When it outlasts the wait for the
		// response headers, the headers come first whatever happens, and
		// only a stream can then outlive it: cutStreams arms a timer for
		// those, and every other request goes without one (a timer per
		// request was the stepped-up path's largest added cost).
		left := fw.until.Sub(g.now())
		if h := g.cfg.ResponseHeaderTimeout; h > 0 && left > h+time.Second {
			fw.cutLater = true
		} else {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, left)
			defer cancel()
		}
	}
	g.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// cutStreams is ReverseProxy's ModifyResponse: on an mfa path whose
// freshness outlasted the wait for headers, a response that can run on — a
// protocol switch (WebSocket), server-sent events, or a body of unknown
// length — is closed when the step-up stops being fresh.
func (g *Gateway) cutStreams(resp *http.Response) error {
	fw, _ := resp.Request.Context().Value(forwardKey{}).(*forward)
	if fw == nil || !fw.cutLater {
		return nil
	}
	// The transport's header keys are canonical: read the map directly.
	ct := resp.Header["Content-Type"]
	stream := resp.StatusCode == http.StatusSwitchingProtocols || resp.ContentLength < 0 ||
		len(ct) > 0 && strings.HasPrefix(ct[0], "text/event-stream")
	if !stream {
		return nil
	}
	cb := &cutBody{ReadCloser: resp.Body}
	cb.timer = time.AfterFunc(max(fw.until.Sub(g.now()), 0), func() { _ = cb.ReadCloser.Close() })
	resp.Body = cb
	return nil
}

// cutBody is a response body that a timer closes. It stays writable, as
// ReverseProxy needs a switched protocol's body to be.
type cutBody struct {
	io.ReadCloser
	timer *time.Timer
}

func (b *cutBody) Write(p []byte) (int, error) {
	if w, ok := b.ReadCloser.(io.Writer); ok {
		return w.Write(p)
	}
	return 0, errors.New("proxy: response body is not writable")
}

func (b *cutBody) Close() error {
	b.timer.Stop()
	return b.ReadCloser.Close()
}

// rewrite runs after ReverseProxy removed hop-by-hop headers (including any
// named in Connection), so the headers set here always reach the upstream.
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	fw := pr.In.Context().Value(forwardKey{}).(*forward)
	u := g.cfg.Upstream
	pr.Out.URL.Scheme = u.Scheme
	pr.Out.URL.Host = u.Host
	pr.Out.URL.Path = joinPath(u.Path, fw.path.Match)
	pr.Out.URL.RawPath = joinPath(g.upstreamRawPath, fw.path.Escaped)
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery
	pr.Out.Host = g.cfg.UpstreamHost // "": the upstream URL's host
	if g.cfg.PreserveHost {
		pr.Out.Host = pr.In.Host
	}

	// With a step-up, ten headers are added below; a map sized for them
	// once is cheaper than the clone's map growing (and rehashing) twice.
	if fw.stepUp != nil {
		h := make(http.Header, len(pr.Out.Header)+10)
		maps.Copy(h, pr.Out.Header)
		pr.Out.Header = h
	}

	// Rewrite starts with X-Forwarded-* removed; keep a trusted chain.
	if fw.trusted {
		if v := pr.In.Header["X-Forwarded-For"]; len(v) > 0 {
			pr.Out.Header["X-Forwarded-For"] = v
		}
	}
	pr.SetXForwarded()
	if fw.client.IsValid() {
		// SetXForwarded appended the TCP peer; the resolved client is what
		// the upstream should log, so say it explicitly as well.
		fw.realIP[0] = fw.client.String()
		pr.Out.Header["X-Real-Ip"] = fw.realIP[:] // Set, without canonicalising a canonical name or allocating a slice
	}

	g.cfg.StepUps.StripCookies(pr.Out.Header)
	if fw.stepUp != nil {
		g.setStepUpHeaders(pr.Out.Header, fw.stepUp)
	}
	if fw.approval != "" {
		pr.Out.Header[HeaderApproval] = []string{fw.approval}
	}
	if fw.traced {
		injectTrace(pr.Out)
	}
}

func (g *Gateway) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	fw := r.Context().Value(forwardKey{}).(*forward)
	if be := fw.body.err(); be != nil {
		// The client's fault, not the upstream's: no WARN, no 502.
		status, msg := http.StatusBadRequest, "bad_request"
		if be.timedOut() {
			status, msg = http.StatusRequestTimeout, "request_timeout"
		}
		g.audit(r, "request.rejected", "", fw.client, slog.String("reason", be.Error()))
		w.Header().Set("Connection", "close") // the rest of the body is unreadable
		g.cfg.Challenge.Error(w, r, status, msg)
		return
	}
	if !fw.until.IsZero() && errors.Is(r.Context().Err(), context.DeadlineExceeded) {
		// The step-up stopped being fresh before the upstream answered:
		// not the upstream's fault; the client needs a new step-up.
		g.log.LogAttrs(r.Context(), slog.LevelInfo, "step-up expired during the request", slog.String("path", logPath(r)))
		// The rule is matched again rather than carried on every
		// forwarded request (a rule is a few hundred bytes): should a
		// reload have changed it meanwhile, the challenge asks for the
		// rule in force.
		g.cfg.Challenge.Require(w, fw.in, g.cfg.LiveRules.Load().Match(fw.method, fw.path.Match))
		return
	}
	status, msg := http.StatusBadGateway, "upstream_unavailable"
	var ne interface{ Timeout() bool }
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		status, msg = http.StatusGatewayTimeout, "upstream_timeout"
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads this answer.
		status = 499
	}
	g.log.LogAttrs(r.Context(), slog.LevelWarn, "upstream error",
		slog.String("path", logPath(r)), slog.Int("status", status), slog.String("error", err.Error()))
	if status == 499 {
		// Nobody reads this answer. Writing 499 (nginx's "client closed
		// request") rather than 502 keeps the access line and
		// stepgate_requests_total from blaming the upstream, so an
		// "upstream down" alert does not fire whenever a client hangs up.
		w.WriteHeader(499)
		return
	}
	g.cfg.Challenge.Error(w, r, status, msg)
}

// audit writes one audit line; its path is the request's unless attrs name
// another (the held request's).
func (g *Gateway) audit(r *http.Request, event, user string, client netip.Addr, attrs ...slog.Attr) {
	attrs = append(attrs,
		slog.String("event", event),
		slog.String("user", user),
		slog.String("client_ip", addrString(client)))
	if !slices.ContainsFunc(attrs, func(a slog.Attr) bool { return a.Key == "path" }) {
		attrs = append(attrs, slog.String("path", logPath(r)))
	}
	g.log.LogAttrs(r.Context(), slog.LevelInfo, "audit", attrs...)
}

func hasReservedPrefix(p string) bool {
	return len(p) >= len(ReservedPrefix) && strings.EqualFold(p[:len(ReservedPrefix)], ReservedPrefix) ||
		strings.EqualFold(p, strings.TrimSuffix(ReservedPrefix, "/"))
}

func joinPath(base, p string) string {
	if base == "" || base == "/" {
		return p
	}
	return strings.TrimSuffix(base, "/") + p
}

// logPath is the request path without its query: queries can carry
// secrets, and so does a phone approval's poll URL (its reference holds the
// held request's key), which is logged without it.
func logPath(r *http.Request) string {
	s := r.RequestURI
	if i := strings.IndexByte(s, '?'); i >= 0 {
		s = s[:i]
	}
	if len(s) > len(decoupled.PathPrefix) && strings.EqualFold(s[:len(decoupled.PathPrefix)], decoupled.PathPrefix) {
		s = s[:len(decoupled.PathPrefix)] + "…"
	}
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	return s
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func errString(err error) string {
	if err == nil {
		return "empty identity"
	}
	return err.Error()
}

// recorder captures the status for the access log and metrics. It unwraps
// for http.ResponseController, so flushing (SSE) and hijacking (WebSocket)
// reach the real connection.
type recorder struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
	// method and path, when set (forwardedAs), are what the upstream
	// received in place of the request: a replayed held request.
	method, path string
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.code = code
		if code >= 200 {
			r.wroteHeader = true
		}
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush lets ReverseProxy stream without a type assertion miss.
func (r *recorder) Flush() {
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

var statusLabels = func() (s [600]string) {
	for i := range s {
		s[i] = fmt.Sprint(i)
	}
	return s
}()

func statusLabel(code int) string {
	if code >= 0 && code < len(statusLabels) {
		return statusLabels[code]
	}
	return "other"
}
