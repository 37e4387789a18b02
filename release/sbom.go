package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

func (r *release) sbomName(p platform) string {
	return fmt.Sprintf("stepgate_%s_%s_%s.sbom.cdx.json", r.Version, p.OS, p.Arch)
}

// buildSBOM writes one CycloneDX SBOM per binary with cyclonedx-gomod's
// bin mode: it lists the modules the Go linker recorded in that binary,
// so it names exactly what ships (a test-only or other-platform module
// cannot appear) and needs no git (its app mode reads the repository with
// go-git, which cannot open a git worktree and reads no version we stamp).
// The tool is a tool dependency of this module: go tool runs it from here.
func buildSBOM(ctx context.Context, r *release) error {
	here, err := os.Getwd()
	if err != nil {
		return err
	}
	for _, p := range platforms {
		_, err := command(ctx, here, nil, "go", "tool", "cyclonedx-gomod", "bin", "-json", "-noserial",
			"-version", r.Stamp(), "-output", filepath.Join(r.Dist, r.sbomName(p)), r.binaryPath(p))
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}
