package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the "deb" packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the "rpm" packager
)

// packageFormats are the Linux packages of each linux binary.
var packageFormats = []string{"deb", "rpm"}

func (r *release) packageName(p platform, format string) string {
	return fmt.Sprintf("stepgate_%s_%s_%s.%s", r.Version, p.OS, p.Arch, format)
}

// buildPackages writes a .deb and an .rpm for each linux binary with nfpm,
// the library goreleaser uses: no dpkg-deb or rpmbuild needed, and the
// same bytes on any builder. A package installs the binary as
// /usr/bin/stepgate and its licence; it starts nothing (stepgate needs
// its configuration first, and runs mostly as a container).
func buildPackages(_ context.Context, r *release) error {
	for _, p := range platforms {
		if p.OS != "linux" {
			continue
		}
		for _, format := range packageFormats {
			if err := r.buildPackage(p, format); err != nil {
				return fmt.Errorf("%s %s: %w", format, p, err)
			}
		}
	}
	return nil
}

func (r *release) buildPackage(p platform, format string) error {
	packager, err := nfpm.Get(format)
	if err != nil {
		return err
	}
	// rpm marks the licence %license; deb has no such type, only the path.
	licence := ""
	if format == "rpm" {
		licence = files.TypeRPMLicense
	}
	file := func(src, dst string, mode os.FileMode, typ string) *files.Content {
		return &files.Content{Source: src, Destination: dst, Type: typ,
			FileInfo: &files.ContentFileInfo{Mode: mode, MTime: r.Time, Owner: "root", Group: "root"}}
	}
	info := nfpm.WithDefaults(&nfpm.Info{
		Name:        "stepgate",
		Arch:        p.Arch, // nfpm maps GOARCH to each format's name (arm64: aarch64 in rpm)
		Platform:    p.OS,
		Version:     r.Version, // semver: a prerelease becomes deb's 0.1.0~snapshot…, rpm's Release
		Maintainer:  "stepgate maintainers <https://github.com/stepgate/stepgate>",
		Description: "Step-up MFA through PingOne in front of a web app: a reverse proxy and forward-auth gateway.",
		Vendor:      "stepgate",
		Homepage:    "https://github.com/stepgate/stepgate",
		License:     "Apache-2.0",
		Section:     "net",
		Priority:    "optional",
		MTime:       r.Time,
		Overridables: nfpm.Overridables{
			Contents: files.Contents{
				file(r.binaryPath(p), "/usr/bin/stepgate", 0o755, ""),
				file(filepath.Join(r.Root, "LICENSE"), "/usr/share/doc/stepgate/LICENSE", 0o644, licence),
				file(filepath.Join(r.Root, "NOTICE"), "/usr/share/doc/stepgate/NOTICE", 0o644, licence),
			},
		},
	})
	if err := nfpm.PrepareForPackager(info, format); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(r.Dist, r.packageName(p, format)))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := packager.Package(info, f); err != nil {
		return err
	}
	return f.Close()
}
