package main

// The ext_authz front door (docs/design.md §16), asked exactly as Envoy asks
// it: the gRPC envoy.service.auth.v3.Authorization/Check with the
// CheckRequest Envoy builds (attribute_context.proto: lower-case headers
// with the HTTP/2 pseudo-headers, the raw path with its query, source and
// destination peers), and the HTTP service with the original method and
// path_prefix + path. Envoy is not packaged in Debian; these clients send
// what Envoy's protos and docs say it sends.

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// extAuthzStack serves the proxy door (for the challenge pages) and
// ext-authz, with the gRPC service on loopback; it returns the gRPC address.
func extAuthzStack(t *testing.T, kv ...string) (*stack, string) {
	t.Helper()
	s := newStack(t, withEnv(append([]string{
		"STEPGATE_FRONT_DOORS", "proxy,ext-authz",
		"STEPGATE_TRUSTED_PROXIES", "127.0.0.1/32",
		"STEPGATE_AUTHZ_GRPC_LISTEN", "127.0.0.1:0",
	}, kv...)...))
	return s, grpcAddrFromLogs(t, s)
}

// grpcAddrFromLogs reads the gRPC listener's address from stepgate's log.
func grpcAddrFromLogs(t testing.TB, s *stack) string {
	t.Helper()
	re := regexp.MustCompile(`"msg":"ext_authz gRPC listening","addr":"([^"]+)"`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := re.FindStringSubmatch(s.Logs.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no gRPC listener in the logs:\n%s", s.Logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// authzClient dials the gRPC service, from 127.0.0.1 (Envoy, trusted) or
// from another loopback address (not trusted).
func authzClient(t testing.TB, addr string, from net.IP) authv3.AuthorizationClient {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if from != nil {
		d.LocalAddr = &net.TCPAddr{IP: from}
	}
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// envoyCheck is the CheckRequest Envoy's ext_authz filter sends for a
// request (http_service unset, grpc_service set, no body buffering):
// header keys lower case, pseudo-headers included, path raw with query.
func envoyCheck(method, path string, kv ...string) *authv3.CheckRequest {
	h := map[string]string{
		":authority": "app.example.com", ":method": method, ":path": path, ":scheme": "https",
		"x-forwarded-proto": "https", "x-request-id": "3f1c2b9a-6d0e-4c55-9b7e-2a1d8c4e7f10",
		"user-agent": "Mozilla/5.0", "x-envoy-internal": "true",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		h[strings.ToLower(kv[i])] = kv[i+1]
	}
	sock := func(ip string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: sock("203.0.113.7", 51234)},
		Destination: &authv3.AttributeContext_Peer{Address: sock("10.0.0.5", 8443)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: h["x-request-id"], Method: method, Headers: h, Path: path,
				Host: "app.example.com", Scheme: "https", Protocol: "HTTP/2", Size: -1,
			},
		},
		MetadataContext: &corev3.Metadata{},
	}}
}

func check(t *testing.T, c authv3.AuthorizationClient, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

// optHeaders flattens HeaderValueOptions, checking each overwrites.
func optHeaders(t *testing.T, opts []*corev3.HeaderValueOption) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, o := range opts {
		if o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %s is not set with OVERWRITE_IF_EXISTS_OR_ADD", o.GetHeader().GetKey())
		}
		m[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
	}
	return m
}

// cookieHeader is the Cookie line a browser with b's cookies sends.
func cookieHeader(t *testing.T, b *browser, base string, extra string) string {
	t.Helper()
	parts := []string{extra}
	for _, ck := range b.Client.Jar.Cookies(mustURL(t, base)) {
		parts = append(parts, ck.Name+"="+ck.Value)
	}
	return strings.Join(parts, "; ")
}

func TestExtAuthzGRPCAnswersWhatEnvoyExpects(t *testing.T) {
	s, addr := extAuthzStack(t)
	envoy := authzClient(t, addr, nil)
	alice := s.stepUpAliceAt(s.Proxy, "/admin/users")
	cookie := cookieHeader(t, alice, s.Proxy, "theme=dark")
	browserHdr := []string{"accept", "text/html,application/xhtml+xml", "sec-fetch-mode", "navigate", "x-forwarded-user", "alice"}

	t.Run("a stepped-up browser is let through with the step-up headers and without stepgate's cookies", func(t *testing.T) {
		resp := check(t, envoy, envoyCheck("GET", "/admin/users?tab=2", append(browserHdr, "cookie", cookie)...))
		ok := resp.GetOkResponse()
		if codes.Code(resp.GetStatus().GetCode()) != codes.OK || ok == nil {
			t.Fatalf("got %v", resp)
		}
		h := optHeaders(t, ok.GetHeaders())
		if h["x-stepgate-user"] != "alice" || h["x-stepgate-subject"] == "" || h["x-stepgate-id-token"] == "" ||
			h["x-stepgate-auth-time"] == "" || h["x-stepgate-acr"] != "MFA-Only" {
			t.Fatalf("OK headers %v", h)
		}
		if h["cookie"] != "theme=dark" {
			t.Errorf("cookie upstream %q, want only theme=dark", h["cookie"])
		}
		if _, set := h["cache-control"]; set {
			t.Error("Cache-Control set on the upstream request")
		}
	})

	t.Run("a browser without a step-up is redirected to the challenge, no-store", func(t *testing.T) {
		resp := check(t, envoy, envoyCheck("GET", "/admin/users?tab=2", browserHdr...))
		d := resp.GetDeniedResponse()
		h := optHeaders(t, d.GetHeaders())
		if codes.Code(resp.GetStatus().GetCode()) != codes.PermissionDenied || d.GetStatus().GetCode() != 302 ||
			h["location"] != "/.stepgate/challenge?return=%2Fadmin%2Fusers%3Ftab%3D2" || h["cache-control"] != "no-store" {
			t.Fatalf("got %v", resp)
		}
	})

	t.Run("an API call without a step-up gets 401 JSON", func(t *testing.T) {
		resp := check(t, envoy, envoyCheck("GET", "/api/orders", "accept", "application/json", "x-forwarded-user", "alice"))
		d := resp.GetDeniedResponse()
		h := optHeaders(t, d.GetHeaders())
		var body map[string]string
		_ = json.Unmarshal([]byte(d.GetBody()), &body)
		if codes.Code(resp.GetStatus().GetCode()) != codes.Unauthenticated || d.GetStatus().GetCode() != 401 ||
			body["error"] != "step_up_required" || !strings.Contains(h["www-authenticate"], "insufficient_user_authentication") ||
			h["content-type"] != "application/json" || h["cache-control"] != "no-store" {
			t.Fatalf("got %v", resp)
		}
	})

	t.Run("deny is 403", func(t *testing.T) {
		resp := check(t, envoy, envoyCheck("GET", "/blocked", browserHdr...))
		if d := resp.GetDeniedResponse(); d.GetStatus().GetCode() != 403 {
			t.Fatalf("got %v", resp)
		}
	})

	t.Run("spoofed stepgate and identity spellings are removed upstream", func(t *testing.T) {
		resp := check(t, envoy, envoyCheck("GET", "/public", "x-stepgate-user", "admin", "x_stepgate_user", "admin",
			"x.stepgate.id.token", "forged", "x_forwarded_user", "root", "x-original-url", "/admin/users", "x-stepgate-approval", "forged"))
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("got %v", resp)
		}
		for _, want := range []string{"x-stepgate-user", "x_stepgate_user", "x.stepgate.id.token", "x_forwarded_user",
			"x-original-url", "x-stepgate-approval", "x-stepgate-id-token", "x-stepgate-subject"} {
			if !contains(ok.GetHeadersToRemove(), want) {
				t.Errorf("headers_to_remove %v lacks %s", ok.GetHeadersToRemove(), want)
			}
		}
		if len(ok.GetHeaders()) != 0 {
			t.Errorf("headers set without a step-up: %v", ok.GetHeaders())
		}
	})

	t.Run("raw headers (encode_raw_headers) decide alike", func(t *testing.T) {
		req := envoyCheck("GET", "/admin/users", append(browserHdr, "cookie", cookie)...)
		hm := &corev3.HeaderMap{}
		for k, v := range req.Attributes.Request.Http.Headers {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
		}
		req.Attributes.Request.Http.Headers, req.Attributes.Request.Http.HeaderMap = nil, hm
		if h := optHeaders(t, check(t, envoy, req).GetOkResponse().GetHeaders()); h["x-stepgate-user"] != "alice" {
			t.Fatalf("OK headers %v", h)
		}
	})

	for _, path := range []string{"/public/../admin/users", "/admin%2fusers", "//admin/users", "/admin;x/users", "*", "http://evil/admin"} {
		t.Run("path confusion "+path+" is refused", func(t *testing.T) {
			resp := check(t, envoy, envoyCheck("GET", path, append(browserHdr, "cookie", cookie)...))
			if d := resp.GetDeniedResponse(); d == nil || d.GetStatus().GetCode() != 403 {
				t.Fatalf("got %v", resp)
			}
		})
	}

	t.Run("a check from outside STEPGATE_TRUSTED_PROXIES is refused", func(t *testing.T) {
		other := authzClient(t, addr, net.IPv4(127, 0, 0, 2))
		resp := check(t, other, envoyCheck("GET", "/admin/users", append(browserHdr, "cookie", cookie)...))
		if d := resp.GetDeniedResponse(); d == nil || d.GetStatus().GetCode() != 403 || len(resp.GetOkResponse().GetHeaders()) != 0 {
			t.Fatalf("got %v", resp)
		}
	})
}

func TestExtAuthzHTTPAnswersWhatEnvoyExpects(t *testing.T) {
	s, _ := extAuthzStack(t)
	alice := s.stepUpAliceAt(s.Proxy, "/admin/users")
	cookie := cookieHeader(t, alice, s.Proxy, "theme=dark")
	// Envoy's HTTP service: the original method, path_prefix + the original
	// path, the allowed headers (Envoy Gateway: headersToExtAuth), and
	// Content-Length: 0 without with_request_body.
	ask := func(t *testing.T, client *http.Client, method, path string, kv ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, s.Proxy+"/.stepgate/ext-authz"+path, nil)
		req.Host = "app.example.com"
		req.Header.Set("Content-Length", "0")
		for i := 0; i+1 < len(kv); i += 2 {
			req.Header[kv[i]] = append(req.Header[kv[i]], kv[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	envoy := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	resp, _ := ask(t, envoy, "GET", "/admin/users", "Cookie", cookie, "X-Forwarded-User", "alice", "Accept", "text/html")
	if resp.StatusCode != 200 || resp.Header.Get("X-Stepgate-User") != "alice" || resp.Header.Get("Cookie") != "theme=dark" ||
		resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("stepped up: %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = ask(t, envoy, "GET", "/admin/users", "X-Forwarded-User", "alice", "Accept", "text/html")
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "/.stepgate/challenge?return=%2Fadmin%2Fusers" ||
		resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("no step-up: %d %v", resp.StatusCode, resp.Header)
	}
	resp, body := ask(t, envoy, "POST", "/api/orders", "X-Forwarded-User", "alice", "Accept", "application/json")
	if resp.StatusCode != 401 || !strings.Contains(body, `"step_up_required"`) {
		t.Fatalf("API: %d %s", resp.StatusCode, body)
	}
	resp, _ = ask(t, envoy, "GET", "/public", "X_Stepgate_User", "admin", "X-Stepgate-User", "admin")
	rm := strings.Split(resp.Header.Get("X-Envoy-Auth-Headers-To-Remove"), ",")
	if resp.StatusCode != 200 || !contains(rm, "x_stepgate_user") || !contains(rm, "x-stepgate-user") || resp.Header.Get("X-Stepgate-User") != "" {
		t.Fatalf("spoofed: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, _ := ask(t, envoy, "GET", "/public/%2e%2e/admin/users", "Cookie", cookie, "X-Forwarded-User", "alice"); resp.StatusCode != 403 {
		t.Fatalf("path confusion: %d", resp.StatusCode)
	}
	if resp, _ := ask(t, untrustedClient(), "GET", "/admin/users", "Cookie", cookie, "X-Forwarded-User", "alice"); resp.StatusCode != 403 || resp.Header.Get("X-Stepgate-User") != "" {
		t.Fatalf("untrusted peer: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestExtAuthzWithTheBodyServesApproveRulesOnceForTheApprovedRequest(t *testing.T) {
	s, addr := extAuthzStack(t, "STEPGATE_RULES", approveTestRules, "STEPGATE_AUTHZ_WITH_BODY", "true")
	envoy := authzClient(t, addr, nil)
	payment := `{"amount":"250.00","currency":"EUR","payee":{"name":"ACME GmbH"}}`
	pay := func(body string) *authv3.CheckResponse {
		req := envoyCheck("POST", "/api/payments", "accept", "application/json", "content-type", "application/json",
			"x-forwarded-user", "alice", "content-length", "64")
		req.Attributes.Request.Http.Body = body
		req.Attributes.Request.Http.Size = int64(len(body))
		return check(t, envoy, req)
	}
	resp := pay(payment)
	d := resp.GetDeniedResponse()
	var answer struct {
		Error       string `json:"error"`
		ApprovalURL string `json:"approval_url"`
	}
	_ = json.Unmarshal([]byte(d.GetBody()), &answer)
	if d.GetStatus().GetCode() != 401 || answer.Error != "approval_required" || !strings.HasPrefix(answer.ApprovalURL, "/.stepgate/challenge?approval=") {
		t.Fatalf("first check: %v", resp)
	}
	b := s.browser("alice")
	r := b.follow(b.get(answer.ApprovalURL))
	if !strings.Contains(r.Body, "<dd>250.00</dd>") {
		t.Fatalf("approval page: %s", r.Body)
	}
	if r = b.passChallenge(s, r); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("OTP: %d %s", r.StatusCode, r.Body)
	}
	if other := pay(strings.Replace(payment, "250.00", "9250.00", 1)); other.GetOkResponse() != nil {
		t.Fatal("another amount passed on alice's approval")
	}
	ok := pay(payment).GetOkResponse()
	if ok == nil || optHeaders(t, ok.GetHeaders())["x-stepgate-approval"] == "" {
		t.Fatalf("the approved request was not let through with its digest: %v", ok)
	}
	if again := pay(payment); again.GetOkResponse() != nil {
		t.Fatal("the approval let the same request through twice")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
