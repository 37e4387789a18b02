package deploy

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"
)

// manifests is a rendered set of objects, each decoded strictly into its API type.
type manifests struct {
	Deployments     []*appsv1.Deployment
	Services        []*corev1.Service
	ConfigMaps      []*corev1.ConfigMap
	Secrets         []*corev1.Secret
	PDBs            []*policyv1.PodDisruptionBudget
	NetworkPolicies []*networkingv1.NetworkPolicy
	ServiceMonitors []*serviceMonitor
}

// serviceMonitor mirrors the part of prometheus-operator's
// monitoring.coreos.com/v1 ServiceMonitor that our manifests use (field names
// and JSON tags as in its types.go). Decoding is strict, so a field we write
// that is not declared here fails the test and must be added deliberately.
// (The operator's own module pins a k8s.io/utils version that the module proxy
// does not serve.)
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Endpoints []struct {
			Port          string `json:"port,omitempty"`
			Path          string `json:"path,omitempty"`
			Scheme        string `json:"scheme,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// docSeparator splits a multi-document YAML stream.
var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeStream decodes every document of a YAML stream. An object of a kind
// this package does not know is an error: nothing rendered escapes the checks.
func decodeStream(stream []byte) (*manifests, error) {
	m := &manifests{}
	for i, doc := range docSeparator.Split(string(stream), -1) {
		if isEmptyDoc(doc) {
			continue
		}
		if err := m.add([]byte(doc)); err != nil {
			return nil, fmt.Errorf("document %d: %w\n%s", i, err, doc)
		}
	}
	return m, nil
}

// isEmptyDoc reports whether a document holds only comments and blank lines
// (Helm leaves those behind for templates whose condition is false).
func isEmptyDoc(doc string) bool {
	for line := range strings.SplitSeq(doc, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

func (m *manifests) add(doc []byte) error {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := sigsyaml.Unmarshal(doc, &head); err != nil {
		return fmt.Errorf("read apiVersion/kind: %w", err)
	}
	switch head.APIVersion + "/" + head.Kind {
	case "apps/v1/Deployment":
		return decodeInto(doc, &m.Deployments)
	case "v1/Service":
		return decodeInto(doc, &m.Services)
	case "v1/ConfigMap":
		return decodeInto(doc, &m.ConfigMaps)
	case "v1/Secret":
		return decodeInto(doc, &m.Secrets)
	case "policy/v1/PodDisruptionBudget":
		return decodeInto(doc, &m.PDBs)
	case "networking.k8s.io/v1/NetworkPolicy":
		return decodeInto(doc, &m.NetworkPolicies)
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return decodeInto(doc, &m.ServiceMonitors)
	default:
		return fmt.Errorf("unexpected object %s %s: add it to the strict decoder", head.APIVersion, head.Kind)
	}
}

// decodeInto decodes doc the way a strict API server would (kubectl
// --validate=strict): duplicate keys, unknown fields and fields whose case
// differs from the API's are all errors. encoding/json alone would accept
// "runasnonroot", which the API server silently drops.
func decodeInto[T any](doc []byte, list *[]*T) error {
	js, err := sigsyaml.YAMLToJSONStrict(doc)
	if err != nil {
		return fmt.Errorf("yaml to json: %w", err)
	}
	obj := new(T)
	strictErrs, err := sigsjson.UnmarshalStrict(js, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return fmt.Errorf("decode %T: %w", obj, err)
	}
	if len(strictErrs) > 0 {
		return fmt.Errorf("decode %T strictly: %v", obj, strictErrs)
	}
	*list = append(*list, obj)
	return nil
}

// renderKustomize builds a kustomization from fsys, as `kubectl kustomize dir` would.
func renderKustomize(t *testing.T, fsys filesys.FileSystem, dir string) *manifests {
	t.Helper()
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := resMap.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: yaml: %v", dir, err)
	}
	m, err := decodeStream(out)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return m
}

// copyToMemFS copies the directory tree at src (on disk) to dst in an
// in-memory file system, so tests can add files (such as overlay secrets)
// without touching the checkout.
func copyToMemFS(t *testing.T, src, dst string) filesys.FileSystem {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return mem.MkdirAll(target)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return mem.WriteFile(target, data)
	})
	if err != nil {
		t.Fatalf("copy %s to memory: %v", src, err)
	}
	return mem
}

const chartDir = "helm/stepgate"

// renderHelm renders the chart with the Helm engine, like `helm template
// legacy chartDir -f values.yaml`; vals are merged over the chart's defaults.
func renderHelm(vals chartutil.Values) (*manifests, map[string]string, error) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		return nil, nil, fmt.Errorf("load chart: %w", err)
	}
	opts := chartutil.ReleaseOptions{Name: "legacy", Namespace: "apps", Revision: 1, IsInstall: true}
	renderVals, err := chartutil.ToRenderValues(chrt, vals, opts, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, nil, fmt.Errorf("values: %w", err)
	}
	// Strict: a template that reads a value missing from values.yaml fails,
	// so typos in value names cannot silently render as empty.
	files, err := engine.Engine{Strict: true}.Render(chrt, renderVals)
	if err != nil {
		return nil, nil, fmt.Errorf("render: %w", err)
	}
	var stream bytes.Buffer
	for name, content := range files {
		if !strings.HasSuffix(name, ".yaml") {
			continue // NOTES.txt, _helpers.tpl
		}
		stream.WriteString("\n---\n# Source: " + name + "\n")
		stream.WriteString(content)
	}
	m, err := decodeStream(stream.Bytes())
	if err != nil {
		return nil, nil, err
	}
	return m, files, nil
}
