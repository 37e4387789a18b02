// Command release builds stepgate's release artefacts into one directory
// and checks them. It is what the release workflow runs on a tag, and what
// .ci/run runs as a snapshot on every commit:
//
//	cd release && go run . build -snapshot   # ../dist: everything but publishing and signing
//	cd release && go run . verify            # check what ../dist holds
//
// One build makes, for version V (the tag without its "v"):
//
//	stepgate_V_{linux,darwin}_{amd64,arm64}.tar.gz   static binaries, LICENSE, NOTICE, README.md
//	stepgate_V_linux_{amd64,arm64}.deb, .rpm          /usr/bin/stepgate (nfpm)
//	stepgate_V.sbom.cdx.json                          CycloneDX SBOM (cyclonedx-gomod)
//	stepgate-V.tgz, index.yaml                        the Helm chart and its repository index
//	oci/                                              an OCI image layout: one index, linux/amd64 and linux/arm64
//	stepgate_V_checksums.txt                          SHA-256 of every file above but oci/ and index.yaml
//
// It never publishes or signs: the workflow (.github/workflows/release.yml)
// pushes oci/ with crane and signs with cosign, which need credentials that
// a snapshot must not have. The image is assembled here, without a Docker
// daemon or a base image, so that the same bytes that are published are
// the ones a test has inspected.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  release build  [-snapshot | -version vX.Y.Z] [flags]   build every artefact into -dist
  release verify [flags]                                  check the artefacts in -dist
Run from the release/ module (go run . build -snapshot); -h after a command lists its flags.`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "build":
		return runBuild(ctx, args[1:], stdout, stderr)
	case "verify":
		return runVerify(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// release is what one build is about: which source, which version, and
// where its artefacts go.
type release struct {
	Root      string    // the repository (the root Go module)
	Dist      string    // output directory
	Version   string    // without "v": 0.1.0, or 0.1.0-snapshot.g1a2b3c4d5e6f
	Revision  string    // full commit hash
	Time      time.Time // commit time: every mtime and "created" in the artefacts
	Snapshot  bool
	Image     string // image repository, for labels: ghcr.io/stepgate/stepgate
	ChartURL  string // where the chart archive will be downloadable from (index.yaml's urls)
	CABundle  string // CA certificates copied into the image
	Verbose   io.Writer
	goVersion string
}

// Stamp is what -X main.version gets and what `stepgate version` prints:
// the tag, with its "v".
func (r *release) Stamp() string { return "v" + r.Version }

func runBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "..", "repository root (the stepgate Go module)")
	dist := fs.String("dist", "../dist", "output directory; emptied first")
	snapshot := fs.Bool("snapshot", false, "a snapshot: version from the last tag (or Chart.yaml's appVersion) plus the commit")
	version := fs.String("version", "", "release version, vX.Y.Z (default: the tag at HEAD)")
	image := fs.String("image", "ghcr.io/stepgate/stepgate", "image repository named in the image's labels")
	chartURL := fs.String("chart-url", "https://github.com/stepgate/stepgate/releases/download/v{version}", "base URL of the chart archive in index.yaml ({version} is replaced)")
	mergeIndex := fs.String("merge-index", "", "an existing index.yaml whose entries the new index keeps")
	caBundle := fs.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "CA certificates for the image")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("build: unexpected arguments %q", fs.Args())
	}
	r, err := resolve(ctx, *root, *snapshot, *version)
	if err != nil {
		return err
	}
	r.Dist, _ = filepath.Abs(*dist)
	r.Image = *image
	r.ChartURL = strings.ReplaceAll(*chartURL, "{version}", r.Version)
	r.CABundle = *caBundle
	r.Verbose = stdout

	if err := os.RemoveAll(r.Dist); err != nil {
		return err
	}
	if err := os.MkdirAll(r.Dist, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "stepgate %s (commit %s, %s), into %s\n", r.Version, short(r.Revision), r.Time.Format(time.RFC3339), r.Dist)
	type stage struct {
		name string
		do   func(context.Context, *release) error
	}
	stages := []stage{
		{"binaries and archives", buildBinaries},
		{"deb and rpm", buildPackages},
		{"SBOM", buildSBOM},
		{"OCI image", buildImage},
		{"Helm chart", func(ctx context.Context, r *release) error { return buildChart(r, *mergeIndex) }},
		{"checksums", writeChecksums},
	}
	for _, s := range stages {
		start := time.Now()
		if err := s.do(ctx, r); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Fprintf(stdout, "  %-22s %5.1fs\n", s.name, time.Since(start).Seconds())
	}
	return writeMetadata(r)
}

var semverTag = regexp.MustCompile(`^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$`)

// resolve decides the version and reads the commit. A release needs a
// vX.Y.Z tag (or -version); a snapshot builds on the last tag, or on
// Chart.yaml's appVersion before the first one, and appends the commit so
// that it can never be mistaken for the release.
func resolve(ctx context.Context, root string, snapshot bool, version string) (*release, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	r := &release{Root: root, Snapshot: snapshot}
	if r.Revision, err = git(ctx, root, "rev-parse", "HEAD"); err != nil {
		return nil, err
	}
	ct, err := git(ctx, root, "log", "-1", "--format=%ct", "HEAD")
	if err != nil {
		return nil, err
	}
	secs, err := strconv.ParseInt(ct, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("commit time %q: %w", ct, err)
	}
	r.Time = time.Unix(secs, 0).UTC()
	switch {
	case version != "":
		if !semverTag.MatchString(version) {
			return nil, fmt.Errorf("-version %q is not vMAJOR.MINOR.PATCH[-PRERELEASE]", version)
		}
		r.Version = strings.TrimPrefix(version, "v")
	case snapshot:
		base, err := git(ctx, root, "describe", "--tags", "--abbrev=0", "--match", "v[0-9]*")
		if err != nil || !semverTag.MatchString(base) {
			app, err := chartField(filepath.Join(root, chartDir, "Chart.yaml"), "appVersion")
			if err != nil {
				return nil, err
			}
			base = "v" + app
		}
		base, _, _ = strings.Cut(strings.TrimPrefix(base, "v"), "-")
		// "g" as git describe does: a prerelease identifier of digits only
		// may not start with 0 (semver §9), and a hash can be all digits.
		r.Version = base + "-snapshot.g" + short(r.Revision)
	default:
		tag, err := git(ctx, root, "describe", "--tags", "--exact-match", "--match", "v[0-9]*", "HEAD")
		if err != nil {
			return nil, errors.New("HEAD has no vX.Y.Z tag: pass -version or -snapshot")
		}
		if !semverTag.MatchString(tag) {
			return nil, fmt.Errorf("tag %q is not vMAJOR.MINOR.PATCH[-PRERELEASE]", tag)
		}
		r.Version = strings.TrimPrefix(tag, "v")
	}
	if r.goVersion, err = command(ctx, root, nil, "go", "env", "GOVERSION"); err != nil {
		return nil, err
	}
	return r, nil
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	return command(ctx, dir, nil, "git", args...)
}

// command runs name in dir with env added to the environment and returns
// its trimmed standard output; a failure carries its standard error.
func command(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}
