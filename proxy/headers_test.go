package proxy

import (
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestStripSpoofableRemovesEverySpelling(t *testing.T) {
	h := http.Header{}
	for _, name := range []string{
		"X-Stepgate-Id-Token", "X_STEPGATE_ID_TOKEN", "x.stepgate.user", "X-Stepgate_Subject",
		"X-Stepgate-Whatever", "X-Custom-Token", "X_Custom_Token", "X-Original-Url", "X_Rewrite_URL",
		"X-Http-Method-Override", "X-HTTP-Method", "X-Method-Override", "X_Forwarded_User", "X.Forwarded.User",
	} {
		h[name] = []string{"spoof"}
	}
	keep := map[string]string{"X-Forwarded-User": "alice", "Accept": "text/html", "X-Stepgatex": "not ours", "X-Step-Gate-User": "not ours"}
	for k, v := range keep {
		h[k] = []string{v}
	}
	stripSpoofable(h, "X-Custom-Token", []string{"X-Forwarded-User"})
	for name := range h {
		if _, ok := keep[name]; !ok {
			t.Errorf("%s survived", name)
		}
	}
	for k, v := range keep {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q kept", k, got, v)
		}
	}
}

func TestStripForwardedFromUntrustedPeers(t *testing.T) {
	h := http.Header{}
	for _, name := range []string{"Forwarded", "X-Forwarded-For", "X_Forwarded_Host", "x-forwarded-proto",
		"X-Forwarded-Prefix", "X-Forwarded-Uri", "X-Real-Ip", "True-Client-Ip", "X-Forwarded-User", "x_forwarded_user",
		"X-Forwarded-Email", "x.forwarded.preferred.username", "X_FORWARDED_GROUPS", "X-Auth-Request-User",
		"x_auth_request_email", "Remote-User", "remote_email", "REMOTE.GROUPS", "Remote-Name", "X-Mapped-Login", "x_mapped_login"} {
		h[name] = []string{"spoof"}
	}
	h.Set("Accept", "*/*")
	stripForwarded(h, []string{"X-Forwarded-User", "X-Mapped-Login"})
	if len(h) != 1 || h.Get("Accept") != "*/*" {
		t.Errorf("left %v, want only Accept", h)
	}
}

func TestFoldedComparison(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"X-Stepgate-User", "x_stepgate.user", true},
		{"X-Stepgate-User", "X-Stepgate-Users", false},
		{"X-Stepgate-User", "X-Stepgate-Usr", false},
		{"X-Stepgate-Uſer", "X-Stepgate-User", false}, // non-ASCII never folds to ASCII
	} {
		if got := foldedEqual(tt.a, tt.b); got != tt.want {
			t.Errorf("foldedEqual(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func BenchmarkStripSpoofable(b *testing.B) {
	base := http.Header{
		"Accept": {"text/html"}, "Accept-Encoding": {"gzip"}, "User-Agent": {"bench"}, "Cookie": {"a=b"},
		"X-Forwarded-For": {"10.0.0.1"}, "X-Forwarded-User": {"alice"}, "Host": {"example"}, "Connection": {"keep-alive"},
	}
	for b.Loop() {
		stripSpoofable(base, "X-Stepgate-Id-Token", []string{"X-Forwarded-User"})
	}
}

func TestStripFramingRemovesLookAlikesButKeepsTheRealHeaders(t *testing.T) {
	h := http.Header{}
	for _, name := range []string{"Transfer_Encoding", "transfer.encoding", "Content_Length", "Content.Length",
		"Keep_Alive", "Proxy_Connection", "Proxy.Authorization", "Http2-Settings", "HTTP2_Settings", "http2.settings",
		"upgrade", "CONNECTION", "te", "trailer"} {
		h[name] = []string{"x"}
	}
	keep := map[string]string{"Content-Length": "2", "Content-Type": "text/plain", "X-Custom_Header": "kept",
		"Upgrade": "websocket", "Connection": "Upgrade"}
	for k, v := range keep {
		h[k] = []string{v}
	}
	stripFraming(h, nil)
	for name := range h {
		if _, ok := keep[name]; !ok {
			t.Errorf("%s survived", name)
		}
	}
	for k, v := range keep {
		if got := h[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q kept", k, got, v)
		}
	}
}

func TestCheckFraming(t *testing.T) {
	for _, tt := range []struct {
		name, method string
		header       http.Header
		length       int64
		te           []string
		want         error
	}{
		{"a plain GET passes", "GET", nil, 0, nil, nil},
		{"a websocket upgrade passes", "GET", http.Header{"Upgrade": {"WebSocket"}}, 0, nil, nil},
		{"h2c is refused", "GET", http.Header{"Upgrade": {"h2c"}}, 0, nil, errUpgrade},
		{"h2c after websocket is refused", "GET", http.Header{"Upgrade": {"websocket", "H2C"}}, 0, nil, errUpgrade},
		{"a token list with h2c is refused", "GET", http.Header{"Upgrade": {"websocket, h2c"}}, 0, nil, errUpgrade},
		{"an empty upgrade is refused", "GET", http.Header{"Upgrade": {""}}, 0, nil, errUpgrade},
		{"a websocket upgrade on POST is refused", "POST", http.Header{"Upgrade": {"websocket"}}, 0, nil, errUpgradeVerb},
		{"a GET with a length is refused", "GET", nil, 5, nil, errBodyOnGet},
		{"a HEAD with an unknown length is refused", "HEAD", nil, -1, nil, errBodyOnGet},
		{"a chunked GET is refused", "GET", nil, -1, []string{"chunked"}, errBodyOnGet},
		{"a POST with a body passes", "POST", nil, 5, nil, nil},
		{"a DELETE with a length is refused", "DELETE", nil, 5, nil, errBodyOnGet},
		{"a chunked OPTIONS is refused", "OPTIONS", nil, -1, []string{"chunked"}, errBodyOnGet},
		{"a TRACE with a length is refused", "TRACE", nil, 5, nil, errBodyOnGet},
		{"a lower-case delete with a length is refused", "delete", nil, 5, nil, errBodyOnGet},
		{"a DELETE without a body passes", "DELETE", nil, 0, nil, nil},
		{"a PUT, a PATCH, a PROPFIND with a body pass", "PROPFIND", nil, 5, nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.header
			if h == nil {
				h = http.Header{}
			}
			r := &http.Request{Method: tt.method, Header: h, ContentLength: tt.length, TransferEncoding: tt.te}
			if got := checkFraming(r); got != tt.want {
				t.Errorf("checkFraming = %v, want %v", got, tt.want)
			}
		})
	}
}

// The shipped nginx.conf clears, on the way to the app, exactly the
// identity-family names stepgate lets through a check from nginx: nginx can
// clear a header only by its name, and any other name is refused.
func TestNginxConfClearsEveryIdentityNameStepgateLetsThrough(t *testing.T) {
	conf, err := os.ReadFile(filepath.Join("..", "deploy", "frontdoors", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	cleared := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*proxy_set_header\s+(\S+)\s+"";`).FindAllStringSubmatch(string(conf), -1) {
		cleared[strings.ToLower(m[1])] = true
	}
	for _, n := range append(slices.Clone(identityNames), identityPrefixedNames...) {
		if n == "x-forwarded-user" { // the identity header the shipped files assume
			continue
		}
		if !frontProxyClears(n, StyleNginx) {
			t.Errorf("%s: refused from nginx, yet listed as one nginx clears", n)
		}
		if !cleared[n] {
			t.Errorf("nginx.conf does not clear %s, which stepgate lets through a check from nginx", n)
		}
	}
	for _, tc := range []struct {
		name  string
		style Style
		want  bool
	}{
		{"Remote-User", StyleNginx, true},
		{"X-Auth-Request-Tenant", StyleNginx, false},
		{"X-Auth-Request-Tenant", StyleRedirect, true},
		{"Remote_User", StyleRedirect, false},
		{"X.Webauth.User", StyleRedirect, false},
	} {
		if got := frontProxyClears(tc.name, tc.style); got != tc.want {
			t.Errorf("frontProxyClears(%s, %d) = %v, want %v", tc.name, tc.style, got, tc.want)
		}
	}
}

// stripReference is what stripRequest replaced: the four walks, in order.
func stripReference(h http.Header, trusted bool, tokenHeader string, identityHeaders, keep []string) (removed, dropped []string, droppedIdentity string) {
	removed = stripSpoofableNames(h, tokenHeader, identityHeaders, removed)
	removed = stripFraming(h, removed)
	if !trusted {
		droppedIdentity = stripForwarded(h, identityHeaders)
	} else {
		dropped = stripIdentityFamilies(h, keep, dropped)
	}
	return removed, dropped, droppedIdentity
}

// stripNames are header names every rule of stripRequest is tried on: each
// listed name and prefix in four spellings, the configured ones, and
// ordinary headers.
func stripNames() []string {
	var base []string
	base = append(base, forwardedHeaders...)
	base = append(base, identityNames...)
	base = append(base, framingHeaders...)
	for _, p := range append(append([]string{"x-stepgate-"}, forwardedPrefixes...), identityPrefixes...) {
		base = append(base, p+"user", p+"for", p[:len(p)-1], p+"x")
	}
	base = append(base, "x-original-url", "x-rewrite-url", "x-http-method-override", "x-http-method",
		"x-method-override", "X-Stepgate-Id-Token", "X-Custom-Token", "X-Forwarded-User", "X-Mapped-Login",
		"Accept", "Accept-Encoding", "User-Agent", "Cookie", "Content-Type", "Referer", "Origin",
		"X-Requested-With", "Sec-Fetch-Mode", "Te-Extra", "Upgrade-Insecure-Requests", "Authorization", "Host")
	var out []string
	for _, n := range base {
		out = append(out, n, http.CanonicalHeaderKey(n), strings.ReplaceAll(strings.ToUpper(n), "-", "_"),
			strings.ReplaceAll(strings.ToLower(n), "-", "."))
	}
	return out
}

func newStripGateway(t testing.TB, tokenHeader string, identityHeaders, pass []string) *Gateway {
	g := &Gateway{tokenHeader: tokenHeader, identityHeaders: identityHeaders}
	g.keepIdentity = append(slices.Clone(identityHeaders), pass...)
	g.foldedNames = []string{foldName(tokenHeader)}
	for _, h := range identityHeaders {
		g.foldedNames = append(g.foldedNames, foldName(h))
	}
	g.notePlainCollisions()
	return g
}

func TestClassifyIsTheRules(t *testing.T) {
	for _, cfg := range []struct {
		token    string
		identity []string
	}{
		{"X-Stepgate-Id-Token", []string{"X-Forwarded-User"}},
		{"X-Custom-Token", []string{"X-Mapped-Login", "X-Forwarded-User"}},
		{"Authorization", []string{"Remote-User"}},
		// Configured names that fold to headers classify answers without
		// folding: the shortcut must step aside for them.
		{"Accept_Encoding", []string{"Referer", "X-Forwarded-User"}},
		{"user-agent", []string{"Remote-User"}},
	} {
		g := newStripGateway(t, cfg.token, cfg.identity, nil)
		for _, name := range append(stripNames(), cfg.identity...) {
			if got, want := g.classify(name), g.classifySlow(name); got != want && !(got == hcSpoofable && want&hcSpoofable != 0) {
				t.Errorf("token %s, identity %v: classify(%q) = %05b, the rules say %05b", cfg.token, cfg.identity, name, got, want)
			}
		}
		for _, name := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Cookie", "Referer", "Sec-Fetch-Mode",
			"Upgrade-Insecure-Requests", "User-Agent", "Content-Type", "Connection", "Content-Length"} {
			if got, want := g.classify(name), g.classifySlow(name); got != want && !(got == hcSpoofable && want&hcSpoofable != 0) {
				t.Errorf("token %s, identity %v: classify(%q) = %05b, the rules say %05b", cfg.token, cfg.identity, name, got, want)
			}
			if c := g.classify(name); c != 0 && !g.plainOff {
				t.Errorf("classify(%q) = %05b, want 0: nothing removes it", name, c)
			}
		}
	}
}

func TestStripRequestIsTheFourWalks(t *testing.T) {
	names := stripNames()
	for _, trusted := range []bool{false, true} {
		for i := range 200 {
			g := newStripGateway(t, "X-Custom-Token", []string{"X-Forwarded-User", "X-Mapped-Login"}, []string{"X-Auth-Request-Email"})
			h := http.Header{}
			for j := range 12 {
				h[names[(i*7+j*13+j*j)%len(names)]] = []string{"v"}
			}
			ref := h.Clone()
			wantRemoved, wantDropped, wantID := stripReference(ref, trusted, g.tokenHeader, g.identityHeaders, g.keepIdentity)
			var d Decision
			g.stripRequest(h, trusted, &d)
			slices.Sort(wantRemoved)
			slices.Sort(wantDropped)
			slices.Sort(d.Removed)
			slices.Sort(d.Dropped)
			if !maps.EqualFunc(h, ref, slices.Equal) || !slices.Equal(d.Removed, wantRemoved) ||
				!slices.Equal(d.Dropped, wantDropped) || (d.droppedIdentity == "") != (wantID == "") {
				t.Fatalf("trusted %v: stripRequest left %v, removed %v, dropped %v, identity %q; the four walks %v, %v, %v, %q",
					trusted, h, d.Removed, d.Dropped, d.droppedIdentity, ref, wantRemoved, wantDropped, wantID)
			}
		}
	}
}

func FuzzClassify(f *testing.F) {
	for _, n := range stripNames() {
		f.Add(n)
	}
	g := newStripGateway(f, "X-Stepgate-Id-Token", []string{"X-Forwarded-User", "X-Mapped-Login"}, nil)
	f.Fuzz(func(t *testing.T, name string) {
		// A spoofable name is removed whatever else it is: only that bit
		// decides, and classify stops at it.
		if got, want := g.classify(name), g.classifySlow(name); got != want && !(got == hcSpoofable && want&hcSpoofable != 0) {
			t.Errorf("classify(%q) = %05b, the rules say %05b", name, got, want)
		}
	})
}

func BenchmarkStripRequest(b *testing.B) {
	g := newStripGateway(b, "X-Stepgate-Id-Token", []string{"X-Forwarded-User"}, nil)
	base := http.Header{
		"Accept": {"text/html"}, "Accept-Encoding": {"gzip"}, "User-Agent": {"bench"}, "Cookie": {"a=b"},
		"X-Forwarded-For": {"10.0.0.1"}, "X-Forwarded-User": {"alice"}, "Connection": {"keep-alive"},
	}
	b.ReportAllocs()
	for b.Loop() {
		var d Decision
		g.stripRequest(base, true, &d)
	}
}
