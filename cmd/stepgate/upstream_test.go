package main

// Upstream faults (issue 8, docs/design.md §6 and §10): an upstream that is down,
// slow or drops connections gets the right page and status, and long-lived
// streams (WebSocket, server-sent events) pass through unbuffered for their
// whole length, longer than the upstream response timeout.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// closedPort is a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// apiGet sends an API-style request (no text/html) as user.
func apiGet(t *testing.T, b *browser, path string) response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.base+path, nil)
	req.Header.Set("Accept", "application/json")
	return b.do(req)
}

func TestUpstreamDownShows502(t *testing.T) {
	s := newStack(t, withEnv("STEPGATE_UPSTREAM", "http://"+closedPort(t)))

	r := s.browser("alice").get("/public/")
	if r.StatusCode != http.StatusBadGateway {
		t.Fatalf("allow path, upstream down: got %d, want 502", r.StatusCode)
	}
	if !strings.Contains(r.Body, "The application is not reachable right now") || !strings.Contains(r.Body, `data-state="error"`) {
		t.Errorf("502 page does not say the application is unreachable: %s", r.Body)
	}
	if r := apiGet(t, s.browser("alice"), "/public/data"); r.StatusCode != http.StatusBadGateway ||
		!strings.Contains(r.Body, `"error":"upstream_unavailable"`) {
		t.Errorf("API call, upstream down: got %d %s, want 502 JSON upstream_unavailable", r.StatusCode, r.Body)
	}

	// The challenge is stepgate's own: it works with the upstream down, and
	// the stepped-up request then gets the 502 page, not a challenge.
	b := s.stepUpAlice("/admin/")
	if r := b.get("/admin/"); r.StatusCode != http.StatusBadGateway {
		t.Errorf("stepped-up path, upstream down: got %d, want 502", r.StatusCode)
	}
	if got := promCounter(t, s.Admin, "stepgate_requests_total", lbl("code", "502")); got != 3 {
		t.Errorf(`stepgate_requests_total{code="502"}: got %v, want 3`, got)
	}
	var warned int
	for _, l := range jsonLogLines(s.Logs.String(), "upstream error") {
		if l["level"] == "WARN" && l["status"] == float64(http.StatusBadGateway) {
			warned++
		}
	}
	if warned != 3 {
		t.Errorf("WARN \"upstream error\" lines with status 502: got %d, want 3", warned)
	}
}

func TestSlowUpstreamTimesOutWith504(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	s := newStack(t,
		withEnv("STEPGATE_UPSTREAM_TIMEOUT", "300ms"),
		withUpstream(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/fast" {
				io.WriteString(w, "fast")
				return
			}
			select { // never answers in time
			case <-release:
			case <-r.Context().Done():
			}
		})))

	r := s.browser("alice").get("/slow")
	if r.StatusCode != http.StatusGatewayTimeout || !strings.Contains(r.Body, "The application took too long to answer") {
		t.Fatalf("slow upstream: got %d, want 504 page: %s", r.StatusCode, r.Body)
	}
	if r := apiGet(t, s.browser("alice"), "/slow"); r.StatusCode != http.StatusGatewayTimeout ||
		!strings.Contains(r.Body, `"error":"upstream_timeout"`) {
		t.Errorf("API call to a slow upstream: got %d %s, want 504 JSON upstream_timeout", r.StatusCode, r.Body)
	}
	if got := promCounter(t, s.Admin, "stepgate_requests_total", lbl("decision", "allow", "code", "504")); got != 2 {
		t.Errorf(`stepgate_requests_total{decision="allow",code="504"}: got %v, want 2`, got)
	}
	// One slow endpoint does not hold up the others.
	if r := s.browser("alice").get("/fast"); r.StatusCode != http.StatusOK || r.Body != "fast" {
		t.Errorf("fast endpoint after timeouts: got %d %q", r.StatusCode, r.Body)
	}
}

func TestUpstreamClosingConnections(t *testing.T) {
	s := newStack(t, withUpstream(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hangup": // accepts the request, then closes without a word
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		case "/midbody": // promises 1000 bytes, sends 10, closes
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "0123456789")
			http.NewResponseController(w).Flush()
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		default: // closes every connection after its answer
			w.Header().Set("Connection", "close")
			fmt.Fprintf(w, "ok %s", r.URL.Path)
		}
	})))

	b := s.browser("alice")
	if r := b.get("/hangup"); r.StatusCode != http.StatusBadGateway {
		t.Errorf("upstream hung up before answering: got %d, want 502", r.StatusCode)
	}
	// A response cut short: the status is already sent, so the client must
	// see a truncated body (an error), never a silently short 200.
	resp, err := b.Client.Get(s.Proxy + "/midbody")
	if err == nil {
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil && len(body) == 1000 {
			t.Errorf("truncated upstream body arrived whole: %q", body)
		}
		if rerr == nil {
			t.Errorf("truncated upstream body (%d of 1000 bytes) read without an error", len(body))
		}
	}
	// An upstream that closes every connection: every request still works,
	// each on a fresh upstream connection.
	for i := range 50 {
		p := fmt.Sprintf("/item/%d", i)
		if r := b.get(p); r.StatusCode != http.StatusOK || r.Body != "ok "+p {
			t.Fatalf("request %d with Connection: close upstream: got %d %q", i, r.StatusCode, r.Body)
		}
	}
}

// stepgateCookieHeader is the Cookie header a browser would send to the
// proxy.
func stepgateCookieHeader(t *testing.T, b *browser) string {
	t.Helper()
	u, _ := url.Parse(b.base)
	var parts []string
	for _, c := range b.Client.Jar.Cookies(u) {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return strings.Join(parts, "; ")
}

// echoUpgrade is an upstream that accepts a WebSocket upgrade and then
// echoes lines ("echo: <line>") until the client closes. Framing does not
// matter to a proxy: after 101 it only copies bytes.
func echoUpgrade(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "want an upgrade", http.StatusBadRequest)
		return
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Saw-User: %s\r\n\r\n",
		r.Header.Get("X-Stepgate-User"))
	rw.Flush()
	for {
		line, err := rw.ReadString('\n')
		if err != nil {
			return
		}
		rw.WriteString("echo: " + line)
		rw.Flush()
	}
}

func TestWebSocketThroughTheProxySurvivesItsFullLength(t *testing.T) {
	s := newStack(t,
		withEnv("STEPGATE_UPSTREAM_TIMEOUT", "300ms"),
		withUpstream(http.HandlerFunc(echoUpgrade)))
	b := s.stepUpAlice("/admin/")
	proxyAddr := strings.TrimPrefix(s.Proxy, "http://")

	upgrade := func(path, cookie string) (net.Conn, *bufio.Reader, *http.Response) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"+
			"X-Forwarded-User: alice\r\nCookie: %s\r\n\r\n", path, proxyAddr, cookie)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("upgrade response: %v", err)
		}
		return conn, br, resp
	}

	// Without a step-up an upgrade on an mfa path is refused like any API
	// call; it never reaches the upstream.
	if _, _, resp := upgrade("/admin/ws", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("upgrade without a step-up: got %d, want 401", resp.StatusCode)
	}

	conn, br, resp := upgrade("/admin/ws", stepgateCookieHeader(t, b))
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("stepped-up upgrade: got %d, want 101", resp.StatusCode)
	}
	if got := resp.Header.Get("X-Saw-User"); got != "alice" {
		t.Errorf("upstream saw X-Stepgate-User %q on the upgrade, want alice", got)
	}
	// 40 round trips paced 20 ms apart: the session outlives the 300 ms
	// upstream timeout, and each echo must come back before the next send
	// (a buffering proxy would stall here until the deadline).
	const n = 40
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for i := range n {
		<-tick.C
		msg := fmt.Sprintf("message %d\n", i)
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		got, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("echo %d after %v: %v", i, time.Since(start), err)
		}
		if got != "echo: "+msg {
			t.Fatalf("echo %d: got %q, want %q", i, got, "echo: "+msg)
		}
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("stream lasted %v; the test means to outlive the 300ms upstream timeout", d)
	}
}

func TestServerSentEventsArriveUnbufferedForTheirFullLength(t *testing.T) {
	const n = 15
	ack := make(chan int)
	s := newStack(t,
		withEnv("STEPGATE_UPSTREAM_TIMEOUT", "300ms"),
		withUpstream(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			rc := http.NewResponseController(w)
			tick := time.NewTicker(40 * time.Millisecond)
			defer tick.Stop()
			for i := range n {
				fmt.Fprintf(w, "id: %d\ndata: event %d for %s\n\n", i, i, r.Header.Get("X-Stepgate-User"))
				if err := rc.Flush(); err != nil {
					return
				}
				// Lockstep: the next event is sent only after the client
				// got this one, so any buffering in between stalls the
				// stream until the client's deadline.
				select {
				case <-ack:
				case <-r.Context().Done():
					return
				}
				<-tick.C
			}
		})))
	b := s.stepUpAlice("/admin/")

	req, _ := http.NewRequest(http.MethodGet, s.Proxy+"/admin/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("X-Forwarded-User", "alice")
	req.Header.Set("Cookie", stepgateCookieHeader(t, b))
	client := &http.Client{Timeout: 20 * time.Second}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("SSE through the proxy: got %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := make(chan string, n+1) // never blocks the reader if the test fails early
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events <- d
			}
		}
	}()
	for i := range n {
		select {
		case got, ok := <-events:
			if !ok {
				t.Fatalf("stream ended after %d of %d events", i, n)
			}
			if want := fmt.Sprintf("event %d for alice", i); got != want {
				t.Fatalf("event %d: got %q, want %q", i, got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d not delivered within 5s: the proxy buffers the stream", i)
		}
		ack <- i
	}
	if _, ok := <-events; ok {
		t.Error("more events than sent")
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("stream lasted %v; the test means to outlive the 300ms upstream timeout", d)
	}
}
