package main

import (
	"strings"
	"testing"
)

func TestFrontDoorConfigurationIsRefusedWhereItWouldTrustTheWrongPeerOrLoseTheBody(t *testing.T) {
	const approve = "POST /pay approve show=Amount:form.amount"
	for _, tt := range []struct {
		name string
		env  []string // key, value; "" deletes
		want string   // the variable the error names
	}{
		{"an unknown door", []string{"STEPGATE_FRONT_DOORS", "proxy,sidecar"}, "STEPGATE_FRONT_DOORS"},
		{"forward-auth trusting the default loopback list", []string{"STEPGATE_FRONT_DOORS", "forward-auth"}, "STEPGATE_TRUSTED_PROXIES"},
		{"ext-authz trusting the default loopback list", []string{"STEPGATE_FRONT_DOORS", "ext-authz"}, "STEPGATE_TRUSTED_PROXIES"},
		{"the proxy door without an upstream", []string{"STEPGATE_UPSTREAM", ""}, "STEPGATE_UPSTREAM"},
		{"a gRPC listener without ext-authz", []string{"STEPGATE_FRONT_DOORS", "proxy,forward-auth", "STEPGATE_TRUSTED_PROXIES", "10.0.0.0/8", "STEPGATE_AUTHZ_GRPC_LISTEN", ":9191"}, "STEPGATE_AUTHZ_GRPC_LISTEN"},
		{"bodies without ext-authz", []string{"STEPGATE_AUTHZ_WITH_BODY", "true"}, "STEPGATE_AUTHZ_WITH_BODY"},
		{"approve rules with forward-auth", []string{"STEPGATE_FRONT_DOORS", "proxy,forward-auth", "STEPGATE_TRUSTED_PROXIES", "10.0.0.0/8", "STEPGATE_RULES", approve}, "STEPGATE_FRONT_DOORS"},
		{"approve rules with ext-authz without the body", []string{"STEPGATE_FRONT_DOORS", "ext-authz", "STEPGATE_TRUSTED_PROXIES", "10.0.0.0/8", "STEPGATE_RULES", approve}, "STEPGATE_AUTHZ_WITH_BODY"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			for i := 0; i+1 < len(tt.env); i += 2 {
				if tt.env[i+1] == "" {
					delete(env, tt.env[i])
				} else {
					env[tt.env[i]] = tt.env[i+1]
				}
			}
			_, _, err := runWith(t, env, "-check-config")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

func TestFrontDoorConfigurationThatIsAccepted(t *testing.T) {
	for _, tt := range []struct {
		name string
		env  []string
		want string // in -check-config's output
	}{
		{"forward-auth alone needs no upstream", []string{"STEPGATE_UPSTREAM", "", "STEPGATE_FRONT_DOORS", "forward-auth", "STEPGATE_TRUSTED_PROXIES", "10.0.0.0/8"},
			"front doors: forward-auth (/.stepgate/auth on STEPGATE_LISTEN, believed only from 10.0.0.0/8)"},
		{"ext-authz with gRPC and bodies serves approve rules", []string{"STEPGATE_UPSTREAM", "", "STEPGATE_FRONT_DOORS", "ext-authz", "STEPGATE_TRUSTED_PROXIES", "10.0.0.0/8",
			"STEPGATE_AUTHZ_GRPC_LISTEN", ":9191", "STEPGATE_AUTHZ_WITH_BODY", "true", "STEPGATE_RULES", "POST /pay approve show=Amount:form.amount"},
			"ext-authz (HTTP at /.stepgate/ext-authz/ on STEPGATE_LISTEN, gRPC on :9191, believed only from 10.0.0.0/8, with request bodies)"},
		{"the default is the proxy", nil, "front doors: proxy (forwards to http://127.0.0.1:3000)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			for i := 0; i+1 < len(tt.env); i += 2 {
				if tt.env[i+1] == "" {
					delete(env, tt.env[i])
				} else {
					env[tt.env[i]] = tt.env[i+1]
				}
			}
			out, _, err := runWith(t, env, "-check-config")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("output lacks %q:\n%s", tt.want, out)
			}
		})
	}
}

func TestWithoutTheProxyDoorNothingIsForwarded(t *testing.T) {
	s := forwardAuthStack(t) // STEPGATE_UPSTREAM is set, but the proxy door is off
	b := s.browser("alice")
	for _, p := range []string{"/", "/public", "/admin/users", "/.STEPGATE/x"} {
		if r := b.get(p); r.StatusCode != 404 {
			t.Errorf("GET %s straight to stepgate: %d, want 404", p, r.StatusCode)
		}
	}
	if r := b.get("/.stepgate/assets/stepgate.css"); r.StatusCode != 200 {
		t.Errorf("the challenge assets: %d", r.StatusCode)
	}
	if n := len(s.Requests()); n != 0 {
		t.Fatalf("the upstream received %d requests", n)
	}
}
