package deploy

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// documentedEnv is every STEPGATE_ variable stepgate reads (docs/design.md §9 and the
// deployment brief), plus the _FILE form of each secret. A manifest that sets
// anything else has a typo that stepgate would silently ignore.
func documentedEnv() map[string]bool {
	src, err := os.ReadFile(filepath.Join("..", "cmd", "stepgate", "config.go"))
	if err != nil {
		panic(fmt.Sprintf("read stepgate's config: %v", err))
	}
	set := map[string]bool{}
	for _, m := range envTag.FindAllStringSubmatch(string(src), -1) {
		set["STEPGATE_"+m[1]] = true
	}
	if len(set) < 30 {
		panic(fmt.Sprintf("found only %d env tags in cmd/stepgate/config.go", len(set)))
	}
	for _, n := range secretEnv() {
		set[n+"_FILE"] = true
	}
	return set
}

// envTag matches a field tag `env:"NAME"` or `env:"NAME,required"` in
// cmd/stepgate/config.go, the one place the variables are declared.
var envTag = regexp.MustCompile(`env:"([A-Z0-9_]+)[,"]`)

// secretEnv lists the variables whose values are secrets: they may come only
// from a Secret (secretKeyRef, or a _FILE path on a Secret volume). The first
// two are required; the others are set only with the features that use them.
func secretEnv() []string {
	return []string{"STEPGATE_PINGONE_CLIENT_SECRET", "STEPGATE_COOKIE_KEYS",
		"STEPGATE_REDIS_URL", "STEPGATE_REDIS_PASSWORD", "STEPGATE_ADMIN_TOKEN"}
}

// requiredSecret reports whether stepgate refuses to start without name.
func requiredSecret(name string) bool {
	return name == "STEPGATE_PINGONE_CLIENT_SECRET" || name == "STEPGATE_COOKIE_KEYS"
}

// expect is what one rendering should contain beyond the common security rules.
type expect struct {
	replicas       int32
	stepgateImage  string
	secretName     string // the Secret the stepgate secrets come from
	secretRendered bool   // whether that Secret is part of the rendering
	serviceMonitor bool
	requests       corev1.ResourceList
	limits         corev1.ResourceList
	env            map[string]string // a subset of the effective stepgate environment
	rulesContain   string
	podAnnotations map[string]string
}

// envVar is one effective environment variable of the stepgate container.
type envVar struct {
	value     string // literal value (also for ConfigMap-sourced keys)
	configMap string // set when the value comes from a ConfigMap
	secretRef bool   // valueFrom.secretKeyRef
	otherRef  bool   // any other valueFrom (fieldRef, resourceFieldRef)
}

// check returns every violated property of a rendered stepgate deployment, as
// sentences; an empty result means the manifests pass. It returns problems
// rather than failing a test so that tests can also prove each rule fires.
func check(m *manifests, want expect) []string {
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	if len(m.Deployments) != 1 {
		return []string{fmt.Sprintf("want exactly 1 Deployment, got %d", len(m.Deployments))}
	}
	d := m.Deployments[0]
	pod := &d.Spec.Template.Spec
	sg, app := splitContainers(pod)
	if sg == nil || app == nil {
		return []string{fmt.Sprintf("want 2 containers (an app and stepgate), got %d", len(pod.Containers))}
	}

	if d.Spec.Replicas == nil || *d.Spec.Replicas != want.replicas {
		fail("replicas: got %v, want %d", d.Spec.Replicas, want.replicas)
	}
	for _, c := range pod.Containers {
		if err := checkImageRef(c.Image); err != nil {
			fail("container %s: %v", c.Name, err)
		}
	}
	if sg.Image != want.stepgateImage {
		fail("stepgate image: got %q, want %q", sg.Image, want.stepgateImage)
	}
	for k, v := range want.podAnnotations {
		if got := d.Spec.Template.Annotations[k]; got != v {
			fail("pod annotation %s: got %q, want %q", k, got, v)
		}
	}

	// Security context of the stepgate container (pod-level values count where
	// Kubernetes inherits them).
	problems = append(problems, checkSecurityContext(pod, sg)...)
	problems = append(problems, checkServiceLinks(pod)...)

	env, envProblems := effectiveEnv(m, sg)
	problems = append(problems, envProblems...)
	documented := documentedEnv()
	for name := range env {
		if strings.HasPrefix(name, "STEPGATE_") && !documented[name] {
			fail("env %s is not a documented stepgate variable", name)
		}
	}
	for _, name := range []string{"STEPGATE_UPSTREAM", "STEPGATE_PINGONE_ENV_ID", "STEPGATE_PINGONE_CLIENT_ID"} {
		if _, ok := env[name]; !ok {
			fail("required env %s is not set", name)
		}
	}
	for name, value := range want.env {
		if got, ok := env[name]; !ok || got.value != value {
			fail("env %s: got %q, want %q", name, got.value, value)
		}
	}

	// Ports and probes: health is served on the admin listener only.
	proxyPort := listenPort(env, "STEPGATE_LISTEN", 8080)
	adminPort := listenPort(env, "STEPGATE_ADMIN_LISTEN", 9090)
	if proxyPort == adminPort {
		fail("proxy and admin listeners share port %d", proxyPort)
	}
	for _, p := range []int32{proxyPort, adminPort} {
		if !slices.ContainsFunc(sg.Ports, func(cp corev1.ContainerPort) bool { return cp.ContainerPort == p }) {
			fail("stepgate container does not declare port %d", p)
		}
	}
	for _, probe := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"readinessProbe", sg.ReadinessProbe, "/readyz"},
		{"livenessProbe", sg.LivenessProbe, "/healthz"},
	} {
		if probe.probe == nil || probe.probe.HTTPGet == nil {
			fail("stepgate %s: want an httpGet probe", probe.name)
			continue
		}
		if probe.probe.HTTPGet.Path != probe.path {
			fail("stepgate %s path: got %q, want %q", probe.name, probe.probe.HTTPGet.Path, probe.path)
		}
		if got, ok := resolvePort(sg, probe.probe.HTTPGet.Port); !ok || got != adminPort {
			fail("stepgate %s port: got %s, want the admin port %d", probe.name, probe.probe.HTTPGet.Port.String(), adminPort)
		}
	}

	// The upstream is the app, on loopback, in the same pod.
	appPort := int32(0)
	if len(app.Ports) > 0 {
		appPort = app.Ports[0].ContainerPort
	}
	if u, err := url.Parse(env["STEPGATE_UPSTREAM"].value); err != nil || u.Hostname() != "127.0.0.1" || u.Port() != strconv.Itoa(int(appPort)) {
		fail("STEPGATE_UPSTREAM %q is not http://127.0.0.1:%d (the app container on loopback)", env["STEPGATE_UPSTREAM"].value, appPort)
	}

	// Secrets only from a Secret, never literal values or ConfigMaps.
	problems = append(problems, checkSecrets(m, pod, sg, app, env, want)...)

	// Graceful shutdown: the grace period covers drain plus in-flight requests.
	drain := envDuration(env, "STEPGATE_SHUTDOWN_DRAIN", 5*time.Second)
	timeout := envDuration(env, "STEPGATE_SHUTDOWN_TIMEOUT", 30*time.Second)
	if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= drain+timeout {
		fail("terminationGracePeriodSeconds %v does not exceed SHUTDOWN_DRAIN+SHUTDOWN_TIMEOUT (%s)", ptrString(g), drain+timeout)
	}

	// Resources.
	problems = append(problems, compareResources("requests", sg.Resources.Requests, want.requests)...)
	problems = append(problems, compareResources("limits", sg.Resources.Limits, want.limits)...)

	// Rules come from a ConfigMap file (or a literal) and are the ones intended.
	rules, ok := rulesText(m, pod, sg, env)
	if !ok {
		fail("no rules: STEPGATE_RULES_FILE must name a file on a ConfigMap volume (or STEPGATE_RULES be set)")
	} else if !strings.Contains(rules, want.rulesContain) {
		fail("rules do not contain %q:\n%s", want.rulesContain, rules)
	}

	problems = append(problems, checkTraffic(m, d, sg, proxyPort, adminPort, appPort, want)...)
	return problems
}

func splitContainers(pod *corev1.PodSpec) (sg, app *corev1.Container) {
	if len(pod.Containers) != 2 {
		return nil, nil
	}
	for i := range pod.Containers {
		if pod.Containers[i].Name == "stepgate" {
			sg = &pod.Containers[i]
		} else {
			app = &pod.Containers[i]
		}
	}
	return sg, app
}

// checkImageRef refuses untagged and :latest images: a pod must run the
// version that was reviewed, and rolling back must mean something.
func checkImageRef(ref string) error {
	if strings.Contains(ref, "@sha256:") {
		return nil
	}
	name := ref[strings.LastIndex(ref, "/")+1:]
	i := strings.LastIndex(name, ":")
	if i < 0 {
		return fmt.Errorf("image %q has no tag", ref)
	}
	if tag := name[i+1:]; tag == "" || tag == "latest" {
		return fmt.Errorf("image %q uses tag %q", ref, tag)
	}
	return nil
}

func checkSecurityContext(pod *corev1.PodSpec, sg *corev1.Container) []string {
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	sc := sg.SecurityContext
	if sc == nil {
		return []string{"stepgate container has no securityContext"}
	}
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if !isTrue(firstNonNil(sc.RunAsNonRoot, psc.RunAsNonRoot)) {
		fail("stepgate: runAsNonRoot is not true")
	}
	if u := firstNonNil(sc.RunAsUser, psc.RunAsUser); u == nil || *u != 65532 {
		fail("stepgate: runAsUser is %s, want 65532 (distroless nonroot)", ptrString(u))
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		fail("stepgate: readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		fail("stepgate: allowPrivilegeEscalation is not false")
	}
	if isTrue(sc.Privileged) {
		fail("stepgate: privileged")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		fail("stepgate: capabilities do not drop ALL")
	} else if len(sc.Capabilities.Add) > 0 {
		fail("stepgate: capabilities add %v", sc.Capabilities.Add)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		fail("stepgate: seccompProfile is not RuntimeDefault")
	}
	return problems
}

// checkServiceLinks wants enableServiceLinks: false. Service links would put
// STEPGATE_SERVICE_HOST, STEPGATE_PORT=tcp://… and the like into the
// environment for a Service named stepgate: not settings (stepgate lets
// their exact shapes pass), and noise beside the real ones.
func checkServiceLinks(pod *corev1.PodSpec) []string {
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		return []string{"enableServiceLinks is not false (a Service named stepgate would inject STEPGATE_ variables)"}
	}
	return nil
}

// effectiveEnv resolves the stepgate container's environment as the kubelet
// would: envFrom first, then env entries, later ones winning.
func effectiveEnv(m *manifests, c *corev1.Container) (map[string]envVar, []string) {
	env := map[string]envVar{}
	var problems []string
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm := findConfigMap(m, from.ConfigMapRef.Name)
			if cm == nil {
				problems = append(problems, fmt.Sprintf("envFrom ConfigMap %q is not in the rendering", from.ConfigMapRef.Name))
				continue
			}
			for k, v := range cm.Data {
				env[from.Prefix+k] = envVar{value: v, configMap: cm.Name}
			}
		default:
			problems = append(problems, "envFrom other than a ConfigMap cannot be checked; extend the test")
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = envVar{value: e.Value}
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = envVar{secretRef: true}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm := findConfigMap(m, ref.Name)
			if cm == nil {
				problems = append(problems, fmt.Sprintf("env %s: ConfigMap %q is not in the rendering", e.Name, ref.Name))
				continue
			}
			env[e.Name] = envVar{value: cm.Data[ref.Key], configMap: cm.Name}
		default:
			env[e.Name] = envVar{otherRef: true}
		}
	}
	return env, problems
}

func checkSecrets(m *manifests, pod *corev1.PodSpec, sg, app *corev1.Container, env map[string]envVar, want expect) []string {
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	for _, name := range secretEnv() {
		direct, hasDirect := env[name]
		file, hasFile := env[name+"_FILE"]
		switch {
		case !hasDirect && !hasFile && requiredSecret(name):
			fail("%s is set neither directly nor as %s_FILE", name, name)
		case hasDirect && !direct.secretRef:
			fail("%s is set from a literal or ConfigMap, not from a Secret", name)
		case hasFile:
			if file.configMap != "" || file.value == "" {
				// A path is not a secret, but a ConfigMap-supplied path could be
				// pointed anywhere by whoever edits the ConfigMap; keep it in the pod spec.
				fail("%s_FILE must be a literal path in the pod spec", name)
				break
			}
			vol, key, ok := volumeForFile(pod, sg, file.value)
			if !ok || vol.Secret == nil {
				fail("%s_FILE %q is not on a Secret volume", name, file.value)
				break
			}
			if !generatedFrom(vol.Secret.SecretName, want.secretName) {
				fail("%s_FILE comes from Secret %q, want %q", name, vol.Secret.SecretName, want.secretName)
			}
			if want.secretRendered {
				s := findSecret(m, vol.Secret.SecretName)
				if s == nil {
					fail("Secret %q is not in the rendering", vol.Secret.SecretName)
				} else if _, ok := s.Data[key]; !ok {
					if _, ok := s.StringData[key]; !ok {
						fail("Secret %q has no key %q for %s_FILE", s.Name, key, name)
					}
				}
			}
		}
	}
	// No secret value or secret-looking key in any ConfigMap.
	for _, cm := range m.ConfigMaps {
		for k := range cm.Data {
			for _, name := range secretEnv() {
				if k == name {
					fail("ConfigMap %s holds the secret %s", cm.Name, k)
				}
			}
			if strings.Contains(strings.ToLower(k), "secret") || strings.Contains(strings.ToLower(k), "cookie_keys") {
				fail("ConfigMap %s has a secret-looking key %s", cm.Name, k)
			}
		}
	}
	if want.secretRendered == (findGeneratedSecret(m, want.secretName) == nil) {
		fail("Secret %q rendered: got %v, want %v", want.secretName, !want.secretRendered, want.secretRendered)
	}
	// The app container must not see stepgate's secrets.
	for _, vm := range app.VolumeMounts {
		if v := findVolume(pod, vm.Name); v != nil && v.Secret != nil && generatedFrom(v.Secret.SecretName, want.secretName) {
			fail("app container %s mounts stepgate's Secret", app.Name)
		}
	}
	return problems
}

// volumeForFile finds the volume mounted at a parent of file and the key
// (Secret/ConfigMap data key) that the file is projected from.
func volumeForFile(pod *corev1.PodSpec, c *corev1.Container, file string) (*corev1.Volume, string, bool) {
	file = path.Clean(file)
	for _, vm := range c.VolumeMounts {
		mount := path.Clean(vm.MountPath)
		if !strings.HasPrefix(file, mount+"/") {
			continue
		}
		rel := strings.TrimPrefix(file, mount+"/")
		if vm.SubPath != "" {
			continue
		}
		v := findVolume(pod, vm.Name)
		if v == nil {
			return nil, "", false
		}
		var items []corev1.KeyToPath
		switch {
		case v.Secret != nil:
			items = v.Secret.Items
		case v.ConfigMap != nil:
			items = v.ConfigMap.Items
		}
		if len(items) == 0 {
			return v, rel, true
		}
		for _, it := range items {
			if it.Path == rel {
				return v, it.Key, true
			}
		}
		return v, "", false
	}
	return nil, "", false
}

func rulesText(m *manifests, pod *corev1.PodSpec, sg *corev1.Container, env map[string]envVar) (string, bool) {
	if r, ok := env["STEPGATE_RULES"]; ok && r.value != "" {
		return r.value, true
	}
	f, ok := env["STEPGATE_RULES_FILE"]
	if !ok {
		return "", false
	}
	vol, key, ok := volumeForFile(pod, sg, f.value)
	if !ok || vol.ConfigMap == nil {
		return "", false
	}
	cm := findConfigMap(m, vol.ConfigMap.Name)
	if cm == nil {
		return "", false
	}
	text, ok := cm.Data[key]
	return text, ok && strings.TrimSpace(text) != ""
}

// checkTraffic verifies what reaches the pod: Services target stepgate (never
// the app), the admin port is on its own Service, and the ServiceMonitor, PDB
// and NetworkPolicy select this pod.
func checkTraffic(m *manifests, d *appsv1.Deployment, sg *corev1.Container, proxyPort, adminPort, appPort int32, want expect) []string {
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	podLabels := labels.Set(d.Spec.Template.Labels)

	if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || !sel.Matches(podLabels) {
		fail("Deployment selector does not match its pod labels")
	}

	toProxy, toAdmin := 0, 0
	var adminServices []*corev1.Service
	for _, svc := range m.Services {
		if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			continue
		}
		var proxy, admin bool
		for _, p := range svc.Spec.Ports {
			target, ok := resolvePort(sg, p.TargetPort)
			switch {
			case !ok:
				fail("Service %s port %s targets %s, which is not a stepgate port (the app must not be exposed)", svc.Name, p.Name, p.TargetPort.String())
			case target == proxyPort:
				proxy = true
			case target == adminPort:
				admin = true
			}
		}
		if proxy && admin {
			fail("Service %s exposes both the proxy and the admin port; keep admin on its own Service", svc.Name)
		}
		if proxy {
			toProxy++
		}
		if admin {
			toAdmin++
			adminServices = append(adminServices, svc)
		}
	}
	if toProxy == 0 {
		fail("no Service targets stepgate's proxy port %d", proxyPort)
	}
	if toAdmin == 0 {
		fail("no Service targets stepgate's admin port %d (needed for scraping)", adminPort)
	}

	switch {
	case !want.serviceMonitor && len(m.ServiceMonitors) > 0:
		fail("unexpected ServiceMonitor")
	case want.serviceMonitor && len(m.ServiceMonitors) != 1:
		fail("want 1 ServiceMonitor, got %d", len(m.ServiceMonitors))
	case want.serviceMonitor:
		sm := m.ServiceMonitors[0]
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			fail("ServiceMonitor selector: %v", err)
			break
		}
		scrapesAdmin := false
		for _, svc := range adminServices {
			if !sel.Matches(labels.Set(svc.Labels)) {
				continue
			}
			for _, ep := range sm.Spec.Endpoints {
				for _, p := range svc.Spec.Ports {
					if target, _ := resolvePort(sg, p.TargetPort); p.Name == ep.Port && target == adminPort && ep.Path == "/metrics" {
						scrapesAdmin = true
					}
				}
			}
		}
		if !scrapesAdmin {
			fail("ServiceMonitor does not scrape /metrics on the admin port")
		}
	}

	if len(m.PDBs) != 1 {
		fail("want 1 PodDisruptionBudget, got %d", len(m.PDBs))
	} else if sel, err := metav1.LabelSelectorAsSelector(m.PDBs[0].Spec.Selector); err != nil || !sel.Matches(podLabels) {
		fail("PodDisruptionBudget does not select the pod")
	}

	if len(m.NetworkPolicies) != 1 {
		fail("want 1 NetworkPolicy, got %d", len(m.NetworkPolicies))
	} else {
		np := m.NetworkPolicies[0]
		if sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err != nil || !sel.Matches(podLabels) {
			fail("NetworkPolicy does not select the pod")
		}
		var allowsProxy bool
		for _, rule := range np.Spec.Ingress {
			if len(rule.Ports) == 0 {
				fail("NetworkPolicy has an ingress rule for all ports, which admits the app's port")
			}
			for _, p := range rule.Ports {
				if p.Port == nil {
					fail("NetworkPolicy admits a whole protocol, including the app's port")
					continue
				}
				target, _ := resolvePort(sg, *p.Port)
				if target == proxyPort {
					allowsProxy = true
				}
				if p.Port.IntValue() == int(appPort) {
					fail("NetworkPolicy admits the app's port %d", appPort)
				}
			}
		}
		if !allowsProxy {
			fail("NetworkPolicy does not admit the proxy port %d", proxyPort)
		}
	}
	return problems
}

// resolvePort maps a numeric or named port to the stepgate container's port number.
func resolvePort(c *corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func listenPort(env map[string]envVar, name string, def int32) int32 {
	v, ok := env[name]
	if !ok {
		return def
	}
	_, port, err := net.SplitHostPort(v.value)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return -1
	}
	return int32(n)
}

func envDuration(env map[string]envVar, name string, def time.Duration) time.Duration {
	v, ok := env[name]
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v.value)
	if err != nil {
		return 1<<63 - 1 // unparseable: no grace period can be long enough
	}
	return d
}

func compareResources(kind string, got, want corev1.ResourceList) []string {
	var problems []string
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		g, ok := got[name]
		w := want[name]
		if !ok || g.Cmp(w) != 0 {
			problems = append(problems, fmt.Sprintf("stepgate %s.%s: got %s, want %s", kind, name, quantityString(g, ok), w.String()))
		}
	}
	return problems
}

func quantityString(q resource.Quantity, ok bool) string {
	if !ok {
		return "unset"
	}
	return q.String()
}

func findConfigMap(m *manifests, name string) *corev1.ConfigMap {
	for _, cm := range m.ConfigMaps {
		if cm.Name == name {
			return cm
		}
	}
	return nil
}

func findSecret(m *manifests, name string) *corev1.Secret {
	for _, s := range m.Secrets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// findGeneratedSecret finds the Secret named name, or generated from name by
// kustomize (name plus a content hash).
func findGeneratedSecret(m *manifests, name string) *corev1.Secret {
	for _, s := range m.Secrets {
		if generatedFrom(s.Name, name) {
			return s
		}
	}
	return nil
}

// generatedFrom reports whether got is name, or name with kustomize's
// "-<10 character hash>" suffix.
func generatedFrom(got, name string) bool {
	return got == name || (strings.HasPrefix(got, name+"-") && len(got) == len(name)+11)
}

func findVolume(pod *corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

func firstNonNil[T any](ps ...*T) *T {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

func isTrue(b *bool) bool { return b != nil && *b }

func ptrString[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}
