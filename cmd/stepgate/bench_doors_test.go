package main

// The cost of a front-door check (docs/design.md §16): checks per second and
// p99 latency of stepgate's forward-auth answer and gRPC ext_authz Check,
// each next to a bare server on the same transport that answers without
// doing anything, in the same run:
//
//	go test -run '^$' -bench FrontDoor -benchtime 5000x ./cmd/stepgate/
//
// Requests are sequential over loopback keep-alive connections with alice's
// step-up cookie on an mfa path (the most work a check does: cookie open,
// identity, rule, freshness, six headers). Access lines are off, as the
// benchmark measures the decision, not the log writer.

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// bareAuthz answers every Check OK without looking at it.
type bareAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

func (bareAuthz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}, nil
}

// measure runs op b.N times and reports checks/s and the p99 in µs.
func measure(b *testing.B, op func() error) {
	b.Helper()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		t0 := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	total := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/total.Seconds(), "checks/s")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
}

func BenchmarkFrontDoor(b *testing.B) {
	s := newStack(b, withEnv(
		"STEPGATE_FRONT_DOORS", "proxy,forward-auth,ext-authz",
		"STEPGATE_TRUSTED_PROXIES", "127.0.0.1/32",
		"STEPGATE_AUTHZ_GRPC_LISTEN", "127.0.0.1:0",
		"STEPGATE_LOG_LEVEL", "info", "STEPGATE_ACCESS_LOG", "false"))
	alice := s.stepUpAliceAt(s.Proxy, "/admin/users")
	cookie := ""
	pu, _ := url.Parse(s.Proxy)
	for _, ck := range alice.Client.Jar.Cookies(pu) {
		cookie += ck.Name + "=" + ck.Value + "; "
	}
	cookie += "theme=dark"
	grpcAddr := grpcAddrFromLogs(b, s)

	bareHTTP := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = bareHTTP.Serve(hl) }()
	b.Cleanup(func() { bareHTTP.Close() })
	bareGRPC := grpc.NewServer()
	authv3.RegisterAuthorizationServer(bareGRPC, bareAuthz{})
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = bareGRPC.Serve(gl) }()
	b.Cleanup(bareGRPC.Stop)

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	forwardAuth := func(url string, want int) func() error {
		return func() error {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("X-Original-Method", "GET")
			req.Header.Set("X-Original-URI", "/admin/users?tab=2")
			req.Header.Set("X-Forwarded-User", "alice")
			req.Header.Set("X-Forwarded-For", "203.0.113.7")
			req.Header.Set("Accept", "text/html,application/xhtml+xml")
			req.Header.Set("Cookie", cookie)
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				b.Fatalf("status %d, want %d", resp.StatusCode, want)
			}
			return nil
		}
	}
	check := func(c authv3.AuthorizationClient, stepped bool) func() error {
		req := envoyCheck("GET", "/admin/users?tab=2", "accept", "text/html", "x-forwarded-user", "alice",
			"x-forwarded-for", "203.0.113.7", "cookie", cookie)
		return func() error {
			resp, err := c.Check(context.Background(), req)
			if err == nil && resp.GetOkResponse() == nil {
				b.Fatalf("not OK: %v", resp)
			}
			if stepped && len(resp.GetOkResponse().GetHeaders()) < 6 {
				b.Fatalf("no step-up headers: %v", resp)
			}
			return err
		}
	}
	b.Run("http/bare", func(b *testing.B) { measure(b, forwardAuth("http://"+hl.Addr().String()+"/", http.StatusOK)) })
	b.Run("http/forward-auth", func(b *testing.B) { measure(b, forwardAuth(s.Proxy+"/.stepgate/auth", http.StatusOK)) })
	b.Run("grpc/bare", func(b *testing.B) { measure(b, check(authzClient(b, gl.Addr().String(), nil), false)) })
	b.Run("grpc/ext-authz", func(b *testing.B) { measure(b, check(authzClient(b, grpcAddr, nil), true)) })
}
