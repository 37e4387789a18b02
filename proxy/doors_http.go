package proxy

import (
	"github.com/stepgate/stepgate/proxy/clientip"
	"io"
	"net/http"
	"net/netip"
	"strings"
)

// The headers that describe the original request to forward-auth: nginx's
// auth_request (set in its configuration) and Traefik's forwardAuth and
// Caddy's forward_auth (set by the proxy itself).
const (
	hdrOriginalMethod  = "X-Original-Method"
	hdrOriginalURI     = "X-Original-Uri"
	hdrForwardedMethod = "X-Forwarded-Method"
	hdrForwardedURI    = "X-Forwarded-Uri"
	hdrForwardedHost   = "X-Forwarded-Host"
)

// door returns the handler of a front door other than the proxy for r, or
// nil when r goes through the proxy pipeline (which serves stepgate's own
// pages with or without the proxy door).
// The name is the door's in traces (stepgate.door).
func (g *Gateway) door(r *http.Request) (func(http.ResponseWriter, *http.Request) (string, string, netip.Addr), string) {
	if g.doors == (Doors{Proxy: true}) {
		return nil, ""
	}
	path, _, _ := strings.Cut(r.RequestURI, "?")
	switch {
	case g.doors.ForwardAuth && path == PathForwardAuth:
		return g.serveForwardAuth, DoorForwardAuth
	case g.doors.ExtAuthz && strings.HasPrefix(r.RequestURI, PathExtAuthz+"/"):
		return g.serveExtAuthz, DoorExtAuthz
	case !g.doors.Proxy && !strings.HasPrefix(path, ReservedPrefix):
		return g.serveNoUpstream, DoorProxy
	}
	return nil, ""
}

// serveForwardAuth answers a front proxy's sub-request at PathForwardAuth.
// The original request is described by X-Original-Method + X-Original-URI
// (nginx; answered in StyleNginx) or X-Forwarded-Method + X-Forwarded-Uri
// (+ X-Forwarded-Host; Traefik, Caddy: StyleRedirect). Both families, or
// neither, or either one twice, is refused: a client can send the family
// its front proxy does not set, and only configuration may choose.
func (g *Gateway) serveForwardAuth(w http.ResponseWriter, r *http.Request) (string, string, netip.Addr) {
	h := r.Header
	nginx := len(h[hdrOriginalMethod]) > 0 || len(h[hdrOriginalURI]) > 0
	fwd := len(h[hdrForwardedMethod]) > 0 || len(h[hdrForwardedURI]) > 0
	q := Request{Header: h, Peer: r.RemoteAddr, Host: r.Host}
	style := StyleNginx
	var ok bool
	switch {
	case nginx && !fwd:
		q.Method, q.Target, ok = one(h, hdrOriginalMethod, hdrOriginalURI)
		delete(h, hdrOriginalMethod)
		delete(h, hdrOriginalURI)
	case fwd && !nginx:
		style = StyleRedirect
		q.Method, q.Target, ok = one(h, hdrForwardedMethod, hdrForwardedURI)
		if hosts := h[hdrForwardedHost]; len(hosts) == 1 {
			q.Host = hosts[0]
		}
	}
	if !ok || !validMethod(q.Method) {
		q.Method, q.Target = "", "" // no description: the normaliser refuses it
	}
	logAs(w, q)
	a := g.Check(r.Context(), q, style, nil)
	writeAnswer(w, a, style)
	return a.Decision, a.User, a.Client
}

// serveExtAuthz is Envoy's HTTP ext_authz service: Envoy asks with the
// original method, PathExtAuthz followed by the original target, and the
// headers it was configured to send (allowed_headers, or Envoy Gateway's
// headersToExtAuth). 200 lets the request through with the headers to
// copy upstream (allowed_upstream_headers, headersToBackend); any other
// status goes to the client as it is.
func (g *Gateway) serveExtAuthz(w http.ResponseWriter, r *http.Request) (string, string, netip.Addr) {
	q := Request{
		Method: r.Method, Target: strings.TrimPrefix(r.RequestURI, PathExtAuthz),
		Header: r.Header, Peer: r.RemoteAddr, Host: r.Host,
	}
	var body *Body
	// Only a trusted proxy's body is read (Check refuses any other peer
	// first), and only under the same idle limit as a forwarded body.
	peer, ok := clientip.ParsePeer(r.RemoteAddr)
	trusted := ok && g.cfg.ClientIP.Trusted(peer)
	if trusted && g.doors.ExtAuthzBody && r.Body != nil && r.ContentLength != 0 {
		r.Body = newClientBody(r.Body, w, g.cfg.BodyIdleTimeout)
		limit := int64(16 << 20)
		if g.cfg.Approvals != nil {
			limit = g.cfg.Approvals.MaxBody() + 1
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, limit))
		if err != nil {
			a := g.refuse(http.StatusBadRequest, "bad_request", decisionRejected)
			a.Header.Set("Cache-Control", "no-store")
			writeAnswer(w, a, StyleEnvoy)
			return a.Decision, "", netip.Addr{}
		}
		body = &Body{Data: b, Partial: strings.EqualFold(r.Header.Get("X-Envoy-Auth-Partial-Body"), "true")}
	} else if trusted && g.doors.ExtAuthzBody {
		body = &Body{}
	}
	delete(r.Header, "X-Envoy-Auth-Partial-Body")
	logAs(w, q)
	a := g.Check(r.Context(), q, StyleEnvoy, body)
	writeAnswer(w, a, StyleEnvoy)
	return a.Decision, a.User, a.Client
}

// serveNoUpstream answers, when the proxy door is off, a request that is
// not for stepgate's own pages: there is nowhere to send it.
func (g *Gateway) serveNoUpstream(w http.ResponseWriter, r *http.Request) (string, string, netip.Addr) {
	client, _ := g.cfg.ClientIP.Resolve(r.RemoteAddr, r.Header.Values("X-Forwarded-For"))
	g.cfg.Challenge.Error(w, r, http.StatusNotFound, "not_found")
	return decisionInternal, "", client
}

// logAs makes the access line name the request the front proxy asked about
// (without its query, which can carry secrets), not the check itself.
func logAs(w http.ResponseWriter, q Request) {
	rec, ok := w.(*recorder)
	if !ok {
		return
	}
	path, _, _ := strings.Cut(q.Target, "?")
	if len(path) > 512 {
		path = path[:512] + "…"
	}
	if path == "" {
		path = "-"
	}
	rec.method, rec.path = q.Method, path
}

// writeAnswer writes a to the front proxy.
func writeAnswer(w http.ResponseWriter, a Answer, style Style) {
	for k, v := range a.Header {
		w.Header()[k] = v
	}
	if a.OK && style == StyleEnvoy && len(a.Remove) > 0 {
		w.Header().Set(HeaderEnvoyRemove, strings.Join(a.Remove, ","))
	}
	w.WriteHeader(a.Status)
	if len(a.Body) > 0 {
		_, _ = w.Write(a.Body)
	}
}

// one returns the single values of the method and target headers.
func one(h http.Header, method, target string) (string, string, bool) {
	m, t := h[method], h[target]
	if len(m) != 1 || len(t) != 1 {
		return "", "", false
	}
	return m[0], t[0], true
}

// validMethod accepts an HTTP method token of reasonable length.
func validMethod(m string) bool {
	if m == "" || len(m) > 32 {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
