//go:build unix

package main

// The upstream matrix (issue 18): the framing, upgrade and smuggling attacks
// run against stepgate in front of real non-Go servers (hypercorn, Python's
// http.server, Apache httpd with a CGI, nginx, PHP's built-in server, Node's
// http), because Go's strict parser hides exactly the flaws that matter in
// front of legacy apps. For every attack and every upstream: no request for
// /admin/… reaches the upstream (its own request log says so), no forged
// identity header reaches it, and the client never sees the upstream's
// answer to an /admin/ request.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepgate/stepgate/proxy/upstreamtest"
)

// matrixHost is the Host every attack sends.
const matrixHost = "stepgate.test"

// smuggled is the request an attack hides from stepgate: an mfa path with
// forged identity headers, marked with the attack's slug.
func smuggled(slug string) string {
	return "GET /admin/" + slug + " HTTP/1.1\r\nHost: " + matrixHost + "\r\nX-Stepgate-User: forged-" + slug +
		"\r\nX-Forwarded-User: forged-" + slug + "\r\n\r\n"
}

// crlf joins header lines into a request head.
func crlf(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n\r\n" }

// h2cFollowUp is what a client sends once an h2c upgrade is answered 101:
// the HTTP/2 preface, an empty SETTINGS frame and a HEADERS frame (stream 3,
// stream 1 being the upgraded request) for /admin/<slug> with forged
// identity headers, HPACK literals without Huffman coding.
func h2cFollowUp(slug string) string {
	var hb []byte
	lit := func(name, value string) {
		hb = append(hb, 0x00, byte(len(name)))
		hb = append(hb, name...)
		hb = append(hb, byte(len(value)))
		hb = append(hb, value...)
	}
	lit(":method", "GET")
	lit(":scheme", "http")
	lit(":path", "/admin/"+slug)
	lit(":authority", matrixHost)
	lit("x-stepgate-user", "forged-"+slug)
	lit("x-forwarded-user", "forged-"+slug)
	frame := func(typ, flags byte, stream uint32, payload []byte) []byte {
		n := len(payload)
		f := []byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags,
			byte(stream >> 24), byte(stream >> 16), byte(stream >> 8), byte(stream)}
		return append(f, payload...)
	}
	out := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	out = append(out, frame(0x4, 0, 0, nil)...)                // SETTINGS
	out = append(out, frame(0x1, 0x4|0x1, 3, hb)...)           // HEADERS, END_HEADERS|END_STREAM
	out = append(out, frame(0x4, 0x1, 0, nil)...)              // SETTINGS ACK
	out = append(out, frame(0x6, 0, 0, []byte("pingpong"))...) // PING, to get an answer
	return string(out)
}

// h2cSettings is a valid base64url HTTP2-Settings value (no settings).
const h2cSettings = "AAMAAABkAARAAAAAAAIAAAAA"

// matrixAttack is one row of the attack table.
type matrixAttack struct {
	class string // the class in SECURITY.md's table
	name  string
	// first is sent at once; if the answer to it is 101 Switching
	// Protocols, after101 follows on the same connection.
	first, after101 func(slug string) string
}

func h2cUpgrade(method, upgrade, connection string, settings bool, body string) func(string) string {
	return func(slug string) string {
		lines := []string{method + " /public/" + slug + " HTTP/1.1", "Host: " + matrixHost,
			"X-Forwarded-User: mallory", "Connection: " + connection, "Upgrade: " + upgrade}
		if settings {
			lines = append(lines, "HTTP2-Settings: "+h2cSettings)
		}
		if body != "" {
			lines = append(lines, "Content-Length: "+strconv.Itoa(len(body)))
		}
		return crlf(lines...) + body
	}
}

// allowHead is the start of a request for an allow path, as mallory (a
// signed-in user who has not stepped up).
func allowHead(method, slug string) []string {
	return []string{method + " /public/" + slug + " HTTP/1.1", "Host: " + matrixHost, "X-Forwarded-User: mallory"}
}

// withBody is a request for an allow path with extra header lines and a body.
func withBody(method string, headers func(body string) []string, body func(slug string) string) func(string) string {
	return func(slug string) string {
		b := body(slug)
		return crlf(append(allowHead(method, slug), headers(b)...)...) + b
	}
}

func chunkedOf(s string) string { return fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(s), s) }

func matrixAttacks() []matrixAttack {
	h2c := func(slug string) string { return h2cFollowUp(slug) }
	tunnel := func(slug string) string { return smuggled(slug) }
	cl := func(b string) []string { return []string{"Content-Length: " + strconv.Itoa(len(b))} }
	hdr := func(lines ...string) func(string) []string { return func(string) []string { return lines } }
	var rows []matrixAttack
	for _, u := range []struct {
		name, method, upgrade, connection string
		settings                          bool
		body                              string
	}{
		{"h2c with HTTP2-Settings named in Connection", "GET", "h2c", "Upgrade, HTTP2-Settings", true, ""},
		{"h2c with HTTP2-Settings not named in Connection", "GET", "h2c", "Upgrade", true, ""},
		{"h2c without HTTP2-Settings", "GET", "h2c", "Upgrade", false, ""},
		{"H2C", "GET", "H2C", "Upgrade", true, ""},
		{"h2C", "GET", "h2C", "upgrade", true, ""},
		{"h2c with Connection: keep-alive, upgrade", "GET", "h2c", "keep-alive, upgrade", true, ""},
		{"h2c on HEAD", "HEAD", "h2c", "Upgrade", true, ""},
		{"h2c on OPTIONS", "OPTIONS", "h2c", "Upgrade", true, ""},
		{"h2c on POST with a body", "POST", "h2c", "Upgrade", true, "a=1"},
		{"h2c listed after websocket", "GET", "websocket, h2c", "Upgrade", true, ""},
		{"h2c listed before websocket", "GET", "h2c, websocket", "Upgrade", true, ""},
	} {
		rows = append(rows, matrixAttack{"upgrade: h2c", u.name,
			h2cUpgrade(u.method, u.upgrade, u.connection, u.settings, u.body), h2c})
	}
	// Two Upgrade or Connection lines: a check that reads one line while
	// the proxy forwards another would pass h2c on.
	for _, two := range []struct{ name, lines string }{
		{"Upgrade: websocket and Upgrade: h2c on two lines", "Connection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c"},
		{"Upgrade: h2c and Upgrade: websocket on two lines", "Connection: Upgrade\r\nUpgrade: h2c\r\nUpgrade: websocket"},
		{"Connection: close and Connection: Upgrade on two lines", "Connection: close\r\nConnection: Upgrade\r\nUpgrade: h2c"},
	} {
		rows = append(rows, matrixAttack{"upgrade: h2c", two.name, func(slug string) string {
			return crlf(append(allowHead("GET", slug), two.lines, "HTTP2-Settings: "+h2cSettings)...)
		}, h2c})
	}
	rows = append(rows, matrixAttack{class: "upgrade: h2c", name: "HTTP/2 with prior knowledge (the preface first)",
		first: func(slug string) string { return h2cFollowUp(slug) }})
	for _, tok := range []string{"websocket", "TLS/1.0", "HTTP/2.0", "foo"} {
		rows = append(rows, matrixAttack{"upgrade: other tokens", "Upgrade: " + tok + ", then HTTP/1.1 in the tunnel",
			h2cUpgrade("GET", tok, "Upgrade", false, ""), tunnel})
	}
	rows = append(rows,
		matrixAttack{class: "CL.TE", name: "Content-Length and chunked, body ends early for chunked",
			first: withBody("POST", func(b string) []string { return append(cl(b), "Transfer-Encoding: chunked") },
				func(s string) string { return "0\r\n\r\n" + smuggled(s) })},
		matrixAttack{class: "TE.CL", name: "chunked and a short Content-Length",
			first: withBody("POST", hdr("Content-Length: 4", "Transfer-Encoding: chunked"),
				func(s string) string { return chunkedOf(smuggled(s)) })},
		matrixAttack{class: "TE.CL", name: "Transfer-Encoding: chunked, identity",
			first: withBody("POST", func(b string) []string { return append(cl(b), "Transfer-Encoding: chunked, identity") },
				func(s string) string { return "0\r\n\r\n" + smuggled(s) })},
		matrixAttack{class: "TE.CL", name: "two Transfer-Encoding: chunked lines",
			first: withBody("POST", func(b string) []string {
				return append(cl(b), "Transfer-Encoding: chunked", "Transfer-Encoding: chunked")
			}, func(s string) string { return "0\r\n\r\n" + smuggled(s) })},
		matrixAttack{class: "TE.CL", name: "Transfer-Encoding: xchunked",
			first: withBody("POST", func(b string) []string { return append(cl(b), "Transfer-Encoding: xchunked") },
				func(s string) string { return "0\r\n\r\n" + smuggled(s) })},
		matrixAttack{class: "CL.0", name: "GET with a Content-Length body",
			first: withBody("GET", cl, smuggled)},
		matrixAttack{class: "CL.0", name: "HEAD with a Content-Length body",
			first: withBody("HEAD", cl, smuggled)},
		matrixAttack{class: "CL.0", name: "DELETE with a Content-Length body",
			first: withBody("DELETE", cl, smuggled)},
		matrixAttack{class: "CL.0", name: "OPTIONS with a Content-Length body",
			first: withBody("OPTIONS", cl, smuggled)},
		matrixAttack{class: "CL.0", name: "TRACE with a Content-Length body",
			first: withBody("TRACE", cl, smuggled)},
		matrixAttack{class: "CL.0", name: "GET with a chunked body",
			first: withBody("GET", hdr("Transfer-Encoding: chunked"), func(s string) string { return chunkedOf(smuggled(s)) })},
		matrixAttack{class: "TE.CL", name: "HTTP/1.0 with chunked and a Content-Length",
			first: func(s string) string {
				b := chunkedOf(smuggled(s))
				return strings.Replace(crlf(append(allowHead("POST", s), "Connection: keep-alive", "Content-Length: 4",
					"Transfer-Encoding: chunked")...), "HTTP/1.1", "HTTP/1.0", 1) + b
			}},
		matrixAttack{class: "CL.0", name: "Content-Length named in Connection",
			first: withBody("POST", func(b string) []string { return append(cl(b), "Connection: Content-Length") },
				func(s string) string { return "a=1&" + smuggled(s) })},
		matrixAttack{class: "CL.0", name: "Transfer-Encoding named in Connection",
			first: withBody("POST", hdr("Transfer-Encoding: chunked", "Connection: Transfer-Encoding"),
				func(s string) string { return chunkedOf("a=1") + smuggled(s) })},
		matrixAttack{class: "duplicate lengths", name: "two different Content-Length headers",
			first: withBody("POST", func(b string) []string {
				return []string{"Content-Length: 0", "Content-Length: " + strconv.Itoa(len(b))}
			}, smuggled)},
		matrixAttack{class: "duplicate lengths", name: "Content-Length: 0, N",
			first: withBody("POST", func(b string) []string { return []string{"Content-Length: 0, " + strconv.Itoa(len(b))} }, smuggled)},
		matrixAttack{class: "duplicate lengths", name: "two identical Content-Length headers, then a pipelined request",
			first: func(s string) string {
				return crlf(append(allowHead("POST", s), "Content-Length: 3", "Content-Length: 3")...) + "a=1" + smuggled(s)
			}},
		matrixAttack{class: "obs-fold", name: "folded Transfer-Encoding",
			first: withBody("POST", func(b string) []string { return append(cl(b), "Transfer-Encoding: identity\r\n chunked") },
				func(s string) string { return "0\r\n\r\n" + smuggled(s) })},
		matrixAttack{class: "obs-fold", name: "folded Content-Length",
			first: withBody("POST", func(b string) []string { return []string{"Content-Length: 0\r\n " + strconv.Itoa(len(b))} }, smuggled)},
		matrixAttack{class: "obs-fold", name: "identity header folded into another",
			first: func(s string) string {
				return crlf(append(allowHead("GET", s), "X-App: a\r\n X-Stepgate-User: forged-"+s)...)
			}},
		matrixAttack{class: "bare LF", name: "bare LF line endings, pipelined mfa request",
			first: func(s string) string {
				return strings.ReplaceAll(crlf(allowHead("GET", s)...)+smuggled(s), "\r\n", "\n")
			}},
		matrixAttack{class: "bare LF", name: "bare LF inside a header block",
			first: func(s string) string {
				return crlf(append(allowHead("GET", s), "X-App: a\nX-Stepgate-User: forged-"+s+"\nX-B: b")...)
			}},
		matrixAttack{class: "bare LF", name: "bare LF in chunk lines",
			first: withBody("POST", hdr("Transfer-Encoding: chunked"),
				func(s string) string { return strings.ReplaceAll(chunkedOf("a=1"), "\r\n", "\n") + smuggled(s) })},
		matrixAttack{class: "pipelining", name: "mfa request pipelined behind an allow request",
			first: func(s string) string { return crlf(allowHead("GET", s)...) + smuggled(s) }},
		matrixAttack{class: "pipelining", name: "mfa request pipelined behind a POST with a body",
			first: func(s string) string {
				return crlf(append(allowHead("POST", s), "Content-Length: 3")...) + "a=1" + smuggled(s)
			}},
		matrixAttack{class: "pipelining", name: "HTTP/1.0 keep-alive, mfa request pipelined",
			first: func(s string) string {
				return strings.Replace(crlf(append(allowHead("GET", s), "Connection: keep-alive")...), "HTTP/1.1", "HTTP/1.0", 1) + smuggled(s)
			}},
		matrixAttack{class: "pipelining", name: "a body holding a request on a challenged POST to an mfa path",
			first: func(s string) string {
				b := smuggled(s)
				return crlf("POST /admin/"+s+"-outer HTTP/1.1", "Host: "+matrixHost, "X-Forwarded-User: mallory",
					"Content-Length: "+strconv.Itoa(len(b))) + b
			}},
		matrixAttack{class: "pipelining", name: "Expect: 100-continue on a challenged POST, the body sent anyway",
			first: func(s string) string {
				b := smuggled(s)
				return crlf("POST /admin/"+s+"-outer HTTP/1.1", "Host: "+matrixHost, "X-Forwarded-User: mallory",
					"Expect: 100-continue", "Content-Length: "+strconv.Itoa(len(b))) + b
			}},
		matrixAttack{class: "approve rules", name: "a request held for approval with a request in its body",
			first: func(s string) string {
				b := "a=1&" + smuggled(s)
				return crlf("POST /pay/"+s+" HTTP/1.1", "Host: "+matrixHost, "X-Forwarded-User: mallory",
					"Content-Type: application/x-www-form-urlencoded", "Content-Length: "+strconv.Itoa(len(b))) + b
			}},
		matrixAttack{class: "approve rules", name: "a chunked request held for approval, a request after it",
			first: func(s string) string {
				return crlf("POST /pay/"+s+" HTTP/1.1", "Host: "+matrixHost, "X-Forwarded-User: mallory",
					"Content-Type: application/x-www-form-urlencoded", "Transfer-Encoding: chunked") + chunkedOf("a=1") + smuggled(s)
			}},
		matrixAttack{class: "approve rules", name: "lower-case post on an approve rule",
			first: func(s string) string {
				return crlf("post /pay/"+s+" HTTP/1.1", "Host: "+matrixHost, "X-Forwarded-User: mallory",
					"Content-Type: application/x-www-form-urlencoded", "Content-Length: 3") + "a=1"
			}},
		matrixAttack{class: "method confusion", name: "lower-case post on a POST-only mfa rule",
			first: func(s string) string {
				return crlf("post /forms/"+s+" HTTP/1.1", "Host: "+matrixHost, "X-Forwarded-User: mallory", "Content-Length: 3") + "a=1"
			}},
		matrixAttack{class: "method confusion", name: "GET with X-HTTP-Method-Override: POST on a POST-only mfa rule",
			first: func(s string) string {
				return crlf("GET /forms/"+s+" HTTP/1.1", "Host: "+matrixHost, "X-Forwarded-User: mallory",
					"X-HTTP-Method-Override: POST", "X_HTTP_Method_Override: POST", "X-Method-Override: POST")
			}},
		matrixAttack{class: "path confusion", name: "encoded letters, a missing slash, dot segments, encoded separators",
			first: func(s string) string {
				var b strings.Builder
				for _, target := range []string{"/%61dmin/" + s, "/admin?" + s, "/public/..%2fadmin/" + s, "/public/%2e%2e/admin/" + s,
					"/public/../admin/" + s, "//admin/" + s, "/admin;x=1/" + s, "/%2561dmin/" + s, "/admin%2f" + s} {
					b.WriteString(crlf("GET "+target+" HTTP/1.1", "Host: "+matrixHost, "X-Forwarded-User: mallory"))
				}
				return b.String()
			}},
		matrixAttack{class: "Host routing", name: "a Host naming another virtual host",
			first: func(s string) string {
				return crlf("GET /public/"+s+" HTTP/1.1", "Host: admin.internal", "X-Forwarded-User: mallory")
			}},
		matrixAttack{class: "Host routing", name: "an absolute-form target naming another host",
			first: func(s string) string {
				return crlf("GET http://admin.internal/public/"+s+" HTTP/1.1", "Host: "+matrixHost, "X-Forwarded-User: mallory")
			}},
		matrixAttack{class: "forged identity", name: "an identity header behind obs-text NEL (0x85) in another header",
			first: func(s string) string {
				return crlf(append(allowHead("GET", s), "X-App: a\x85X-Stepgate-User: forged-"+s+"\x85X-Forwarded-User: forged-"+s)...)
			}},
		matrixAttack{class: "TE.CL", name: "a chunk extension carrying a request",
			first: withBody("POST", hdr("Transfer-Encoding: chunked"), func(s string) string {
				return "3;x=\"" + strings.ReplaceAll(smuggled(s), "\r\n", " ") + "\"\r\na=1\r\n0\r\n\r\n"
			})},
		matrixAttack{class: "path confusion", name: "CONNECT to another authority",
			first: func(s string) string {
				// The slug is the authority: a CONNECT that got through would
				// show up by its Host.
				return crlf("CONNECT "+s+".internal:80 HTTP/1.1", "Host: "+s+".internal:80", "X-Forwarded-User: mallory") + smuggled(s)
			}},
		matrixAttack{class: "forged identity", name: "identity headers in a chunked trailer",
			first: withBody("POST", hdr("Transfer-Encoding: chunked", "Trailer: X-Stepgate-User, X-Forwarded-User"),
				func(s string) string {
					return "3\r\na=1\r\n0\r\nX-Stepgate-User: forged-" + s + "\r\nX-Forwarded-User: forged-" + s + "\r\n\r\n"
				})},
		matrixAttack{class: "look-alike framing headers", name: "Transfer_Encoding: chunked with a Content-Length",
			first: withBody("POST", func(b string) []string { return append(cl(b), "Transfer_Encoding: chunked") },
				func(s string) string { return "0\r\n\r\n" + smuggled(s) })},
		matrixAttack{class: "look-alike framing headers", name: "Transfer.Encoding: chunked with a Content-Length",
			first: withBody("POST", func(b string) []string { return append(cl(b), "Transfer.Encoding: chunked") },
				func(s string) string { return "0\r\n\r\n" + smuggled(s) })},
		matrixAttack{class: "look-alike framing headers", name: "GET with Content_Length and a body",
			first: withBody("GET", func(b string) []string { return []string{"Content_Length: " + strconv.Itoa(len(b))} }, smuggled)},
		matrixAttack{class: "look-alike framing headers", name: "GET with Transfer_Encoding and a chunked body",
			first: withBody("GET", hdr("Transfer_Encoding: chunked"), func(s string) string { return chunkedOf(smuggled(s)) })},
		matrixAttack{class: "forged identity", name: "X-Stepgate-* in several spellings on an allow path",
			first: func(s string) string {
				return crlf(append(allowHead("GET", s), "X-Stepgate-User: forged-"+s, "X_Stepgate_User: forged-"+s,
					"X.Stepgate.Subject: forged-"+s, "x-STEPGATE-acr: forged-"+s, "X_Forwarded_User: forged-"+s,
					"X-Forwarded.User: forged-"+s)...)
			}},
	)
	for i := range rows {
		if rows[i].after101 == nil {
			rows[i].after101 = func(string) string { return "" }
		}
	}
	return rows
}

// slugOf makes a path-safe marker from a row's name.
func slugOf(prefix, name string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

// attackOutcome is what the client saw.
type attackOutcome struct {
	status int    // of the first response, 0 if none
	raw    []byte // everything read
}

// runAttack sends one attack over a fresh connection to addr and reads until
// the connection closes or stays quiet for a moment after an answer. With
// until (a positive control: the attack is known to reach the upstream),
// quiet is not the end: the connection stays open until until reports the
// upstream has served what the attack smuggled, or the server closes it —
// closing early would abort a slow CGI before it logs the request, and a
// control must not depend on how fast a loaded machine is.
func runAttack(addr string, a matrixAttack, slug string, until func() bool) (attackOutcome, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return attackOutcome{}, err
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, a.first(slug)); err != nil {
		return attackOutcome{}, fmt.Errorf("write: %w", err)
	}
	var out attackOutcome
	sentFollowUp := false
	hardStop := time.Now().Add(15 * time.Second)
	if until != nil {
		hardStop = time.Now().Add(2 * time.Minute) // a failure bound only
	}
	wait := 10 * time.Second // for the first answer (CGI under load is slow); then only for quiet
	buf := make([]byte, 32<<10)
	for time.Now().Before(hardStop) {
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		n, err := conn.Read(buf)
		out.raw = append(out.raw, buf[:n]...)
		if out.status == 0 && bytes.HasPrefix(out.raw, []byte("HTTP/1.")) && len(out.raw) >= 12 {
			out.status, _ = strconv.Atoi(string(out.raw[9:12]))
		}
		if !sentFollowUp && out.status == http.StatusSwitchingProtocols && bytes.Contains(out.raw, []byte("\r\n\r\n")) {
			sentFollowUp = true
			if f := a.after101(slug); f != "" {
				if _, err := io.WriteString(conn, f); err != nil {
					return out, nil // the tunnel closed: nothing more reaches anyone
				}
				wait = 3 * time.Second
				continue
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if until != nil && !until() {
					wait = 250 * time.Millisecond // look again soon; the connection stays open
					continue
				}
				return out, nil
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "connection reset") {
				return out, nil
			}
			return out, err
		}
		if n > 0 {
			wait = 2 * time.Second // quiet: a loaded server may pause between pipelined answers
			if sentFollowUp {
				// Inside a switched protocol the next answer (an HTTP/2
				// stream served by a CGI under load) may take longer;
				// closing early would abort it before the server logs it.
				wait = 6 * time.Second
			}
		}
	}
	return out, nil
}

// matrixResults collects "attack × upstream → result" for the summary the
// test prints (and SECURITY.md's table).
type matrixResults struct {
	mu   sync.Mutex
	cell map[[2]string]string
}

func (m *matrixResults) set(row, upstream, result string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cell[[2]string{row, upstream}] = result
}

func (m *matrixResults) table(rows []matrixAttack, upstreams []string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "| class | attack | %s |\n|---|---|%s\n", strings.Join(upstreams, " | "), strings.Repeat("---|", len(upstreams)))
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s |", r.class, r.name)
		for _, u := range upstreams {
			fmt.Fprintf(&b, " %s |", m.cell[[2]string{r.class + ": " + r.name, u}])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// describeOutcome is the table cell: the status of every HTTP/1.1 response
// the client read, in order ("closed" if none).
func describeOutcome(o attackOutcome) string {
	var codes []string
	for _, m := range statusLine.FindAllSubmatch(o.raw, -1) {
		codes = append(codes, string(m[1]))
	}
	if len(codes) == 0 {
		return "closed"
	}
	return strings.Join(codes, ", ")
}

// directSlug matches the targets of the attacks sent straight to the
// upstream (slug d00-…), and directAdmin those for /admin/.
var (
	directSlug  = regexp.MustCompile(`(?i)(^|[/?=]|%2f)d\d\d-[a-z]`)
	directAdmin = regexp.MustCompile(`/admin/(d\d\d-[a-z0-9-]*)`)
)

var statusLine = regexp.MustCompile(`(?m)^HTTP/1\.[01] (\d{3})`)

// mfaPath reports whether an upstream that decodes the target once and
// resolves dot segments would serve a path under /admin.
func mfaPath(target string) bool {
	p, _, _ := strings.Cut(target, "?")
	if d, err := url.PathUnescape(p); err == nil {
		p = d
	}
	return strings.HasPrefix(path.Clean("/"+p), "/admin")
}

// identityHeader reports whether a recorded header name is one an upstream
// could take for an identity: X-Stepgate-* or X-Forwarded-User in any
// spelling that CGI, PHP or nginx fold together.
func identityHeader(name string) bool {
	n := strings.NewReplacer("_", "-", ".", "-").Replace(strings.ToLower(name))
	return strings.HasPrefix(n, "x-stepgate-") || n == "x-forwarded-user"
}

// knownDirectBypass says which rows, sent straight to an upstream with no
// stepgate in front, are known to get an /admin/ request into it: the
// positive controls that show the attack bytes and the upstream's log are
// right. Pipelining works on every server but PHP's, which answers one
// request per connection; the h2c upgrade on hypercorn and on Apache with
// mod_http2; CL.0 on http.server, whose GET handler leaves the body unread.
func knownDirectBypass(upstream string, a matrixAttack) bool {
	switch {
	case upstream != "php" && a.class == "pipelining" && a.name == "mfa request pipelined behind an allow request":
		return true
	case upstream == "hypercorn" && a.class == "upgrade: h2c" && strings.HasPrefix(a.name, "h2c with HTTP2-Settings"):
		return true
	case upstream == "apache2-h2c" && a.name == "h2c with HTTP2-Settings named in Connection":
		return true // mod_http2 insists on it, and a Go proxy drops it as hop-by-hop
	case upstream == "http.server" && a.class == "CL.0" && a.name == "GET with a Content-Length body":
		return true
	}
	return false
}

func TestUpstreamMatrix_NoAttackReachesAnMFAPathOnAnyUpstream(t *testing.T) {
	rows := matrixAttacks()
	if only := os.Getenv("STEPGATE_MATRIX_ROW"); only != "" { // to look at one row
		rows = slices.DeleteFunc(rows, func(a matrixAttack) bool { return !strings.Contains(a.name, only) })
	}
	results := &matrixResults{cell: map[[2]string]string{}}
	var names []string
	for _, k := range upstreamtest.Kinds() {
		names = append(names, k.Name)
	}
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("attack × upstream (statuses the client read through stepgate; \"direct: reached\" = the same bytes sent "+
				"straight to the upstream got /admin/ into it):\n%s", results.table(rows, names))
		}
	})
	for _, k := range upstreamtest.Kinds() {
		t.Run(k.Name, func(t *testing.T) {
			t.Parallel()
			up := k.Start(t)
			s := newStack(t, withEnv("STEPGATE_UPSTREAM", up.URL, "STEPGATE_RULES", "/admin/ mfa; POST /forms/ mfa; POST /pay/ approve; / allow"))
			// Front: a Go reverse proxy in front of stepgate, as
			// oauth2-proxy would be.
			target, _ := url.Parse(s.Proxy)
			front := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
			t.Cleanup(front.Close)

			// The controls: an allowed request arrives, and a stepped-up
			// user's /admin/ request arrives with stepgate's identity, so
			// the upstream's log can see what the attacks must not do.
			if r := s.browser("mallory").get("/public/alive"); r.StatusCode != http.StatusOK || !strings.HasPrefix(r.Body, "echo GET /public/alive") {
				t.Fatalf("allowed request through stepgate: got %d %q; upstream output:\n%s", r.StatusCode, r.Body, up.Output())
			}
			b := s.stepUpAlice("/admin/stepped-up")
			if r := b.get("/admin/stepped-up"); r.StatusCode != http.StatusOK || r.Body != "echo GET /admin/stepped-up user=alice\n" {
				t.Fatalf("stepped-up request: got %d %q", r.StatusCode, r.Body)
			}

			var (
				wg         sync.WaitGroup
				directMu   sync.Mutex
				directRead = map[string][]byte{} // by slug: what a direct attack read
			)
			attack := func(addr, via string, a matrixAttack, slug string) {
				var until func() bool
				if via == "direct" && knownDirectBypass(k.Name, a) {
					until = func() bool {
						return up.Saw(func(r upstreamtest.Request) bool { return strings.Contains(r.Target, "/admin/"+slug) })
					}
				}
				o, err := runAttack(addr, a, slug, until)
				if err != nil {
					t.Errorf("%s: %s: %s: %v", via, a.class, a.name, err)
				}
				// The echo apps answer "echo METHOD TARGET user=…": that
				// line for an /admin/ target is the upstream serving it.
				if via != "direct" && bytes.Contains(o.raw, []byte("/admin/"+slug+" user=")) {
					t.Errorf("%s: %s: %s: the client got the upstream's answer to /admin/%s; it sent:\n%q\nand read:\n%q",
						via, a.class, a.name, slug, a.first(slug)+a.after101(slug), o.raw)
				}
				switch via {
				case "stepgate":
					results.set(a.class+": "+a.name, k.Name, describeOutcome(o))
				case "direct":
					directMu.Lock()
					directRead[slug] = o.raw
					directMu.Unlock()
				}
			}
			for i, a := range rows {
				wg.Go(func() {
					attack(strings.TrimPrefix(s.Proxy, "http://"), "stepgate", a, slugOf(fmt.Sprintf("r%02d-", i), a.name))
				})
				// The same bytes straight to the upstream: which attacks
				// this server falls for on its own.
				wg.Go(func() { attack(up.Addr, "direct", a, slugOf(fmt.Sprintf("d%02d-", i), a.name)) })
				// The h2c rows once more through a Go reverse proxy in front.
				if a.class == "upgrade: h2c" {
					wg.Go(func() {
						attack(strings.TrimPrefix(front.URL, "http://"), "a Go reverse proxy in front", a, slugOf(fmt.Sprintf("f%02d-", i), a.name))
					})
				}
			}
			wg.Wait()

			up.Sync()
			reqs := up.Requests()
			sawControl := false
			reachedDirect := map[string]bool{}
			for _, r := range reqs {
				if r.Target == "/admin/stepped-up" && r.Header("x-stepgate-user") == "alice" {
					sawControl = true
					continue
				}
				if directSlug.MatchString(r.Target) {
					// A direct attack (no stepgate in front): only noted.
					if m := directAdmin.FindStringSubmatch(r.Target); m != nil {
						reachedDirect[m[1]] = true
					}
					continue
				}
				if strings.Contains(strings.ToLower(r.Target), "admin") || mfaPath(r.Target) ||
					(strings.Contains(r.Target, "/forms/") || strings.Contains(r.Target, "/pay/")) && strings.EqualFold(r.Method, "POST") {
					t.Errorf("an mfa request reached %s without a step-up: %v", k.Name, r)
				}
				for name := range r.Headers {
					if n := strings.NewReplacer("_", "-", ".", "-").Replace(name); strings.Contains(n, "method-override") ||
						n == "x-http-method" {
						t.Errorf("a method override (%s) reached %s: %v", name, k.Name, r)
					}
				}
				// stepgate pins Host to the upstream's own (STEPGATE_UPSTREAM):
				// a client's Host never picks a virtual host.
				if h := r.Header("host"); h != up.Addr && r.Method != "" { // "": bytes nginx could not parse (it logs them too)
					t.Errorf("%s got Host %q, not its own %s: %v", k.Name, h, up.Addr, r)
				}
				for name, v := range r.Headers {
					if identityHeader(name) && strings.Contains(v, "forged") {
						t.Errorf("a forged %s reached %s: %v", name, k.Name, r)
					}
				}
			}
			if !sawControl {
				t.Errorf("the stepped-up control request is not in %s's log: the log cannot be trusted; got %v", k.Name, reqs)
			}
			for i, a := range rows {
				slug := slugOf(fmt.Sprintf("d%02d-", i), a.name)
				key := a.class + ": " + a.name
				if reachedDirect[slug] {
					results.mu.Lock()
					results.cell[[2]string{key, k.Name}] += " · direct: reached"
					results.mu.Unlock()
				}
				if knownDirectBypass(k.Name, a) && !reachedDirect[slug] {
					t.Errorf("control: %s sent straight to %s did not get /admin/ into it: the attack bytes or the log are wrong; it read:\n%q\nserver output:\n%s",
						a.name, k.Name, directRead[slug], up.Output())
				}
			}
			if os.Getenv("STEPGATE_MATRIX_DEBUG") != "" {
				for _, r := range reqs {
					t.Logf("%s recorded: %v", k.Name, r)
				}
				for _, l := range jsonLogLines(s.Logs.String(), "upstream error") {
					t.Logf("%s: stepgate logged: %v", k.Name, l)
				}
			}
		})
	}
}
