package main

// Front doors (docs/design.md §16) with real front proxies from Debian's
// packages: nginx (auth_request) and Caddy (forward_auth), started on
// loopback with the very files under deploy/frontdoors/ (only the listen
// and upstream addresses are replaced).

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/proxy/upstreamtest"
	"github.com/stepgate/stepgate/store/redistest"
)

// frontProxyBinary finds a front proxy's program. Missing, the test fails
// in CI (CI=true; .ci/run installs it) and skips loudly elsewhere.
func frontProxyBinary(t *testing.T, pkg string, paths ...string) string {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("NO %s FOUND: the front-door tests through %s did NOT run. Install it (Debian: apt-get install %s).",
		strings.ToUpper(pkg), pkg, pkg)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip("\n\n******** " + msg + " ********\n")
	return ""
}

// freeAddr returns a loopback address reserved for a server this test
// process starts (upstreamtest.FreePort: no other test binary takes it).
func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := upstreamtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// deployFile reads a file under deploy/frontdoors and replaces each old
// string by its new one; a string that is not in the file fails the test,
// so the shipped file and the test cannot drift apart.
func deployFile(t *testing.T, name string, replace ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "frontdoors", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(replace); i += 2 {
		if !strings.Contains(s, replace[i]) {
			t.Fatalf("deploy/frontdoors/%s no longer contains %q", name, replace[i])
		}
		s = strings.ReplaceAll(s, replace[i], replace[i+1])
	}
	return s
}

// runFrontProxy starts cmd, stops it at the end of the test, and waits
// until base answers.
func runFrontProxy(t *testing.T, cmd *exec.Cmd, base string, logs *syncBuffer) {
	t.Helper()
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("%s exited: %s", cmd.Path, logs.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s: %s", cmd.Path, base, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startNginx runs nginx in the foreground with deploy/frontdoors/nginx.conf
// in front of the stack's stepgate and upstream, and returns its base URL.
func startNginx(t *testing.T, s *stack) string {
	t.Helper()
	bin := frontProxyBinary(t, "nginx", "/usr/sbin/nginx")
	dir := t.TempDir()
	listen := freeAddr(t)
	site := deployFile(t, "nginx.conf",
		"server 127.0.0.1:8080;", "server "+strings.TrimPrefix(s.Proxy, "http://")+";",
		"server 127.0.0.1:3000;", "server "+strings.TrimPrefix(s.Upstream.URL, "http://")+";",
		"listen 127.0.0.1:80;", "listen "+listen+";")
	if err := os.WriteFile(filepath.Join(dir, "stepgate.conf"), []byte(site), 0o600); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/stepgate.conf;
}
`, dir)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(main), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	runFrontProxy(t, exec.Command(bin, "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", conf), "http://"+listen, logs)
	return "http://" + listen
}

// startCaddy runs Caddy with deploy/frontdoors/Caddyfile (admin API off,
// plain http on loopback) and returns its base URL.
func startCaddy(t *testing.T, s *stack) string {
	t.Helper()
	bin := frontProxyBinary(t, "caddy", "/usr/bin/caddy")
	dir := t.TempDir()
	listen := freeAddr(t)
	site := deployFile(t, "Caddyfile",
		"app.example.com {", "http://"+listen+" {",
		"127.0.0.1:8080", strings.TrimPrefix(s.Proxy, "http://"),
		"reverse_proxy 127.0.0.1:3000", "reverse_proxy "+strings.TrimPrefix(s.Upstream.URL, "http://"))
	conf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(conf, []byte("{\n\tadmin off\n}\n\n"+site), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", conf, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	logs := &syncBuffer{}
	runFrontProxy(t, cmd, "http://"+listen, logs)
	return "http://" + listen
}

// forwardAuthStack is stepgate with the forward-auth door only, trusting
// the front proxy on 127.0.0.1 (tests play untrusted clients from
// 127.0.0.2).
func forwardAuthStack(t *testing.T, kv ...string) *stack {
	return newStack(t, withEnv(append([]string{
		"STEPGATE_FRONT_DOORS", "forward-auth",
		"STEPGATE_TRUSTED_PROXIES", "127.0.0.1/32",
		"STEPGATE_RULES", "/admin/ mfa max_age=15m; /api/ mfa; /blocked deny; POST /forms/ mfa",
	}, kv...)...))
}

// frontProxies are the front proxies under test.
var frontProxies = []struct {
	name  string
	start func(*testing.T, *stack) string
}{
	{"nginx", startNginx},
	{"caddy", startCaddy},
}

// untrustedClient dials from 127.0.0.2, outside STEPGATE_TRUSTED_PROXIES.
func untrustedClient() *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	return &http.Client{
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{DialContext: d.DialContext},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// stepUpAliceAt is stepUpAlice through base (a front proxy).
func (s *stack) stepUpAliceAt(base, path string) *browser {
	s.t.Helper()
	b := s.browser("alice")
	b.base = base
	r := b.get(path)
	if r.StatusCode != http.StatusFound || r.Header.Get("Cache-Control") != "no-store" {
		s.t.Fatalf("GET %s: got %d (Cache-Control %q), want 302 no-store: %s", path, r.StatusCode, r.Header.Get("Cache-Control"), r.Body)
	}
	if loc := r.Header.Get("Location"); !strings.HasPrefix(loc, "/.stepgate/challenge?return=") {
		s.t.Fatalf("GET %s: redirected to %q, want the challenge page", path, loc)
	}
	r = b.passChallenge(s, r)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != path {
		s.t.Fatalf("OTP: got %d to %q, want 303 to %q: %s", r.StatusCode, r.Header.Get("Location"), path, r.Body)
	}
	return b
}

func TestAFullStepUpThroughARealFrontProxy(t *testing.T) {
	for _, fp := range frontProxies {
		t.Run(fp.name, func(t *testing.T) {
			s := forwardAuthStack(t)
			base := fp.start(t, s)

			// An API call without a step-up: 401 JSON with the challenge.
			api := s.browser("alice")
			api.base = base
			req, _ := http.NewRequest(http.MethodGet, base+"/api/orders", nil)
			req.Header.Set("Accept", "application/json")
			r := api.do(req)
			if r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.Body, `"step_up_required"`) ||
				!strings.Contains(r.Body, "/.stepgate/challenge?return=%2Fapi%2Forders") ||
				!strings.Contains(r.Header.Get("WWW-Authenticate"), "insufficient_user_authentication") ||
				r.Header.Get("Cache-Control") != "no-store" {
				t.Fatalf("API without step-up: %d %v %s", r.StatusCode, r.Header, r.Body)
			}
			if n := len(s.Requests()); n != 0 {
				t.Fatalf("upstream received %d requests before any step-up", n)
			}

			b := s.stepUpAliceAt(base, "/admin/users")
			r = b.get("/admin/users")
			if r.StatusCode != http.StatusOK || r.Body != "upstream saw GET /admin/users" {
				t.Fatalf("after step-up: %d %s", r.StatusCode, r.Body)
			}
			up := s.LastRequest()
			if up.Header.Get("X-Stepgate-User") != "alice" || up.Header.Get("X-Stepgate-Subject") == "" ||
				up.Header.Get("X-Stepgate-Id-Token") == "" || up.Header.Get("X-Stepgate-Auth-Time") == "" {
				t.Fatalf("upstream did not get the step-up headers: %v", up.Header)
			}

			// The same session on an API path, and a denied one.
			req, _ = http.NewRequest(http.MethodGet, base+"/api/orders?id=7", nil)
			req.Header.Set("Accept", "application/json")
			if r := b.do(req); r.StatusCode != http.StatusOK || r.Body != "upstream saw GET /api/orders?id=7" {
				t.Fatalf("API after step-up: %d %s", r.StatusCode, r.Body)
			}
			if r := b.get("/blocked"); r.StatusCode != http.StatusForbidden || r.Header.Get("Cache-Control") != "no-store" {
				t.Fatalf("deny rule: %d %v", r.StatusCode, r.Header)
			}

			// Another user with alice's cookies is not stepped up.
			b.user = "mallory"
			if r := b.get("/admin/users"); r.StatusCode != http.StatusFound {
				t.Fatalf("alice's step-up served mallory: %d", r.StatusCode)
			}
		})
	}
}

// rawRequest sends exactly target and headers (no client-side cleaning)
// to base and returns the answer's status and headers.
func rawTarget(t *testing.T, base, method, target string, headers ...string) (int, http.Header) {
	t.Helper()
	host := strings.TrimPrefix(base, "http://")
	c, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, host)
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	b.WriteString("\r\n")
	if _, err := c.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// foldName reads a header name as frameworks do: any case, '_' and '.' as '-'.
func foldName(s string) string {
	return strings.NewReplacer("_", "-", ".", "-").Replace(strings.ToLower(s))
}

func TestForwardAuthBelievesTheOriginalRequestOnlyFromTrustedProxies(t *testing.T) {
	s := forwardAuthStack(t, "STEPGATE_FRONT_DOORS", "proxy,forward-auth")
	b := s.stepUpAliceAt(s.Proxy, "/admin/users") // alice's step-up cookie, for the attacker to replay
	cookies := b.Client.Jar.Cookies(mustURL(t, s.Proxy))
	auth := s.Proxy + "/.stepgate/auth"
	ask := func(t *testing.T, c *http.Client, h ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, auth, nil)
		for i := 0; i+1 < len(h); i += 2 {
			req.Header.Add(h[i], h[i+1])
		}
		req.Header.Set("X-Forwarded-User", "alice")
		for _, ck := range cookies {
			req.AddCookie(ck)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	trusted := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct {
		name    string
		client  *http.Client
		headers []string
		want    int
	}{
		{"nginx's description from the front proxy", trusted, []string{"X-Original-Method", "GET", "X-Original-URI", "/admin/users"}, http.StatusOK},
		{"Traefik's or Caddy's from the front proxy", trusted, []string{"X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/admin/users"}, http.StatusOK},
		{"nginx's description from a client", untrustedClient(), []string{"X-Original-Method", "GET", "X-Original-URI", "/admin/users"}, http.StatusForbidden},
		{"Traefik's or Caddy's from a client", untrustedClient(), []string{"X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/admin/users"}, http.StatusForbidden},
		{"both descriptions at once", trusted, []string{"X-Original-Method", "GET", "X-Original-URI", "/public", "X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/admin/users"}, http.StatusForbidden},
		{"no description", trusted, nil, http.StatusForbidden},
		{"a URI without a method", trusted, []string{"X-Original-URI", "/public"}, http.StatusForbidden},
		{"two URIs", trusted, []string{"X-Original-Method", "GET", "X-Original-URI", "/public", "X-Original-URI", "/admin/users"}, http.StatusForbidden},
		{"a method that is not a token", trusted, []string{"X-Original-Method", "GET /admin", "X-Original-URI", "/public"}, http.StatusForbidden},
		{"an absolute URI", trusted, []string{"X-Original-Method", "GET", "X-Original-URI", "http://evil/public"}, http.StatusForbidden},
		{"a dot segment", trusted, []string{"X-Original-Method", "GET", "X-Original-URI", "/public/../admin/users"}, http.StatusForbidden},
		{"an encoded slash", trusted, []string{"X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/admin%2fusers"}, http.StatusForbidden},
		{"an encoded dot segment", trusted, []string{"X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/public/%2e%2e/admin"}, http.StatusForbidden},
		{"an empty segment", trusted, []string{"X-Original-Method", "GET", "X-Original-URI", "//admin/users"}, http.StatusForbidden},
		{"a semicolon", trusted, []string{"X-Original-Method", "GET", "X-Original-URI", "/admin;x/users"}, http.StatusForbidden},
		{"OPTIONS *", trusted, []string{"X-Original-Method", "OPTIONS", "X-Original-URI", "*"}, http.StatusForbidden},
		{"stepgate's own path in another case", trusted, []string{"X-Original-Method", "GET", "X-Original-URI", "/.STEPGATE/challenge"}, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := ask(t, tc.client, tc.headers...)
			if resp.StatusCode != tc.want {
				t.Fatalf("got %d, want %d", resp.StatusCode, tc.want)
			}
			if resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", resp.Header.Get("Cache-Control"))
			}
			if tok := resp.Header.Get("X-Stepgate-Id-Token"); (tok != "") != (tc.want == http.StatusOK) {
				t.Errorf("X-Stepgate-Id-Token present=%v on a %d", tok != "", resp.StatusCode)
			}
		})
	}
}

func TestForwardAuthAnswersAreNeverCacheable(t *testing.T) {
	s := forwardAuthStack(t, "STEPGATE_FRONT_DOORS", "proxy,forward-auth")
	b := s.stepUpAliceAt(s.Proxy, "/admin/users")
	for _, tc := range []struct {
		name, user, uri string
		stepped         bool
		want            int
	}{
		{"200 with alice's step-up headers", "alice", "/admin/users", true, http.StatusOK},
		{"200 on an allow path", "alice", "/public", false, http.StatusOK},
		{"401 for a step-up", "bob", "/admin/users", false, http.StatusUnauthorized},
		{"401 without identity", "", "/admin/users", false, http.StatusUnauthorized},
		{"403 for deny", "alice", "/blocked", false, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, s.Proxy+"/.stepgate/auth", nil)
			req.Header.Set("X-Original-Method", "GET")
			req.Header.Set("X-Original-URI", tc.uri)
			req.Header.Set("Accept", "text/html")
			if tc.user != "" {
				req.Header.Set("X-Forwarded-User", tc.user)
			}
			if tc.stepped {
				for _, ck := range b.Client.Jar.Cookies(mustURL(t, s.Proxy)) {
					req.AddCookie(ck)
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want || resp.Header.Get("Cache-Control") != "no-store" {
				t.Fatalf("got %d Cache-Control %q, want %d no-store", resp.StatusCode, resp.Header.Get("Cache-Control"), tc.want)
			}
			if tc.stepped && resp.Header.Get("X-Stepgate-User") != "alice" {
				t.Fatalf("no step-up headers on the 200: %v", resp.Header)
			}
		})
	}
}

func TestPathConfusionThroughARealFrontProxyNeverReachesTheUpstream(t *testing.T) {
	targets := []string{
		"/public/../admin/users", "/public/%2e%2e/admin/users", "/public/%2E%2E/admin/users",
		"/admin%2fusers", "/admin%2Fusers", "//admin/users", "/admin//users", "/./admin/users",
		"/%61dmin/users", "/admin/users;x", "/admin;/users", "/admin%3busers", "/admin%5cusers",
		"/admin/users%00", "/admin/users%23", "/api%2forders",
	}
	for _, fp := range frontProxies {
		t.Run(fp.name, func(t *testing.T) {
			s := forwardAuthStack(t)
			base := fp.start(t, s)
			for _, target := range targets {
				code, _ := rawTarget(t, base, http.MethodGet, target, "X-Forwarded-User", "alice", "Accept", "text/html")
				if code == http.StatusOK {
					t.Errorf("GET %s through %s: 200 without a step-up", target, fp.name)
				}
			}
			if reqs := s.Requests(); len(reqs) != 0 {
				t.Fatalf("the upstream received %d requests, first %s %s", len(reqs), reqs[0].Method, reqs[0].RequestURI)
			}
		})
	}
}

func TestSpoofedHeadersThroughARealFrontProxyNeverReachTheUpstream(t *testing.T) {
	spoofs := [][2]string{
		{"X-Stepgate-User", "admin"}, {"X_Stepgate_User", "admin"}, {"X.Stepgate.User", "admin"},
		{"x-stepgate-id-token", "forged"}, {"X-Stepgate-Subject", "forged"}, {"X-Stepgate-Auth-Time", "9999999999"},
		{"X-Stepgate-Acr", "MFA-Only"}, {"X-Stepgate-Amr", "mfa"}, {"X-Stepgate-Approval", "forged"},
		{"X_Forwarded_User", "root"}, {"X.Forwarded.User", "root"}, {"x_forwarded_user", "root"},
		{"X-Original-URL", "/admin/users"}, {"X-Rewrite-URL", "/admin/users"}, {"X-HTTP-Method-Override", "DELETE"},
	}
	for _, fp := range frontProxies {
		t.Run(fp.name, func(t *testing.T) {
			s := forwardAuthStack(t)
			base := fp.start(t, s)
			b := s.stepUpAliceAt(base, "/admin/users")
			cookie := ""
			for _, ck := range b.Client.Jar.Cookies(mustURL(t, base)) {
				cookie += ck.Name + "=" + ck.Value + "; "
			}
			for _, path := range []string{"/public", "/admin/users"} {
				for _, sp := range spoofs {
					before := len(s.Requests())
					code, h := rawTarget(t, base, http.MethodGet, path,
						"X-Forwarded-User", "alice", "Accept", "text/html", "Cookie", cookie, sp[0], sp[1])
					if h.Get("Cache-Control") == "" && code != http.StatusOK {
						t.Errorf("%s %s: %d without Cache-Control", path, sp[0], code)
					}
					for _, r := range s.Requests()[before:] {
						for name, vs := range r.Header {
							if foldName(name) == foldName(sp[0]) && slicesContains(vs, sp[1]) {
								t.Errorf("%s with %s: the upstream received %s: %v", path, sp[0], name, vs)
							}
						}
						if r.Method != http.MethodGet {
							t.Errorf("%s with %s: the upstream ran %s", path, sp[0], r.Method)
						}
					}
					if code == http.StatusOK && sp[0] == http.CanonicalHeaderKey(sp[0]) {
						// A spelling the front proxy passes on is refused.
						t.Errorf("%s with %s: 200", path, sp[0])
					}
				}
			}
		})
	}
}

func TestTheChallengeIsReachableAndTheAuthEndpointIsNotThroughAFrontProxy(t *testing.T) {
	for _, fp := range frontProxies {
		t.Run(fp.name, func(t *testing.T) {
			s := forwardAuthStack(t)
			base := fp.start(t, s)
			b := s.stepUpAliceAt(base, "/admin/users")
			bob := s.browser("bob") // not stepped up: the page shows the start state
			bob.base = base
			for _, p := range []string{"/.stepgate/assets/stepgate.css", "/.stepgate/challenge?return=%2Fadmin%2Fusers"} {
				if r := bob.get(p); r.StatusCode != http.StatusOK {
					t.Errorf("GET %s through %s: %d", p, fp.name, r.StatusCode)
				}
			}
			cookie := ""
			for _, ck := range b.Client.Jar.Cookies(mustURL(t, base)) {
				cookie += ck.Name + "=" + ck.Value + "; "
			}
			// A page's script asking the auth endpoint itself, for alice's
			// step-up headers (her ID token among them).
			for _, target := range []string{"/.stepgate/auth", "/.stepgate/auth?x=1", "/.stepgate//auth", "/.STEPGATE/auth",
				"/.stepgate/Auth", "/.stepgate/%61uth", "/.stepgate/ext-authz/admin/users"} {
				code, h := rawTarget(t, base, http.MethodGet, target, "X-Forwarded-User", "alice", "Cookie", cookie,
					"X-Original-Method", "GET", "X-Original-URI", "/admin/users",
					"X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/admin/users")
				if code == http.StatusOK || h.Get("X-Stepgate-Id-Token") != "" || h.Get("X-Stepgate-User") != "" {
					t.Errorf("GET %s through %s: %d with step-up headers %v", target, fp.name, code, h)
				}
			}
		})
	}
}

func slicesContains(vs []string, v string) bool {
	for _, x := range vs {
		if strings.Contains(x, v) {
			return true
		}
	}
	return false
}

func TestForwardAuthAccessLinesNameTheRequestAskedAbout(t *testing.T) {
	s := forwardAuthStack(t, "STEPGATE_LOG_LEVEL", "info")
	req, _ := http.NewRequest(http.MethodGet, s.Proxy+"/.stepgate/auth", nil)
	req.Header.Set("X-Forwarded-Method", "DELETE")
	req.Header.Set("X-Forwarded-Uri", "/admin/users/7?token=secret")
	req.Header.Set("X-Forwarded-User", "alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	logs := s.Logs.String()
	if !strings.Contains(logs, `"msg":"request","method":"DELETE","path":"/admin/users/7","status":401,"decision":"mfa_required","user":"alice"`) {
		t.Fatalf("no access line for the described request:\n%s", logs)
	}
	if strings.Contains(logs, "token=secret") {
		t.Error("the query reached the log")
	}
}

// stepgateHeaders returns the X-Stepgate-* headers (folded names, non-empty
// values) of h: what the app would read as a step-up.
func stepgateHeaders(h http.Header) map[string][]string {
	out := map[string][]string{}
	for name, vs := range h {
		if !strings.HasPrefix(foldName(name), "x-stepgate-") {
			continue
		}
		for _, v := range vs {
			if v != "" {
				out[foldName(name)] = append(out[foldName(name)], v)
			}
		}
	}
	return out
}

// TestOnlyStepgatesHeadersReachTheAppThroughARealFrontProxy: the app
// receives an X-Stepgate-* header only when stepgate's answer carried it,
// with exactly stepgate's value. A front proxy that copies a header the
// answer did not carry (Caddy before 2.8 copied the unresolved placeholder
// "{http.reverse_proxy.header.X-Stepgate-User}") would tell an app that
// trusts a present X-Stepgate-User that anyone is stepped up.
func TestOnlyStepgatesHeadersReachTheAppThroughARealFrontProxy(t *testing.T) {
	for _, fp := range frontProxies {
		t.Run(fp.name, func(t *testing.T) {
			s := forwardAuthStack(t, "STEPGATE_RULES", "/admin/ mfa max_age=15m; /api/ mfa; /blocked deny; /public allow")
			base := fp.start(t, s)
			alice := s.stepUpAliceAt(base, "/admin/users")
			cookie := ""
			for _, ck := range alice.Client.Jar.Cookies(mustURL(t, base)) {
				cookie += ck.Name + "=" + ck.Value + "; "
			}
			// What stepgate itself answers for a request, asked directly as
			// the front proxy would.
			stepgateSays := func(t *testing.T, user, path, cookie string) map[string][]string {
				t.Helper()
				req, _ := http.NewRequest(http.MethodGet, s.Proxy+"/.stepgate/auth", nil)
				req.Header.Set("X-Forwarded-Method", "GET")
				req.Header.Set("X-Forwarded-Uri", path)
				req.Header.Set("X-Forwarded-User", user)
				if cookie != "" {
					req.Header.Set("Cookie", cookie)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("stepgate answered %d for %s %s", resp.StatusCode, user, path)
				}
				return stepgateHeaders(resp.Header)
			}
			for _, tc := range []struct {
				name, user, path, cookie string
				stepped                  bool
			}{
				{"an allow path without a step-up", "bob", "/public", "", false},
				{"an allow path without an identity", "", "/public", "", false},
				{"an mfa path after the step-up", "alice", "/admin/users", cookie, true},
				{"an allow path after the step-up", "alice", "/public", cookie, true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					before := len(s.Requests())
					h := []string{"Accept", "text/html", "X-Forwarded-User", tc.user}
					if tc.user == "" {
						h = h[:2]
					}
					if tc.cookie != "" {
						h = append(h, "Cookie", tc.cookie)
					}
					code, _ := rawTarget(t, base, http.MethodGet, tc.path, h...)
					if code != http.StatusOK {
						t.Fatalf("GET %s: %d", tc.path, code)
					}
					reqs := s.Requests()[before:]
					if len(reqs) != 1 {
						t.Fatalf("the app received %d requests, want 1", len(reqs))
					}
					got := stepgateHeaders(reqs[0].Header)
					want := stepgateSays(t, tc.user, tc.path, tc.cookie)
					if tc.stepped && len(want["x-stepgate-user"]) == 0 {
						t.Fatalf("stepgate set no X-Stepgate-User for a stepped-up request: %v", want)
					}
					if fmt.Sprint(got) != fmt.Sprint(want) {
						t.Fatalf("the app received X-Stepgate-* headers\n%v\nstepgate answered\n%v", got, want)
					}
				})
			}
			// A client's own X-Stepgate-User: refused, or at least never at
			// the app with the client's value.
			for _, path := range []string{"/public", "/admin/users"} {
				before := len(s.Requests())
				code, _ := rawTarget(t, base, http.MethodGet, path, "Accept", "text/html",
					"X-Forwarded-User", "bob", "X-Stepgate-User", "alice")
				if code == http.StatusOK {
					t.Errorf("GET %s with a client's X-Stepgate-User: 200", path)
				}
				for _, r := range s.Requests()[before:] {
					if got := stepgateHeaders(r.Header); len(got) != 0 {
						t.Errorf("GET %s with a client's X-Stepgate-User: the app received %v", path, got)
					}
				}
			}
		})
	}
}

// TestReservedPathsInAnySpellingAreAnsweredCleanlyThroughARealFrontProxy:
// stepgate answers 404 to a check of a /.stepgate/ path in a spelling the
// front proxy does not route to it (another letter case), and nginx turns
// any auth_request status but 2xx, 401 and 403 into its own 500. Every
// spelling must get a clean 4xx (or be served), never a 5xx, and never
// reach the app.
func TestReservedPathsInAnySpellingAreAnsweredCleanlyThroughARealFrontProxy(t *testing.T) {
	targets := []string{
		"/.STEPGATE/challenge", "/.Stepgate/challenge?return=%2F", "/.STEPGATE/assets/stepgate.css",
		"/.stepGate/logout", "/.STEPGATE/auth", "/.STEPGATE/ext-authz/admin", "/.stepgate", "/.STEPGATE",
		"/.%53TEPGATE/challenge", "/%2eSTEPGATE/challenge", "/.stepgate/no-such-page",
	}
	for _, fp := range frontProxies {
		t.Run(fp.name, func(t *testing.T) {
			s := forwardAuthStack(t)
			base := fp.start(t, s)
			for _, target := range targets {
				code, h := rawTarget(t, base, http.MethodGet, target, "X-Forwarded-User", "alice", "Accept", "text/html")
				if code >= 500 || code == http.StatusOK && h.Get("X-Stepgate-User") != "" {
					t.Errorf("GET %s through %s: %d", target, fp.name, code)
				}
			}
			if reqs := s.Requests(); len(reqs) != 0 {
				t.Fatalf("the app received %d requests, first %s %s", len(reqs), reqs[0].Method, reqs[0].RequestURI)
			}
		})
	}
}

// TestAStoreOutageThroughNginxIsA503: with revocations stale, stepgate
// answers a check of an mfa path 503, which nginx's auth_request alone
// would turn into its own 500; the shipped file answers 503 with
// Retry-After instead.
func TestAStoreOutageThroughNginxIsA503(t *testing.T) {
	srv := redistest.Start(t)
	s := forwardAuthStack(t, "STEPGATE_STORE", "redis", "STEPGATE_REDIS_URL", srv.URL(),
		"STEPGATE_STORE_MAX_STALENESS", "1s", "STEPGATE_REDIS_TIMEOUT", "200ms")
	waitStoreOK(t, s)
	base := startNginx(t, s)
	alice := s.stepUpAliceAt(base, "/admin/users")
	srv.Kill()
	waitReadyz(t, s, "mfa paths refused", 10*time.Second)
	r := alice.get("/admin/users")
	if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" ||
		r.Header.Get("Cache-Control") != "no-store" || !strings.Contains(r.Body, "store_unavailable") {
		t.Fatalf("mfa path with the store down: %d %v %s, want 503 store_unavailable with Retry-After", r.StatusCode, r.Header, r.Body)
	}
	if r := alice.get("/public"); r.StatusCode != http.StatusOK {
		t.Errorf("allow path with the store down: %d", r.StatusCode)
	}
}

// clientIdentityHeaders are identity-family headers a client sends to pass
// for someone signed in (docs/design.md §6): an auth proxy's, an SSO
// agent's, Grafana's and Authentik's names, in the spellings a front proxy
// forwards.
var clientIdentityHeaders = []string{
	"Remote-User", "REMOTE-EMAIL", "Remote-Groups", "remote-name",
	"X-Remote-User", "X-Remote-Group",
	"X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Preferred-Username", "x-auth-request-groups",
	"X-Auth-Request-Access-Token",
	"X-Forwarded-Email", "X-Forwarded-Preferred-Username", "X-Forwarded-Groups",
	"X-Webauth-User", "X-Authentik-Username", "X-Authentik-Groups",
}

// TestClientIdentityHeadersNeverReachTheAppThroughARealFrontProxy: behind
// forward-auth the front proxy, not stepgate, forwards the request, so the
// shipped configuration must clear every identity family but the
// configured identity header (issue 22): a client's Remote-User or
// X-Auth-Request-User reaches the app through neither nginx nor Caddy, on
// an allow path or after a step-up, while the identity header the hop
// before sets does.
func TestClientIdentityHeadersNeverReachTheAppThroughARealFrontProxy(t *testing.T) {
	for _, fp := range frontProxies {
		t.Run(fp.name, func(t *testing.T) {
			s := forwardAuthStack(t, "STEPGATE_RULES", "/admin/ mfa max_age=15m; /public allow")
			base := fp.start(t, s)
			alice := s.stepUpAliceAt(base, "/admin/users")
			cookie := ""
			for _, ck := range alice.Client.Jar.Cookies(mustURL(t, base)) {
				cookie += ck.Name + "=" + ck.Value + "; "
			}
			for _, tc := range []struct{ name, user, path, cookie string }{
				{"an allow path", "bob", "/public", ""},
				{"an mfa path after the step-up", "alice", "/admin/users", cookie},
			} {
				t.Run(tc.name, func(t *testing.T) {
					h := []string{"Accept", "text/html", "X-Forwarded-User", tc.user}
					if tc.cookie != "" {
						h = append(h, "Cookie", tc.cookie)
					}
					for _, name := range clientIdentityHeaders {
						h = append(h, name, "mallory")
					}
					before := len(s.Requests())
					if code, _ := rawTarget(t, base, http.MethodGet, tc.path, h...); code != http.StatusOK {
						t.Fatalf("GET %s: %d", tc.path, code)
					}
					reqs := s.Requests()[before:]
					if len(reqs) != 1 {
						t.Fatalf("the app received %d requests, want 1", len(reqs))
					}
					for name, vs := range reqs[0].Header {
						if isClientIdentityHeader(name) {
							t.Errorf("the app received the client's %s: %q", name, vs)
						}
					}
					if got := reqs[0].Header.Get("X-Forwarded-User"); got != tc.user {
						t.Errorf("the app received X-Forwarded-User %q, want %q (the configured identity header is kept)", got, tc.user)
					}
				})
			}
			// Spellings a front proxy cannot clear by name (Caddy forwards
			// underscores and dots, nginx drops them itself; nginx clears
			// only the names it lists): refused, or at least never at the app.
			for _, name := range []string{"Remote_User", "X_Auth_Request_User", "x.webauth.user", "X-Auth-Request-Tenant"} {
				before := len(s.Requests())
				code, _ := rawTarget(t, base, http.MethodGet, "/public", "Accept", "text/html", "X-Forwarded-User", "bob", name, "mallory")
				for _, r := range s.Requests()[before:] {
					for got := range r.Header {
						if isClientIdentityHeader(got) {
							t.Errorf("%s: the app received %s (answer %d)", name, got, code)
						}
					}
				}
			}
		})
	}
}

// isClientIdentityHeader reports whether name, read as frameworks do, is
// one of the identity families other than X-Forwarded-User.
func isClientIdentityHeader(name string) bool {
	n := foldName(name)
	for _, p := range []string{"remote-", "x-remote-", "x-auth-request-", "x-webauth-", "x-authentik-"} {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	switch n {
	case "x-forwarded-email", "x-forwarded-preferred-username", "x-forwarded-groups":
		return true
	}
	return false
}
