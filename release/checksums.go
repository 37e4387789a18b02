package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

func (r *release) checksumsName() string { return "stepgate_" + r.Version + "_checksums.txt" }

// writeChecksums writes sha256sum's format ("HASH  NAME") for every file a
// user downloads: the archives, packages, SBOMs and the chart. index.yaml
// changes with every release and oci/ is checked by digest already.
func writeChecksums(_ context.Context, r *release) error {
	names, err := checksummed(r.Dist, r.checksumsName())
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, name := range names {
		sum, err := sha256File(filepath.Join(r.Dist, name))
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s  %s\n", sum, name)
	}
	return os.WriteFile(filepath.Join(r.Dist, r.checksumsName()), []byte(b.String()), 0o644)
}

// checksummed lists the top-level files of dist that the checksums cover.
func checksummed(dist, checksums string) ([]string, error) {
	entries, err := os.ReadDir(dist)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || name == checksums || name == "index.yaml" || name == "release.json" {
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

func sha256File(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
