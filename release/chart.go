package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/semver"
)

// chartDir is the Helm chart, relative to the repository root.
const chartDir = "deploy/helm/stepgate"

func (r *release) chartName() string { return "stepgate-" + r.Version + ".tgz" }

// buildChart packages the chart as `helm package --version V --app-version
// V` does — a gzipped tar of the chart directory under "stepgate/", less
// what .helmignore names, with Chart.yaml's version and appVersion set to
// the release (the chart's default image tag is its appVersion) — and
// writes index.yaml for a chart repository, keeping the entries of
// mergeIndex (the published index) when given.
func buildChart(r *release, mergeIndex string) error {
	archive := filepath.Join(r.Dist, r.chartName())
	if err := packageChart(filepath.Join(r.Root, chartDir), archive, r.Version, r.Time); err != nil {
		return err
	}
	var old []byte
	if mergeIndex != "" {
		b, err := os.ReadFile(mergeIndex)
		if err != nil {
			return err
		}
		old = b
	}
	index, err := chartIndex(archive, r.ChartURL, r.Time, old)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(r.Dist, "index.yaml"), index, 0o644)
}

// packageChart writes dir as a chart archive at out.
func packageChart(dir, out, version string, mtime time.Time) error {
	meta, err := os.ReadFile(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return err
	}
	name, err := chartField(filepath.Join(dir, "Chart.yaml"), "name")
	if err != nil {
		return err
	}
	ignore, err := readHelmignore(filepath.Join(dir, ".helmignore"))
	if err != nil {
		return err
	}
	meta, err = setChartVersion(meta, version)
	if err != nil {
		return err
	}
	var entries []tarEntry
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if ignore.ignored(rel, d.IsDir()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil // helm's archives hold files only
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file (helm refuses symlinks in a package)", rel)
		}
		e := tarEntry{Name: name + "/" + rel, Mode: 0o644, Source: p}
		if rel == "Chart.yaml" {
			e.Source, e.Body = "", meta
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return err
	}
	// Chart.yaml first, as helm writes it: readers that stream the archive
	// (helm's own loader among them) meet the metadata before the rest.
	slices.SortStableFunc(entries, func(a, b tarEntry) int {
		return boolInt(!strings.HasSuffix(a.Name, "/Chart.yaml")) - boolInt(!strings.HasSuffix(b.Name, "/Chart.yaml"))
	})
	return writeTarGz(out, entries, mtime)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

var versionLine = regexp.MustCompile(`(?m)^(version|appVersion):.*$`)

// setChartVersion sets Chart.yaml's top-level version and appVersion in
// place, keeping its comments and layout; each must be there exactly once.
func setChartVersion(meta []byte, version string) ([]byte, error) {
	seen := map[string]int{}
	out := versionLine.ReplaceAllFunc(meta, func(line []byte) []byte {
		key, _, _ := strings.Cut(string(line), ":")
		seen[key]++
		if key == "appVersion" {
			return []byte(fmt.Sprintf("appVersion: %q", version))
		}
		return []byte("version: " + version)
	})
	for _, key := range []string{"version", "appVersion"} {
		if seen[key] != 1 {
			return nil, fmt.Errorf("Chart.yaml has %d top-level %s lines, want 1", seen[key], key)
		}
	}
	var check map[string]any
	if err := yaml.Unmarshal(out, &check); err != nil {
		return nil, fmt.Errorf("Chart.yaml: %w", err)
	}
	if check["version"] != version || check["appVersion"] != version {
		return nil, fmt.Errorf("Chart.yaml: version %v and appVersion %v after setting %s", check["version"], check["appVersion"], version)
	}
	return out, nil
}

// chartField reads one top-level string field of a Chart.yaml.
func chartField(file, key string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	s, ok := m[key].(string)
	if !ok || s == "" {
		return "", fmt.Errorf("%s: no %s", file, key)
	}
	return s, nil
}

// helmignore is the subset of .helmignore's rules (helm's pkg/ignore) that
// a chart uses: one glob per line matched against the base name, or
// against the whole path when it contains a slash; a trailing slash
// matches directories only; "!" negates. Helm matches no "**".
type helmignore []ignoreRule

type ignoreRule struct {
	pattern       string
	negate, dir   bool
	matchFullPath bool
}

func readHelmignore(file string) (helmignore, error) {
	b, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseHelmignore(b)
}

func parseHelmignore(b []byte) (helmignore, error) {
	var rules helmignore
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var r ignoreRule
		if r.negate = strings.HasPrefix(line, "!"); r.negate {
			line = line[1:]
		}
		if r.dir = strings.HasSuffix(line, "/"); r.dir {
			line = strings.TrimSuffix(line, "/")
		}
		if strings.Contains(line, "**") {
			return nil, fmt.Errorf(".helmignore: %q: helm does not support **", line)
		}
		line = strings.TrimPrefix(line, "/")
		r.matchFullPath = strings.Contains(line, "/")
		if _, err := path.Match(line, ""); err != nil {
			return nil, fmt.Errorf(".helmignore: %q: %w", line, err)
		}
		r.pattern = line
		rules = append(rules, r)
	}
	return rules, sc.Err()
}

// ignored says whether the chart-relative path rel is left out; as in
// helm, the last matching rule decides.
func (h helmignore) ignored(rel string, isDir bool) bool {
	out := false
	for _, r := range h {
		if r.dir && !isDir {
			continue
		}
		subject := path.Base(rel)
		if r.matchFullPath {
			subject = rel
		}
		if ok, _ := path.Match(r.pattern, subject); ok {
			out = !r.negate
		}
	}
	return out
}

// index is a chart repository's index.yaml (helm's repo.IndexFile).
type index struct {
	APIVersion string                  `yaml:"apiVersion"`
	Entries    map[string][]indexEntry `yaml:"entries"`
	Generated  string                  `yaml:"generated"`
}

// indexEntry is Chart.yaml's metadata plus where the archive is and its
// SHA-256 (helm's repo.ChartVersion). The metadata is kept as read so that
// no field of Chart.yaml is lost.
type indexEntry map[string]any

// chartIndex returns index.yaml listing the archive (URL base/name), with
// the entries of old (an existing index.yaml) for other versions kept.
func chartIndex(archive, base string, created time.Time, old []byte) ([]byte, error) {
	data, err := os.ReadFile(archive)
	if err != nil {
		return nil, err
	}
	meta, err := archiveChartYAML(data)
	if err != nil {
		return nil, err
	}
	var entry indexEntry
	if err := yaml.Unmarshal(meta, &entry); err != nil {
		return nil, fmt.Errorf("Chart.yaml in %s: %w", archive, err)
	}
	sum := sha256.Sum256(data)
	entry["digest"] = hex.EncodeToString(sum[:])
	entry["urls"] = []string{strings.TrimSuffix(base, "/") + "/" + filepath.Base(archive)}
	entry["created"] = created.Format(time.RFC3339Nano)
	name, _ := entry["name"].(string)
	version, _ := entry["version"].(string)
	if name == "" || version == "" {
		return nil, fmt.Errorf("Chart.yaml in %s lacks name or version", archive)
	}

	idx := index{APIVersion: "v1", Entries: map[string][]indexEntry{}}
	if len(old) > 0 {
		if err := yaml.Unmarshal(old, &idx); err != nil {
			return nil, fmt.Errorf("existing index: %w", err)
		}
		if idx.APIVersion != "v1" {
			return nil, fmt.Errorf("existing index: apiVersion %q, want v1", idx.APIVersion)
		}
		if idx.Entries == nil {
			idx.Entries = map[string][]indexEntry{}
		}
	}
	versions := slices.DeleteFunc(idx.Entries[name], func(e indexEntry) bool { return e["version"] == version })
	versions = append(versions, entry)
	// Newest first, as helm sorts them (semver; an unparsable version last).
	slices.SortStableFunc(versions, func(a, b indexEntry) int {
		va, _ := a["version"].(string)
		vb, _ := b["version"].(string)
		return semver.Compare("v"+vb, "v"+va)
	})
	idx.Entries[name] = versions
	idx.Generated = created.Format(time.RFC3339Nano)
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(idx); err != nil {
		return nil, err
	}
	return out.Bytes(), enc.Close()
}

// archiveChartYAML returns NAME/Chart.yaml from a chart archive.
func archiveChartYAML(data []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("no Chart.yaml in the chart archive: %w", err)
		}
		if dir, file, ok := strings.Cut(h.Name, "/"); ok && dir != "" && file == "Chart.yaml" {
			var b bytes.Buffer
			if _, err := b.ReadFrom(tr); err != nil {
				return nil, err
			}
			return b.Bytes(), nil
		}
	}
}
