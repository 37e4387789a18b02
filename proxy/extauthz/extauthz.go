// Package extauthz is Envoy's HTTP external authorization service, one of
// the front doors (docs/design.md §16): Envoy asks at PathPrefix followed
// by the original request target, with the original method and the
// headers it was configured to send, and copies what the answer says to
// the upstream request. The gateway's one decision core
// (proxy.Gateway.Check) decides; the gRPC form of the same service is
// package authzgrpc.
//
// It must never decide anything itself, and never read a body from a peer
// outside STEPGATE_TRUSTED_PROXIES.
package extauthz

import (
	"context"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/stepgate/stepgate/proxy"
	"github.com/stepgate/stepgate/proxy/clientip"
)

// PathPrefix is the path prefix of the service: Envoy asks at this prefix
// followed by the original request target.
const PathPrefix = "/.stepgate/ext-authz"

// HeaderRemove is how Envoy's HTTP ext_authz service names the request
// headers to remove upstream.
const HeaderRemove = "X-Envoy-Auth-Headers-To-Remove"

// defaultMaxBody bounds the body read when Config.MaxBody is 0.
const defaultMaxBody = 16 << 20

// Checker decides a check; *proxy.Gateway is one.
type Checker interface {
	Check(ctx context.Context, q proxy.Request, style proxy.Style, body *proxy.Body) proxy.Answer
}

// Config wires a Door. Checker and ClientIP are required.
type Config struct {
	Checker Checker
	// ClientIP says which peers are trusted proxies: only their bodies are
	// read (the core refuses any other peer's check).
	ClientIP *clientip.Resolver
	// WithBody says Envoy forwards request bodies (with_request_body):
	// only then are bodies read, and approve rules served.
	WithBody bool
	// MaxBody, optional, is the largest body approve rules read
	// (approve.Gate.MaxBody); one byte more is read, to tell a body over
	// it. 0: 16 MiB.
	MaxBody int64
	// BodyIdleTimeout, optional, is the longest wait for the next bytes of
	// a body. 0: none.
	BodyIdleTimeout time.Duration
}

// Door serves PathPrefix; it is a proxy.Door.
type Door struct {
	cfg   Config
	limit int64
}

// New returns the door.
func New(cfg Config) *Door {
	d := &Door{cfg: cfg, limit: defaultMaxBody}
	if cfg.MaxBody > 0 {
		d.limit = cfg.MaxBody + 1
	}
	return d
}

// Name is the door in traces (stepgate.door).
func (*Door) Name() string { return proxy.DoorExtAuthz }

// Owns reports whether r is a check: its target is under PathPrefix.
func (*Door) Owns(r *http.Request) bool {
	return strings.HasPrefix(r.RequestURI, PathPrefix+"/")
}

// ServeCheck answers a check. 200 lets the request through with the
// headers to copy upstream (allowed_upstream_headers, Envoy Gateway's
// headersToBackend) and HeaderRemove; any other status goes to the client
// as it is.
func (d *Door) ServeCheck(w http.ResponseWriter, r *http.Request) proxy.Served {
	q := proxy.Request{
		Method: r.Method, Target: strings.TrimPrefix(r.RequestURI, PathPrefix),
		Header: r.Header, Peer: r.RemoteAddr, Host: r.Host,
	}
	var body *proxy.Body
	// Only a trusted proxy's body is read (Check refuses any other peer
	// first), and only under the same idle limit as a forwarded body.
	peer, ok := clientip.ParsePeer(r.RemoteAddr)
	trusted := ok && d.cfg.ClientIP.Trusted(peer)
	if trusted && d.cfg.WithBody && r.Body != nil && r.ContentLength != 0 {
		r.Body = proxy.IdleBody(r.Body, w, d.cfg.BodyIdleTimeout)
		b, err := io.ReadAll(io.LimitReader(r.Body, d.limit))
		if err != nil {
			a := proxy.Refusal(http.StatusBadRequest, "bad_request")
			write(w, a)
			return proxy.Served{Decision: a.Decision}
		}
		body = &proxy.Body{Data: b, Partial: strings.EqualFold(r.Header.Get("X-Envoy-Auth-Partial-Body"), "true")}
	} else if trusted && d.cfg.WithBody {
		body = &proxy.Body{}
	}
	delete(r.Header, "X-Envoy-Auth-Partial-Body")
	a := d.cfg.Checker.Check(r.Context(), q, proxy.StyleEnvoy, body)
	write(w, a)
	return proxy.Served{Decision: a.Decision, User: a.User, Client: a.Client, Asked: &q}
}

// write writes a to Envoy.
func write(w http.ResponseWriter, a proxy.Answer) {
	for k, v := range a.Header {
		w.Header()[k] = v
	}
	if a.OK && len(a.Remove) > 0 {
		w.Header().Set(HeaderRemove, strings.Join(a.Remove, ","))
	}
	w.WriteHeader(a.Status)
	if len(a.Body) > 0 {
		_, _ = w.Write(a.Body)
	}
}
