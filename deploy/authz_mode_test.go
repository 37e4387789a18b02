package deploy

import (
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	corev1 "k8s.io/api/core/v1"
)

// The chart's authz mode (docs/design.md §16): a central stepgate that front
// proxies ask, beside the sidecar mode.

func authzValues(t *testing.T, authz map[string]any) chartutil.Values {
	t.Helper()
	v := readValues(t, "helm/stepgate/ci/default-values.yaml")
	v["mode"] = "authz"
	v["fullnameOverride"] = "stepgate"
	v["authz"] = authz
	return v
}

func TestHelmAuthzModeRendersACentralCheckService(t *testing.T) {
	m, _, err := renderHelm(authzValues(t, map[string]any{"trustedProxies": "10.42.0.0/16"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Deployments) != 1 {
		t.Fatalf("want 1 Deployment, got %d", len(m.Deployments))
	}
	pod := &m.Deployments[0].Spec.Template.Spec
	if len(pod.Containers) != 1 || pod.Containers[0].Name != "stepgate" {
		t.Fatalf("want stepgate alone in the pod, got %d containers", len(pod.Containers))
	}
	sg := &pod.Containers[0]
	reportProblems(t, checkSecurityContext(pod, sg))
	reportProblems(t, checkServiceLinks(pod))
	env, problems := effectiveEnv(m, sg)
	reportProblems(t, problems)
	documented := documentedEnv()
	for name := range env {
		if strings.HasPrefix(name, "STEPGATE_") && !documented[name] {
			t.Errorf("env %s is not a documented stepgate variable", name)
		}
	}
	if _, ok := env["STEPGATE_UPSTREAM"]; ok {
		t.Error("STEPGATE_UPSTREAM is set in authz mode: there is no app in the pod")
	}
	for name, want := range map[string]string{
		"STEPGATE_FRONT_DOORS":       "forward-auth,ext-authz",
		"STEPGATE_AUTHZ_GRPC_LISTEN": ":9191",
		"STEPGATE_TRUSTED_PROXIES":   "10.42.0.0/16",
		"STEPGATE_LISTEN":            ":8080",
	} {
		if got := env[name].value; got != want {
			t.Errorf("env %s: got %q, want %q", name, got, want)
		}
	}
	if _, ok := env["STEPGATE_AUTHZ_WITH_BODY"]; ok {
		t.Error("STEPGATE_AUTHZ_WITH_BODY set without authz.withBody")
	}
	if !slices.ContainsFunc(sg.Ports, func(p corev1.ContainerPort) bool { return p.Name == "grpc" && p.ContainerPort == 9191 }) {
		t.Errorf("stepgate does not declare the grpc port 9191: %v", sg.Ports)
	}
	if sg.ReadinessProbe == nil || sg.ReadinessProbe.HTTPGet.Path != "/readyz" || sg.ReadinessProbe.HTTPGet.Port.String() != "admin" {
		t.Error("readiness must probe /readyz on the admin port")
	}

	// The Service deploy/frontdoors/ name: stepgate-authz, 8080 and 9191.
	var svc *corev1.Service
	for _, s := range m.Services {
		if s.Name == "stepgate-authz" {
			svc = s
		}
		if s.Name == "stepgate" {
			t.Error("the sidecar's app Service is rendered in authz mode")
		}
	}
	if svc == nil {
		t.Fatal("no stepgate-authz Service")
	}
	ports := map[string]corev1.ServicePort{}
	for _, p := range svc.Spec.Ports {
		ports[p.Name] = p
	}
	if p := ports["http"]; p.Port != 8080 || p.TargetPort.String() != "http" {
		t.Errorf("http port %+v, want 8080 -> http", p)
	}
	if p := ports["grpc"]; p.Port != 9191 || p.TargetPort.String() != "grpc" {
		t.Errorf("grpc port %+v, want 9191 -> grpc", p)
	}
	if _, ok := ports["admin"]; ok {
		t.Error("the admin port is on the check Service")
	}

	// The NetworkPolicy lets the front proxies reach both ports.
	np := m.NetworkPolicies[0]
	var open []int32
	for _, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			open = append(open, p.Port.IntVal)
		}
	}
	for _, p := range []int32{8080, 9191} {
		if !slices.Contains(open, p) {
			t.Errorf("NetworkPolicy does not admit port %d: %v", p, open)
		}
	}
}

func TestHelmAuthzModeOptions(t *testing.T) {
	m, _, err := renderHelm(authzValues(t, map[string]any{"trustedProxies": "10.42.0.0/16", "frontDoors": "forward-auth"}))
	if err != nil {
		t.Fatal(err)
	}
	env, _ := effectiveEnv(m, &m.Deployments[0].Spec.Template.Spec.Containers[0])
	if _, ok := env["STEPGATE_AUTHZ_GRPC_LISTEN"]; ok || env["STEPGATE_FRONT_DOORS"].value != "forward-auth" {
		t.Errorf("forward-auth alone: %v", env)
	}
	for _, s := range m.Services {
		for _, p := range s.Spec.Ports {
			if p.Name == "grpc" {
				t.Error("a grpc port without ext-authz")
			}
		}
	}
	m, _, err = renderHelm(authzValues(t, map[string]any{"trustedProxies": "10.42.0.0/16", "withBody": true}))
	if err != nil {
		t.Fatal(err)
	}
	env, _ = effectiveEnv(m, &m.Deployments[0].Spec.Template.Spec.Containers[0])
	if env["STEPGATE_AUTHZ_WITH_BODY"].value != "true" {
		t.Error("authz.withBody does not set STEPGATE_AUTHZ_WITH_BODY")
	}
}

func TestHelmAuthzModeRefusesWhatStepgateWouldRefuse(t *testing.T) {
	if _, _, err := renderHelm(authzValues(t, map[string]any{})); err == nil || !strings.Contains(err.Error(), "authz.trustedProxies is required") {
		t.Errorf("no trusted proxies: got %v", err)
	}
	v := authzValues(t, map[string]any{"trustedProxies": "10.42.0.0/16"})
	v["mode"] = "gateway"
	if _, _, err := renderHelm(v); err == nil || !strings.Contains(err.Error(), "mode must be sidecar or authz") {
		t.Errorf("unknown mode: got %v", err)
	}
}
