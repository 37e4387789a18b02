package deploy

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// TestChecksFireOnRegressions breaks the rendered base one property at a time
// and requires check to report it, so a check that silently stopped working
// cannot hide a regression in the manifests.
func TestChecksFireOnRegressions(t *testing.T) {
	stepgate := func(m *manifests) *corev1.Container {
		sg, _ := splitContainers(&m.Deployments[0].Spec.Template.Spec)
		return sg
	}
	app := func(m *manifests) *corev1.Container {
		_, a := splitContainers(&m.Deployments[0].Spec.Template.Spec)
		return a
	}
	pod := func(m *manifests) *corev1.PodSpec { return &m.Deployments[0].Spec.Template.Spec }
	envConfigMap := func(m *manifests) map[string]string {
		for _, cm := range m.ConfigMaps {
			if strings.HasPrefix(cm.Name, "stepgate-env") {
				return cm.Data
			}
		}
		t.Fatal("no stepgate-env ConfigMap")
		return nil
	}
	f, tr := false, true
	root := int64(0)

	tests := []struct {
		name        string
		mutate      func(m *manifests)
		wantProblem string
	}{
		{"running as root is reported", func(m *manifests) { stepgate(m).SecurityContext.RunAsUser = &root }, "runAsUser"},
		{"service links left on are reported", func(m *manifests) { pod(m).EnableServiceLinks = nil }, "enableServiceLinks"},
		{"service links turned on are reported", func(m *manifests) { pod(m).EnableServiceLinks = &tr }, "enableServiceLinks"},
		{"dropping runAsNonRoot is reported", func(m *manifests) {
			stepgate(m).SecurityContext.RunAsNonRoot = nil
			pod(m).SecurityContext.RunAsNonRoot = nil
		}, "runAsNonRoot"},
		{"a writable root filesystem is reported", func(m *manifests) { stepgate(m).SecurityContext.ReadOnlyRootFilesystem = &f }, "readOnlyRootFilesystem"},
		{"allowing privilege escalation is reported", func(m *manifests) { stepgate(m).SecurityContext.AllowPrivilegeEscalation = &tr }, "allowPrivilegeEscalation"},
		{"keeping capabilities is reported", func(m *manifests) { stepgate(m).SecurityContext.Capabilities.Drop = nil }, "drop ALL"},
		{"adding a capability is reported", func(m *manifests) {
			stepgate(m).SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		}, "capabilities add"},
		{"an unconfined seccomp profile is reported", func(m *manifests) {
			stepgate(m).SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}, "seccompProfile"},
		{"a readiness probe on the proxy port is reported", func(m *manifests) {
			stepgate(m).ReadinessProbe.HTTPGet.Port = intstr.FromString("http")
		}, "readinessProbe port"},
		{"a liveness probe on the wrong path is reported", func(m *manifests) { stepgate(m).LivenessProbe.HTTPGet.Path = "/readyz" }, "livenessProbe path"},
		{"a missing liveness probe is reported", func(m *manifests) { stepgate(m).LivenessProbe = nil }, "livenessProbe"},
		{"a misspelt STEPGATE_ variable is reported", func(m *manifests) { envConfigMap(m)["STEPGATE_UPSTREAM_URL"] = "x" }, "STEPGATE_UPSTREAM_URL is not a documented"},
		{"a client secret in the ConfigMap is reported", func(m *manifests) {
			envConfigMap(m)["STEPGATE_PINGONE_CLIENT_SECRET"] = "s3cret"
		}, "STEPGATE_PINGONE_CLIENT_SECRET is set from a literal"},
		{"cookie keys as a literal env value are reported", func(m *manifests) {
			sg := stepgate(m)
			sg.Env = append(sg.Env, corev1.EnvVar{Name: "STEPGATE_COOKIE_KEYS", Value: "AAAA"})
		}, "STEPGATE_COOKIE_KEYS is set from a literal"},
		{"a secret file outside the Secret volume is reported", func(m *manifests) {
			sg := stepgate(m)
			for i := range sg.Env {
				if sg.Env[i].Name == "STEPGATE_COOKIE_KEYS_FILE" {
					sg.Env[i].Value = "/etc/stepgate/cookie-keys"
				}
			}
		}, "is not on a Secret volume"},
		{"the app mounting stepgate's Secret is reported", func(m *manifests) {
			a := app(m)
			a.VolumeMounts = append(a.VolumeMounts, corev1.VolumeMount{Name: "stepgate-secrets", MountPath: "/s"})
		}, "mounts stepgate's Secret"},
		{"a short grace period is reported", func(m *manifests) {
			g := int64(30)
			pod(m).TerminationGracePeriodSeconds = &g
		}, "terminationGracePeriodSeconds"},
		{"a latest image is reported", func(m *manifests) { app(m).Image = "ghcr.io/example/legacy-app:latest" }, "latest"},
		{"an upstream off loopback is reported", func(m *manifests) {
			envConfigMap(m)["STEPGATE_UPSTREAM"] = "http://legacy-app:3000"
		}, "STEPGATE_UPSTREAM"},
		{"a Service pointing at the app port is reported", func(m *manifests) {
			m.Services[0].Spec.Ports[0].TargetPort = intstr.FromInt32(3000)
		}, "not a stepgate port"},
		{"the admin port on the app's Service is reported", func(m *manifests) {
			svc := m.Services[0]
			svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "admin", Port: 9090, TargetPort: intstr.FromString("admin")})
		}, "both the proxy and the admin port"},
		{"a NetworkPolicy admitting the app port is reported", func(m *manifests) {
			np := m.NetworkPolicies[0]
			p := intstr.FromInt32(3000)
			np.Spec.Ingress[0].Ports[0].Port = &p
		}, "admits the app's port"},
		{"a ServiceMonitor scraping the wrong port is reported", func(m *manifests) { m.ServiceMonitors[0].Spec.Endpoints[0].Port = "http" }, "does not scrape"},
		{"a PDB selecting other pods is reported", func(m *manifests) {
			m.PDBs[0].Spec.Selector.MatchLabels = map[string]string{"app.kubernetes.io/name": "other"}
		}, "does not select the pod"},
		{"changed resource limits are reported", func(m *manifests) {
			delete(stepgate(m).Resources.Limits, corev1.ResourceMemory)
		}, "limits.memory"},
		{"missing rules are reported", func(m *manifests) {
			delete(envConfigMap(m), "STEPGATE_RULES_FILE")
			removeEnv(stepgate(m), "STEPGATE_RULES_FILE")
		}, "no rules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := renderKustomize(t, filesys.MakeFsOnDisk(), "kustomize/base")
			tt.mutate(m)
			problems := check(m, baseExpect())
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tt.wantProblem) }) {
				t.Errorf("got problems %q, want one containing %q", problems, tt.wantProblem)
			}
		})
	}
}

func removeEnv(c *corev1.Container, name string) {
	c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
}

func TestStrictDecodingRejectsUnknownAndMiscasedFields(t *testing.T) {
	tests := []struct {
		name string
		doc  string
	}{
		{"an unknown field is rejected", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selectr: {a: b}}\n"},
		{"a field in the wrong case is rejected", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {Selector: {a: b}}\n"},
		{"a duplicate key is rejected", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {type: ClusterIP, type: NodePort}\n"},
		{"an unknown kind is rejected", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n"},
		{"an unknown ServiceMonitor field is rejected", "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec: {selector: {}, endpoints: [{port: admin, bogus: 1}]}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeStream([]byte(tt.doc)); err == nil {
				t.Errorf("decodeStream accepted:\n%s", tt.doc)
			}
		})
	}
	if _, err := decodeStream([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selector: {a: b}}\n")); err != nil {
		t.Errorf("decodeStream refused a valid Service: %v", err)
	}
}
