package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's contract, shared with the Dockerfile (deploy/dockerfile_test.go
// holds the Dockerfile to the same user, entry point and ports) and with
// the Helm chart and kustomize base (runAsUser 65532, probes on 9090).
const (
	imageUser       = "65532:65532"
	imageEntrypoint = "/stepgate"
	caBundlePath    = "etc/ssl/certs/ca-certificates.crt"
)

var imagePorts = []string{"8080/tcp", "9090/tcp"} // proxy (STEPGATE_LISTEN), admin (STEPGATE_ADMIN_LISTEN)

// The user entries distroless's nonroot image has: a name for 65532, so
// that tools which look the user up find one, and root for files it owns.
const (
	etcPasswd = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	etcGroup  = "root:x:0:\nnonroot:x:65532:\n"
	// Go's resolver reads it; "files dns" is glibc's default order.
	etcNsswitch = "hosts: files dns\n"
)

// baseEntries are everything in the image but the binary: what
// distroless/static gives (CA certificates, the users, a writable /tmp
// and a home for 65532) and no shell, no package manager, no libc.
func baseEntries(caBundle []byte) []tarEntry {
	return []tarEntry{
		{Name: "etc", Mode: 0o755, Dir: true},
		{Name: "etc/group", Mode: 0o644, Body: []byte(etcGroup)},
		{Name: "etc/nsswitch.conf", Mode: 0o644, Body: []byte(etcNsswitch)},
		{Name: "etc/passwd", Mode: 0o644, Body: []byte(etcPasswd)},
		{Name: "etc/ssl", Mode: 0o755, Dir: true},
		{Name: "etc/ssl/certs", Mode: 0o755, Dir: true},
		{Name: caBundlePath, Mode: 0o644, Body: caBundle},
		{Name: "home", Mode: 0o755, Dir: true},
		{Name: "home/nonroot", Mode: 0o700, Dir: true, UID: 65532, GID: 65532},
		{Name: "tmp", Mode: 0o1777, Dir: true},
	}
}

// buildImage assembles the linux images from scratch, with no daemon and no
// base image to pull, and writes them as an OCI image layout, dist/oci: its
// index.json names one image index (annotated with the version) holding
// linux/amd64 and linux/arm64. `crane push dist/oci REF` publishes it as it
// is; `crane` and `skopeo` can also read it locally.
func buildImage(_ context.Context, r *release) error {
	ca, err := os.ReadFile(r.CABundle)
	if err != nil {
		return fmt.Errorf("CA bundle: %w (install Debian's ca-certificates)", err)
	}
	if pool := x509.NewCertPool(); !pool.AppendCertsFromPEM(ca) {
		return fmt.Errorf("CA bundle %s holds no PEM certificate", r.CABundle)
	}
	var linux []platform
	for _, p := range platforms {
		if p.OS == "linux" {
			linux = append(linux, p)
		}
	}
	idx, err := r.imageIndex(ca, linux, func(p platform) ([]byte, error) { return os.ReadFile(r.binaryPath(p)) })
	if err != nil {
		return err
	}
	return writeLayout(filepath.Join(r.Dist, "oci"), idx, r.Version)
}

// imageIndex builds one image per platform around the binary binary(p).
func (r *release) imageIndex(ca []byte, ps []platform, binary func(platform) ([]byte, error)) (v1.ImageIndex, error) {
	base, err := layer(baseEntries(ca), r)
	if err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range ps {
		bin, err := binary(p)
		if err != nil {
			return nil, err
		}
		app, err := layer([]tarEntry{{Name: imageEntrypoint[1:], Mode: 0o755, Body: bin}}, r)
		if err != nil {
			return nil, err
		}
		img, err := r.image(p, base, app)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch}},
		})
	}
	return mutate.Annotations(idx, r.annotations()).(v1.ImageIndex), nil
}

func (r *release) annotations() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "stepgate",
		"org.opencontainers.image.description": "Step-up MFA through PingOne in front of a web app",
		"org.opencontainers.image.source":      "https://github.com/stepgate/stepgate",
		"org.opencontainers.image.url":         "https://github.com/stepgate/stepgate",
		"org.opencontainers.image.version":     r.Version,
		"org.opencontainers.image.revision":    r.Revision,
		"org.opencontainers.image.created":     r.Time.Format("2006-01-02T15:04:05Z07:00"),
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.base.name":   "scratch",
	}
}

func (r *release) image(p platform, layers ...v1.Layer) (v1.Image, error) {
	ports := map[string]struct{}{}
	for _, port := range imagePorts {
		ports[port] = struct{}{}
	}
	cfg := &v1.ConfigFile{
		Architecture: p.Arch,
		OS:           p.OS,
		Created:      v1.Time{Time: r.Time},
		Config: v1.Config{
			User:         imageUser,
			Entrypoint:   []string{imageEntrypoint},
			ExposedPorts: ports,
			Env:          []string{"SSL_CERT_FILE=/" + caBundlePath},
			WorkingDir:   "/",
			Labels:       r.annotations(),
		},
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	for i, l := range layers {
		by := []string{"users, CA certificates, /tmp", "stepgate " + r.Version}[min(i, 1)]
		img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: types.OCILayer,
			History: v1.History{Created: v1.Time{Time: r.Time}, CreatedBy: "release: " + by}})
		if err != nil {
			return nil, err
		}
	}
	return img, nil
}

// layer is a gzipped tar layer of entries, the same bytes on every build.
func layer(entries []tarEntry, r *release) (v1.Layer, error) {
	var buf bytes.Buffer
	if err := writeTar(tar.NewWriter(&buf), entries, r.Time); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// writeLayout writes idx as the only entry of a new OCI layout at dir,
// named by version (org.opencontainers.image.ref.name), as skopeo and
// crane expect.
func writeLayout(dir string, idx v1.ImageIndex, version string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, mutate.IndexMediaType(empty.Index, types.OCIImageIndex))
	if err != nil {
		return err
	}
	return p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": version}))
}
