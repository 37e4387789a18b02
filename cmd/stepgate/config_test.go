package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stepgate/stepgate/store/redistest"
)

// validEnv is a complete, valid configuration.
func validEnv() map[string]string {
	return map[string]string{
		"STEPGATE_UPSTREAM":              "http://127.0.0.1:3000",
		"STEPGATE_PINGONE_ENV_ID":        "6f1c2a4e-0d7b-4c1e-9a52-3b8f0e6d2c11",
		"STEPGATE_PINGONE_CLIENT_ID":     "c0a8e3b2-5d4f-4e6a-8b7c-1d2e3f4a5b6c",
		"STEPGATE_PINGONE_CLIENT_SECRET": "demo-client-secret",
		"STEPGATE_COOKIE_KEYS":           testKey,
		"STEPGATE_RULES":                 "/admin/ mfa max_age=10m; GET,POST /api/ mfa acr=Strong; /internal deny",
	}
}

func runWith(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, environOf(env), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestCheckConfigPrintsEffectiveRules(t *testing.T) {
	out, _, err := runWith(t, validEnv(), "-check-config")
	if err != nil {
		t.Fatalf("check-config: %v", err)
	}
	for _, want := range []string{"configuration ok", "/admin/ mfa", "max_age=10m", "/api/ mfa", "acr=Strong", "/internal deny"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Most specific first: /internal (9 bytes) before /admin/ (7).
	if strings.Index(out, "/internal") > strings.Index(out, "/admin/") {
		t.Errorf("rules not printed most specific first:\n%s", out)
	}
	if strings.Contains(out, "demo-client-secret") {
		t.Error("check-config printed the client secret")
	}
}

func TestInvalidConfigurationNamesTheVariable(t *testing.T) {
	for _, tt := range []struct {
		name, key, value, want string
	}{
		{"missing upstream", "STEPGATE_UPSTREAM", "", "STEPGATE_UPSTREAM"},
		{"relative upstream", "STEPGATE_UPSTREAM", "localhost:3000", "STEPGATE_UPSTREAM"},
		{"upstream with credentials", "STEPGATE_UPSTREAM", "http://u:p@127.0.0.1", "STEPGATE_UPSTREAM"},
		{"missing secret", "STEPGATE_PINGONE_CLIENT_SECRET", "", "STEPGATE_PINGONE_CLIENT_SECRET"},
		{"short cookie key", "STEPGATE_COOKIE_KEYS", "c2hvcnQ=", "STEPGATE_COOKIE_KEYS"},
		{"not base64 cookie key", "STEPGATE_COOKIE_KEYS", "!!!", "STEPGATE_COOKIE_KEYS"},
		{"bad duration", "STEPGATE_PINGONE_TIMEOUT", "ten seconds", "STEPGATE_PINGONE_TIMEOUT"},
		{"negative timeout", "STEPGATE_PINGONE_TIMEOUT", "-1s", "STEPGATE_PINGONE_TIMEOUT"},
		{"bad response type", "STEPGATE_PINGONE_RESPONSE_TYPE", "token", "STEPGATE_PINGONE_RESPONSE_TYPE"},
		{"bad auth base", "STEPGATE_PINGONE_AUTH_BASE", "auth.pingone.eu", "STEPGATE_PINGONE_AUTH_BASE"},
		{"plain http auth base off loopback", "STEPGATE_PINGONE_AUTH_BASE", "http://auth.pingone.eu", "STEPGATE_PINGONE_AUTH_BASE"},
		{"bad env id", "STEPGATE_PINGONE_ENV_ID", "not a uuid!", "STEPGATE_PINGONE_ENV_ID"},
		{"bad trusted proxy", "STEPGATE_TRUSTED_PROXIES", "10.0.0.0/33", "STEPGATE_TRUSTED_PROXIES"},
		{"bad default action", "STEPGATE_DEFAULT_ACTION", "maybe", "STEPGATE_DEFAULT_ACTION"},
		{"bad rule names line and token", "STEPGATE_RULES", "/a allow; /b mfaa", "line 2"},
		{"bad identity mode", "STEPGATE_IDENTITY", "cookie", "STEPGATE_IDENTITY"},
		{"unknown method override", "STEPGATE_METHOD_OVERRIDE", "query", "STEPGATE_METHOD_OVERRIDE"},
		{"jwt identity without JWKS", "STEPGATE_IDENTITY", "jwt", "STEPGATE_IDENTITY"},
		{"bad log level", "STEPGATE_LOG_LEVEL", "loud", "STEPGATE_LOG_LEVEL"},
		{"unknown audit format", "STEPGATE_AUDIT_FORMAT", "cef", "STEPGATE_AUDIT_FORMAT"},
		{"zero start limit", "STEPGATE_LIMIT_STARTS_PER_USER", "0", "STEPGATE_LIMIT_STARTS_PER_USER"},
		{"non-numeric OTP limit", "STEPGATE_LIMIT_OTP_PER_USER", "ten", "STEPGATE_LIMIT_OTP_PER_USER"},
		{"tiny limit window", "STEPGATE_LIMIT_WINDOW", "1ms", "STEPGATE_LIMIT_WINDOW"},
		{"bad boolean", "STEPGATE_COOKIE_SECURE", "yes please", "STEPGATE_COOKIE_SECURE"},
		{"__Host- cookie without Secure", "STEPGATE_COOKIE_SECURE", "false", ""},
		{"upstream host with a path", "STEPGATE_UPSTREAM_HOST", "app.internal/admin", "STEPGATE_UPSTREAM_HOST"},
		{"upstream host with a space", "STEPGATE_UPSTREAM_HOST", "app internal", "STEPGATE_UPSTREAM_HOST"},
		{"zero body idle timeout", "STEPGATE_BODY_IDLE_TIMEOUT", "0s", "STEPGATE_BODY_IDLE_TIMEOUT"},
		{"upstream host and preserve host", "STEPGATE_PRESERVE_HOST", "true", ""},
		{"form method override behind forward-auth", "STEPGATE_METHOD_OVERRIDE", "form", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			env[tt.key] = tt.value
			if tt.name == "__Host- cookie without Secure" {
				env["STEPGATE_COOKIE_NAME"] = "__Host-x"
				tt.want = "STEPGATE_COOKIE_NAME"
			}
			if tt.name == "form method override behind forward-auth" {
				env["STEPGATE_FRONT_DOORS"] = "forward-auth"
				env["STEPGATE_TRUSTED_PROXIES"] = "127.0.0.1/32"
				tt.want = "the forward-auth front door never sees"
			}
			if tt.name == "upstream host and preserve host" {
				env["STEPGATE_UPSTREAM_HOST"] = "app.internal"
				tt.want = "STEPGATE_UPSTREAM_HOST"
			}
			_, _, err := runWith(t, env, "-check-config")
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "demo-client-secret") {
				t.Errorf("error leaks the client secret: %v", err)
			}
		})
	}
}

func TestSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	keys := filepath.Join(dir, "keys")
	if err := os.WriteFile(secret, []byte("file-client-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keys, []byte(testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := validEnv()
	delete(env, "STEPGATE_PINGONE_CLIENT_SECRET")
	delete(env, "STEPGATE_COOKIE_KEYS")
	env["STEPGATE_PINGONE_CLIENT_SECRET_FILE"] = secret
	env["STEPGATE_COOKIE_KEYS_FILE"] = keys
	c, err := loadConfig(environOf(env))
	if err != nil {
		t.Fatal(err)
	}
	if c.PingOneClientSecret != "file-client-secret" {
		t.Errorf("secret from file = %q (trailing newline must go)", c.PingOneClientSecret)
	}
	if _, err := c.validate(os.ReadFile); err != nil {
		t.Errorf("validate: %v", err)
	}

	env["STEPGATE_PINGONE_CLIENT_SECRET"] = "also-inline"
	if _, err := loadConfig(environOf(env)); err == nil ||
		!strings.Contains(err.Error(), "STEPGATE_PINGONE_CLIENT_SECRET") {
		t.Errorf("both NAME and NAME_FILE: %v, want an error naming the variable", err)
	}
	delete(env, "STEPGATE_PINGONE_CLIENT_SECRET")
	env["STEPGATE_COOKIE_KEYS_FILE"] = filepath.Join(dir, "missing")
	if _, err := loadConfig(environOf(env)); err == nil ||
		!strings.Contains(err.Error(), "STEPGATE_COOKIE_KEYS_FILE") {
		t.Errorf("missing file: %v, want an error naming the variable", err)
	}
}

func TestRulesFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules")
	if err := os.WriteFile(path, []byte("# admin pages\n/admin/ mfa\n\nDELETE /api/ deny\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := validEnv()
	delete(env, "STEPGATE_RULES")
	env["STEPGATE_RULES_FILE"] = path
	out, _, err := runWith(t, env, "-check-config")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "DELETE /api/ deny") || !strings.Contains(out, "/admin/ mfa") {
		t.Errorf("rules from file not printed:\n%s", out)
	}
	env["STEPGATE_RULES"] = "/x mfa"
	if _, _, err := runWith(t, env, "-check-config"); err == nil {
		t.Error("STEPGATE_RULES and STEPGATE_RULES_FILE together were accepted")
	}
}

func TestUnknownArgumentIsAnError(t *testing.T) {
	if _, _, err := runWith(t, validEnv(), "serve-please"); err == nil {
		t.Fatal("unknown argument accepted")
	}
}

func TestCheckConfigPrintsApproveRulesAndWarnsAboutTheMemoryStore(t *testing.T) {
	env := validEnv()
	env["STEPGATE_RULES"] = "POST /pay approve show=Amount:form.amount template=transaction vars=sum:form.amount ttl=2m"
	out, _, err := runWith(t, env, "-check-config")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"POST /pay approve show=Amount:form.amount template=transaction vars=sum:form.amount ttl=2m0s",
		"approve rules: 1; held request bodies up to 65536 bytes",
		"warning: 1 approve rule(s) with STEPGATE_STORE=memory",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("-check-config output lacks %q:\n%s", want, out)
		}
	}
	env["STEPGATE_RULES"] = "POST /pay approve show=Amount:header.amount"
	if _, _, err := runWith(t, env, "-check-config"); err == nil || !strings.Contains(err.Error(), `source "header.amount": unknown`) {
		t.Errorf("a bad approve rule: err = %v, want one naming the source", err)
	}
	env["STEPGATE_RULES"] = "/admin/ mfa"
	if out, _, _ := runWith(t, env, "-check-config"); strings.Contains(out, "approve rule(s) with STEPGATE_STORE=memory") {
		t.Error("the approvals warning is printed without approve rules")
	}
	env["STEPGATE_APPROVE_MAX_BODY"] = "0"
	if _, _, err := runWith(t, env, "-check-config"); err == nil || !strings.Contains(err.Error(), "STEPGATE_APPROVE_MAX_BODY") {
		t.Errorf("a zero approve body limit: err = %v, want one naming the variable", err)
	}
}

func TestStoreConfiguration(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "redis-password")
	tokenFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(pwFile, []byte("s3cret-redis-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte(testAdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	caFile := redistest.WriteCerts(t, dir)
	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantErr string   // a variable the error must name; "" means valid
		wantOut []string // in -check-config's output
	}{
		{"the default is the memory store", nil, "", []string{"store: memory", "POST /revoke off"}},
		{"redis with its URL, password and admin token from files", map[string]string{
			"STEPGATE_STORE": "redis", "STEPGATE_REDIS_URL": "rediss://user:inline-pw@redis.example:6380/2",
			"STEPGATE_REDIS_PASSWORD_FILE": pwFile, "STEPGATE_ADMIN_TOKEN_FILE": tokenFile,
		}, "", []string{"store: redis rediss://user:xxxxx@redis.example:6380/2", "POST /revoke on the admin listener"}},
		{"rediss with a private CA", map[string]string{
			"STEPGATE_STORE": "redis", "STEPGATE_REDIS_URL": "rediss://redis.example:6380", "STEPGATE_REDIS_CA_FILE": caFile,
		}, "", []string{"store: redis rediss://redis.example:6380"}},
		{"a CA file for a plain redis URL", map[string]string{
			"STEPGATE_STORE": "redis", "STEPGATE_REDIS_URL": "redis://redis.example:6379", "STEPGATE_REDIS_CA_FILE": caFile,
		}, "STEPGATE_REDIS_CA_FILE", nil},
		{"a CA file without a certificate", map[string]string{
			"STEPGATE_STORE": "redis", "STEPGATE_REDIS_URL": "rediss://redis.example:6380", "STEPGATE_REDIS_CA_FILE": pwFile,
		}, "STEPGATE_REDIS_CA_FILE", nil},
		{"a URL that turns certificate checks off", map[string]string{
			"STEPGATE_STORE": "redis", "STEPGATE_REDIS_URL": "rediss://redis.example:6380?skip_verify=true",
		}, "STEPGATE_REDIS_URL", nil},
		{"redis without a URL", map[string]string{"STEPGATE_STORE": "redis"}, "STEPGATE_REDIS_URL", nil},
		{"a URL of another scheme", map[string]string{"STEPGATE_STORE": "redis", "STEPGATE_REDIS_URL": "http://redis:6379"}, "STEPGATE_REDIS_URL", nil},
		{"a URL without a host", map[string]string{"STEPGATE_STORE": "redis", "STEPGATE_REDIS_URL": "redis://"}, "STEPGATE_REDIS_URL", nil},
		{"a URL with the memory store", map[string]string{"STEPGATE_REDIS_URL": "redis://r:6379"}, "STEPGATE_REDIS_URL", nil},
		{"an unknown store", map[string]string{"STEPGATE_STORE": "etcd"}, "STEPGATE_STORE", nil},
		{"a short admin token", map[string]string{"STEPGATE_ADMIN_TOKEN": "short"}, "STEPGATE_ADMIN_TOKEN", nil},
		{"a zero Redis timeout", map[string]string{"STEPGATE_REDIS_TIMEOUT": "0s"}, "STEPGATE_REDIS_TIMEOUT", nil},
		{"an unbounded staleness", map[string]string{"STEPGATE_STORE_MAX_STALENESS": "1h"}, "STEPGATE_STORE_MAX_STALENESS", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := validEnv()
			for k, v := range tc.env {
				env[k] = v
			}
			out, _, err := runWith(t, env, "-check-config")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error naming %s", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "inline-pw") {
					t.Errorf("the error repeats a password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tc.wantOut {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			for _, secret := range []string{"inline-pw", "s3cret-redis-password", testAdminToken} {
				if strings.Contains(out, secret) {
					t.Errorf("check-config printed a secret:\n%s", out)
				}
			}
			c, err := loadConfig(environOf(env))
			if err != nil {
				t.Fatal(err)
			}
			if tc.env["STEPGATE_REDIS_PASSWORD_FILE"] != "" && (c.RedisPassword != "s3cret-redis-password" || c.AdminToken != testAdminToken) {
				t.Errorf("secrets from files: password %q, token %q", c.RedisPassword, c.AdminToken)
			}
		})
	}
}

// The transmitter's keys decide who may revoke every user's step-up:
// fetched in the clear, anyone on the path could sign revocations.
func TestSSFKeysAreFetchedOverHTTPSOrOnLoopback(t *testing.T) {
	for _, tt := range []struct {
		issuer, jwks string
		ok           bool
	}{
		{"https://transmitter.example", "", true},
		{"http://transmitter.example", "", false},
		{"http://transmitter.example", "https://transmitter.example/jwks", true},
		{"https://transmitter.example", "http://transmitter.example/jwks", false},
		{"http://127.0.0.1:9000", "", true},
		{"https://transmitter.example", "http://localhost:9000/jwks", true},
	} {
		env := validEnv()
		env["STEPGATE_SIGNALS_LISTEN"] = "127.0.0.1:0"
		env["STEPGATE_SSF_ISSUER"] = tt.issuer
		env["STEPGATE_SSF_AUDIENCE"] = "https://stepgate.example"
		if tt.jwks != "" {
			env["STEPGATE_SSF_JWKS_URL"] = tt.jwks
		}
		_, stderr, err := runWith(t, env, "-check-config")
		if got := err == nil; got != tt.ok || !tt.ok && !strings.Contains(stderr+err.Error(), "STEPGATE_SSF_") {
			t.Errorf("issuer %s, keys %q: %v %s; want ok %v", tt.issuer, tt.jwks, err, stderr, tt.ok)
		}
	}
}

// Every variable the configuration reference calls a secret is read from
// NAME_FILE too (SSF_BEARER_TOKEN was documented so, and refused).
func TestEverySecretIsReadFromAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("a-secret-of-forty-characters-0123456789ab\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile("also as `STEPGATE_([A-Z_]+)_FILE`").FindAllSubmatch(doc, -1)
	if len(names) < 7 {
		t.Fatalf("found %d secrets in docs/configuration.md, want at least 7", len(names))
	}
	for _, m := range names {
		name := "STEPGATE_" + string(m[1])
		env := validEnv()
		delete(env, name)
		env[name+"_FILE"] = path
		if _, err := loadConfig(environOf(env)); err != nil && strings.Contains(err.Error(), name) {
			t.Errorf("%s_FILE: %v", name, err)
		}
	}
}
