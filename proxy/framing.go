package proxy

import (
	"errors"
	"net/http"
	"strings"
)

// Refusals of requests whose framing or protocol switch an upstream could
// read differently from stepgate.
var (
	errUpgrade     = errors.New("upgrade other than websocket")
	errUpgradeVerb = errors.New("websocket upgrade on a method other than GET")
	errBodyOnGet   = errors.New("body on a method without defined content (GET, HEAD, DELETE, OPTIONS, TRACE)")
)

// checkFraming refuses what must never reach the upstream:
//
//   - An Upgrade to anything but WebSocket. httputil.ReverseProxy forwards
//     any Upgrade token and, on a 101, becomes a blind byte pipe: an
//     upstream that accepts "Upgrade: h2c" (hypercorn does) then reads
//     HTTP/2 requests on that connection that stepgate never parsed, matched
//     or stripped. Only "websocket" (RFC 6455 §4.1: a GET) may switch
//     protocols; every Upgrade header line and every comma-separated token
//     in it is checked, in any letter case.
//   - A GET, HEAD, DELETE, OPTIONS or TRACE with a body (Content-Length > 0
//     or chunked): content on these has no defined meaning (RFC 9110 §9.3;
//     TRACE must not carry any). An upstream that does not read bodies on
//     those methods (Python's http.server with a do_DELETE or a CORS
//     do_OPTIONS that never touches rfile, found by the upstream matrix)
//     would take the body for the next request on the connection (CL.0
//     smuggling), a request stepgate never decided on. Refused rather than
//     dropped, so that the client sees the problem.
func checkFraming(r *http.Request) error {
	if ups, ok := r.Header["Upgrade"]; ok {
		for _, v := range ups {
			for tok := range strings.SplitSeq(v, ",") {
				if !strings.EqualFold(strings.TrimSpace(tok), "websocket") {
					return errUpgrade
				}
			}
		}
		if r.Method != http.MethodGet {
			return errUpgradeVerb
		}
	}
	if noContentMethod(r.Method) && (r.ContentLength != 0 || len(r.TransferEncoding) > 0) {
		return errBodyOnGet
	}
	return nil
}

// noContentMethod reports whether a request body on method has no defined
// meaning, so that upstreams may leave it unread. Methods are compared
// ignoring case: rules do too, and some upstreams upper-case them.
func noContentMethod(m string) bool {
	for _, n := range []string{http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions, http.MethodTrace} {
		if strings.EqualFold(m, n) {
			return true
		}
	}
	return false
}

// framingHeaders are hop-by-hop and message-framing header names, in
// canonical form. A client's look-alike spelling of one (Transfer_Encoding,
// Content.Length) is a different header to Go but the same one to
// frameworks that fold '_' and '.' to '-' (CGI, PHP, Rails, nginx with
// underscores_in_headers), which could then frame or route the message
// differently from stepgate.
//
// The names without a '-' are listed too: net/http always hands a handler
// their canonical spelling, but a header map built any other way could hold
// "upgrade" beside "Upgrade", and ReverseProxy only removes the canonical
// one.
var framingHeaders = []string{
	"Content-Length", "Transfer-Encoding", "Keep-Alive", "Proxy-Connection",
	"Proxy-Authenticate", "Proxy-Authorization", "Http2-Settings",
	"Connection", "Upgrade", "Te", "Trailer",
}

// stripFraming deletes every non-canonical spelling of the framing headers and
// HTTP2-Settings in every spelling (it only serves an h2c upgrade, which is
// never forwarded).
func stripFraming(h http.Header, removed []string) []string {
	for name := range h {
		if isFramingVariant(name) {
			delete(h, name)
			// A front door cannot drop them from the request it
			// forwards itself: it is told to (ext_authz) or refuses.
			removed = append(removed, name)
		}
	}
	return removed
}

// isFramingVariant reports whether stripFraming removes name.
func isFramingVariant(name string) bool {
	for _, f := range framingHeaders {
		if foldedEqual(name, f) && (name != f || f == "Http2-Settings") {
			return true
		}
	}
	return false
}
