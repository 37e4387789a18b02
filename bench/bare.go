package main

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// bareProxy is the baseline every ratio is taken against: what a team would
// write with the standard library alone, with the same upstream transport
// settings as stepgate (cmd/stepgate newTransport, default
// STEPGATE_UPSTREAM_TIMEOUT): a production proxy bounds the wait for a
// response too, and that timer is not stepgate's own cost.
func bareProxy(upstream string) http.Handler {
	u, err := url.Parse(upstream)
	if err != nil {
		log.Fatal(err)
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
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
