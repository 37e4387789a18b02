package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

func resources(cpu, memory string) corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(cpu),
		corev1.ResourceMemory: resource.MustParse(memory),
	}
}

// baseExpect is what the kustomize base renders.
func baseExpect() expect {
	return expect{
		replicas:       2,
		stepgateImage:  "ghcr.io/stepgate/stepgate:0.1.0",
		secretName:     "stepgate-secrets",
		secretRendered: true,
		serviceMonitor: true,
		requests:       resources("50m", "64Mi"),
		limits:         resources("500m", "128Mi"),
		env: map[string]string{
			"STEPGATE_UPSTREAM":      "http://127.0.0.1:3000",
			"STEPGATE_IDENTITY":      "header",
			"STEPGATE_COOKIE_SECURE": "true",
			"STEPGATE_STORE":         "memory",
		},
		rulesContain: "/admin/ mfa",
	}
}

func reportProblems(t *testing.T, problems []string) {
	t.Helper()
	for _, p := range problems {
		t.Error(p)
	}
}

func TestKustomizeBaseRendersAndIsLockedDown(t *testing.T) {
	m := renderKustomize(t, filesys.MakeFsOnDisk(), "kustomize/base")
	reportProblems(t, check(m, baseExpect()))

	// The base ships placeholders only; they must be recognisable as such, so
	// that a forgotten override is obvious (and stepgate refuses the key).
	s := findGeneratedSecret(m, "stepgate-secrets")
	if s == nil {
		t.Fatal("no stepgate-secrets Secret")
	}
	for key, value := range s.Data {
		if !strings.HasPrefix(string(value), "REPLACE-WITH-") {
			t.Errorf("base Secret key %s holds %q, want a REPLACE-WITH- placeholder", key, value)
		}
	}
}

func TestKustomizeExampleOverlay(t *testing.T) {
	const root = "/deploy/kustomize"
	const cookieKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

	t.Run("builds once its secret files exist and replaces the placeholders", func(t *testing.T) {
		fsys := copyToMemFS(t, "kustomize", root)
		for name, value := range map[string]string{"pingone-client-secret": "s3cret", "cookie-keys": cookieKey,
			"redis-url": "rediss://:pw@redis.legacy-app.svc:6380/0", "admin-token": "admin-token-0123456789abcdefghijklmno"} {
			if err := fsys.WriteFile(filepath.Join(root, "overlays/example", name), []byte(value)); err != nil {
				t.Fatal(err)
			}
		}
		m := renderKustomize(t, fsys, root+"/overlays/example")
		want := baseExpect()
		want.replicas = 3
		want.env["STEPGATE_PINGONE_AUTH_BASE"] = "https://auth.pingone.eu"
		want.env["STEPGATE_TRUSTED_PROXIES"] = "10.42.7.0/24"
		want.rulesContain = "POST /transfer mfa max_age=5m"
		want.env["STEPGATE_STORE"] = "redis"
		want.env["STEPGATE_REDIS_URL_FILE"] = "/var/run/secrets/stepgate/redis-url"
		want.env["STEPGATE_ADMIN_TOKEN_FILE"] = "/var/run/secrets/stepgate/admin-token"
		reportProblems(t, check(m, want))

		s := findGeneratedSecret(m, "stepgate-secrets")
		if s == nil {
			t.Fatal("no stepgate-secrets Secret")
		}
		if got := string(s.Data["cookie-keys"]); got != cookieKey {
			t.Errorf("cookie-keys: got %q, want the overlay's file content %q", got, cookieKey)
		}
		for _, ns := range []string{m.Deployments[0].Namespace, s.Namespace} {
			if ns != "legacy-app" {
				t.Errorf("namespace: got %q, want legacy-app", ns)
			}
		}
	})

	t.Run("refuses to build without its secret files, so none are committed", func(t *testing.T) {
		fsys := copyToMemFS(t, "kustomize", root)
		for _, name := range []string{"pingone-client-secret", "cookie-keys", "redis-url", "admin-token"} {
			if fsys.Exists(filepath.Join(root, "overlays/example", name)) {
				t.Fatalf("overlays/example/%s exists in the checkout; secrets must not be committed", name)
			}
		}
	})
}

func readValues(t *testing.T, file string) chartutil.Values {
	t.Helper()
	vals, err := chartutil.ReadValuesFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return vals
}

func TestHelmChartRendersAndIsLockedDown(t *testing.T) {
	tests := []struct {
		name   string
		values string
		want   expect
	}{
		{
			name:   "the chart defaults with only the required values render a complete sidecar",
			values: "helm/stepgate/ci/default-values.yaml",
			want: expect{
				replicas:       2,
				stepgateImage:  "ghcr.io/stepgate/stepgate:0.1.0",
				secretName:     "legacy-stepgate-secrets",
				secretRendered: true,
				serviceMonitor: false,
				requests:       resources("50m", "64Mi"),
				limits:         resources("500m", "128Mi"),
				env: map[string]string{
					"STEPGATE_UPSTREAM":          "http://127.0.0.1:3000",
					"STEPGATE_LISTEN":            ":8080",
					"STEPGATE_ADMIN_LISTEN":      ":9090",
					"STEPGATE_PINGONE_ENV_ID":    "11111111-2222-4333-8444-555555555555",
					"STEPGATE_IDENTITY":          "header",
					"STEPGATE_IDENTITY_HEADER":   "X-Forwarded-User",
					"STEPGATE_TRUSTED_PROXIES":   "127.0.0.1/32,::1/128",
					"STEPGATE_COOKIE_SECURE":     "true",
					"STEPGATE_DEFAULT_ACTION":    "allow",
					"STEPGATE_PINGONE_AUTH_BASE": "https://auth.pingone.com",
					"STEPGATE_STORE":             "memory",
				},
				rulesContain: "/admin/ mfa",
			},
		},
		{
			name:   "the Redis store and the revoke endpoint with a chart-made Secret put the URL and token in it",
			values: "helm/stepgate/ci/redis-values.yaml",
			want: expect{
				replicas:       3,
				stepgateImage:  "ghcr.io/stepgate/stepgate:0.1.0",
				secretName:     "legacy-stepgate-secrets",
				secretRendered: true,
				requests:       resources("50m", "64Mi"),
				limits:         resources("500m", "128Mi"),
				env: map[string]string{
					"STEPGATE_STORE":            "redis",
					"STEPGATE_REDIS_URL_FILE":   "/var/run/secrets/stepgate/redis-url",
					"STEPGATE_ADMIN_TOKEN_FILE": "/var/run/secrets/stepgate/admin-token",
				},
				rulesContain: "/admin/ mfa",
			},
		},
		{
			name:   "an existing Secret, JWT identity, a ServiceMonitor and custom rules render as configured",
			values: "helm/stepgate/ci/full-values.yaml",
			want: expect{
				replicas:       3,
				stepgateImage:  "ghcr.io/stepgate/stepgate:0.1.1",
				secretName:     "legacy-app-stepgate",
				secretRendered: false,
				serviceMonitor: true,
				requests:       resources("100m", "96Mi"),
				limits:         resources("1", "256Mi"),
				env: map[string]string{
					"STEPGATE_IDENTITY":               "jwt",
					"STEPGATE_IDENTITY_JWT_HEADER":    "Cf-Access-Jwt-Assertion",
					"STEPGATE_IDENTITY_CLAIM":         "email",
					"STEPGATE_IDENTITY_JWT_ANY_PEER":  "false",
					"STEPGATE_PINGONE_USER_TRANSFORM": "lower",
					"STEPGATE_PINGONE_ACR_VALUES":     "MFA-Only",
					"STEPGATE_PINGONE_TIMEOUT":        "5s",
					"STEPGATE_DEFAULT_ACTION":         "deny",
					"STEPGATE_COOKIE_NAME":            "__Host-payments-stepup",
					"STEPGATE_CASE_INSENSITIVE_PATHS": "true",
					"STEPGATE_LOG_LEVEL":              "debug",
					"STEPGATE_STORE":                  "redis",
					"STEPGATE_REDIS_TIMEOUT":          "250ms",
					"STEPGATE_STORE_MAX_STALENESS":    "5s",
					"STEPGATE_REDIS_URL_FILE":         "/var/run/secrets/stepgate/redis-url",
					"STEPGATE_REDIS_CA_FILE":          "/var/run/secrets/stepgate/redis-ca",
					"STEPGATE_ADMIN_TOKEN_FILE":       "/var/run/secrets/stepgate/admin-token",
				},
				rulesContain:   "POST,PUT /api/transfer mfa max_age=5m",
				podAnnotations: map[string]string{"example.com/team": "payments"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _, err := renderHelm(readValues(t, tt.values))
			if err != nil {
				t.Fatal(err)
			}
			reportProblems(t, check(m, tt.want))
		})
	}
}

func TestHelmChartRefusesIncompleteValues(t *testing.T) {
	required := func() chartutil.Values {
		return readValues(t, "helm/stepgate/ci/default-values.yaml")
	}
	tests := []struct {
		name    string
		values  func() chartutil.Values
		wantErr string
	}{
		{
			name:    "the bare chart defaults refuse to render",
			values:  func() chartutil.Values { return chartutil.Values{} },
			wantErr: "is required",
		},
		{
			name: "no PingOne environment is an error naming the value",
			values: func() chartutil.Values {
				v := required()
				v["pingone"] = map[string]any{"clientId": "c"}
				return v
			},
			wantErr: "pingone.envId is required",
		},
		{
			name: "no PingOne client is an error naming the value",
			values: func() chartutil.Values {
				v := required()
				v["pingone"] = map[string]any{"envId": "e"}
				return v
			},
			wantErr: "pingone.clientId is required",
		},
		{
			name: "no client secret and no existing Secret is an error",
			values: func() chartutil.Values {
				v := required()
				v["secret"] = map[string]any{"pingoneClientSecret": "", "cookieKeys": []any{"k"}}
				return v
			},
			wantErr: "secret.pingoneClientSecret is required",
		},
		{
			name: "no cookie keys and no existing Secret is an error",
			values: func() chartutil.Values {
				v := required()
				v["secret"] = map[string]any{"pingoneClientSecret": "x", "cookieKeys": []any{}}
				return v
			},
			wantErr: "secret.cookieKeys is required",
		},
		{
			name: "the Redis store without a URL and no existing Secret is an error",
			values: func() chartutil.Values {
				v := required()
				v["store"] = map[string]any{"type": "redis"}
				return v
			},
			wantErr: "secret.redisUrl is required",
		},
		{
			name: "the revoke endpoint without a token and no existing Secret is an error",
			values: func() chartutil.Values {
				v := required()
				v["revokeEndpoint"] = true
				return v
			},
			wantErr: "secret.adminToken is required",
		},
		{
			name: "an unknown store is an error",
			values: func() chartutil.Values {
				v := required()
				v["store"] = map[string]any{"type": "etcd"}
				return v
			},
			wantErr: "store.type must be memory or redis",
		},
		{
			name: "jwt identity without a JWKS URL is an error",
			values: func() chartutil.Values {
				v := required()
				v["identity"] = map[string]any{"mode": "jwt"}
				return v
			},
			wantErr: "identity.jwt.jwksUrl is required",
		},
		{
			name: "an unknown identity mode is an error",
			values: func() chartutil.Values {
				v := required()
				v["identity"] = map[string]any{"mode": "cookie"}
				return v
			},
			wantErr: "identity.mode must be header or jwt",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := renderHelm(tt.values())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestOverlaySecretFilesAreGitIgnored(t *testing.T) {
	data, err := os.ReadFile("kustomize/overlays/example/.gitignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"pingone-client-secret", "cookie-keys", "redis-url", "admin-token"} {
		if !strings.Contains("\n"+string(data)+"\n", "\n"+name+"\n") {
			t.Errorf(".gitignore does not list %s", name)
		}
	}
}
