package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/proxy/clientip"
	"github.com/stepgate/stepgate/proxy/identity"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/session"
)

// recordingTransport is an in-memory upstream that keeps the last outbound
// request.
type recordingTransport struct {
	mu   sync.Mutex
	last *http.Request
}

func (t *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.mu.Lock()
	t.last = r
	t.mu.Unlock()
	return &http.Response{StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(nil)), Request: r}, nil
}

func (t *recordingTransport) take() *http.Request {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.last
	t.last = nil
	return r
}

// stubChallenger answers without a network: 200 for reserved paths, 302
// for a step-up, the status for errors.
type stubChallenger struct{}

func (stubChallenger) Serve(w http.ResponseWriter, _ *http.Request, _ string, _ netip.Addr) {
	w.WriteHeader(http.StatusOK)
}
func (stubChallenger) Require(w http.ResponseWriter, _ *http.Request, _ rules.Rule) {
	w.WriteHeader(http.StatusFound)
}
func (stubChallenger) Error(w http.ResponseWriter, _ *http.Request, status int, _ string) {
	w.WriteHeader(status)
}
func (stubChallenger) RequireApproval(w http.ResponseWriter, _ *http.Request, _ rules.Rule, _, _ string) {
	w.WriteHeader(http.StatusSeeOther)
}
func (stubChallenger) IsAPI(*http.Request) bool { return false }

// headerStepUps grants alice a valid step-up when the request carries the
// test-only header X-Test-Stepped-Up (a stand-in for a good cookie).
type headerStepUps struct{ now time.Time }

func (s headerStepUps) Lookup(r *http.Request) (*session.StepUp, bool) {
	if r.Header.Get("X-Test-Stepped-Up") == "" {
		return nil, false
	}
	return &session.StepUp{ID: "s", User: "alice", Subject: "sub-alice", AuthTime: s.now, ACR: "MFA-Only",
		AMR: []string{"otp"}, IDToken: "id.token.sig", TokenExpiry: s.now.Add(time.Hour)}, true
}
func (headerStepUps) StripCookies(h http.Header)            {}
func (headerStepUps) Approved(*http.Request) (string, bool) { return "", false }
func (headerStepUps) ClearApproved(http.ResponseWriter)     {}

const fuzzPolicy = "/admin/ mfa; /api/ mfa; /blocked deny; POST /forms/ mfa"

// naiveAction is an independent oracle for fuzzPolicy: the action for a
// decoded path, written as plainly as possible.
func naiveAction(method, p string, fold bool) rules.Action {
	if fold {
		b := []byte(p)
		for i, c := range b {
			if 'A' <= c && c <= 'Z' {
				b[i] = c + 'a' - 'A'
			}
		}
		p = string(b)
	}
	under := func(root string) bool { return p == root || strings.HasPrefix(p, root+"/") }
	switch {
	case under("/admin"), under("/api"), method == http.MethodPost && under("/forms"):
		return rules.MFA
	case p == "/blocked":
		return rules.Deny
	}
	return rules.Allow
}

func newFuzzGateway(t testing.TB, fold bool, tr http.RoundTripper, now time.Time) *Gateway {
	set, err := rules.Parse("fuzz", fuzzPolicy, rules.Defaults{Action: rules.Allow, CaseInsensitive: fold})
	if err != nil {
		t.Fatal(err)
	}
	up, _ := url.Parse("http://upstream.internal")
	g, err := New(Config{
		Upstream:             up,
		Transport:            tr,
		Rules:                set,
		ClientIP:             clientip.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}),
		Identity:             identity.NewHeader("X-Forwarded-User"),
		StepUps:              headerStepUps{now: now},
		Challenge:            stubChallenger{},
		IdentityHeader:       "X-Forwarded-User",
		Logger:               slog.New(slog.DiscardHandler),
		Metrics:              metrics.New(prometheus.NewRegistry(), "fuzz"),
		Now:                  func() time.Time { return now },
		CaseInsensitivePaths: fold,
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// FuzzGateway drives the whole pipeline with arbitrary request targets and
// checks the invariants that make stepgate a security control:
//   - a request whose forwarded path an mfa rule covers is never forwarded
//     without a step-up, and a deny path or the reserved prefix never is;
//   - the upstream receives exactly the path bytes that were matched, and
//     decoding them once gives the path the decision was made on;
//   - a client-supplied X-Stepgate-* header (in any spelling) never
//     reaches the upstream, nor does a look-alike framing header,
//     HTTP2-Settings, or an Upgrade other than websocket.
func FuzzGateway(f *testing.F) {
	for _, target := range []string{
		"/", "/admin", "/admin/", "/ADMIN/", "/%61dmin/", "/admin%2f", "/admin/..", "/public/%2e%2e/admin/",
		"/public/..%2fadmin/", "/admin;x=1/", "/public;/../admin/", "/public%23/admin", "/public#/admin",
		"/admin%00", "//admin/", "/public//admin", "/public?/../admin/", "/admin?x", "http://x/admin/",
		"HTTP://x/admin/", "*", "/.stepgate/challenge", "/.STEPGATE/../admin/", "/%2estepgate/x",
		"/api", "/api/v1", "/forms/x", "/blocked", "/blocked/", "/BLOCKED", "/admin%5c", "/admin\\x",
		"/%C0%AE%C0%AE/admin/", "/adm%69n/", "/admin./", "/admin~1/", "/ADMIN~1/", "/admin::$DATA",
	} {
		f.Add("GET", target, false, false, "X-Stepgate-User")
		f.Add("POST", target, true, true, "x_stepgate_id_token")
	}
	for _, name := range []string{"Upgrade", "upgrade", "Transfer_Encoding", "Content.Length", "HTTP2-Settings",
		"Http2_Settings", "Keep_Alive", "Proxy_Connection"} {
		f.Add("GET", "/public", false, false, name)
		f.Add("OPTIONS", "/admin/", true, false, name)
	}
	now := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	tr := &recordingTransport{}
	gws := map[bool]*Gateway{false: newFuzzGateway(f, false, tr, now), true: newFuzzGateway(f, true, tr, now)}
	f.Fuzz(func(t *testing.T, method, target string, stepped, fold bool, spoofName string) {
		switch method {
		case "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH":
		default:
			method = "GET"
		}
		u, err := url.ParseRequestURI(target)
		if err != nil || strings.ContainsAny(target, " \r\n") {
			return // net/http answers 400 before any handler runs
		}
		r := &http.Request{
			Method: method, URL: u, RequestURI: target, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"X-Forwarded-User": {"alice"}}, Host: "gw.example", RemoteAddr: "127.0.0.1:4000",
			Body: http.NoBody,
		}
		if stepped {
			r.Header.Set("X-Test-Stepped-Up", "1")
		}
		if spoofName != "" && validHeaderName(spoofName) {
			r.Header[spoofName] = append(r.Header[spoofName], "spoofed")
			if strings.EqualFold(spoofName, "upgrade") {
				r.Header["Connection"] = []string{"keep-alive, Upgrade"} // an h2c-style switch
			}
		}
		tr.take()
		w := httptest.NewRecorder()
		gws[fold].ServeHTTP(w, r)
		out := tr.take()
		if out == nil {
			return // refused, challenged or served by stepgate: nothing forwarded
		}

		raw := target
		if i := strings.IndexByte(raw, '?'); i >= 0 {
			raw = raw[:i]
		}
		if got := out.URL.EscapedPath(); got != raw {
			t.Fatalf("%s %q: upstream path %q, want the exact bytes %q", method, target, got, raw)
		}
		decoded, err := url.PathUnescape(raw)
		if err != nil || decoded != out.URL.Path {
			t.Fatalf("%s %q: upstream decoded path %q, want %q (%v)", method, target, out.URL.Path, decoded, err)
		}
		if hasReservedPrefix(decoded) {
			t.Fatalf("%s %q: reserved path forwarded", method, target)
		}
		switch naiveAction(method, decoded, fold) {
		case rules.Deny:
			t.Fatalf("%s %q: deny path forwarded", method, target)
		case rules.MFA:
			if !stepped {
				t.Fatalf("%s %q: mfa path %q forwarded without a step-up", method, target, decoded)
			}
		}
		for name, vs := range out.Header {
			for _, v := range vs {
				if v == "spoofed" && hasFoldedPrefix(name, "x-stepgate-") {
					t.Fatalf("%s %q: client header %q reached the upstream", method, target, name)
				}
				if v == "spoofed" && (strings.EqualFold(name, "upgrade") || foldedEqual(name, "http2-settings")) {
					t.Fatalf("%s %q: %s: %s reached the upstream", method, target, name, v)
				}
				for _, f := range framingHeaders {
					if v == "spoofed" && name != f && foldedEqual(name, f) {
						t.Fatalf("%s %q: look-alike framing header %q reached the upstream", method, target, name)
					}
				}
			}
		}
		if stepped && out.Header.Get(HeaderUser) != "alice" {
			t.Fatalf("%s %q: stepped-up request forwarded without X-Stepgate-User", method, target)
		}
	})
}

// validHeaderName reports whether s is an HTTP token, as net/http requires
// of a header name on the wire.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
