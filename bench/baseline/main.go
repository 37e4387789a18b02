// Command baseline is what bench measures stepgate against, kept apart
// from the bench's own program so that it is what a team would build with
// the standard library alone: the upstream (-mode=upstream), a bare
// httputil.ReverseProxy (-mode=bare UPSTREAM) and the same proxy sending
// what stepgate's contract sends on a stepped-up request
// (-mode=bare-contract UPSTREAM VALUES...). Each serves the listener it
// inherits as fd 3.
package main

import (
	"bytes"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: baseline -mode=upstream | -mode=bare UPSTREAM | -mode=bare-contract UPSTREAM VALUES...")
	}
	switch {
	case os.Args[1] == "-mode=upstream":
		serveUpstream()
	case os.Args[1] == "-mode=bare" && len(os.Args) == 3:
		serveBare(os.Args[2], nil)
	case os.Args[1] == "-mode=bare-contract" && len(os.Args) == 9:
		serveBare(os.Args[2], os.Args[3:])
	default:
		log.Fatalf("baseline: unknown mode %q", os.Args[1:])
	}
}

// serveUpstream is the upstream process: fixed bodies of 1 KiB and 64 KiB
// on a listener inherited as fd 3.
func serveUpstream() {
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		log.Fatal(err)
	}
	small, large := bytes.Repeat([]byte("a"), 1024), bytes.Repeat([]byte("b"), 64<<10)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := small
		if strings.HasSuffix(r.URL.Path, "64k") {
			body = large
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: log.New(io.Discard, "", 0)}
	log.Fatal(srv.Serve(ln))
}

// serveBare is the baseline: httputil.ReverseProxy with its defaults except
// the transport, which is tuned like stepgate's (idle connections per host
// ≫ 2), because Go's default collapses under load.
func serveBare(upstream string, contract []string) {
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: bareProxy(upstream, contract), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: log.New(io.Discard, "", 0)}
	log.Fatal(srv.Serve(ln))
}

// bareProxy is the baseline every ratio is taken against: what a team would
// write with the standard library alone, with the same upstream transport
// settings as stepgate (cmd/stepgate newTransport, default
// STEPGATE_UPSTREAM_TIMEOUT): a production proxy bounds the wait for a
// response too, and that timer is not stepgate's own cost.
func bareProxy(upstream string, contract []string) http.Handler {
	u, err := url.Parse(upstream)
	if err != nil {
		log.Fatal(err)
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
			if contract != nil {
				withContract(pr, contract)
			}
		},
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			ExpectContinueTimeout: time.Second,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   512,
			IdleConnTimeout:       90 * time.Second,
		},
		// wrk cancels requests in flight when a run ends; those are not
		// errors worth printing.
		ErrorLog: log.New(io.Discard, "", 0),
	}
}

// withContract gives the upstream what stepgate's contract does on a
// stepped-up request, with none of the work of deciding it: the client's
// address in X-Real-Ip, the step-up cookie taken out of Cookie, and the six
// headers of docs/design.md §6 with the values stepgate sends for the
// bench's step-up (contract, in session.StepUp.HeaderValues' order). The
// row it measures is the floor a §6-conformant proxy built on
// httputil.ReverseProxy starts from.
func withContract(pr *httputil.ProxyRequest, contract []string) {
	h := pr.Out.Header
	if host, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		h["X-Real-Ip"] = []string{host}
	}
	if c := h["Cookie"]; len(c) == 1 {
		var kept []string
		for pair := range strings.SplitSeq(c[0], ";") {
			if p := strings.TrimSpace(pair); p != "" && !strings.HasPrefix(p, "stepgate=") {
				kept = append(kept, p)
			}
		}
		h["Cookie"] = []string{strings.Join(kept, "; ")}
	}
	for i, name := range []string{"X-Stepgate-Id-Token", "X-Stepgate-Subject", "X-Stepgate-User", "X-Stepgate-Auth-Time", "X-Stepgate-Acr", "X-Stepgate-Amr"} {
		h[name] = contract[i : i+1 : i+1]
	}
}
