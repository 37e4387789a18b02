package proxy

import (
	"net/http"
	"net/netip"

	"github.com/stepgate/stepgate/proxy/reqpath"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/session"
)

// Request is what the decision needs to know about a request, whichever
// front door it came through (docs/design.md §16): the reverse proxy's own
// request, a front proxy's forward-auth sub-request, or Envoy's ext_authz
// check.
type Request struct {
	Method string
	// Target is the raw request target as the client sent it (origin-form:
	// path and query, not decoded).
	Target string
	Host   string
	// Header is the client's headers. Decide removes, in place, every
	// header a client could use to impersonate stepgate or its identity
	// provider.
	Header http.Header
	// Peer is the TCP peer ("ip:port") that sent the request or the check:
	// only a peer inside STEPGATE_TRUSTED_PROXIES is believed about the
	// client's address and identity.
	Peer string

	req *http.Request       // the proxy door's own request; nil: built by Decide
	w   http.ResponseWriter // with req: its response, so that a body read for a method override has the idle limit
}

// Verdict is what happens to a request.
type Verdict uint8

const (
	// Forward: pass the request upstream with Decision.StepUp's headers
	// (and without those in Decision.Removed).
	Forward Verdict = iota
	// Deny: 403.
	Deny
	// StepUpRequired: a browser goes to the challenge, a program gets 401.
	StepUpRequired
	// ApprovalRequired: an approve rule matched; the door that holds the
	// body decides whether this exact request was approved.
	ApprovalRequired
	// Reject: the request cannot be read unambiguously (400, or 403 from a
	// front door that may only allow or deny).
	Reject
	// NoIdentity: an mfa or approve path without an upstream user (401).
	NoIdentity
	// Internal: stepgate's own endpoint (/.stepgate/…), served by stepgate.
	Internal
	// Asterisk: OPTIONS *, about the server rather than a resource.
	Asterisk
	// Unavailable: an mfa path while this replica cannot confirm that its
	// view of revoked step-ups is current (503, fail closed).
	Unavailable
)

// Decision is the answer of Decide: what happens to the request, and the
// facts each front door needs to carry it out.
type Decision struct {
	Verdict Verdict
	Label   string // the decision label of metrics and access lines
	Reason  string // why a request was rejected (a fixed phrase, safe to log)
	Path    reqpath.Path
	// Method is the method the application will act on: the request's,
	// or the one the honoured method override names. Rules matched it.
	Method  string
	Rule    rules.Rule
	User    string
	Client  netip.Addr
	Trusted bool
	// StepUp is the valid step-up of this user, if any: its §6 headers are
	// set upstream (SetHeaders).
	StepUp *session.StepUp
	// Removed names the headers Decide removed because a client could use
	// them to impersonate stepgate or the identity provider: a front door
	// that cannot strip them itself removes or refuses them.
	Removed []string
	// Dropped names the identity-family headers Decide removed from a
	// trusted peer's request (docs/design.md §17): a front door that can
	// remove headers upstream removes them too.
	Dropped []string
	// IdentityExpired, with NoIdentity: the identity token had expired
	// (the user signed in; the session in front did not refresh it).
	IdentityExpired bool

	req *http.Request
	// droppedIdentity is the configured identity header, as an untrusted
	// peer spelled it, that Decide removed: the reason there is no identity.
	droppedIdentity string
}

func (d *Decision) set(v Verdict, label, reason string) {
	d.Verdict, d.Label, d.Reason = v, label, reason
}

// setStepUpHeaders writes the §6 headers of su into h. Keys are canonical
// constants (tokenHeader is canonicalised in New), so the map is written
// directly, and the values are the ones the session store rendered once
// for this step-up (shared, never written to; a slice's capacity ends at
// its one value, so an append copies). Header.Set would canonicalise each
// key and allocate a slice per header, on every stepped-up request.
func (g *Gateway) setStepUpHeaders(h http.Header, su *session.StepUp) {
	v := su.HeaderValues()
	if g.bearer {
		h[g.tokenHeader] = []string{"Bearer " + v[0]}
	} else {
		h[g.tokenHeader] = v[0:1:1]
	}
	h[HeaderSubject] = v[1:2:2]
	h[HeaderUser] = v[2:3:3]
	h[HeaderAuthTime] = v[3:4:4]
	h[HeaderACR] = v[4:5:5]
	h[HeaderAMR] = v[5:6:6]
}

// stepUpHeaderNames are the §6 headers besides the ID-token header.
var stepUpHeaderNames = []string{HeaderSubject, HeaderUser, HeaderAuthTime, HeaderACR, HeaderAMR}
