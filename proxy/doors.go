package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"

	"go.opentelemetry.io/otel/trace"

	"github.com/stepgate/stepgate/proxy/clientip"
)

// Doors says which front doors are open (STEPGATE_FRONT_DOORS). The
// gateway serves the proxy door itself; each other door is an adapter over
// Check (a Door on the proxy listener, see WithDoors, or the gRPC service).
type Doors struct {
	Proxy       bool // forward to the upstream (the default)
	ForwardAuth bool // package forwardauth
	ExtAuthz    bool // package extauthz, and the gRPC service (package authzgrpc)
	// ExtAuthzBody says Envoy forwards request bodies (with_request_body):
	// only then may approve rules be served by ext_authz.
	ExtAuthzBody bool
}

// Door is a front door on the proxy listener besides the proxy itself
// (docs/design.md §16): an adapter that reads a front proxy's check, asks
// Check, and writes the answer in the front proxy's terms. The gateway
// counts, traces and logs what it serves like any other request.
type Door interface {
	// Name is the door in traces (stepgate.door).
	Name() string
	// Owns reports whether r is for this door (by its path).
	Owns(r *http.Request) bool
	// ServeCheck answers r and says what it decided.
	ServeCheck(w http.ResponseWriter, r *http.Request) Served
}

// Served is what a door did with a request, for its access line, metrics
// and span.
type Served struct {
	Decision string // the decision label (Answer.Decision)
	User     string
	Client   netip.Addr
	// Asked, once a door has read which request a front proxy asks about,
	// is that request: the access line names it (without its query, which
	// can carry secrets), not the check itself.
	Asked *Request
}

// WithDoors returns the proxy listener's handler: each door serves the
// requests it owns, the gateway (the proxy door and stepgate's own pages)
// the rest. Without doors it is g.
func (g *Gateway) WithDoors(doors ...Door) http.Handler {
	if len(doors) == 0 {
		return g
	}
	return withDoors{g: g, doors: doors}
}

type withDoors struct {
	g     *Gateway
	doors []Door
}

func (h withDoors) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, d := range h.doors {
		if d.Owns(r) {
			h.g.serveDoor(w, r, d)
			return
		}
	}
	h.g.serveDoor(w, r, nil)
}

// serveNoUpstream answers, when the proxy door is off, a request that is
// not for stepgate's own pages: there is nowhere to send it.
func (g *Gateway) serveNoUpstream(w http.ResponseWriter, r *http.Request) (string, string, netip.Addr) {
	client, _ := g.cfg.ClientIP.Resolve(r.RemoteAddr, r.Header.Values("X-Forwarded-For"))
	g.cfg.Challenge.Error(w, r, http.StatusNotFound, "not_found")
	return decisionInternal, "", client
}

// askedPath is how the access line names the request a front door was
// asked about: its path without the query, "-" if it has none.
func askedPath(target string) string {
	path, _, _ := strings.Cut(target, "?")
	if len(path) > 512 {
		path = path[:512] + "…"
	}
	if path == "" {
		path = "-"
	}
	return path
}

// Style is the kind of answer a front door expects.
type Style uint8

const (
	// StyleNginx: a browser that needs the challenge gets 401 (nginx lets
	// only 2xx, 401 and 403 through auth_request; its error_page 401 sends
	// the browser to X-Stepgate-Redirect).
	StyleNginx Style = iota
	// StyleRedirect: the answer goes to the browser as it is (Traefik,
	// Caddy): 302/303 to the challenge.
	StyleRedirect
	// StyleEnvoy: Envoy ext_authz; an allowed request also carries the
	// headers to remove upstream.
	StyleEnvoy
)

// Headers of forward-auth answers, for the front proxy's configuration.
const (
	// HeaderRedirect, on nginx's 401, is where to send a browser.
	HeaderRedirect = "X-Stepgate-Redirect"
	// HeaderError, on every refusal, is the error code of the JSON body.
	HeaderError = "X-Stepgate-Error"
	// HeaderChallenge, on a 401 for a step-up, is the challenge page's URL.
	HeaderChallenge = "X-Stepgate-Challenge"
)

// Answer is a front door's answer to a check: either OK (the request goes
// upstream with Set set and Remove removed) or a refusal to send to the
// client (Status, Header, Body). Every answer is no-store.
type Answer struct {
	OK     bool
	Status int
	// Header: OK, the headers to set on the upstream request; refused, the
	// headers of the answer to the client.
	Header http.Header
	// Remove, OK only, names request headers (lower case) to remove upstream.
	Remove []string
	Body   []byte

	// Decision made, for metrics and access lines.
	Decision string
	User     string
	Client   netip.Addr
}

// Body is a request body a front door received with the check (Envoy's
// with_request_body), for approve rules.
type Body struct {
	Data []byte
	// Partial: the front proxy cut the body (allow_partial_message).
	Partial bool
}

var errUntrustedPeer = errors.New("check from a peer outside STEPGATE_TRUSTED_PROXIES")

// Check decides q for a front door and returns its answer. Only a peer
// inside STEPGATE_TRUSTED_PROXIES is believed about what the original
// request was; any other gets 403.
func (g *Gateway) Check(ctx context.Context, q Request, style Style, body *Body) Answer {
	if peer, ok := clientip.ParsePeer(q.Peer); !ok || !g.cfg.ClientIP.Trusted(peer) {
		a := refuse(http.StatusForbidden, "forbidden", decisionRejected)
		a.Client = peer
		a.Header.Set("Cache-Control", "no-store")
		g.log.LogAttrs(ctx, slog.LevelInfo, "audit", slog.String("event", "request.rejected"),
			slog.String("reason", errUntrustedPeer.Error()), slog.String("client_ip", addrString(peer)))
		return a
	}
	d := g.Decide(ctx, q)
	a := g.answer(ctx, d, style, body)
	a.Decision, a.User, a.Client = d.Label, d.User, d.Client
	if a.Header == nil {
		a.Header = http.Header{}
	}
	a.Header.Set("Cache-Control", "no-store")
	return a
}

// Recorded wraps a Checker so that each check is counted and logged like a
// request through the proxy listener (the gRPC door's checks come through
// no HTTP handler).
func (g *Gateway) Recorded() interface {
	Check(context.Context, Request, Style, *Body) Answer
} {
	return recorded{g}
}

type recorded struct{ g *Gateway }

func (c recorded) Check(ctx context.Context, q Request, style Style, body *Body) Answer {
	g := c.g
	start := g.now()
	method, target := q.Method, q.Target
	var span trace.Span
	if g.tracer != nil {
		// The gRPC door put the call's own trace context (Envoy's) in
		// ctx, if any; otherwise the checked request's is the parent.
		ctx, span = g.startSpanContext(ctx, q.Header, q.Peer, DoorExtAuthzGRPC, method)
	}
	a := g.Check(ctx, q, style, body)
	end := g.now()
	d := end.Sub(start)
	g.rm.observe(a.Decision, a.Status, d)
	if span != nil {
		g.endSpan(span, a.Decision, a.User, a.Status)
	}
	if g.access != nil {
		g.access.write(&accessEntry{
			time: end, method: method, path: askedPath(target), status: a.Status,
			decision: a.Decision, user: a.User, client: a.Client, duration: d,
		})
	}
	return a
}

func (g *Gateway) answer(ctx context.Context, d Decision, style Style, body *Body) Answer {
	removed := d.Removed
	if g.bearer {
		// An Authorization header is the client's own here, not a spoof:
		// the OK answer replaces it when there is a step-up.
		removed = without(removed, "Authorization")
	}
	if len(removed) > 0 && style != StyleEnvoy {
		// A front proxy forwards the client's headers as they came: a
		// spelling of a stepgate or identity header that stepgate cannot
		// remove is refused, never passed on.
		g.audit(d.req, "request.rejected", d.User, d.Client, slog.String("reason", "header a client may not send: "+strings.Join(removed, ", ")))
		return refuse(http.StatusForbidden, "forbidden", decisionRejected)
	}
	if style != StyleEnvoy {
		// The front proxy, not stepgate, forwards the request: its shipped
		// configuration clears the identity families on the way to the app,
		// and a name it cannot clear is refused.
		for _, n := range d.Dropped {
			if !frontProxyClears(n, style) {
				g.audit(d.req, "request.rejected", d.User, d.Client, slog.String("reason", "identity header the front proxy cannot remove: "+n))
				return refuse(http.StatusForbidden, "forbidden", decisionRejected)
			}
		}
	}
	switch d.Verdict {
	case Reject, Asterisk:
		// Refused, never allowed: a front door has no 400 of its own.
		g.audit(d.req, "request.rejected", "", d.Client, slog.String("reason", d.Reason))
		a := refuse(http.StatusForbidden, "forbidden", decisionRejected)
		return a
	case Internal:
		// stepgate's own paths are never forwarded to the application, in
		// any spelling: the front proxy routes /.stepgate/ to stepgate.
		return refuse(http.StatusNotFound, "not_found", decisionInternal)
	case Deny:
		return refuse(http.StatusForbidden, "forbidden", decisionDeny)
	case NoIdentity:
		if d.IdentityExpired {
			return refuse(http.StatusUnauthorized, "identity_expired", decisionNoIdent)
		}
		return refuse(http.StatusUnauthorized, "no_identity", decisionNoIdent)
	case Unavailable:
		a := refuse(http.StatusServiceUnavailable, "store_unavailable", decisionStale)
		a.Header.Set("Retry-After", "5")
		return a
	case StepUpRequired:
		rec := newCapture()
		g.cfg.Challenge.Require(rec, d.req, d.Rule)
		return g.challengeAnswer(rec, style, "step_up_required")
	case ApprovalRequired:
		if style != StyleEnvoy || body == nil || !g.doors.ExtAuthzBody || g.cfg.Approvals == nil {
			// Start-up refuses approve rules where the body does not come
			// with the check; should one get here, it is refused.
			g.audit(d.req, "request.rejected", d.User, d.Client, slog.String("reason", "approve rule without the request body"))
			return refuse(http.StatusForbidden, "forbidden", decisionRejected)
		}
		return g.approveCheck(ctx, d, body)
	}
	return g.ok(d, style, "")
}

// ok is the answer that lets the request through with the §6 headers.
func (g *Gateway) ok(d Decision, style Style, approval string) Answer {
	a := Answer{OK: true, Status: http.StatusOK, Header: make(http.Header, 8)}
	if d.StepUp != nil {
		g.setStepUpHeaders(a.Header, d.StepUp)
	}
	if approval != "" {
		a.Header[HeaderApproval] = []string{approval}
	}
	if style == StyleEnvoy {
		for _, names := range [][]string{d.Removed, d.Dropped} {
			for _, n := range names {
				if _, set := a.Header[n]; !set {
					a.Remove = append(a.Remove, strings.ToLower(n))
				}
			}
		}
		if d.StepUp == nil {
			// Nothing a client sends under these names reaches the upstream.
			// (g.unsetNames: the list is built once, not per check.)
			for _, n := range g.unsetNames {
				if !containsFold(a.Remove, n) {
					a.Remove = append(a.Remove, n)
				}
			}
		}
		if approval == "" && !containsFold(a.Remove, HeaderApproval) {
			a.Remove = append(a.Remove, strings.ToLower(HeaderApproval))
		}
		// stepgate's cookies stay between the browser and stepgate.
		if before := d.req.Header.Values("Cookie"); len(before) > 0 {
			h := http.Header{"Cookie": before}
			g.cfg.StepUps.StripCookies(h)
			switch after := h.Values("Cookie"); {
			case len(after) == 0:
				a.Remove = append(a.Remove, "cookie")
			case strings.Join(after, "; ") != strings.Join(before, "; "):
				a.Header.Set("Cookie", strings.Join(after, "; "))
			}
		}
	}
	return a
}

// Refusal is a door's own refusal of a check it could not read (a body
// that broke off): a JSON answer like the core's refusals, no-store.
func Refusal(status int, code string) Answer {
	a := refuse(status, code, decisionRejected)
	a.Header.Set("Cache-Control", "no-store")
	return a
}

// refuse is a JSON refusal with the error code in HeaderError, so that a
// front proxy that writes its own page (nginx) can still say why.
func refuse(status int, code, decision string) Answer {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(HeaderError, code)
	body := `{"error":"` + code + `"}` + "\n"
	return Answer{Status: status, Header: h, Body: []byte(body), Decision: decision}
}

// challengeAnswer turns the proxy door's answer to a request that needs the
// challenge (a redirect, or 401 JSON) into the front door's.
func (g *Gateway) challengeAnswer(rec *capture, style Style, code string) Answer {
	a := Answer{Status: rec.status, Header: rec.header, Body: rec.body.Bytes(), Decision: decisionRequired}
	a.Header.Set(HeaderError, code)
	loc := a.Header.Get("Location")
	if loc != "" {
		a.Header.Set(HeaderChallenge, loc)
	} else {
		var j struct {
			Challenge string `json:"challenge_url"`
			Approval  string `json:"approval_url"`
		}
		if json.Unmarshal(a.Body, &j) == nil {
			a.Header.Set(HeaderChallenge, j.Challenge+j.Approval)
		}
	}
	if style == StyleNginx && loc != "" {
		// nginx lets only 401 and 403 through; its error_page 401
		// redirects to X-Stepgate-Redirect.
		a.Status = http.StatusUnauthorized
		a.Header.Del("Location")
		a.Header.Set(HeaderRedirect, loc)
		a.Header.Set("Content-Type", "application/json")
		a.Body = []byte(`{"error":"` + code + `"}` + "\n")
	}
	return a
}

// approveCheck serves an approve rule for ext_authz with the body, through
// the proxy door's own approve (every check of docs/design.md §14 alike):
// OK once when exactly this request was approved, else held and refused
// with the way to approve it. The request cannot be replaced by the held
// one through ext_authz, so every held request is held as a program's: the
// user approves, then sends the same request again.
func (g *Gateway) approveCheck(ctx context.Context, d Decision, body *Body) Answer {
	r := d.req
	fw := &forward{path: d.Path, client: d.Client, trusted: d.Trusted, method: d.Method, check: &checked{}}
	if body.Partial {
		g.approvalEvent(r, "refused", d.User, fw, "", "", slog.String("reason", "body cut by the front proxy"))
		return refuse(http.StatusRequestEntityTooLarge, "approve_too_large", decisionRejected)
	}
	r.Body = readCloser{bytes.NewReader(body.Data)}
	r.ContentLength = int64(len(body.Data))
	rec := newCapture()
	decision, _ := g.approve(rec, r, d.Rule, fw)
	if fw.check.forwarded {
		a := g.ok(d, StyleEnvoy, fw.approval)
		a.Decision = decision
		return a
	}
	a := Answer{Status: rec.status, Header: rec.header, Body: rec.body.Bytes(), Decision: decision}
	if decision == decisionApprovalRequired && rec.status != http.StatusServiceUnavailable {
		a = g.challengeAnswer(rec, StyleEnvoy, "approval_required")
		a.Decision = decision
	}
	return a
}

// checked records, for a check, that the proxy door would have forwarded.
type checked struct{ forwarded bool }

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

// capture records an answer written for the proxy door.
type capture struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newCapture() *capture { return &capture{header: http.Header{}, status: http.StatusOK} }

func (c *capture) Header() http.Header         { return c.header }
func (c *capture) Write(b []byte) (int, error) { return c.body.Write(b) }
func (c *capture) WriteHeader(s int)           { c.status = s }

func containsFold(names []string, n string) bool {
	for _, m := range names {
		if strings.EqualFold(m, n) {
			return true
		}
	}
	return false
}

// without is names less every n.
func without(names []string, n string) []string {
	var out []string
	for _, m := range names {
		if m != n {
			out = append(out, m)
		}
	}
	return out
}
