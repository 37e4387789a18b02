//go:build unix

package upstreamtest_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/proxy/upstreamtest"
)

// Every kind starts, answers with its echo line and records the request,
// headers and body length included: the matrix's assertions rest on these
// records.
func TestEveryUpstreamEchoesAndRecordsWhatItReceived(t *testing.T) {
	for _, k := range upstreamtest.Kinds() {
		t.Run(k.Name, func(t *testing.T) {
			t.Parallel()
			s := k.Start(t)
			conn, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(conn, "POST /probe/1?q=2 HTTP/1.1\r\nHost: upstream.test\r\nX-Stepgate-User: alice\r\n"+
				"X-Forwarded-User: bob\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("read response: %v; output:\n%s", err, s.Output())
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := "echo POST /probe/1?q=2 user=alice\n"; resp.StatusCode != 200 || string(body) != want {
				t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
			}
			conn.Close() // nginx logs a request only once its lingering close is over
			s.Sync()
			reqs := s.Requests()
			if len(reqs) != 1 {
				t.Fatalf("recorded %d requests, want 1: %v", len(reqs), reqs)
			}
			r := reqs[0]
			if r.Method != "POST" || r.Target != "/probe/1?q=2" || r.Header("x-stepgate-user") != "alice" ||
				r.Header("x-forwarded-user") != "bob" || !strings.HasPrefix(r.Header("host"), "upstream.test") {
				t.Errorf("recorded %v", r)
			}
			if k.Name != "nginx" && r.BodyLen != 5 { // nginx logs the Content-Length header
				t.Errorf("recorded body length %d, want 5", r.BodyLen)
			}
		})
	}
}
