package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	sigsyaml "sigs.k8s.io/yaml"
)

// TestTheReleasedChartIsWhatHelmInstalls loads the chart archive a release
// build wrote (STEPGATE_DIST, the release program's dist/; .ci/run sets it
// after the snapshot) with Helm's own loader, as `helm install
// stepgate/stepgate` would, and renders it: the chart and app versions are
// the release's, and the pod runs the image the release publishes.
func TestTheReleasedChartIsWhatHelmInstalls(t *testing.T) {
	dist := os.Getenv("STEPGATE_DIST")
	if dist == "" {
		t.Skip("STEPGATE_DIST is not set: no release build to check (.ci/run sets it after the snapshot)")
	}
	b, err := os.ReadFile(filepath.Join(dist, "release.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rel struct{ Version string }
	if err := json.Unmarshal(b, &rel); err != nil {
		t.Fatal(err)
	}
	chrt, err := loader.Load(filepath.Join(dist, "stepgate-"+rel.Version+".tgz"))
	if err != nil {
		t.Fatalf("helm cannot load the packaged chart: %v", err)
	}
	if err := chrt.Validate(); err != nil {
		t.Fatal(err)
	}
	if m := chrt.Metadata; m.Name != "stepgate" || m.Version != rel.Version || m.AppVersion != rel.Version {
		t.Errorf("chart %s %s (app %s), want stepgate %s", m.Name, m.Version, m.AppVersion, rel.Version)
	}
	raw, err := os.ReadFile(filepath.Join(chartDir, "ci", "default-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var vals map[string]any
	if err := sigsyaml.Unmarshal(raw, &vals); err != nil {
		t.Fatal(err)
	}
	opts := chartutil.ReleaseOptions{Name: "legacy", Namespace: "apps", Revision: 1, IsInstall: true}
	renderVals, err := chartutil.ToRenderValues(chrt, vals, opts, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Engine{Strict: true}.Render(chrt, renderVals)
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeStream([]byte(files["stepgate/templates/deployment.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Deployments) != 1 {
		t.Fatalf("%d Deployments", len(m.Deployments))
	}
	want := "ghcr.io/stepgate/stepgate:" + rel.Version
	for _, c := range m.Deployments[0].Spec.Template.Spec.Containers {
		if c.Name == "stepgate" {
			if c.Image != want {
				t.Errorf("the stepgate container runs %s, want %s (what the release publishes)", c.Image, want)
			}
			return
		}
	}
	t.Error("no stepgate container")
}
