package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// Found by the upstream matrix past the GET/HEAD fix: Python's http.server
// with a do_DELETE or a CORS do_OPTIONS that never reads the body leaves it
// on the connection, where it is the next request. Every method whose
// content has no defined meaning refuses a body, in any letter case; the
// same methods without a body, and POST/PUT/PATCH with one, still pass.
func TestCL0_BodiesOnDeleteOptionsAndTraceAreRefused(t *testing.T) {
	s := newStack(t)
	const smuggled = "GET /admin/ HTTP/1.1\r\nHost: x\r\nX-Stepgate-User: mallory\r\n\r\n"
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled)
	for _, m := range []string{"DELETE", "OPTIONS", "TRACE", "delete", "Options"} {
		for _, framing := range []string{"Content-Length", "chunked"} {
			t.Run(m+" with a "+framing+" body", func(t *testing.T) {
				raw := fmt.Sprintf("%s /public/x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", m, len(smuggled), smuggled)
				if framing == "chunked" {
					raw = m + " /public/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
				}
				if status, _, _ := rawExchange(t, s.Proxy, raw); status != http.StatusBadRequest {
					t.Errorf("got %d, want 400", status)
				}
			})
		}
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("the upstream received %d requests with a body on a method without content", n)
	}
	if got := len(s.Logs.Events("request.rejected")); got != 10 {
		t.Errorf("request.rejected audit events: got %d, want 10", got)
	}
	for _, raw := range []string{
		"DELETE /public/x HTTP/1.1\r\nHost: x\r\n\r\n",
		"OPTIONS /public/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
		"PUT /public/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\na=1",
		"PATCH /public/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\na=1\r\n0\r\n\r\n",
	} {
		if status, _, _ := rawExchange(t, s.Proxy, raw); status != http.StatusOK {
			t.Errorf("%s: got %d, want 200", strings.SplitN(raw, "\r\n", 2)[0], status)
		}
	}
}
