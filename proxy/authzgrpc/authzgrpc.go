// Package authzgrpc serves Envoy's external authorization gRPC service,
// envoy.service.auth.v3.Authorization/Check (docs/design.md §16), as
// Gateway API's ExternalAuth filter, Envoy Gateway's SecurityPolicy extAuth,
// Istio's CUSTOM AuthorizationPolicy and Cilium call it. Every check is
// decided by the gateway's one decision core (proxy.Gateway.Check): the
// same rules, identity and step-up as the proxy door.
//
// The messages are read and written with protowire, field by field, from
// envoy/service/auth/v3 (external_auth.proto, attribute_context.proto),
// envoy/config/core/v3 (base.proto, address.proto) and google/rpc/status:
// linking go-control-plane's generated packages would register thousands
// of descriptors at start-up, and the garbage collector would scan them on
// every cycle — measured at +4–5 % instructions on every proxied request,
// past the performance gate. The tests speak to this server with
// go-control-plane's generated client and types (v1.40.0), so the wire
// format is checked against Envoy's own definitions.
package authzgrpc

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/encoding/protowire"

	"go.opentelemetry.io/otel/propagation"

	"github.com/stepgate/stepgate/proxy"
)

// Checker decides a check; *proxy.Gateway is one.
type Checker interface {
	Check(ctx context.Context, q proxy.Request, style proxy.Style, body *proxy.Body) proxy.Answer
}

// Server serves Authorization/Check.
type Server struct {
	checker  Checker
	withBody bool
	// TraceContext, set when traces are on, reads the W3C trace context
	// of the call's metadata (Envoy's ext_authz span) into each check's
	// context, to be the parent of the check's span.
	TraceContext bool
}

// New returns a Server. withBody says Envoy sends request bodies
// (with_request_body), which approve rules need. The gateway's
// CheckAndRecord is the Checker that also counts and logs each check.
func New(c Checker, withBody bool) *Server {
	return &Server{checker: c, withBody: withBody}
}

// ServerOptions are the options the gRPC server needs for this service: it
// reads and writes raw protobuf bytes.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ForceServerCodec(rawCodec{})}
}

// Register adds the service to a gRPC server built with ServerOptions.
func (s *Server) Register(g *grpc.Server) { g.RegisterService(&serviceDesc, s) }

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "envoy.service.auth.v3.Authorization",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Check",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in raw
			if err := dec(&in); err != nil {
				return nil, err
			}
			return srv.(*Server).check(ctx, in)
		},
	}},
	Metadata: "envoy/service/auth/v3/external_auth.proto",
}

// raw is a message's wire bytes.
type raw []byte

type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	if r, ok := v.(*raw); ok {
		return *r, nil
	}
	return nil, errors.New("authzgrpc: unexpected message type")
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	r, ok := v.(*raw)
	if !ok {
		return errors.New("authzgrpc: unexpected message type")
	}
	*r = append((*r)[:0], data...)
	return nil
}

func (s *Server) check(ctx context.Context, in raw) (*raw, error) {
	c, err := decodeCheck(in)
	if err != nil {
		// A message that does not parse is refused like any bad request.
		c = checkRequest{}
	}
	if s.TraceContext {
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			ctx = propagation.TraceContext{}.Extract(ctx, metadataCarrier(md))
		}
	}
	q, body := s.request(ctx, c)
	out := raw(Response(s.checker.Check(ctx, q, proxy.StyleEnvoy, body)))
	return &out, nil
}

// checkRequest is the part of CheckRequest a check reads.
type checkRequest struct {
	method, path, host string
	headers            [][2]string
	rawHeaders         bool
	body               []byte
	size               int64
	source             string
}

// request translates Envoy's description of the original request.
func (s *Server) request(ctx context.Context, c checkRequest) (proxy.Request, *proxy.Body) {
	q := proxy.Request{Header: http.Header{}, Method: c.method, Target: c.path, Host: c.host}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		q.Peer = peerString(p.Addr)
	}
	for _, kv := range c.headers {
		add(q.Header, kv[0], kv[1])
	}
	if len(q.Header["X-Forwarded-For"]) == 0 && c.source != "" {
		// Envoy names the downstream peer; with no X-Forwarded-For it is
		// the client as far as Envoy knows.
		if _, err := netip.ParseAddr(c.source); err == nil {
			q.Header["X-Forwarded-For"] = []string{c.source}
		}
	}
	if !s.withBody {
		return q, nil
	}
	b := &proxy.Body{Data: c.body}
	b.Partial = strings.EqualFold(q.Header.Get("X-Envoy-Auth-Partial-Body"), "true") ||
		(c.size > 0 && int64(len(b.Data)) < c.size)
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

// Field numbers, from Envoy's protos.
const (
	fCheckAttributes   = 1 // CheckRequest.attributes
	fAttrSource        = 1 // AttributeContext.source
	fAttrRequest       = 4 // AttributeContext.request
	fPeerAddress       = 1 // AttributeContext.Peer.address
	fAddressSocket     = 1 // config.core.v3.Address.socket_address
	fSocketAddress     = 2 // SocketAddress.address
	fRequestHTTP       = 2 // AttributeContext.Request.http
	fHTTPMethod        = 2
	fHTTPHeaders       = 3 // map<string,string>
	fHTTPPath          = 4
	fHTTPHost          = 5
	fHTTPSize          = 9
	fHTTPBody          = 11
	fHTTPRawBody       = 12
	fHTTPHeaderMap     = 13 // config.core.v3.HeaderMap (encode_raw_headers)
	fHeaderMapHeaders  = 1
	fHeaderValueKey    = 1
	fHeaderValueValue  = 2
	fHeaderValueRaw    = 3
	fRespStatus        = 1 // CheckResponse.status (google.rpc.Status)
	fRespDenied        = 2 // CheckResponse.denied_response
	fRespOK            = 3 // CheckResponse.ok_response
	fStatusCode        = 1 // google.rpc.Status.code
	fStatusMessage     = 2
	fDeniedStatus      = 1 // DeniedHttpResponse.status (type.v3.HttpStatus)
	fDeniedHeaders     = 2
	fDeniedBody        = 3
	fHTTPStatusCode    = 1
	fOKHeaders         = 2
	fOKHeadersToRemove = 5
	fOptionHeader      = 1 // HeaderValueOption.header
	fOptionAppendAct   = 3 // HeaderValueOption.append_action
	overwriteOrAdd     = 2 // OVERWRITE_IF_EXISTS_OR_ADD
)

var errMalformed = errors.New("authzgrpc: malformed CheckRequest")

// fields calls f for each field of a message; bytes fields get their
// content, varints their value.
func fields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error) error {
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return errMalformed
		}
		b = b[l:]
		var v []byte
		var n uint64
		switch typ {
		case protowire.BytesType:
			v, l = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			n, l = protowire.ConsumeVarint(b)
		default:
			l = protowire.ConsumeFieldValue(num, typ, b)
		}
		if l < 0 {
			return errMalformed
		}
		b = b[l:]
		if err := f(num, typ, v, n); err != nil {
			return err
		}
	}
	return nil
}

// sub calls f with the content of every bytes field numbered num.
func sub(b []byte, num protowire.Number, f func([]byte) error) error {
	return fields(b, func(n protowire.Number, t protowire.Type, v []byte, _ uint64) error {
		if n == num && t == protowire.BytesType {
			return f(v)
		}
		return nil
	})
}

func decodeCheck(b []byte) (checkRequest, error) {
	var c checkRequest
	var headerMap [][2]string
	err := sub(b, fCheckAttributes, func(attrs []byte) error {
		if err := sub(attrs, fAttrSource, func(p []byte) error {
			return sub(p, fPeerAddress, func(a []byte) error {
				return sub(a, fAddressSocket, func(sa []byte) error {
					return sub(sa, fSocketAddress, func(v []byte) error { c.source = string(v); return nil })
				})
			})
		}); err != nil {
			return err
		}
		return sub(attrs, fAttrRequest, func(req []byte) error {
			return sub(req, fRequestHTTP, func(h []byte) error {
				return fields(h, func(n protowire.Number, t protowire.Type, v []byte, u uint64) error {
					switch {
					case n == fHTTPMethod && t == protowire.BytesType:
						c.method = string(v)
					case n == fHTTPPath && t == protowire.BytesType:
						c.path = string(v)
					case n == fHTTPHost && t == protowire.BytesType:
						c.host = string(v)
					case n == fHTTPSize && t == protowire.VarintType:
						c.size = int64(u)
					case n == fHTTPBody && t == protowire.BytesType && c.body == nil:
						c.body = v
					case n == fHTTPRawBody && t == protowire.BytesType:
						c.body = v
					case n == fHTTPHeaders && t == protowire.BytesType:
						var kv [2]string
						if err := fields(v, func(n protowire.Number, t protowire.Type, v []byte, _ uint64) error {
							if t == protowire.BytesType && (n == 1 || n == 2) {
								kv[n-1] = string(v)
							}
							return nil
						}); err != nil {
							return err
						}
						c.headers = append(c.headers, kv)
					case n == fHTTPHeaderMap && t == protowire.BytesType:
						c.rawHeaders = true
						return sub(v, fHeaderMapHeaders, func(hv []byte) error {
							var kv [2]string
							var rawValue []byte
							if err := fields(hv, func(n protowire.Number, t protowire.Type, v []byte, _ uint64) error {
								switch {
								case n == fHeaderValueKey && t == protowire.BytesType:
									kv[0] = string(v)
								case n == fHeaderValueValue && t == protowire.BytesType:
									kv[1] = string(v)
								case n == fHeaderValueRaw && t == protowire.BytesType:
									rawValue = v
								}
								return nil
							}); err != nil {
								return err
							}
							if len(rawValue) > 0 {
								kv[1] = string(rawValue)
							}
							headerMap = append(headerMap, kv)
							return nil
						})
					}
					return nil
				})
			})
		})
	})
	if c.rawHeaders { // encode_raw_headers: one entry per line, used instead of headers
		c.headers = headerMap
	}
	if c.body != nil {
		c.body = slices.Clone(c.body)
	}
	return c, err
}

// Response is the CheckResponse for a: OK with the headers to set
// (overwriting) and to remove upstream, or Denied with the answer for the
// client.
func Response(a proxy.Answer) []byte {
	var b []byte
	if a.OK {
		var ok []byte
		for _, k := range sortedKeys(a.Header) {
			if k == "Cache-Control" {
				continue // about the answer, not the upstream request
			}
			for _, v := range a.Header[k] {
				ok = protowire.AppendTag(ok, fOKHeaders, protowire.BytesType)
				ok = protowire.AppendBytes(ok, headerOption(k, v))
			}
		}
		for _, n := range a.Remove {
			ok = protowire.AppendTag(ok, fOKHeadersToRemove, protowire.BytesType)
			ok = protowire.AppendString(ok, n)
		}
		b = protowire.AppendTag(b, fRespStatus, protowire.BytesType)
		b = protowire.AppendBytes(b, nil) // code OK (0)
		b = protowire.AppendTag(b, fRespOK, protowire.BytesType)
		return protowire.AppendBytes(b, ok)
	}
	code := codes.PermissionDenied
	if a.Status == http.StatusUnauthorized {
		code = codes.Unauthenticated
	}
	var st []byte
	st = protowire.AppendTag(st, fStatusCode, protowire.VarintType)
	st = protowire.AppendVarint(st, uint64(code))
	st = protowire.AppendTag(st, fStatusMessage, protowire.BytesType)
	st = protowire.AppendString(st, strconv.Itoa(a.Status))
	var denied, hs []byte
	hs = protowire.AppendTag(hs, fHTTPStatusCode, protowire.VarintType)
	hs = protowire.AppendVarint(hs, uint64(a.Status))
	denied = protowire.AppendTag(denied, fDeniedStatus, protowire.BytesType)
	denied = protowire.AppendBytes(denied, hs)
	for _, k := range sortedKeys(a.Header) {
		for _, v := range a.Header[k] {
			denied = protowire.AppendTag(denied, fDeniedHeaders, protowire.BytesType)
			denied = protowire.AppendBytes(denied, headerOption(k, v))
		}
	}
	if len(a.Body) > 0 {
		denied = protowire.AppendTag(denied, fDeniedBody, protowire.BytesType)
		denied = protowire.AppendBytes(denied, a.Body)
	}
	b = protowire.AppendTag(b, fRespStatus, protowire.BytesType)
	b = protowire.AppendBytes(b, st)
	b = protowire.AppendTag(b, fRespDenied, protowire.BytesType)
	return protowire.AppendBytes(b, denied)
}

// headerOption is a HeaderValueOption that overwrites (or adds) k: v.
func headerOption(k, v string) []byte {
	var hv, o []byte
	hv = protowire.AppendTag(hv, fHeaderValueKey, protowire.BytesType)
	hv = protowire.AppendString(hv, strings.ToLower(k))
	hv = protowire.AppendTag(hv, fHeaderValueValue, protowire.BytesType)
	hv = protowire.AppendString(hv, v)
	o = protowire.AppendTag(o, fOptionHeader, protowire.BytesType)
	o = protowire.AppendBytes(o, hv)
	o = protowire.AppendTag(o, fOptionAppendAct, protowire.VarintType)
	return protowire.AppendVarint(o, overwriteOrAdd)
}

// sortedKeys gives a deterministic order, for tests and logs.
func sortedKeys(h http.Header) []string { return slices.Sorted(maps.Keys(h)) }

// metadataCarrier reads a trace context from gRPC metadata (lower-case keys).
type metadataCarrier metadata.MD

func (m metadataCarrier) Get(k string) string {
	if v := metadata.MD(m).Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (m metadataCarrier) Set(k, v string) { metadata.MD(m).Set(k, v) }

func (m metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}
