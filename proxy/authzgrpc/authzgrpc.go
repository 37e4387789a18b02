// Package authzgrpc serves Envoy's external authorization gRPC service,
// envoy.service.auth.v3.Authorization/Check (docs/design.md §16), as
// Gateway API's ExternalAuth filter, Envoy Gateway's SecurityPolicy extAuth,
// Istio's CUSTOM AuthorizationPolicy and Cilium call it. Every check is
// decided by the gateway's one decision core (proxy.Gateway.Check): the
// same rules, identity and step-up as the proxy door.
package authzgrpc

import (
	"context"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"

	"github.com/stepgate/stepgate/proxy"
)

// Checker decides a check; *proxy.Gateway is one.
type Checker interface {
	Check(ctx context.Context, q proxy.Request, style proxy.Style, body *proxy.Body) proxy.Answer
}

// Server implements authv3.AuthorizationServer.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	checker  Checker
	withBody bool
}

// New returns a Server. withBody says Envoy sends request bodies
// (with_request_body), which approve rules need. The gateway's
// CheckAndRecord is the Checker that also counts and logs each check.
func New(c Checker, withBody bool) *Server {
	return &Server{checker: c, withBody: withBody}
}

// Register adds the service to a gRPC server.
func (s *Server) Register(g *grpc.Server) { authv3.RegisterAuthorizationServer(g, s) }

// Check answers Envoy.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	q, body := s.request(ctx, req)
	return Response(s.checker.Check(ctx, q, proxy.StyleEnvoy, body)), nil
}

// request translates Envoy's description of the original request.
func (s *Server) request(ctx context.Context, req *authv3.CheckRequest) (proxy.Request, *proxy.Body) {
	q := proxy.Request{Header: http.Header{}}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		q.Peer = peerString(p.Addr)
	}
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	q.Method, q.Target, q.Host = h.GetMethod(), h.GetPath(), h.GetHost()
	if hm := h.GetHeaderMap(); hm != nil { // encode_raw_headers: one entry per line
		for _, hv := range hm.GetHeaders() {
			v := hv.GetValue()
			if len(hv.GetRawValue()) > 0 {
				v = string(hv.GetRawValue())
			}
			add(q.Header, hv.GetKey(), v)
		}
	} else {
		for k, v := range h.GetHeaders() {
			add(q.Header, k, v)
		}
	}
	if len(q.Header["X-Forwarded-For"]) == 0 {
		// Envoy names the downstream peer; with no X-Forwarded-For it is
		// the client as far as Envoy knows.
		if a := attrs.GetSource().GetAddress().GetSocketAddress().GetAddress(); a != "" {
			if _, err := netip.ParseAddr(a); err == nil {
				q.Header["X-Forwarded-For"] = []string{a}
			}
		}
	}
	if !s.withBody {
		return q, nil
	}
	b := &proxy.Body{Data: h.GetRawBody()}
	if len(b.Data) == 0 && h.GetBody() != "" {
		b.Data = []byte(h.GetBody())
	}
	b.Partial = strings.EqualFold(q.Header.Get("X-Envoy-Auth-Partial-Body"), "true") ||
		(h.GetSize() > 0 && int64(len(b.Data)) < h.GetSize())
	delete(q.Header, "X-Envoy-Auth-Partial-Body")
	return q, b
}

// add puts one header in h; HTTP/2 pseudo-headers (:path, :method,
// :authority) are carried by their own fields and skipped.
func add(h http.Header, k, v string) {
	if k == "" || k[0] == ':' {
		return
	}
	ck := http.CanonicalHeaderKey(k)
	h[ck] = append(h[ck], v)
}

func peerString(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort().String()
	}
	return a.String()
}

// Response is the CheckResponse for a: OK with the headers to set
// (overwriting) and to remove upstream, or Denied with the answer for the
// client.
func Response(a proxy.Answer) *authv3.CheckResponse {
	if a.OK {
		ok := &authv3.OkHttpResponse{HeadersToRemove: a.Remove}
		for _, k := range sortedKeys(a.Header) {
			if k == "Cache-Control" {
				continue // about the answer, not the upstream request
			}
			for _, v := range a.Header[k] {
				ok.Headers = append(ok.Headers, &corev3.HeaderValueOption{
					Header:       &corev3.HeaderValue{Key: strings.ToLower(k), Value: v},
					AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
				})
			}
		}
		return &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
		}
	}
	code := codes.PermissionDenied
	if a.Status == http.StatusUnauthorized {
		code = codes.Unauthenticated
	}
	denied := &authv3.DeniedHttpResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode(a.Status)},
		Body:   string(a.Body),
	}
	for _, k := range sortedKeys(a.Header) {
		for _, v := range a.Header[k] {
			denied.Headers = append(denied.Headers, &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: strings.ToLower(k), Value: v},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			})
		}
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(code), Message: strconv.Itoa(a.Status)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied},
	}
}

// sortedKeys gives a deterministic order, for tests and logs.
func sortedKeys(h http.Header) []string { return slices.Sorted(maps.Keys(h)) }
