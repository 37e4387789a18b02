package main

// Issue 18, "Close the tunnels": requests whose framing or protocol switch a
// lenient upstream could read differently from stepgate. The Go httptest
// upstreams of the other tests parse strictly and hide these flaws, so the
// tests here talk to lenientUpstream: a raw TCP server in the spirit of
// hypercorn or an old CGI stack, that answers 101 to any Upgrade and then
// echoes raw bytes, and never reads a GET's body.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

// lenientUpstream is a raw HTTP/1.1 server on loopback that accepts what a
// careful server would refuse.
type lenientUpstream struct {
	URL string
	ln  net.Listener

	mu    sync.Mutex
	reqs  []upstreamRequest
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newLenientUpstream(t *testing.T) *lenientUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &lenientUpstream{URL: "http://" + ln.Addr().String(), ln: ln, conns: map[net.Conn]bool{}}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns[c] = true
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				u.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for c := range u.conns { // stepgate's idle pooled connections too
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

func (u *lenientUpstream) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // a bounded test
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		u.mu.Lock()
		u.reqs = append(u.reqs, upstreamRequest{Method: req.Method, RequestURI: req.RequestURI, Header: req.Header.Clone()})
		u.mu.Unlock()
		if up := req.Header.Get("Upgrade"); up != "" {
			// Any protocol, without looking at Connection or HTTP2-Settings.
			fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", up)
			_, _ = io.Copy(c, br) // a blind echo: whatever the client sends next
			return
		}
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			_, _ = io.Copy(io.Discard, req.Body)
		}
		// A GET's or HEAD's body is left unread: it is the next request.
		body := "lenient saw " + req.Method + " " + req.RequestURI
		if req.Method == http.MethodHead {
			body = ""
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
}

func (u *lenientUpstream) Requests() []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamRequest(nil), u.reqs...)
}

// rawDial sends raw to addr (host:port) and returns the connection and a
// reader positioned at the response.
func rawDial(t *testing.T, base, raw string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

func TestUpgradeSmuggling_OnlyWebSocketIsTunnelled(t *testing.T) {
	up := newLenientUpstream(t)
	s := newStack(t, withEnv("STEPGATE_UPSTREAM", up.URL))
	// Behind the upgrade, a request for an mfa path with a forged identity:
	// what a tunnel would deliver without any rule or header stripping.
	const smuggled = "GET /admin/ HTTP/1.1\r\nHost: x\r\nX-Stepgate-User: mallory\r\n\r\n"
	for _, tt := range []struct{ name, method, headers string }{
		{"h2c on GET", "GET", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"},
		{"h2c without HTTP2-Settings", "GET", "Connection: Upgrade\r\nUpgrade: h2c\r\n"},
		{"H2C in upper case", "GET", "Connection: Upgrade\r\nUpgrade: H2C\r\n"},
		{"h2C in mixed case", "GET", "Connection: upgrade\r\nUpgrade: h2C\r\n"},
		{"keep-alive, upgrade in Connection", "GET", "Connection: keep-alive, upgrade\r\nUpgrade: h2c\r\n"},
		{"h2c on HEAD", "HEAD", "Connection: Upgrade\r\nUpgrade: h2c\r\n"},
		{"h2c on OPTIONS", "OPTIONS", "Connection: Upgrade\r\nUpgrade: h2c\r\n"},
		{"h2c on POST", "POST", "Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 0\r\n"},
		{"another protocol", "GET", "Connection: Upgrade\r\nUpgrade: foo/1\r\n"},
		{"websocket listed with h2c", "GET", "Connection: Upgrade\r\nUpgrade: websocket, h2c\r\n"},
		{"h2c on a second Upgrade line", "GET", "Connection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n"},
		{"an empty Upgrade", "GET", "Connection: Upgrade\r\nUpgrade: \r\n"},
		{"websocket on POST", "POST", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 0\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.Requests())
			rejected := len(s.Logs.Events("request.rejected"))
			c, br := rawDial(t, s.Proxy, tt.method+" /public HTTP/1.1\r\nHost: x\r\n"+tt.headers+"\r\n")
			resp, err := http.ReadResponse(br, &http.Request{Method: tt.method})
			if err != nil {
				t.Fatalf("read response: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				// Show what the tunnel would have carried.
				_, _ = io.WriteString(c, smuggled)
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				echoed, _ := io.ReadAll(io.LimitReader(br, 256))
				t.Fatalf("got %d, want 400; the connection then carried %q", resp.StatusCode, echoed)
			}
			if n := len(up.Requests()); n != before {
				t.Errorf("the upstream received %d request(s); want none", n-before)
			}
			if n := len(s.Logs.Events("request.rejected")); n != rejected+1 {
				t.Errorf("request.rejected audit events: %d new, want 1", n-rejected)
			}
		})
	}
	if got := promCounter(t, s.Admin, "stepgate_requests_total", lbl("decision", "rejected", "code", "400")); got < 13 {
		t.Errorf(`stepgate_requests_total{decision="rejected",code="400"} = %v, want every refusal counted`, got)
	}
}

func TestUpgradeSmuggling_WebSocketStillTunnels(t *testing.T) {
	up := newLenientUpstream(t)
	s := newStack(t, withEnv("STEPGATE_UPSTREAM", up.URL))
	for _, token := range []string{"websocket", "WebSocket", "WEBSOCKET"} {
		t.Run(token, func(t *testing.T) {
			c, br := rawDial(t, s.Proxy, "GET /public/ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: "+token+
				"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatalf("read response: %v", err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("got %d, want 101", resp.StatusCode)
			}
			_, _ = io.WriteString(c, "ping")
			got := make([]byte, 4)
			if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
				t.Fatalf("echo through the tunnel: %q, %v", got, err)
			}
		})
	}
}

func TestUpgradeSmuggling_ThroughAGoReverseProxyInFront(t *testing.T) {
	up := newLenientUpstream(t)
	s := newStack(t, withEnv("STEPGATE_UPSTREAM", up.URL))
	target, _ := url.Parse(s.Proxy)
	front := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set("X-Forwarded-User", "alice") // an IdP in front (oauth2-proxy style)
		},
	})
	t.Cleanup(front.Close)
	for _, token := range []string{"h2c", "H2C", "h2C"} {
		c, br := rawDial(t, front.URL, "GET /public HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: "+token+"\r\n\r\n")
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("%s: read response: %v", token, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			_, _ = io.WriteString(c, "GET /admin/ HTTP/1.1\r\nHost: x\r\n\r\n")
			t.Errorf("Upgrade: %s through a Go proxy in front: got %d, want 400", token, resp.StatusCode)
		}
	}
	if n := len(up.Requests()); n != 0 {
		t.Errorf("the upstream received %d request(s); want none", n)
	}
}

func TestFramingHeaders_LookAlikesAndHTTP2SettingsNeverReachTheUpstream(t *testing.T) {
	s := newStack(t)
	status, _, body := rawExchange(t, s.Proxy, "POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"+
		"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nHttp2_Settings: x\r\nHTTP2.Settings: x\r\n"+
		"Transfer_Encoding: chunked\r\nTransfer.Encoding: chunked\r\nContent_Length: 40\r\nContent.Length: 40\r\n"+
		"Keep_Alive: timeout=1\r\nProxy_Connection: close\r\nProxy.Authorization: Basic eDp5\r\n"+
		"X-Custom_Header: kept\r\n\r\nok")
	if status != http.StatusOK {
		t.Fatalf("got %d %s, want 200", status, body)
	}
	h := s.LastRequest().Header
	fold := strings.NewReplacer("_", "-", ".", "-")
	for name := range h {
		switch fold.Replace(strings.ToLower(name)) {
		case "http2-settings", "transfer-encoding", "keep-alive", "proxy-connection", "proxy-authorization":
			t.Errorf("%s reached the upstream", name)
		case "content-length":
			if name != "Content-Length" {
				t.Errorf("%s reached the upstream", name)
			}
		}
	}
	if h.Get("X-Custom_header") != "kept" {
		t.Errorf("an ordinary header with an underscore was removed: %v", h)
	}
}

func TestCL0_GetAndHeadWithABodyAreRefused(t *testing.T) {
	up := newLenientUpstream(t)
	s := newStack(t, withEnv("STEPGATE_UPSTREAM", up.URL))
	const smuggled = "GET /admin/ HTTP/1.1\r\nHost: x\r\nX-Stepgate-User: mallory\r\n\r\n"
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled)
	for _, tt := range []struct{ name, raw string }{
		{"GET with Content-Length", fmt.Sprintf("GET /public HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled)},
		{"HEAD with Content-Length", fmt.Sprintf("HEAD /public HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled)},
		{"GET chunked", "GET /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked},
		{"HEAD chunked", "HEAD /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked},
	} {
		t.Run(tt.name, func(t *testing.T) {
			method, _, _ := strings.Cut(tt.raw, " ")
			_, br := rawDial(t, s.Proxy, tt.raw)
			resp, err := http.ReadResponse(br, &http.Request{Method: method})
			if err != nil {
				t.Fatalf("read response: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("got %d, want 400", resp.StatusCode)
			}
		})
	}
	// The upstream connection pool may hand the smuggled request's bytes to
	// the next request: send one and look at everything the upstream read.
	if r := s.browser("alice").get("/public/next"); r.StatusCode != http.StatusOK {
		t.Fatalf("GET /public/next: %d", r.StatusCode)
	}
	for _, r := range up.Requests() {
		if r.RequestURI != "/public/next" {
			t.Errorf("the upstream read %s %s", r.Method, r.RequestURI)
		}
	}
	// A GET with an empty body stays fine.
	if status := rawRequest(t, s.Proxy, "GET /public HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"); status != http.StatusOK {
		t.Errorf("GET with Content-Length: 0: %d, want 200", status)
	}
}

func TestClientBodyErrors_Are400NotUpstreamFailures(t *testing.T) {
	s := newStack(t)
	for _, tt := range []struct {
		name, raw string
		halfClose bool
	}{
		{"a broken chunked body", "POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n", false},
		{"a chunk longer than announced", "POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", false},
		{"a body shorter than Content-Length", "POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, br := rawDial(t, s.Proxy, tt.raw)
			if tt.halfClose {
				_ = c.(*net.TCPConn).CloseWrite()
			}
			resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
			if err != nil {
				t.Fatalf("read response: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("got %d, want 400", resp.StatusCode)
			}
		})
	}
	if n := len(jsonLogLines(s.Logs.String(), "upstream error")); n != 0 {
		t.Errorf(`%d "upstream error" lines for the client's own broken bodies; want none: %v`, n, jsonLogLines(s.Logs.String(), "upstream error"))
	}
	if got := promCounter(t, s.Admin, "stepgate_requests_total", lbl("code", "502")); got != 0 {
		t.Errorf(`stepgate_requests_total{code="502"} = %v, want 0 (the upstream did nothing wrong)`, got)
	}
	if n := len(s.Logs.Events("request.rejected")); n != 3 {
		t.Errorf("request.rejected audit events: %d, want 3", n)
	}
}

func TestClientBodyIdleTimeout_AStalledBodyIsCutAndFreesTheUpstream(t *testing.T) {
	upstreamErr := make(chan error, 4)
	s := newStack(t,
		withEnv("STEPGATE_BODY_IDLE_TIMEOUT", "500ms"),
		withUpstream(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, err := io.Copy(io.Discard, r.Body)
			if err == nil {
				fmt.Fprintf(w, "read %d bytes", n)
			}
			upstreamErr <- err
		})))

	t.Run("a body that stalls", func(t *testing.T) {
		start := time.Now()
		_, br := rawDial(t, s.Proxy, "POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nfive.")
		resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
		if err != nil {
			t.Fatalf("no answer to a stalled body: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("got %d, want 408", resp.StatusCode)
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("answered after %v, want about the 500ms idle timeout", d)
		}
		select {
		case err := <-upstreamErr:
			if err == nil {
				t.Error("the upstream read a whole body; want its request abandoned")
			}
		case <-time.After(5 * time.Second):
			t.Error("the upstream is still waiting for the body")
		}
	})

	t.Run("a body that trickles but keeps moving", func(t *testing.T) {
		c, br := rawDial(t, s.Proxy, "POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
		tick := time.NewTicker(200 * time.Millisecond) // slower in total than the idle timeout, never idle that long
		defer tick.Stop()
		for range 8 {
			<-tick.C
			if _, err := io.WriteString(c, "b"); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "read 8 bytes" {
			t.Errorf("got %d %q, want 200 \"read 8 bytes\"", resp.StatusCode, body)
		}
	})
	if n := len(jsonLogLines(s.Logs.String(), "upstream error")); n != 0 {
		t.Errorf(`%d "upstream error" lines for a client's stalled body; want none: %v`, n, jsonLogLines(s.Logs.String(), "upstream error"))
	}
}

// withStrictPolicy adds a second sign-on policy, Strict-MFA, to the demo
// tenant's app.
func withStrictPolicy() stackOption {
	return withTenant(func(tn *pingonesim.Tenant) {
		p := tn.Policies[0]
		p.Name = "Strict-MFA"
		tn.Policies = append(tn.Policies, p)
		tn.Apps[0].Policies = append(tn.Apps[0].Policies, p.Name)
	})
}

// finishChallenge runs alice's SMS step-up from a challenge redirect and
// returns where the completion sends her back to.
func finishChallenge(t *testing.T, s *stack, b *browser, redirect response) string {
	t.Helper()
	r := b.follow(redirect)
	if !strings.Contains(r.Body, `data-state="start"`) {
		t.Fatalf("challenge page not in start state: %d %s", r.StatusCode, r.Body)
	}
	r = b.follow(b.post("action", "start"))
	ids := deviceIDs(r.Body)
	if len(ids) == 0 {
		t.Fatalf("no devices offered: %s", r.Body)
	}
	b.follow(b.post("action", "select", "device", ids[0]))
	r = b.post("action", "otp", "otp", s.latestOTP("alice"))
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("OTP: got %d, want 303: %s", r.StatusCode, r.Body)
	}
	return r.Header.Get("Location")
}

func TestMultiPolicyRule_AStepUpByAnyListedPolicyPasses(t *testing.T) {
	s := newStack(t, withStrictPolicy(), withEnv("STEPGATE_RULES", "/multi/ mfa acr=Strict-MFA,MFA-Only"))
	b := s.browser("alice")
	r := b.get("/multi/")
	if r.StatusCode != http.StatusFound {
		t.Fatalf("GET /multi/: %d, want 302", r.StatusCode)
	}
	if back := finishChallenge(t, s, b, r); back != "/multi/" {
		t.Fatalf("completion returns to %q, want /multi/", back)
	}
	if r := b.get("/multi/"); r.StatusCode != http.StatusOK {
		t.Fatalf("GET /multi/ after the step-up: %d, want 200 (a challenge again is an endless loop)", r.StatusCode)
	}
	if got := s.LastRequest().Header.Get("X-Stepgate-Acr"); got != "Strict-MFA" {
		t.Errorf("X-Stepgate-Acr = %q, want Strict-MFA (the first listed policy PingOne has)", got)
	}
}

func TestMultiPolicyRule_TheFlowAsksForThePolicyOfTheRuleTheMethodMatched(t *testing.T) {
	s := newStack(t, withStrictPolicy(),
		withEnv("STEPGATE_RULES", "GET /orders/ mfa acr=MFA-Only; POST /orders/ mfa acr=Strict-MFA"))
	b := s.browser("alice")
	r := b.postForm("/orders/new", url.Values{"item": {"1"}})
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST /orders/new: %d, want 303 to the challenge", r.StatusCode)
	}
	finishChallenge(t, s, b, r)
	id := startedFlowID(t, s, 0)
	if fi, _ := s.Sim.Flow(id); fi.ACR != "Strict-MFA" {
		t.Errorf("the flow ran policy %q, want Strict-MFA (the POST rule's)", fi.ACR)
	}
	if r := b.postForm("/orders/new", url.Values{"item": {"1"}}); r.StatusCode != http.StatusOK {
		t.Errorf("POST /orders/new after the step-up: %d, want 200", r.StatusCode)
	}
}

func TestFlowReadAmplification_PageReloadsAreBoundedAndDoNotStarveOthers(t *testing.T) {
	// A process-wide PingOne cap of 15/s (burst 31): today's defaults scaled
	// down so that one user's reloads could drain it within the test.
	s := newStack(t, withEnv("STEPGATE_PINGONE_RATE_LIMIT", "15"))
	alice := s.browser("alice")
	r := alice.follow(alice.get("/admin/"))
	if !strings.Contains(r.Body, `data-state="start"`) {
		t.Fatalf("challenge page not in start state: %s", r.Body)
	}
	if r := alice.post("action", "start"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("start: %d, want 303", r.StatusCode)
	}

	before := s.Sim.Requests()
	statuses := map[int]int{}
	const reloads = 200
	for range reloads {
		r := alice.get("/.stepgate/challenge")
		statuses[r.StatusCode]++
		if r.StatusCode == http.StatusTooManyRequests && r.Header.Get("Retry-After") == "" {
			t.Fatal("a 429 without Retry-After")
		}
	}
	reads := s.Sim.Requests() - before
	t.Logf("%d reloads: %d PingOne reads, statuses %v", reloads, reads, statuses)
	if reads > pageReadsPerFlow {
		t.Errorf("%d reloads of one flow cost %d PingOne reads, want at most %d", reloads, reads, pageReadsPerFlow)
	}
	if statuses[http.StatusOK] == 0 || statuses[http.StatusOK]+statuses[http.StatusTooManyRequests] != reloads {
		t.Errorf("statuses %v, want 200 while within the limit and 429 beyond it, nothing else", statuses)
	}
	if got := promCounter(t, s.Admin, "stepgate_rate_limited_total", lbl("limit", "read_flow")); got == 0 {
		t.Error(`stepgate_rate_limited_total{limit="read_flow"} did not move`)
	}

	// Another user's start still reaches PingOne.
	bob := s.browser("bob")
	bob.follow(bob.get("/admin/"))
	if r := bob.post("action", "start"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("bob's start after alice's reloads: %d, want 303: %s", r.StatusCode, r.Body)
	}
}

func TestHostRouting_TheUpstreamSeesItsOwnHostUnlessTheOperatorSaysOtherwise(t *testing.T) {
	type seen struct{ host, forwardedHost string }
	for _, tt := range []struct {
		name string
		env  []string
		want func(upstreamHost string) string
	}{
		{"by default the upstream URL's host", nil, func(u string) string { return u }},
		{"STEPGATE_UPSTREAM_HOST names it", []string{"STEPGATE_UPSTREAM_HOST", "app.internal:8443"}, func(string) string { return "app.internal:8443" }},
		{"STEPGATE_PRESERVE_HOST passes the client's", []string{"STEPGATE_PRESERVE_HOST", "true"}, func(string) string { return "admin.internal" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan seen, 1)
			s := newStack(t, withEnv(tt.env...), withUpstream(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got <- seen{r.Host, r.Header.Get("X-Forwarded-Host")}
			})))
			// The client names a virtual host of the upstream that the
			// rules were not written for.
			status := rawRequest(t, s.Proxy, "GET /public HTTP/1.1\r\nHost: admin.internal\r\n\r\n")
			if status != http.StatusOK {
				t.Fatalf("got %d, want 200", status)
			}
			g := <-got
			if want := tt.want(strings.TrimPrefix(s.Upstream.URL, "http://")); g.host != want {
				t.Errorf("upstream Host = %q, want %q", g.host, want)
			}
			if g.forwardedHost != "admin.internal" {
				t.Errorf("X-Forwarded-Host = %q, want the client's Host", g.forwardedHost)
			}
		})
	}
}

func TestBestFitPaths_LookAlikesAreRefusedOnACaseInsensitiveApp(t *testing.T) {
	s := newStack(t, withEnv("STEPGATE_CASE_INSENSITIVE_PATHS", "true"))
	for _, target := range []string{
		"/%EF%BD%81dmin/", "/%EF%BC%A1DMIN/users", "/admin%EF%BC%8Fusers", "/admin%EF%BC%BCusers",
		"/adm%C4%B1n/", "/%E2%93%90dmin/", "/admin%E2%88%95users",
	} {
		if status := rawRequest(t, s.Proxy, "GET "+target+" HTTP/1.1\r\nHost: x\r\nX-Forwarded-User: alice\r\n\r\n"); status != http.StatusBadRequest {
			t.Errorf("GET %s: got %d, want 400 (Windows best-fit reads it as /admin)", target, status)
		}
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("the upstream received %d look-alike request(s)", n)
	}
	if status := rawRequest(t, s.Proxy, "GET /caf%C3%A9 HTTP/1.1\r\nHost: x\r\n\r\n"); status != http.StatusOK {
		t.Errorf("GET /caf%%C3%%A9: got %d, want 200 (a Latin-1 letter is not a look-alike)", status)
	}
}

// endlessStreams is an upstream with a never-ending event stream at
// /admin/events and a WebSocket echo at /admin/ws.
func endlessStreams(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/admin/ws":
		echoUpgrade(w, r)
	case "/admin/slow":
		<-r.Context().Done() // answers nothing until stepgate gives up
	case "/admin/events":
		w.Header().Set("Content-Type", "text/event-stream")
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := io.WriteString(w, "data: tick\n\n"); err != nil {
				return
			}
			_ = http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	default:
		io.WriteString(w, "ok")
	}
}

func TestStreamsOnMFAPathsEndWhenTheStepUpStopsBeingFresh(t *testing.T) {
	s := newStack(t, withUpstream(http.HandlerFunc(endlessStreams))) // /admin/ mfa max_age=15m
	b := s.stepUpAlice("/admin/")
	cookie := stepgateCookieHeader(t, b)
	// Two seconds of freshness left.
	s.Clock.Advance(15*time.Minute - 2*time.Second)

	assertStreamsCut(t, s, cookie)

	t.Run("a response that has not started yet asks for a new step-up", func(t *testing.T) {
		c, br := rawDial(t, s.Proxy, "GET /admin/slow HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"+
			"X-Forwarded-User: alice\r\nCookie: "+cookie+"\r\n\r\n")
		_ = c.SetDeadline(time.Now().Add(8 * time.Second))
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "insufficient_user_authentication") {
			t.Errorf("got %d %q, want 401 with a step-up challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})
	if n := len(jsonLogLines(s.Logs.String(), "upstream error")); n != 0 {
		t.Errorf(`%d "upstream error" lines; a step-up running out is not the upstream failing`, n)
	}
}

// assertStreamsCut opens an event stream and a WebSocket through a stepped-up
// cookie with about 2 s of freshness left, and checks both are cut then.
func assertStreamsCut(t *testing.T, s *stack, cookie string) {
	t.Helper()
	for _, tt := range []struct{ name, head string }{
		{"a server-sent event stream", "GET /admin/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"},
		{"a WebSocket", "GET /admin/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			c, br := rawDial(t, s.Proxy, tt.head+"X-Forwarded-User: alice\r\nCookie: "+cookie+"\r\n\r\n")
			_ = c.SetDeadline(time.Now().Add(8 * time.Second))
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatalf("read response: %v", err)
			}
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("got %d, want the stream", resp.StatusCode)
			}
			body := io.Reader(resp.Body)
			if resp.StatusCode == http.StatusSwitchingProtocols {
				body = br
				// Keep the echo busy so the stream is live, not idle.
				go func() {
					tick := time.NewTicker(100 * time.Millisecond)
					defer tick.Stop()
					for range 100 {
						if _, err := io.WriteString(c, "ping\n"); err != nil {
							return
						}
						<-tick.C
					}
				}()
			}
			n, err := io.Copy(io.Discard, body)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the stream was still open after %v (%d bytes); want it cut when the step-up stops being fresh", time.Since(start), n)
			}
			if d := time.Since(start); d < time.Second || d > 6*time.Second {
				t.Errorf("the stream ended after %v, want about the 2 s of freshness left", d)
			}
			if n == 0 {
				t.Error("nothing streamed before the cut")
			}
		})
	}

}

// With a short wait for response headers, the freshness outlasts it and the
// cut is armed only once the response turns out to be a stream (no timer
// for ordinary requests): streams are cut all the same.
func TestStreamsAreCutAlsoWhenTheTimerIsArmedByTheResponse(t *testing.T) {
	s := newStack(t, withUpstream(http.HandlerFunc(endlessStreams)), withEnv("STEPGATE_UPSTREAM_TIMEOUT", "500ms"))
	b := s.stepUpAlice("/admin/")
	cookie := stepgateCookieHeader(t, b)
	s.Clock.Advance(15*time.Minute - 2*time.Second)
	assertStreamsCut(t, s, cookie)
	// An ordinary response on the same path is not cut short.
	c, br := rawDial(t, s.Proxy, "GET /admin/page HTTP/1.1\r\nHost: x\r\nX-Forwarded-User: alice\r\nCookie: "+cookie+"\r\n\r\n")
	_ = c.SetDeadline(time.Now().Add(8 * time.Second))
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("an ordinary page: %d", resp.StatusCode)
	}
}
