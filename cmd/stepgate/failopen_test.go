package main

import (
	"errors"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/stepgate/stepgate/proxy/rules"
)

// A configuration must not fail open: a setting stepgate does not read, or
// rules that protect nothing, stop start-up with a message that says so.

func TestAMisspeltSettingStopsStartUpAndNamesTheRightOne(t *testing.T) {
	env := validEnv()
	delete(env, "STEPGATE_RULES")
	env["STEPGATE_RULS"] = "/admin/ mfa"
	for _, args := range [][]string{{"-check-config"}, nil} {
		_, _, err := runWith(t, env, args...)
		if err == nil {
			t.Fatalf("%v: a misspelt STEPGATE_RULES was accepted", args)
		}
		if !strings.Contains(err.Error(), "STEPGATE_RULS: not a stepgate setting; did you mean STEPGATE_RULES?") {
			t.Errorf("%v: the error does not name the misspelt variable and the right one:\n%v", args, err)
		}
	}
}

func TestAMisspeltSettingExitsNonZero(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{runMainEnv + "=1"}
	env := validEnv()
	delete(env, "STEPGATE_RULES")
	env["STEPGATE_RULS"] = "/admin/ mfa"
	cmd.Env = append(cmd.Env, environOf(env)...)
	cmd.Args = append(cmd.Args, "-check-config")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1; output:\n%s", err, out)
	}
	if strings.Contains(string(out), "configuration ok") || !strings.Contains(string(out), "did you mean STEPGATE_RULES?") {
		t.Errorf("output:\n%s", out)
	}
}

func TestDidYouMean(t *testing.T) {
	for _, tt := range []struct{ typo, want string }{
		{"STEPGATE_RULS", "STEPGATE_RULES"},
		{"STEPGATE_UPSTREM", "STEPGATE_UPSTREAM"},
		{"STEPGATE_SECURE_COOKIE", "STEPGATE_COOKIE_SECURE"},
		{"STEPGATE_COOKIE_KEY_FILE", "STEPGATE_COOKIE_KEYS_FILE"},
		{"STEPGATE_PINGONE_ENVID", "STEPGATE_PINGONE_ENV_ID"},
		{"STEPGATE_ALLOW_UNPROTECT", "STEPGATE_ALLOW_UNPROTECTED"},
		{"STEPGATE_WHATEVER_THIS_IS", ""},
	} {
		t.Run(tt.typo, func(t *testing.T) {
			env := validEnv()
			env[tt.typo] = "x"
			_, _, err := runWith(t, env, "-check-config")
			if err == nil {
				t.Fatal("accepted")
			}
			want := tt.typo + ": not a stepgate setting; did you mean " + tt.want + "?"
			if tt.want == "" {
				want = tt.typo + ": not a stepgate setting (every setting: docs/configuration.md)"
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("got %v\nwant %q", err, want)
			}
		})
	}
}

func TestEveryKnownNameIsASetting(t *testing.T) {
	// The known names come from the struct's env tags: a field added to
	// config is a setting at once, and never an "unknown" one.
	known := knownVariables()
	for _, want := range []string{"STEPGATE_UPSTREAM", "STEPGATE_RULES", "STEPGATE_ALLOW_UNPROTECTED", "STEPGATE_COOKIE_KEYS_FILE", "STEPGATE_ADMIN_TOKEN"} {
		if !strings.Contains(strings.Join(known, " ")+" ", want+" ") {
			t.Errorf("%s is not a known name", want)
		}
	}
	var env []string
	for _, k := range known {
		env = append(env, k+"=x")
	}
	if errs := unknownVariables(env); len(errs) > 0 {
		t.Errorf("known names reported as unknown: %v", errs)
	}
}

func TestKubernetesServiceLinkVariablesAreNotSettings(t *testing.T) {
	injected := map[string]string{
		// What the kubelet injects for a Service "stepgate" with ports
		// http (8080) and admin (9090), IPv4 and IPv6.
		"STEPGATE_SERVICE_HOST":        "10.96.0.12",
		"STEPGATE_SERVICE_PORT":        "8080",
		"STEPGATE_SERVICE_PORT_HTTP":   "8080",
		"STEPGATE_SERVICE_PORT_ADMIN":  "9090",
		"STEPGATE_PORT":                "tcp://10.96.0.12:8080",
		"STEPGATE_PORT_8080_TCP":       "tcp://10.96.0.12:8080",
		"STEPGATE_PORT_8080_TCP_PROTO": "tcp",
		"STEPGATE_PORT_8080_TCP_PORT":  "8080",
		"STEPGATE_PORT_8080_TCP_ADDR":  "10.96.0.12",
		"STEPGATE_PORT_9090_TCP":       "tcp://[fd00::12]:9090",
		"STEPGATE_PORT_9090_TCP_ADDR":  "fd00::12",
		"STEPGATE_PORT_53_UDP":         "udp://10.96.0.12:53",
		"STEPGATE_PORT_53_UDP_PROTO":   "udp",
	}
	env := validEnv()
	for k, v := range injected {
		env[k] = v
	}
	if _, _, err := runWith(t, env, "-check-config"); err != nil {
		t.Fatalf("service-link variables refused: %v", err)
	}

	for _, tt := range []struct{ name, key, value, want string }{
		{"a port number set by hand, not a link URL", "STEPGATE_PORT", "8080", "the listen address is STEPGATE_LISTEN"},
		{"an address that is not an IP", "STEPGATE_PORT_8080_TCP_ADDR", "stepgate.default", ""},
		{"a URL whose port is not the name's", "STEPGATE_PORT_8080_TCP", "tcp://10.96.0.12:9090", ""},
		{"a protocol that is not the name's", "STEPGATE_PORT_8080_TCP_PROTO", "udp", ""},
		{"a protocol Kubernetes does not have", "STEPGATE_PORT_8080_HTTP", "tcp://10.96.0.12:8080", ""},
		{"a lower-case port name", "STEPGATE_SERVICE_PORT_http", "8080", ""},
		{"a host name for the service host", "STEPGATE_SERVICE_HOST", "stepgate", ""},
		{"another suffix", "STEPGATE_SERVICE_HOSTNAME", "10.96.0.12", ""},
	} {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			env := validEnv()
			env[tt.key] = tt.value
			_, _, err := runWith(t, env, "-check-config")
			if err == nil || !strings.Contains(err.Error(), tt.key+": not a stepgate setting") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %s refused as not a setting", err, tt.key)
			}
		})
	}
}

func TestAConfigurationThatProtectsNothingIsRefused(t *testing.T) {
	for _, tt := range []struct {
		name    string
		env     map[string]string // on top of validEnv without STEPGATE_RULES
		wantErr string            // "" means accepted
		wantOut string
	}{
		{"no rules and the allow default", nil, "STEPGATE_RULES: no rule asks for mfa, approve or deny, and STEPGATE_DEFAULT_ACTION is allow", ""},
		{"only allow rules", map[string]string{"STEPGATE_RULES": "/admin/ allow; /api/ allow"}, "STEPGATE_ALLOW_UNPROTECTED=true", ""},
		{"an empty rules file", map[string]string{"STEPGATE_RULES_FILE": os.DevNull}, "STEPGATE_RULES_FILE: no rule asks", ""},
		{"the opt-in", map[string]string{"STEPGATE_ALLOW_UNPROTECTED": "true"}, "",
			"warning: nothing is protected: every request is allowed (STEPGATE_ALLOW_UNPROTECTED=true)"},
		{"one deny rule", map[string]string{"STEPGATE_RULES": "/internal/ deny"}, "", "/internal/ deny"},
		{"one approve rule", map[string]string{"STEPGATE_RULES": "POST /pay approve show=Amount:form.amount"}, "", "POST /pay approve"},
		{"an mfa default", map[string]string{"STEPGATE_DEFAULT_ACTION": "mfa"}, "", "default action (where no rule matches): mfa max_age=1h0m0s"},
		{"a deny default with allow rules", map[string]string{"STEPGATE_DEFAULT_ACTION": "deny", "STEPGATE_RULES": "/public/ allow"}, "", "default action (where no rule matches): deny"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			delete(env, "STEPGATE_RULES")
			for k, v := range tt.env {
				env[k] = v
			}
			out, _, err := runWith(t, env, "-check-config")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "STEPGATE_ALLOW_UNPROTECTED=true") {
					t.Fatalf("got %v, want a refusal with %q that names the opt-in", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("output lacks %q:\n%s", tt.wantOut, out)
			}
			if strings.Contains(out, "nothing is protected") != (tt.env["STEPGATE_ALLOW_UNPROTECTED"] == "true") {
				t.Errorf("the warning is wrong:\n%s", out)
			}
		})
	}
}

func TestCheckConfigReportsEveryProblemInOneRun(t *testing.T) {
	env := map[string]string{
		// STEPGATE_UPSTREAM, _PINGONE_ENV_ID and _COOKIE_KEYS missing.
		"STEPGATE_PINGONE_CLIENT_ID":     "c0a8e3b2-5d4f-4e6a-8b7c-1d2e3f4a5b6c",
		"STEPGATE_PINGONE_CLIENT_SECRET": "demo-client-secret",
		"STEPGATE_COOKIE_SECURE":         "yes",
		"STEPGATE_PINGONE_TIMEOUT":       "ten seconds",
		"STEPGATE_LIMIT_OTP_PER_USER":    "ten",
		"STEPGATE_PINGONE_RATE_LIMIT":    "fast",
		"STEPGATE_DEFAULT_ACTION":        "maybe",
		"STEPGATE_RULES":                 "/admin/ mfaa",
		"STEPGATE_LOG_LEVEL":             "loud",
		"STEPGATE_UPSTREM":               "http://127.0.0.1:3000",
	}
	_, _, err := runWith(t, env, "-check-config")
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	want := []string{
		`STEPGATE_UPSTREAM: required, and not set`,
		`STEPGATE_PINGONE_ENV_ID: required, and not set`,
		`STEPGATE_COOKIE_KEYS: required, and not set`,
		`STEPGATE_COOKIE_SECURE: "yes" is not true or false`,
		`STEPGATE_PINGONE_TIMEOUT: "ten seconds" is not a duration such as 500ms, 30s, 10m or 1h`,
		`STEPGATE_LIMIT_OTP_PER_USER: "ten" is not a whole number`,
		`STEPGATE_PINGONE_RATE_LIMIT: "fast" is not a number`,
		`STEPGATE_DEFAULT_ACTION: "maybe" is not allow, deny or mfa`,
		`STEPGATE_RULES line 1`,
		`STEPGATE_LOG_LEVEL:`,
		`STEPGATE_UPSTREM: not a stepgate setting; did you mean STEPGATE_UPSTREAM?`,
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("the report lacks %q", w)
		}
	}
	if !strings.HasPrefix(msg, "configuration: 11 problems:\n  ") {
		t.Errorf("want one line per problem, 11 of them, each once:\n%s", msg)
	}
	if strings.Contains(msg, "no configuration found") {
		t.Errorf("a partial configuration is called none:\n%s", msg)
	}
	for _, leak := range []string{"strconv", "ParseBool", "parse error", "demo-client-secret", "invalid syntax"} {
		if strings.Contains(msg, leak) {
			t.Errorf("the report says %q:\n%s", leak, msg)
		}
	}
	t.Logf("the report:\n%s", msg)
}

func TestASecretIsNeverQuotedInAProblem(t *testing.T) {
	// No secret is a bool or number today; one that becomes one must not
	// have its value repeated in the log that reports it.
	if got := notA("hunter2", reflect.TypeFor[bool](), true); strings.Contains(got, "hunter2") {
		t.Errorf("a secret's value is quoted: %s", got)
	}
}

func TestCheckConfigSaysHowRulesAreMatched(t *testing.T) {
	env := validEnv()
	// Written most general first: the printed order must be the order
	// Match tries, not the written one.
	env["STEPGATE_RULES"] = "/admin/ mfa\n/admin/reports/ allow\nPOST /admin/ deny"
	out, _, err := runWith(t, env, "-check-config")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "first match wins") || !strings.Contains(out, "rules (the longest matching path wins; on one path, a rule naming the method before one naming none):\n"+
		"  /admin/reports/ allow\n  POST /admin/ deny\n  /admin/ mfa max_age=1h0m0s") {
		t.Errorf("output:\n%s", out)
	}
	if !strings.Contains(out, "default action (where no rule matches): allow (STEPGATE_DEFAULT_ACTION)") {
		t.Errorf("the default action is not printed:\n%s", out)
	}
	// And that is what the matcher does.
	cfg, err := loadConfig(environOf(env))
	if err != nil {
		t.Fatal(err)
	}
	s, err := cfg.validate(os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		method, path string
		want         rules.Action
	}{
		{"GET", "/admin/reports/q1", rules.Allow},
		{"POST", "/admin/users", rules.Deny},
		{"GET", "/admin/users", rules.MFA},
		{"POST", "/admin/reports/q1", rules.Allow},
	} {
		if got := s.rules.Match(tt.method, tt.path).Action; got != tt.want {
			t.Errorf("%s %s: %v, want %v", tt.method, tt.path, got, tt.want)
		}
	}
}
