package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestHelmignore(t *testing.T) {
	rules, err := parseHelmignore([]byte("# comment\n.DS_Store\n*.swp\n.git/\nci/\ntemplates/*.bak\n!keep.swp\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		path  string
		isDir bool
		want  bool
	}{
		{"a base-name glob matches in any directory", "templates/x.swp", false, true},
		{"a negation after a match keeps the file", "keep.swp", false, false},
		{"a directory rule matches the directory", "ci", true, true},
		{"a directory rule does not match a file of that name", "ci", false, false},
		{"a pattern with a slash matches the whole path", "templates/a.bak", false, true},
		{"a pattern with a slash does not match elsewhere", "other/a.bak", false, false},
		{"a template is packaged", "templates/deployment.yaml", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rules.ignored(tt.path, tt.isDir); got != tt.want {
				t.Errorf("ignored(%q, dir=%v) = %v, want %v", tt.path, tt.isDir, got, tt.want)
			}
		})
	}
	if _, err := parseHelmignore([]byte("templates/**/x\n")); err == nil {
		t.Error("** was accepted; helm does not support it, so it would package what the author meant to leave out")
	}
}

func TestSetChartVersionKeepsTheRestOfChartYAML(t *testing.T) {
	in := "apiVersion: v2\n# the chart\nname: stepgate\nversion: 0.1.0\nappVersion: \"0.1.0\"\nkubeVersion: \">=1.30.0-0\"\n"
	out, err := setChartVersion([]byte(in), "1.2.3-rc.1")
	if err != nil {
		t.Fatal(err)
	}
	want := "apiVersion: v2\n# the chart\nname: stepgate\nversion: 1.2.3-rc.1\nappVersion: \"1.2.3-rc.1\"\nkubeVersion: \">=1.30.0-0\"\n"
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	if _, err := setChartVersion([]byte("name: x\nversion: 1\n"), "2.0.0"); err == nil {
		t.Error("a Chart.yaml without appVersion was accepted; the image tag would not follow the release")
	}
	if _, err := setChartVersion([]byte("name: x\nversion: 1\nappVersion: 1\nversion: 2\n"), "2.0.0"); err == nil {
		t.Error("a Chart.yaml with two version lines was accepted")
	}
}

func TestThePackagedChartAndItsIndex(t *testing.T) {
	dir := t.TempDir()
	archive := filepath.Join(dir, "stepgate-1.2.3.tgz")
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := packageChart(filepath.Join("..", chartDir), archive, "1.2.3", mtime); err != nil {
		t.Fatal(err)
	}
	files, err := readTarGz(archive)
	if err != nil {
		t.Fatal(err)
	}
	for name := range files {
		if !strings.HasPrefix(name, "stepgate/") {
			t.Errorf("%s is outside stepgate/", name)
		}
		if strings.HasPrefix(name, "stepgate/ci/") {
			t.Errorf("%s is packaged; .helmignore leaves ci/ out", name)
		}
	}
	for _, want := range []string{"stepgate/Chart.yaml", "stepgate/values.yaml", "stepgate/templates/deployment.yaml", "stepgate/templates/_helpers.tpl"} {
		if _, ok := files[want]; !ok {
			t.Errorf("%s is missing", want)
		}
	}

	old := "apiVersion: v1\nentries:\n  stepgate:\n  - name: stepgate\n    version: 1.0.0\n    digest: aaa\n  - name: stepgate\n    version: 1.2.3\n    digest: stale\n  other:\n  - name: other\n    version: 9.0.0\ngenerated: \"2025-01-01T00:00:00Z\"\n"
	b, err := chartIndex(archive, "https://example.com/v1.2.3/", mtime, []byte(old))
	if err != nil {
		t.Fatal(err)
	}
	var idx index
	if err := yaml.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	sum, _ := sha256File(archive)
	got := idx.Entries["stepgate"]
	if len(got) != 2 || got[0]["version"] != "1.2.3" || got[1]["version"] != "1.0.0" {
		t.Fatalf("entries %v, want 1.2.3 (replacing the stale one) then 1.0.0", got)
	}
	e := got[0]
	if e["digest"] != sum || e["appVersion"] != "1.2.3" || e["created"] != "2026-01-02T03:04:05Z" || e["kubeVersion"] != ">=1.30.0-0" {
		t.Errorf("entry %v", e)
	}
	if urls, _ := e["urls"].([]any); len(urls) != 1 || urls[0] != "https://example.com/v1.2.3/stepgate-1.2.3.tgz" {
		t.Errorf("urls %v", e["urls"])
	}
	if len(idx.Entries["other"]) != 1 || idx.APIVersion != "v1" {
		t.Errorf("another chart's entries were lost: %v", idx.Entries)
	}
}
