package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"testing"

	"github.com/stepgate/stepgate/proxy/reqpath"
)

// FuzzDoorsDecideAlike checks docs/design.md §16's promise for any method
// and request target: a forward-auth check says OK exactly when the proxy
// door forwards the same request, and both forward (or allow) the same
// step-up headers.
func FuzzDoorsDecideAlike(f *testing.F) {
	for _, s := range []string{"/", "/admin/users", "/admin", "/ADMIN/x", "/%61dmin/x", "/admin%2fx", "/public/../admin",
		"//admin", "/admin;x", "/blocked", "/api/x?y=1", "/.stepgate/challenge", "/.STEPGATE/x", "*", "http://h/admin", ""} {
		f.Add("GET", s, true)
		f.Add("POST", s, false)
	}
	f.Add("OPTIONS", "*", true)
	e := newBenchEnv(f, slog.LevelWarn)
	f.Fuzz(func(t *testing.T, method, target string, stepUp bool) {
		if !reqpath.ValidMethod(method) || len(target) > 1024 {
			return
		}
		proxyReq := func() *http.Request {
			r := e.request("/", stepUp)
			r.Method, r.RequestURI = method, target
			return r
		}
		e.transport.last = nil
		w := &sinkWriter{h: http.Header{}}
		e.gw.ServeHTTP(w, proxyReq())
		forwarded := e.transport.last
		a := e.gw.Check(context.Background(), Request{Method: method, Target: target, Host: "gw.example",
			Header: proxyReq().Header, Peer: "127.0.0.1:54321"}, StyleNginx, nil)
		if a.OK != (forwarded != nil) {
			t.Fatalf("%s %q: forward-auth OK=%v (%d), proxy forwarded=%v (%d)", method, target, a.OK, a.Status, forwarded != nil, w.code)
		}
		if forwarded != nil && forwarded.Header.Get(HeaderUser) != a.Header.Get(HeaderUser) {
			t.Fatalf("%s %q: proxy sent user %q, forward-auth %q", method, target, forwarded.Header.Get(HeaderUser), a.Header.Get(HeaderUser))
		}
		if a.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("%s %q: answer without no-store", method, target)
		}
	})
}
