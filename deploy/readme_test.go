package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/strvals"
)

// TestTheREADMEKubernetesCommandRendersALockedDownSidecar takes the one
// command of README's "Kubernetes in one step" as written, its --set values
// parsed by Helm's own parser, with the shell variables filled in, and
// renders the chart in this repository with them (the released chart is the
// same chart: TestTheReleasedChartIsWhatHelmInstalls). The command must name
// the released chart at the chart repository README's Install names, and
// what it renders must pass every check the chart's own value sets pass.
func TestTheREADMEKubernetesCommandRendersALockedDownSidecar(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Kubernetes in one step\n")
	if !ok {
		t.Fatal(`README.md has no "## Kubernetes in one step" section`)
	}
	_, block, ok := strings.Cut(sec, "```sh\n")
	if !ok {
		t.Fatal(`README's "Kubernetes in one step" has no sh block`)
	}
	block, _, _ = strings.Cut(block, "```")
	cmd := strings.Join(strings.Fields(strings.ReplaceAll(block, "\\\n", " ")), " ")
	if strings.Count(cmd, "helm install") != 1 {
		t.Fatalf("want exactly one helm install command, got %q", cmd)
	}
	const env, client = "11111111-2222-4333-8444-555555555555", "66666666-7777-4888-9999-aaaaaaaaaaaa"
	cmd = strings.NewReplacer(
		"$ENV_ID", env,
		"$CLIENT_ID", client,
		"$CLIENT_SECRET", "readme-client-secret",
		"$(openssl rand -base64 32)", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
	).Replace(cmd)
	if strings.Contains(cmd, "$") {
		t.Fatalf("the command uses a shell variable this test does not fill in: %q", cmd)
	}
	args := shellWords(t, cmd)
	if len(args) < 4 || args[0] != "helm" || args[1] != "install" || args[2] != "legacy" || args[3] != "stepgate" {
		t.Fatalf("want `helm install legacy stepgate …`, got %q", args)
	}
	vals := map[string]any{}
	var repo, version string
	for i := 4; i < len(args); i++ {
		if i+1 >= len(args) {
			t.Fatalf("flag %s has no value", args[i])
		}
		switch args[i] {
		case "--set":
			if err := strvals.ParseInto(args[i+1], vals); err != nil {
				t.Fatalf("--set %s: %v", args[i+1], err)
			}
		case "--repo":
			repo = args[i+1]
		case "--version":
			version = args[i+1]
		default:
			t.Fatalf("unexpected argument %q: extend this test", args[i])
		}
		i++
	}
	if repo != "https://stepgate.github.io/stepgate" || version == "" {
		t.Errorf("the command installs --repo %q --version %q, want the chart repository README's Install names and a pinned version", repo, version)
	}
	m, _, err := renderHelm(chartutil.Values(vals))
	if err != nil {
		t.Fatalf("README's command does not render: %v", err)
	}
	reportProblems(t, check(m, expect{
		replicas:       2,
		stepgateImage:  "ghcr.io/stepgate/stepgate:0.1.0",
		secretName:     "legacy-stepgate-secrets",
		secretRendered: true,
		requests:       resources("50m", "64Mi"),
		limits:         resources("500m", "128Mi"),
		env: map[string]string{
			"STEPGATE_UPSTREAM":          "http://127.0.0.1:3000",
			"STEPGATE_PINGONE_ENV_ID":    env,
			"STEPGATE_PINGONE_CLIENT_ID": client,
			"STEPGATE_TRUSTED_PROXIES":   "127.0.0.1/32,::1/128",
		},
		rulesContain: "/admin/ mfa max_age=15m",
	}))
	var appImage string
	for _, d := range m.Deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name == "app" {
				appImage = c.Image
			}
		}
	}
	if appImage != "registry.example.com/legacy-app:2.3.1" {
		t.Errorf("the app container runs %q, want the image README's command names", appImage)
	}
}

// shellWords splits a command line the way sh does for the quoting README
// uses: single and double quotes, no escapes inside them.
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	in, quote := false, rune(0)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}
