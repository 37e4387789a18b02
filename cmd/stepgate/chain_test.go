package main

// A real identity chain in front of stepgate (docs/design.md §4, §17): an IdP
// whose user id is not the PingOne username (Dex's opaque sub), the headers
// oauth2-proxy really sends, identity headers from peers that are not the
// proxy, JWT identity by peer, and a client that hangs up.

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

// dexSub is what Dex puts in sub (and oauth2-proxy in X-Forwarded-User):
// base64 of a protobuf naming the connector's user id. PingOne knows no
// such user.
const dexSub = "CiQwOGE4Njg0Yi1kYjg4LTRiNzMtOTBhOS0zY2QxNjYxZjU0NjYSBWxvY2Fs"

// stepUpBySMS runs an SMS step-up through the page for b, whose PingOne
// user is inboxUser, and returns the final 303's Location.
func stepUpBySMS(t *testing.T, s *stack, b *browser, path, inboxUser string) {
	t.Helper()
	r := b.get(path)
	if r.StatusCode != http.StatusFound {
		t.Fatalf("GET %s: got %d, want 302", path, r.StatusCode)
	}
	b.follow(r)
	r = b.post("action", "start")
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("start: got %d, want 303: %s\nlogs:\n%s", r.StatusCode, r.Body, s.Logs.String())
	}
	r = b.follow(r)
	ids := deviceIDs(r.Body)
	if len(ids) < 1 {
		t.Fatalf("no devices offered: %s", r.Body)
	}
	r = b.follow(b.post("action", "select", "device", ids[0]))
	if !strings.Contains(r.Body, `data-state="otp"`) {
		t.Fatalf("not on OTP page: %s", r.Body)
	}
	r = b.post("action", "otp", "otp", s.latestOTP(inboxUser))
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != path {
		t.Fatalf("OTP: got %d to %q, want 303 to %q: %s", r.StatusCode, r.Header.Get("Location"), path, r.Body)
	}
}

func TestPingOneUserIsMappedFromTheEmailHeaderOfAnOpaqueIdP(t *testing.T) {
	s := newStack(t, withEnv(
		"STEPGATE_PINGONE_USER_FROM", "header:X-Forwarded-Email",
		"STEPGATE_PINGONE_USER_TRANSFORM", "lower,strip-domain",
	))
	b := s.browser(dexSub)
	b.header = http.Header{"X-Forwarded-Email": {"Alice@Example.com"}}
	stepUpBySMS(t, s, b, "/admin/", "alice")

	if r := b.get("/admin/"); r.StatusCode != http.StatusOK {
		t.Fatalf("stepped-up request: got %d, want 200", r.StatusCode)
	}
	got := s.LastRequest().Header
	if v := got.Get("X-Stepgate-User"); v != dexSub {
		t.Errorf("X-Stepgate-User = %q, want the IdP's user %q (the cookie binding)", v, dexSub)
	}
	if v := got.Get("X-Stepgate-Subject"); v != pingonesim.DemoAliceID {
		t.Errorf("X-Stepgate-Subject = %q, want alice's PingOne id %q", v, pingonesim.DemoAliceID)
	}
	// The step-up is bound to the upstream user, not to the e-mail.
	b.user = "someone-else"
	if r := b.get("/admin/"); r.StatusCode != http.StatusFound {
		t.Errorf("another upstream user with alice's cookie: got %d, want 302 (challenge)", r.StatusCode)
	}
}

func TestPingOneUserIsMappedFromAClaimOfTheIdentityJWT(t *testing.T) {
	p := newIdP(t)
	s := newStack(t, withEnv(
		"STEPGATE_IDENTITY", "jwt",
		"STEPGATE_IDENTITY_JWKS_URL", p.url,
		"STEPGATE_IDENTITY_ISSUER", idpIssuer,
		"STEPGATE_IDENTITY_AUDIENCE", idpAudience,
		"STEPGATE_PINGONE_USER_FROM", "claim:email",
		"STEPGATE_PINGONE_USER_TRANSFORM", "strip-domain",
	))
	c := p.claims(dexSub, s.Clock.Now())
	c["email"] = "alice@example.com"
	b := s.browser("")
	b.header = http.Header{"Authorization": {"Bearer " + p.rs256(t, c)}}
	stepUpBySMS(t, s, b, "/admin/", "alice")
	if r := b.get("/admin/"); r.StatusCode != http.StatusOK {
		t.Fatalf("stepped-up request: got %d, want 200", r.StatusCode)
	}
	if v := s.LastRequest().Header.Get("X-Stepgate-Subject"); v != pingonesim.DemoAliceID {
		t.Errorf("X-Stepgate-Subject = %q, want alice's PingOne id", v)
	}
}

func TestAUserPingOneDoesNotKnowSeesNotSetUpAndTheLogSaysWhatToCheck(t *testing.T) {
	tests := []struct {
		name       string
		env        []string
		header     http.Header
		wantSource string
		pingOne    bool // whether PingOne is asked at all
	}{
		{"the IdP's opaque user sent as it is is refused by PingOne", nil, nil, "the upstream user (header X-Forwarded-User)", true},
		{"a mapped header that is missing is caught before PingOne",
			[]string{"STEPGATE_PINGONE_USER_FROM", "header:X-Forwarded-Email"}, nil, "header X-Forwarded-Email", false},
		{"an e-mail PingOne does not know is refused by PingOne",
			[]string{"STEPGATE_PINGONE_USER_FROM", "header:X-Forwarded-Email"},
			http.Header{"X-Forwarded-Email": {"mallory@example.com"}}, "header X-Forwarded-Email", true},
		{"a user id kind that is not a UUID is caught before PingOne",
			[]string{"STEPGATE_PINGONE_USER_KIND", "id"}, nil, "the upstream user (header X-Forwarded-User)", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t, withEnv(tt.env...))
			b := s.browser(dexSub)
			b.header = tt.header
			b.follow(b.get("/admin/"))
			r := b.submit("action", "start") // a 303 to the page that says so, like every POST outcome
			if r.StatusCode != http.StatusForbidden || !strings.Contains(r.Body, "This account is not set up for verification") {
				t.Fatalf("start: got %d, want 403 'not set up' page: %s", r.StatusCode, r.Body)
			}
			if strings.Contains(r.Body, "refused this request") {
				t.Error("the page shows the generic refusal")
			}
			ev := s.Logs.Events("identity.rejected")
			if len(ev) != 1 {
				t.Fatalf("identity.rejected events: got %d, want 1; logs:\n%s", len(ev), s.Logs.String())
			}
			if ev[0]["pingone_user_source"] != tt.wantSource {
				t.Errorf("pingone_user_source = %v, want %q", ev[0]["pingone_user_source"], tt.wantSource)
			}
			if check, _ := ev[0]["check"].(string); !strings.Contains(check, "STEPGATE_PINGONE_USER_FROM") {
				t.Errorf("check = %q, want it to name STEPGATE_PINGONE_USER_FROM", check)
			}
			calls := promCounter(t, s.Admin, "stepgate_pingone_requests_total", lbl("op", "authorize"))
			if (calls > 0) != tt.pingOne {
				t.Errorf("PingOne authorize calls: %v, want called=%v", calls, tt.pingOne)
			}
		})
	}
}

// untrustedStack is a stack whose trusted proxy is not the test client:
// every request comes from an untrusted peer.
func untrustedStack(t *testing.T, kv ...string) *stack {
	return newStack(t, withEnv(append([]string{"STEPGATE_TRUSTED_PROXIES", "192.0.2.1/32"}, kv...)...))
}

func TestIdentityHeaderFamiliesFromUntrustedPeersNeverReachTheApp(t *testing.T) {
	// A custom identity header and a PingOne-user header, so the families
	// below are tested as families and the configured names on their own.
	env := []string{"STEPGATE_IDENTITY_HEADER", "X-Remote-Identity", "STEPGATE_PINGONE_USER_FROM", "header:X-Mapped-Login"}
	s := untrustedStack(t, env...)
	trusted := newStack(t, withEnv(env...))

	families := []string{
		"X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Preferred-Username", "X-Forwarded-Groups",
		"X-Forwarded-Access-Token", "X-Forwarded-For", "X-Forwarded-Host", "Forwarded", "X-Real-Ip",
		"X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Preferred-Username",
		"Remote-User", "Remote-Email", "Remote-Groups", "Remote-Name",
		"X-Remote-Identity", "X-Mapped-Login",
	}
	spellings := map[string]func(string) string{
		"canonical":   func(h string) string { return h },
		"lower case":  strings.ToLower,
		"upper case":  strings.ToUpper,
		"underscores": func(h string) string { return strings.ReplaceAll(h, "-", "_") },
		"dots":        func(h string) string { return strings.ReplaceAll(strings.ToLower(h), "-", ".") },
	}
	const marker = "spoofed-by-client"
	send := func(t *testing.T, st *stack, name string) http.Header {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, st.Proxy+"/public/x", nil)
		req.Header[name] = []string{marker} // sent exactly as spelled
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("allow path: got %d, want 200", resp.StatusCode)
		}
		return st.LastRequest().Header
	}
	for _, family := range families {
		for sp, spell := range spellings {
			name := spell(family)
			t.Run(family+" spelled with "+sp+" is removed", func(t *testing.T) {
				for k, vs := range send(t, s, name) {
					for _, v := range vs {
						if strings.Contains(v, marker) {
							t.Errorf("the app received %s: %s (sent as %q from an untrusted peer)", k, v, name)
						}
					}
				}
			})
		}
	}
	// The control: from the trusted proxy the configured headers do
	// arrive, so the assertions above can see them.
	for _, family := range []string{"X-Remote-Identity", "X-Mapped-Login"} {
		t.Run(family+" from the trusted proxy reaches the app", func(t *testing.T) {
			if v := send(t, trusted, family).Get(family); v != marker {
				t.Errorf("the app received %s = %q, want %q", family, v, marker)
			}
		})
	}
}

// TestIdentityHeaderFamiliesFromATrustedHopReachTheAppOnlyWhenPassed: a
// trusted hop (oauth2-proxy) passes a client's Remote-User or
// X-Auth-Request-User on as it came; an app that reads one as "who is
// signed in" must not see it. Only the configured identity header, and
// the names in STEPGATE_PASS_IDENTITY_HEADERS, go through.
func TestIdentityHeaderFamiliesFromATrustedHopReachTheAppOnlyWhenPassed(t *testing.T) {
	families := []string{
		"Remote-User", "Remote-Email", "Remote-Groups", "Remote-Name", "X-Remote-User", "X-Remote-Email",
		"X-Remote-Groups", "X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Preferred-Username",
		"X-Auth-Request-Groups", "X-Forwarded-Email", "X-Forwarded-Preferred-Username", "X-Forwarded-Groups",
		"X-Webauth-User", "X-Webauth-Email", "X-Authentik-Username",
	}
	const marker = "sent-through-a-trusted-hop"
	send := func(t *testing.T, st *stack, path string) http.Header {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, st.Proxy+path, nil)
		req.Header.Set("X-Forwarded-User", "alice")
		for _, f := range families {
			req.Header.Set(f, marker)
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("allow path: got %d, want 200", resp.StatusCode)
		}
		return st.LastRequest().Header
	}
	t.Run("by default only the identity header arrives", func(t *testing.T) {
		s := newStack(t)
		got := send(t, s, "/public/x")
		for _, f := range families {
			if v := got.Values(f); len(v) != 0 {
				t.Errorf("the app received %s: %v", f, v)
			}
		}
		if got.Get("X-Forwarded-User") != "alice" {
			t.Errorf("the identity header did not arrive: %v", got)
		}
	})
	t.Run("STEPGATE_PASS_IDENTITY_HEADERS lets the named ones through", func(t *testing.T) {
		s := newStack(t, withEnv("STEPGATE_PASS_IDENTITY_HEADERS", "remote-user, X-Auth-Request-Email"))
		got := send(t, s, "/public/x")
		for _, f := range families {
			want := f == "Remote-User" || f == "X-Auth-Request-Email"
			if v := got.Get(f); (v == marker) != want {
				t.Errorf("the app received %s = %q, want it passed=%v", f, v, want)
			}
		}
	})
	t.Run("ext_authz removes them upstream", func(t *testing.T) {
		s := newStack(t, withEnv("STEPGATE_FRONT_DOORS", "ext-authz", "STEPGATE_TRUSTED_PROXIES", "127.0.0.1/32"))
		req, _ := http.NewRequest(http.MethodGet, s.Proxy+"/.stepgate/ext-authz/public/x", nil)
		req.Header.Set("X-Forwarded-User", "alice")
		for _, f := range families {
			req.Header.Set(f, marker)
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		remove := strings.Split(resp.Header.Get("X-Envoy-Auth-Headers-To-Remove"), ",")
		for _, f := range families {
			if !slices.Contains(remove, strings.ToLower(f)) {
				t.Errorf("%d: %s is not in headers_to_remove %v", resp.StatusCode, f, remove)
			}
		}
		if slices.Contains(remove, "x-forwarded-user") {
			t.Error("the identity header is removed")
		}
	})
}

func TestJWTIdentityIsBelievedOnlyFromTrustedProxiesUnlessAnyPeer(t *testing.T) {
	p := newIdP(t)
	jwtEnv := []string{
		"STEPGATE_IDENTITY", "jwt",
		"STEPGATE_IDENTITY_JWKS_URL", p.url,
		"STEPGATE_IDENTITY_ISSUER", idpIssuer,
		"STEPGATE_IDENTITY_AUDIENCE", idpAudience,
	}
	tests := []struct {
		name string
		env  []string
		want int
	}{
		{"a valid token from an untrusted peer is no identity", nil, http.StatusUnauthorized},
		{"a valid token from an untrusted peer is believed with STEPGATE_IDENTITY_JWT_ANY_PEER", []string{"STEPGATE_IDENTITY_JWT_ANY_PEER", "true"}, http.StatusFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := untrustedStack(t, append(append([]string(nil), jwtEnv...), tt.env...)...)
			tok := p.rs256(t, p.claims("alice", s.Clock.Now()))
			if got := getWith(t, s, "/admin/", "Authorization", "Bearer "+tok); got != tt.want {
				t.Errorf("mfa path with a valid token: got %d, want %d", got, tt.want)
			}
			if tt.want == http.StatusUnauthorized {
				ev := s.Logs.Events("identity.rejected")
				if len(ev) == 0 || !strings.Contains(ev[0]["reason"].(string), "untrusted peer") {
					t.Errorf("identity.rejected should say the peer was untrusted; got %v", ev)
				}
			}
		})
	}
	t.Run("a valid token from a trusted peer is believed", func(t *testing.T) {
		s := newStack(t, withEnv(jwtEnv...))
		tok := p.rs256(t, p.claims("alice", s.Clock.Now()))
		if got := getWith(t, s, "/admin/", "Authorization", "Bearer "+tok); got != http.StatusFound {
			t.Errorf("mfa path with a valid token: got %d, want 302", got)
		}
	})
}

func TestClientAbortIsRecordedAs499NotAs502(t *testing.T) {
	arrived := make(chan struct{}, 1)
	s := newStack(t, withUpstream(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done() // slow: answers only when stepgate gives up
	})))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Proxy+"/public/slow", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the upstream")
	}
	cancel() // the client hangs up while the upstream is still working
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: got %v, want context.Canceled", err)
	}

	deadline := time.Now().Add(10 * time.Second)
	for promCounter(t, s.Admin, "stepgate_requests_total", lbl("decision", "allow", "code", "499")) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stepgate_requests_total{decision=allow,code=499} never reached 1; logs:\n%s", s.Logs.String())
		}
		time.Sleep(10 * time.Millisecond) // polling a counter, not synchronising
	}
	if n := promCounter(t, s.Admin, "stepgate_requests_total", lbl("code", "502")); n != 0 {
		t.Errorf("stepgate_requests_total{code=502} = %v, want 0: a client abort is not an upstream failure", n)
	}
	var access []string
	for _, line := range strings.Split(s.Logs.String(), "\n") {
		if strings.Contains(line, `"msg":"request"`) && strings.Contains(line, `"/public/slow"`) {
			access = append(access, line)
		}
	}
	if len(access) != 1 || !strings.Contains(access[0], `"status":499`) {
		t.Errorf("access line: got %q, want one with status 499", access)
	}
}

func TestCheckConfigExplainsTheIdentityMapping(t *testing.T) {
	env := map[string]string{
		"STEPGATE_UPSTREAM":               "http://127.0.0.1:9",
		"STEPGATE_PINGONE_ENV_ID":         pingonesim.DemoEnvID,
		"STEPGATE_PINGONE_CLIENT_ID":      pingonesim.DemoClientID,
		"STEPGATE_PINGONE_CLIENT_SECRET":  pingonesim.DemoClientSecret,
		"STEPGATE_COOKIE_KEYS":            testKey,
		"STEPGATE_RULES":                  "/admin/ mfa",
		"STEPGATE_PINGONE_USER_FROM":      "header:X-Forwarded-Email",
		"STEPGATE_PINGONE_USER_TRANSFORM": "lower,strip-domain",
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"-check-config"}, environOf(env), &out, &errOut); err != nil {
		t.Fatalf("-check-config: %v", err)
	}
	for _, want := range []string{
		"identity: the header X-Forwarded-User, believed only from STEPGATE_TRUSTED_PROXIES",
		"pingone user: the PingOne user is read from the header X-Forwarded-Email",
		"lower-cased, then cut at the last @",
		"sent to PingOne as a PingOne username",
		"the step-up cookie stays bound to the upstream user",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("-check-config output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestPingOneUserSettingsAreValidatedStrictly(t *testing.T) {
	base := map[string]string{
		"STEPGATE_UPSTREAM":              "http://127.0.0.1:9",
		"STEPGATE_PINGONE_ENV_ID":        pingonesim.DemoEnvID,
		"STEPGATE_PINGONE_CLIENT_ID":     pingonesim.DemoClientID,
		"STEPGATE_PINGONE_CLIENT_SECRET": pingonesim.DemoClientSecret,
		"STEPGATE_COOKIE_KEYS":           testKey,
		"STEPGATE_RULES":                 "/admin/ mfa",
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantVar string
	}{
		{"a source without a kind of place", map[string]string{"STEPGATE_PINGONE_USER_FROM": "X-Forwarded-Email"}, "STEPGATE_PINGONE_USER_FROM"},
		{"a claim in header identity", map[string]string{"STEPGATE_PINGONE_USER_FROM": "claim:email"}, "STEPGATE_PINGONE_USER_FROM"},
		{"a header in jwt identity", map[string]string{"STEPGATE_PINGONE_USER_FROM": "header:X-Forwarded-Email",
			"STEPGATE_IDENTITY": "jwt", "STEPGATE_IDENTITY_JWKS_URL": "http://127.0.0.1:9/jwks",
			"STEPGATE_IDENTITY_ISSUER": "i", "STEPGATE_IDENTITY_AUDIENCE": "a"}, "STEPGATE_PINGONE_USER_FROM"},
		{"a header stepgate sets", map[string]string{"STEPGATE_PINGONE_USER_FROM": "header:X-Stepgate-User"}, "STEPGATE_PINGONE_USER_FROM"},
		{"an unknown kind", map[string]string{"STEPGATE_PINGONE_USER_KIND": "email"}, "STEPGATE_PINGONE_USER_KIND"},
		{"an unknown transform", map[string]string{"STEPGATE_PINGONE_USER_TRANSFORM": "lower,upper"}, "STEPGATE_PINGONE_USER_TRANSFORM"},
		{"strip-domain on an id", map[string]string{"STEPGATE_PINGONE_USER_KIND": "id", "STEPGATE_PINGONE_USER_TRANSFORM": "strip-domain"}, "STEPGATE_PINGONE_USER_TRANSFORM"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" stops start-up naming the variable", func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tt.env {
				env[k] = v
			}
			var out bytes.Buffer
			err := run(context.Background(), []string{"-check-config"}, environOf(env), &out, &out)
			if err == nil || !strings.Contains(err.Error(), tt.wantVar) {
				t.Errorf("got %v, want an error naming %s", err, tt.wantVar)
			}
		})
	}
}

func TestCommandLineHelpsANewcomer(t *testing.T) {
	t.Run("-h lists demo, simulate and -check-config and succeeds", func(t *testing.T) {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"-h"}, nil, &out, &out); err != nil {
			t.Fatalf("-h: %v", err)
		}
		for _, want := range []string{"stepgate demo", "stepgate simulate", "-check-config"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("-h output lacks %q:\n%s", want, out.String())
			}
		}
	})
	t.Run("a bare stepgate without configuration points at stepgate demo", func(t *testing.T) {
		var out bytes.Buffer
		err := run(context.Background(), nil, nil, &out, &out)
		if err == nil || !strings.Contains(err.Error(), "stepgate demo") {
			t.Errorf("got %v, want an error that suggests stepgate demo", err)
		}
	})
	t.Run("an http auth base on loopback is accepted for a local simulator", func(t *testing.T) {
		env := map[string]string{
			"STEPGATE_UPSTREAM":              "http://127.0.0.1:9",
			"STEPGATE_PINGONE_ENV_ID":        pingonesim.DemoEnvID,
			"STEPGATE_PINGONE_CLIENT_ID":     pingonesim.DemoClientID,
			"STEPGATE_PINGONE_CLIENT_SECRET": pingonesim.DemoClientSecret,
			"STEPGATE_COOKIE_KEYS":           testKey,
			"STEPGATE_RULES":                 "/admin/ mfa",
			"STEPGATE_PINGONE_AUTH_BASE":     "http://127.0.0.1:8081",
		}
		var out bytes.Buffer
		if err := run(context.Background(), []string{"-check-config"}, environOf(env), &out, &out); err != nil {
			t.Errorf("-check-config: %v", err)
		}
	})
	t.Run("a demo port in use names the flag that moves it", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		var out bytes.Buffer
		err = run(context.Background(), []string{"demo", "-idp-addr", "127.0.0.1:0", "-sim-addr", ln.Addr().String()}, nil, &out, &out)
		if err == nil || !strings.Contains(err.Error(), "-sim-addr") {
			t.Errorf("got %v, want an error naming -sim-addr", err)
		}
	})
	t.Run("a listen address in use names the variable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		env := map[string]string{
			"STEPGATE_UPSTREAM":              "http://127.0.0.1:9",
			"STEPGATE_PINGONE_ENV_ID":        pingonesim.DemoEnvID,
			"STEPGATE_PINGONE_CLIENT_ID":     pingonesim.DemoClientID,
			"STEPGATE_PINGONE_CLIENT_SECRET": pingonesim.DemoClientSecret,
			"STEPGATE_COOKIE_KEYS":           testKey,
			"STEPGATE_RULES":                 "/admin/ mfa",
			"STEPGATE_PINGONE_AUTH_BASE":     "http://127.0.0.1:9",
			"STEPGATE_LISTEN":                ln.Addr().String(),
		}
		var out bytes.Buffer
		err = run(context.Background(), nil, environOf(env), &out, &out)
		if err == nil || !strings.Contains(err.Error(), "STEPGATE_LISTEN") {
			t.Errorf("got %v, want an error naming STEPGATE_LISTEN", err)
		}
	})
}

// TestAnIdentityHeaderFromAnUntrustedPeerIsLoggedAsDropped: the audit line
// of a request without identity says the header came and from which peer
// it was dropped, so "no identity" behind a misconfigured proxy list is
// found from the log.
func TestAnIdentityHeaderFromAnUntrustedPeerIsLoggedAsDropped(t *testing.T) {
	s := untrustedStack(t)
	if got := getWith(t, s, "/admin/", "X-Forwarded-User", "alice"); got != http.StatusUnauthorized {
		t.Fatalf("mfa path with an untrusted identity: %d, want 401", got)
	}
	if got := getWith(t, s, "/admin/", "", ""); got != http.StatusUnauthorized {
		t.Fatalf("mfa path without identity: %d, want 401", got)
	}
	ev := s.Logs.Events("identity.rejected")
	if len(ev) != 2 {
		t.Fatalf("identity.rejected events: %v", ev)
	}
	want := "identity header X-Forwarded-User dropped: peer 127.0.0.1 is outside STEPGATE_TRUSTED_PROXIES"
	if got, _ := ev[0]["reason"].(string); got != want {
		t.Errorf("reason %q, want %q", got, want)
	}
	if got, _ := ev[1]["reason"].(string); got != "identity: none" {
		t.Errorf("without the header: reason %q, want %q", got, "identity: none")
	}
}
