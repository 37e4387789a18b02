package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"go.yaml.in/yaml/v3"
)

// runVerify checks a dist directory as a user would meet it: binaries
// taken out of the archives, packages read by dpkg-deb and rpm, the image
// read from its layout layer by layer. Every failed check is reported,
// not only the first.
func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dist := fs.String("dist", "../dist", "the directory release build wrote")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(*dist, "release.json"))
	if err != nil {
		return err
	}
	var m metadata
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("release.json: %w", err)
	}
	r := &release{Dist: *dist, Version: m.Version, Revision: m.Revision, Time: m.Time}
	v := &verifier{r: r, ctx: ctx, out: stdout, binaries: map[platform][]byte{}}
	fmt.Fprintf(stdout, "verifying stepgate %s in %s\n", m.Version, *dist)
	if m.Stamp != r.Stamp() {
		v.fail("release.json", fmt.Errorf("stamp %q, want %q", m.Stamp, r.Stamp()))
	}
	v.archives()
	v.checksums()
	v.sboms()
	v.packages()
	v.image()
	v.chart()
	if len(v.failed) > 0 {
		return fmt.Errorf("%d check(s) failed: %s", len(v.failed), strings.Join(v.failed, "; "))
	}
	fmt.Fprintln(stdout, "all artefacts check out")
	return nil
}

type verifier struct {
	r        *release
	ctx      context.Context
	out      io.Writer
	failed   []string
	binaries map[platform][]byte // each archive's stepgate: what the packages and the image must carry
}

func (v *verifier) check(what string, err error) {
	if err != nil {
		v.fail(what, err)
		return
	}
	fmt.Fprintf(v.out, "  ok    %s\n", what)
}

func (v *verifier) fail(what string, err error) {
	fmt.Fprintf(v.out, "  FAIL  %s: %v\n", what, err)
	v.failed = append(v.failed, what)
}

var nativePlatform = platform{runtime.GOOS, runtime.GOARCH}

// archives: each holds the binary and the licence; the binary is for its
// platform, static, stamped with the version; the native one runs and says so.
func (v *verifier) archives() {
	for _, p := range platforms {
		name := v.r.archiveName(p)
		files, err := readTarGz(filepath.Join(v.r.Dist, name))
		if err == nil {
			if got, want := slices.Sorted(maps.Keys(files)), []string{"LICENSE", "NOTICE", "README.md", "stepgate"}; !slices.Equal(got, want) {
				err = fmt.Errorf("holds %q, want %q", got, want)
			}
		}
		if err == nil {
			v.binaries[p] = files["stepgate"].body
			err = checkBinary(files["stepgate"].body, p, v.r.Stamp())
		}
		v.check(name+": "+p.String()+" binary, CGO off, stamped "+v.r.Stamp(), err)
		if err == nil && p == nativePlatform {
			v.check(name+": stepgate -version and stepgate version print "+v.r.Stamp(), runVersion(v.ctx, files["stepgate"].body, v.r.Stamp()))
		}
	}
	if _, ok := v.binaries[nativePlatform]; !ok {
		v.fail("native binary", fmt.Errorf("no %s archive to run", nativePlatform))
	}
}

// checkBinary reads the build information the Go linker wrote into bin.
func checkBinary(bin []byte, p platform, stamp string) error {
	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		return err
	}
	if bi.Path != "github.com/stepgate/stepgate/cmd/stepgate" {
		return fmt.Errorf("main package %q", bi.Path)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	want := map[string]string{"GOOS": p.OS, "GOARCH": p.Arch, "CGO_ENABLED": "0", "-trimpath": "true"}
	for k, w := range want {
		if settings[k] != w {
			return fmt.Errorf("%s=%q, want %q", k, settings[k], w)
		}
	}
	// -trimpath leaves -ldflags out of the build information (it could
	// hold paths), so the stamp is looked for where -X put it: among the
	// binary's strings. The native binary is also run.
	if !bytes.Contains(bin, []byte(stamp)) {
		return fmt.Errorf("the binary does not contain %q", stamp)
	}
	return nil
}

// runVersion runs bin -version and bin version.
func runVersion(ctx context.Context, bin []byte, stamp string) error {
	dir, err := os.MkdirTemp("", "stepgate-verify-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	exe := filepath.Join(dir, "stepgate")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		return err
	}
	for _, arg := range []string{"-version", "version"} {
		out, err := exec.CommandContext(ctx, exe, arg).CombinedOutput()
		if err != nil {
			return fmt.Errorf("stepgate %s: %w\n%s", arg, err, out)
		}
		if first, _, _ := strings.Cut(string(out), "\n"); first != "stepgate "+stamp {
			return fmt.Errorf("stepgate %s printed %q, want %q", arg, first, "stepgate "+stamp)
		}
	}
	return nil
}

// checksums: the file covers every downloadable artefact, and each sum is right.
func (v *verifier) checksums() {
	name := v.r.checksumsName()
	err := func() error {
		b, err := os.ReadFile(filepath.Join(v.r.Dist, name))
		if err != nil {
			return err
		}
		var listed []string
		for line := range strings.Lines(string(b)) {
			sum, file, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "  ")
			if !ok {
				return fmt.Errorf("line %q is not HASH  NAME", line)
			}
			got, err := sha256File(filepath.Join(v.r.Dist, file))
			if err != nil {
				return err
			}
			if got != sum {
				return fmt.Errorf("%s: sha256 %s, the file says %s", file, got, sum)
			}
			listed = append(listed, file)
		}
		want, err := checksummed(v.r.Dist, name)
		if err != nil {
			return err
		}
		var expected []string
		for _, p := range platforms {
			expected = append(expected, v.r.archiveName(p), v.r.sbomName(p))
			if p.OS == "linux" {
				for _, f := range packageFormats {
					expected = append(expected, v.r.packageName(p, f))
				}
			}
		}
		expected = append(expected, v.r.chartName())
		slices.Sort(expected)
		if !slices.Equal(listed, want) || !slices.Equal(want, expected) {
			return fmt.Errorf("lists %q; dist has %q; want %q", listed, want, expected)
		}
		return nil
	}()
	v.check(name+": a right SHA-256 for every artefact", err)
}

// sboms: CycloneDX JSON naming stepgate and every module linked into the
// binary it describes, at the linked version.
func (v *verifier) sboms() {
	for _, p := range platforms {
		name := v.r.sbomName(p)
		bin, ok := v.binaries[p]
		if !ok {
			v.fail(name, errors.New("no binary to compare with"))
			continue
		}
		v.check(name+": CycloneDX naming every linked module", checkSBOM(filepath.Join(v.r.Dist, name), bin, v.r.Stamp()))
	}
}

func checkSBOM(file string, bin []byte, stamp string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var bom struct {
		BOMFormat   string `json:"bomFormat"`
		SpecVersion string `json:"specVersion"`
		Metadata    struct {
			Component struct{ Name, Version string } `json:"component"`
		} `json:"metadata"`
		Components []struct{ Name, Version, Purl string } `json:"components"`
	}
	if err := json.Unmarshal(b, &bom); err != nil {
		return err
	}
	if bom.BOMFormat != "CycloneDX" || !strings.HasPrefix(bom.SpecVersion, "1.") {
		return fmt.Errorf("bomFormat %q specVersion %q, want CycloneDX 1.x", bom.BOMFormat, bom.SpecVersion)
	}
	if c := bom.Metadata.Component; c.Name != "github.com/stepgate/stepgate" || c.Version != stamp {
		return fmt.Errorf("describes %s@%s, want github.com/stepgate/stepgate@%s", c.Name, c.Version, stamp)
	}
	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		return err
	}
	named := map[string]string{}
	for _, c := range bom.Components {
		named[c.Name] = c.Version
	}
	if len(bi.Deps) == 0 {
		return errors.New("the binary records no modules")
	}
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		if named[d.Path] != d.Version {
			return fmt.Errorf("module %s@%s is linked but the SBOM names %q", d.Path, d.Version, named[d.Path])
		}
	}
	return nil
}

// packages: each .deb and .rpm installs the archive's binary as
// /usr/bin/stepgate, for the right architecture and version.
func (v *verifier) packages() {
	for _, p := range platforms {
		if p.OS != "linux" {
			continue
		}
		bin := v.binaries[p]
		deb := v.r.packageName(p, "deb")
		v.check(deb+": /usr/bin/stepgate, "+p.Arch+", "+debVersion(v.r.Version), v.checkDeb(filepath.Join(v.r.Dist, deb), p, bin))
		rpm := v.r.packageName(p, "rpm")
		v.check(rpm+": /usr/bin/stepgate, "+rpmArch(p.Arch), v.checkRPM(filepath.Join(v.r.Dist, rpm), p, bin))
	}
}

// debVersion is how nfpm writes a semver prerelease for dpkg ("~" sorts
// before the release).
func debVersion(version string) string {
	return strings.Replace(version, "-", "~", 1)
}

func rpmArch(arch string) string {
	return map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[arch]
}

func (v *verifier) checkDeb(file string, p platform, bin []byte) error {
	fields, err := command(v.ctx, ".", nil, "dpkg-deb", "-f", file, "Package", "Version", "Architecture")
	if err != nil {
		return err
	}
	want := fmt.Sprintf("Package: stepgate\nVersion: %s\nArchitecture: %s", debVersion(v.r.Version), p.Arch)
	if fields != want {
		return fmt.Errorf("control fields %q, want %q", fields, want)
	}
	cmd := exec.CommandContext(v.ctx, "dpkg-deb", "--fsys-tarfile", file)
	data, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile: %w", err)
	}
	files, err := readTar(bytes.NewReader(data))
	if err != nil {
		return err
	}
	f, ok := files["./usr/bin/stepgate"]
	if !ok {
		return fmt.Errorf("no ./usr/bin/stepgate in %q", slices.Sorted(maps.Keys(files)))
	}
	if f.mode != 0o755 || !bytes.Equal(f.body, bin) {
		return fmt.Errorf("./usr/bin/stepgate has mode %o and is not the archive's binary", f.mode)
	}
	return nil
}

func (v *verifier) checkRPM(file string, p platform, bin []byte) error {
	head, err := command(v.ctx, ".", nil, "rpm", "-qp", "--nosignature", "--qf", "%{NAME} %{ARCH} %{VERSION}\n", file)
	if err != nil {
		return err
	}
	if want := "stepgate " + rpmArch(p.Arch) + " "; !strings.HasPrefix(head, want) {
		return fmt.Errorf("rpm says %q, want %q…", head, want)
	}
	list, err := command(v.ctx, ".", nil, "rpm", "-qp", "--nosignature", "--qf", "[%{FILENAMES} %{FILEMODES:perms} %{FILEDIGESTS}\n]", file)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(bin)
	want := "/usr/bin/stepgate -rwxr-xr-x " + hex.EncodeToString(sum[:])
	if !slices.Contains(strings.Split(list, "\n"), want) {
		return fmt.Errorf("files %q lack %q (the archive's binary)", list, want)
	}
	return nil
}

// image: the layout's index names the version and holds linux/amd64 and
// linux/arm64; each image runs the archive's binary as 65532, exposes the
// two ports, carries CA certificates and nothing that could run a shell.
func (v *verifier) image() {
	dir := filepath.Join(v.r.Dist, "oci")
	idx, err := layoutIndex(dir, v.r.Version)
	if err != nil {
		v.fail("oci/: "+dir, err)
		return
	}
	var linux []platform
	for _, p := range platforms {
		if p.OS == "linux" {
			linux = append(linux, p)
		}
	}
	results := checkImageIndex(idx, linux, v.binaries)
	for _, p := range linux {
		res := results[p]
		v.check(fmt.Sprintf("oci/ %s: user %s, entrypoint [%s], ports %v, CA bundle, no shell, the archive's binary", p, imageUser, imageEntrypoint, imagePorts), res.err)
		if res.err == nil && p == nativePlatform {
			v.check("oci/ "+p.String()+": /stepgate -version prints "+v.r.Stamp(), runVersion(v.ctx, res.binary, v.r.Stamp()))
		}
	}
}

// layoutIndex opens the image index of an OCI layout written by writeLayout.
func layoutIndex(dir, version string) (v1.ImageIndex, error) {
	root, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	im, err := root.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(im.Manifests) != 1 || !im.Manifests[0].MediaType.IsIndex() {
		return nil, fmt.Errorf("index.json lists %d manifests, want one image index", len(im.Manifests))
	}
	if got := im.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; got != version {
		return nil, fmt.Errorf("index.json names %q, want %q", got, version)
	}
	return root.ImageIndex(im.Manifests[0].Digest)
}

type imageResult struct {
	binary []byte
	err    error
}

// checkImageIndex checks each platform's image against the binary it must
// carry (binaries[p]); a platform missing from the index fails, and so
// does an extra one.
func checkImageIndex(idx v1.ImageIndex, want []platform, binaries map[platform][]byte) map[platform]imageResult {
	results := map[platform]imageResult{}
	fail := func(err error) map[platform]imageResult {
		for _, p := range want {
			results[p] = imageResult{err: err}
		}
		return results
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return fail(err)
	}
	var got []string
	for _, d := range im.Manifests {
		if d.Platform == nil {
			return fail(fmt.Errorf("manifest %s has no platform", d.Digest))
		}
		p := platform{d.Platform.OS, d.Platform.Architecture}
		got = append(got, p.String())
		img, err := idx.Image(d.Digest)
		if err != nil {
			results[p] = imageResult{err: err}
			continue
		}
		bin, err := checkImage(img, p)
		if err == nil && !bytes.Equal(bin, binaries[p]) {
			err = fmt.Errorf("/stepgate is not the %s archive's binary", p)
		}
		results[p] = imageResult{bin, err}
	}
	var names []string
	for _, p := range want {
		names = append(names, p.String())
	}
	if slices.Sort(got); !slices.Equal(got, names) {
		return fail(fmt.Errorf("the index holds %q, want %q", got, names))
	}
	return results
}

// shells are names that would let someone (or an exec probe) run commands.
var shells = []string{"sh", "bash", "ash", "dash", "zsh", "ksh", "busybox", "toybox"}

// checkImage checks one image's config and files and returns its /stepgate.
func checkImage(img v1.Image, p platform) ([]byte, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	c := cf.Config
	switch {
	case cf.OS != p.OS || cf.Architecture != p.Arch:
		return nil, fmt.Errorf("config is for %s/%s", cf.OS, cf.Architecture)
	case c.User != imageUser:
		return nil, fmt.Errorf("user %q, want %q", c.User, imageUser)
	case !slices.Equal(c.Entrypoint, []string{imageEntrypoint}) || len(c.Cmd) > 0:
		return nil, fmt.Errorf("entrypoint %q cmd %q, want [%s] and none", c.Entrypoint, c.Cmd, imageEntrypoint)
	case !slices.Equal(slices.Sorted(maps.Keys(c.ExposedPorts)), imagePorts):
		return nil, fmt.Errorf("exposed ports %q, want %q", slices.Sorted(maps.Keys(c.ExposedPorts)), imagePorts)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	files := map[string]tarFile{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, err
		}
		fs, err := readTar(rc)
		rc.Close()
		if err != nil {
			return nil, err
		}
		maps.Copy(files, fs)
	}
	for name, f := range files {
		name = strings.TrimPrefix(path.Clean("/"+name), "/")
		if slices.Contains(shells, path.Base(name)) {
			return nil, fmt.Errorf("the image has %s", name)
		}
		if f.typ == tar.TypeSymlink || f.typ == tar.TypeLink {
			return nil, fmt.Errorf("the image has a link %s (a way to smuggle a shell in under another name)", name)
		}
		if f.typ == tar.TypeReg && f.mode&0o111 != 0 && name != imageEntrypoint[1:] {
			return nil, fmt.Errorf("the image has an executable %s besides %s", name, imageEntrypoint)
		}
		if f.mode&0o6000 != 0 {
			return nil, fmt.Errorf("%s is setuid or setgid", name)
		}
	}
	if ca, ok := files[caBundlePath]; !ok || !x509.NewCertPool().AppendCertsFromPEM(ca.body) {
		return nil, fmt.Errorf("no CA certificates at /%s", caBundlePath)
	}
	if passwd := files["etc/passwd"]; !bytes.Contains(passwd.body, []byte(":x:65532:65532:")) {
		return nil, errors.New("/etc/passwd names no user 65532")
	}
	bin, ok := files[imageEntrypoint[1:]]
	if !ok || bin.mode&0o111 == 0 {
		return nil, fmt.Errorf("no executable %s", imageEntrypoint)
	}
	return bin.body, nil
}

// chart: the archive unpacks to stepgate/ with the release's version and
// without the chart-testing values; index.yaml lists it by digest.
func (v *verifier) chart() {
	name := v.r.chartName()
	file := filepath.Join(v.r.Dist, name)
	v.check(name+": stepgate/, version and appVersion "+v.r.Version+", no ci/", func() error {
		files, err := readTarGz(file)
		if err != nil {
			return err
		}
		for n := range files {
			if !strings.HasPrefix(n, "stepgate/") || strings.HasPrefix(n, "stepgate/ci/") {
				return fmt.Errorf("the archive holds %s", n)
			}
		}
		for _, need := range []string{"stepgate/values.yaml", "stepgate/templates/deployment.yaml"} {
			if _, ok := files[need]; !ok {
				return fmt.Errorf("no %s", need)
			}
		}
		var meta struct {
			Name       string `yaml:"name"`
			Version    string `yaml:"version"`
			AppVersion string `yaml:"appVersion"`
		}
		if err := yaml.Unmarshal(files["stepgate/Chart.yaml"].body, &meta); err != nil {
			return err
		}
		if meta.Name != "stepgate" || meta.Version != v.r.Version || meta.AppVersion != v.r.Version {
			return fmt.Errorf("Chart.yaml: %+v", meta)
		}
		return nil
	}())
	v.check("index.yaml: apiVersion v1, "+name+" by digest", func() error {
		b, err := os.ReadFile(filepath.Join(v.r.Dist, "index.yaml"))
		if err != nil {
			return err
		}
		var idx struct {
			APIVersion string `yaml:"apiVersion"`
			Entries    map[string][]struct {
				Version    string   `yaml:"version"`
				AppVersion string   `yaml:"appVersion"`
				Digest     string   `yaml:"digest"`
				Created    string   `yaml:"created"`
				URLs       []string `yaml:"urls"`
			} `yaml:"entries"`
		}
		if err := yaml.Unmarshal(b, &idx); err != nil {
			return err
		}
		sum, err := sha256File(file)
		if err != nil {
			return err
		}
		if idx.APIVersion != "v1" {
			return fmt.Errorf("apiVersion %q", idx.APIVersion)
		}
		for _, e := range idx.Entries["stepgate"] {
			if e.Version != v.r.Version {
				continue
			}
			if e.Digest != sum || e.AppVersion != v.r.Version || e.Created == "" || len(e.URLs) != 1 || path.Base(e.URLs[0]) != name {
				return fmt.Errorf("entry %+v (archive sha256 %s)", e, sum)
			}
			return nil
		}
		return fmt.Errorf("no stepgate %s entry", v.r.Version)
	}())
}

type tarFile struct {
	typ  byte
	mode int64
	body []byte
}

func readTarGz(file string) (map[string]tarFile, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return nil, err
	}
	return readTar(zr)
}

// readTar reads every entry of a tar stream; a name seen twice keeps the
// last, as extraction would.
func readTar(r io.Reader) (map[string]tarFile, error) {
	files := map[string]tarFile{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		files[strings.TrimSuffix(h.Name, "/")] = tarFile{h.Typeflag, h.Mode, body}
	}
}
