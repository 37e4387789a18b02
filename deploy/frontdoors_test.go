package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	sigsyaml "sigs.k8s.io/yaml"
)

// The front-door configurations under frontdoors/ (docs/design.md §16).
// nginx.conf and Caddyfile run for real in the root module's tests
// (cmd/stepgate/frontdoor_test.go); the Kubernetes ones are checked here
// for what stepgate relies on.

// stepUpHeaders are the §6 headers a front proxy copies from stepgate's 200.
var stepUpHeaders = []string{
	"X-Stepgate-Id-Token", "X-Stepgate-Subject", "X-Stepgate-User",
	"X-Stepgate-Auth-Time", "X-Stepgate-Acr", "X-Stepgate-Amr",
}

// frontDoorDocs decodes every YAML document of a file into generic maps.
func frontDoorDocs(t *testing.T, name string) map[string]map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("frontdoors", name))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, doc := range bytes.Split(b, []byte("\n---\n")) {
		var m map[string]any
		if err := sigsyaml.Unmarshal(doc, &m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(m) == 0 {
			continue
		}
		kind, _ := m["kind"].(string)
		meta, _ := m["metadata"].(map[string]any)
		out[kind+"/"+meta["name"].(string)] = m
	}
	return out
}

// at walks a decoded document by keys and list indexes.
func at(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("no %q in %v", k, v)
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("no [%d] in %v", k, v)
			}
			v = l[k]
		}
	}
	return v
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestTraefikMiddlewareAsksStepgateAndCopiesEveryStepUpHeader(t *testing.T) {
	docs := frontDoorDocs(t, "traefik.yaml")
	mw := docs["Middleware/stepgate"]
	if mw == nil {
		t.Fatal("no Middleware stepgate")
	}
	if a := at(t, mw, "spec", "forwardAuth", "address").(string); !strings.HasSuffix(a, ":8080/.stepgate/auth") {
		t.Errorf("forwardAuth.address %q does not ask /.stepgate/auth on the proxy port", a)
	}
	if tf := at(t, mw, "spec", "forwardAuth", "trustForwardHeader"); tf != false {
		t.Errorf("trustForwardHeader %v: a client's X-Forwarded-Uri would describe the request", tf)
	}
	if got := strs(at(t, mw, "spec", "forwardAuth", "authResponseHeaders")); !slices.Equal(got, stepUpHeaders) {
		t.Errorf("authResponseHeaders %v, want %v", got, stepUpHeaders)
	}
	ir := docs["IngressRoute/app"]
	routes := at(t, ir, "spec", "routes").([]any)
	pages, app := routes[0].(map[string]any), routes[1].(map[string]any)
	if m := pages["match"].(string); !strings.Contains(m, "PathPrefix(`/.stepgate/`)") || !strings.Contains(m, "!Path(`/.stepgate/auth`)") {
		t.Errorf("the pages route %q must send /.stepgate/ to stepgate but not its auth endpoint", m)
	}
	if pages["middlewares"] != nil || at(t, app, "middlewares", 0, "name") != "stepgate" {
		t.Error("the middleware must guard the app route and not stepgate's pages")
	}
}

func TestEnvoyGatewayPolicyCallsTheGRPCCheckAndFailsClosed(t *testing.T) {
	docs := frontDoorDocs(t, "envoy-gateway.yaml")
	sp := docs["SecurityPolicy/stepgate"]
	if sp == nil {
		t.Fatal("no SecurityPolicy stepgate")
	}
	if at(t, sp, "spec", "extAuth", "failOpen") != false {
		t.Error("extAuth.failOpen must be false")
	}
	if p := at(t, sp, "spec", "extAuth", "grpc", "backendRefs", 0, "port"); p != float64(9191) {
		t.Errorf("gRPC backend port %v, want 9191 (STEPGATE_AUTHZ_GRPC_LISTEN in the chart's authz mode)", p)
	}
	if at(t, sp, "spec", "targetRefs", 0, "name") != "app" {
		t.Error("the policy must target the app's HTTPRoute")
	}
	pages := docs["HTTPRoute/stepgate-pages"]
	if at(t, pages, "spec", "rules", 0, "matches", 0, "path", "value") != "/.stepgate/" ||
		at(t, pages, "spec", "rules", 0, "backendRefs", 0, "port") != float64(8080) {
		t.Error("stepgate-pages must route /.stepgate/ to stepgate's port 8080")
	}
}

func TestIstioPolicyIsCustomWithStepgateAndLeavesItsPagesOut(t *testing.T) {
	docs := frontDoorDocs(t, "istio.yaml")
	ap := docs["AuthorizationPolicy/stepgate"]
	if at(t, ap, "spec", "action") != "CUSTOM" || at(t, ap, "spec", "provider", "name") != "stepgate" {
		t.Error("the AuthorizationPolicy must be CUSTOM with the stepgate provider")
	}
	if got := strs(at(t, ap, "spec", "rules", 0, "to", 0, "operation", "notPaths")); !slices.Equal(got, []string{"/.stepgate/*"}) {
		t.Errorf("notPaths %v", got)
	}
	b, _ := os.ReadFile(filepath.Join("frontdoors", "istio.yaml"))
	for _, want := range []string{"envoyExtAuthzGrpc:", "port: 9191"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("istio.yaml does not show the extension provider's %q", want)
		}
	}
}

func TestNginxAndCaddyCopyEveryStepUpHeader(t *testing.T) {
	nginx, _ := os.ReadFile(filepath.Join("frontdoors", "nginx.conf"))
	caddy, _ := os.ReadFile(filepath.Join("frontdoors", "Caddyfile"))
	for _, h := range stepUpHeaders {
		v := "$upstream_http_" + strings.ReplaceAll(strings.ToLower(h), "-", "_")
		if !strings.Contains(string(nginx), v) || !strings.Contains(string(nginx), "proxy_set_header "+h+" ") {
			t.Errorf("nginx.conf does not copy %s", h)
		}
		if !strings.Contains(string(caddy), " "+h) {
			t.Errorf("Caddyfile does not copy %s", h)
		}
	}
}

// Caddy before 2.9 copies a header stepgate's answer lacks as the literal
// placeholder text; the Caddyfile must remove that copy for every header
// it copies (the real Caddy runs in cmd/stepgate/frontdoor_test.go).
func TestCaddyfileRemovesEveryUnresolvedStepUpHeader(t *testing.T) {
	caddy, err := os.ReadFile(filepath.Join("frontdoors", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range stepUpHeaders {
		matcher := "header_regexp " + h + " ^[{]http[.]reverse_proxy[.]header[.]"
		if !strings.Contains(string(caddy), matcher) {
			t.Errorf("Caddyfile has no %q", matcher)
		}
		if !strings.Contains(string(caddy), " -"+h+"\n") {
			t.Errorf("Caddyfile does not remove an unresolved %s", h)
		}
	}
}

// Traefik forwards a client's identity headers unless the middleware
// deletes them: authResponseHeadersRegex (Go's regexp, as Traefik compiles
// it) must match every identity family in any spelling, and neither the
// identity header stepgate reads nor its own headers.
func TestTraefikClearsEveryIdentityFamilyButTheIdentityHeader(t *testing.T) {
	mw := frontDoorDocs(t, "traefik.yaml")["Middleware/stepgate"]
	src, _ := at(t, mw, "spec", "forwardAuth", "authResponseHeadersRegex").(string)
	re, err := regexp.Compile(src)
	if err != nil {
		t.Fatalf("authResponseHeadersRegex: %v", err)
	}
	for _, name := range []string{
		"Remote-User", "Remote-Email", "Remote_user", "Remote.groups", "X-Remote-User", "X-Remote-Group",
		"X-Auth-Request-User", "X-Auth-Request-Email", "X_auth_request_user", "X-Auth-Request-Tenant",
		"X-Webauth-User", "X-Authentik-Username", "X-Authentik-Meta-App",
		"X-Forwarded-Email", "X-Forwarded-Preferred-Username", "X-Forwarded-Groups", "X_forwarded_email",
	} {
		if !re.MatchString(name) {
			t.Errorf("a client's %s reaches the app through Traefik", name)
		}
	}
	for _, name := range append([]string{"X-Forwarded-User", "X-Forwarded-For", "X-Forwarded-Proto", "Authorization", "Cookie"}, stepUpHeaders...) {
		if re.MatchString(name) {
			t.Errorf("authResponseHeadersRegex removes %s", name)
		}
	}
}

// authRequestHeaders would limit what Traefik shows stepgate: a spoofed
// header left out of it would reach the app unrefused.
func TestTraefikShowsStepgateEveryHeader(t *testing.T) {
	mw := frontDoorDocs(t, "traefik.yaml")["Middleware/stepgate"]
	if v := at(t, mw, "spec", "forwardAuth", "authRequestHeaders"); v != nil {
		t.Errorf("authRequestHeaders %v: stepgate must see every header", v)
	}
}

// Envoy shows ext_authz only the headers it forwards, and stepgate can
// remove only what it is shown: header names with underscores
// (X_Stepgate_User), which CGI, PHP and Rails read as X-Stepgate-User,
// must be refused by Envoy itself, and nothing may narrow the headers the
// check sees.
func TestEnvoyConfigurationsRefuseUnderscoreHeadersAndShowStepgateEveryHeader(t *testing.T) {
	eg := frontDoorDocs(t, "envoy-gateway.yaml")
	ctp := eg["ClientTrafficPolicy/stepgate-headers"]
	if ctp == nil {
		t.Fatal("envoy-gateway.yaml: no ClientTrafficPolicy stepgate-headers")
	}
	if a := at(t, ctp, "spec", "headers", "withUnderscoresAction"); a != "RejectRequest" {
		t.Errorf("withUnderscoresAction %v, want RejectRequest", a)
	}
	if at(t, ctp, "spec", "targetRefs", 0, "kind") != "Gateway" || at(t, ctp, "spec", "targetRefs", 0, "name") != "eg" {
		t.Error("the ClientTrafficPolicy must target the Gateway the app's HTTPRoute uses (eg)")
	}
	if h := at(t, eg["SecurityPolicy/stepgate"], "spec", "extAuth", "headersToExtAuth"); h != nil {
		t.Errorf("extAuth.headersToExtAuth %v: stepgate must see every header", h)
	}

	istio := frontDoorDocs(t, "istio.yaml")
	ef := istio["EnvoyFilter/stepgate-reject-underscore-headers"]
	if ef == nil {
		t.Fatal("istio.yaml: no EnvoyFilter stepgate-reject-underscore-headers")
	}
	if ns := at(t, ef, "metadata", "namespace"); ns != "istio-system" {
		t.Errorf("EnvoyFilter in %v: it must be in the root namespace to reach every proxy", ns)
	}
	patch := at(t, ef, "spec", "configPatches", 0)
	if at(t, patch, "applyTo") != "NETWORK_FILTER" ||
		at(t, patch, "match", "listener", "filterChain", "filter", "name") != "envoy.filters.network.http_connection_manager" {
		t.Errorf("the EnvoyFilter must patch the HTTP connection manager: %v", patch)
	}
	if a := at(t, patch, "patch", "value", "typed_config", "common_http_protocol_options", "headers_with_underscores_action"); a != "REJECT_REQUEST" {
		t.Errorf("headers_with_underscores_action %v, want REJECT_REQUEST", a)
	}
	b, _ := os.ReadFile(filepath.Join("frontdoors", "istio.yaml"))
	if strings.Contains(string(b), "envoyExtAuthzHttp:") {
		t.Error("istio.yaml uses the HTTP provider, which shows stepgate only includeRequestHeadersInCheck")
	}
}
