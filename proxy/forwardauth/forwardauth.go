// Package forwardauth is the forward-auth front door (docs/design.md §16):
// it answers nginx auth_request, Traefik forwardAuth and Caddy forward_auth
// sub-requests at Path on the proxy listener. It reads which request the
// front proxy asks about and hands it to the gateway's one decision core
// (proxy.Gateway.Check), then writes the core's answer back.
//
// It must never decide anything itself: a description it cannot read is
// handed on as no description, which the core refuses, never allows.
package forwardauth

import (
	"context"
	"net/http"
	"strings"

	"github.com/stepgate/stepgate/proxy"
	"github.com/stepgate/stepgate/proxy/reqpath"
)

// Path answers the sub-requests (nginx auth_request, Traefik forwardAuth,
// Caddy forward_auth).
const Path = "/.stepgate/auth"

// The headers that describe the original request: nginx's auth_request
// (set in its configuration) and Traefik's forwardAuth and Caddy's
// forward_auth (set by the proxy itself).
const (
	hdrOriginalMethod  = "X-Original-Method"
	hdrOriginalURI     = "X-Original-Uri"
	hdrForwardedMethod = "X-Forwarded-Method"
	hdrForwardedURI    = "X-Forwarded-Uri"
	hdrForwardedHost   = "X-Forwarded-Host"
)

// Checker decides a check; *proxy.Gateway is one.
type Checker interface {
	Check(ctx context.Context, q proxy.Request, style proxy.Style, body *proxy.Body) proxy.Answer
}

// Door serves Path; it is a proxy.Door.
type Door struct {
	checker Checker
}

// New returns the door, deciding through c.
func New(c Checker) *Door { return &Door{checker: c} }

// Name is the door in traces (stepgate.door).
func (*Door) Name() string { return proxy.DoorForwardAuth }

// Owns reports whether r is a sub-request: its path, without the query, is
// Path exactly.
func (*Door) Owns(r *http.Request) bool {
	path, _, _ := strings.Cut(r.RequestURI, "?")
	return path == Path
}

// ServeCheck answers a front proxy's sub-request. The original request is
// described by X-Original-Method + X-Original-URI (nginx; answered in
// proxy.StyleNginx) or X-Forwarded-Method + X-Forwarded-Uri
// (+ X-Forwarded-Host; Traefik, Caddy: proxy.StyleRedirect). Both families,
// or neither, or either one twice, is refused: a client can send the family
// its front proxy does not set, and only configuration may choose.
func (d *Door) ServeCheck(w http.ResponseWriter, r *http.Request) proxy.Served {
	h := r.Header
	nginx := len(h[hdrOriginalMethod]) > 0 || len(h[hdrOriginalURI]) > 0
	fwd := len(h[hdrForwardedMethod]) > 0 || len(h[hdrForwardedURI]) > 0
	q := proxy.Request{Header: h, Peer: r.RemoteAddr, Host: r.Host}
	style := proxy.StyleNginx
	var ok bool
	switch {
	case nginx && !fwd:
		q.Method, q.Target, ok = one(h, hdrOriginalMethod, hdrOriginalURI)
		delete(h, hdrOriginalMethod)
		delete(h, hdrOriginalURI)
	case fwd && !nginx:
		style = proxy.StyleRedirect
		q.Method, q.Target, ok = one(h, hdrForwardedMethod, hdrForwardedURI)
		if hosts := h[hdrForwardedHost]; len(hosts) == 1 {
			q.Host = hosts[0]
		}
	}
	if !ok || !reqpath.ValidMethod(q.Method) {
		q.Method, q.Target = "", "" // no description: the normaliser refuses it
	}
	a := d.checker.Check(r.Context(), q, style, nil)
	write(w, a)
	return proxy.Served{Decision: a.Decision, User: a.User, Client: a.Client, Asked: &q}
}

// write writes a to the front proxy.
func write(w http.ResponseWriter, a proxy.Answer) {
	for k, v := range a.Header {
		w.Header()[k] = v
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
