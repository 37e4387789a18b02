package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// platform is one GOOS/GOARCH that gets a binary.
type platform struct{ OS, Arch string }

func (p platform) String() string { return p.OS + "/" + p.Arch }

// platforms are the release's binaries; the image and the packages take
// the linux ones.
var platforms = []platform{{"linux", "amd64"}, {"linux", "arm64"}, {"darwin", "amd64"}, {"darwin", "arm64"}}

func (r *release) binaryPath(p platform) string {
	return filepath.Join(r.Dist, "build", p.OS+"_"+p.Arch, "stepgate")
}

func (r *release) archiveName(p platform) string {
	return fmt.Sprintf("stepgate_%s_%s_%s.tar.gz", r.Version, p.OS, p.Arch)
}

// buildBinaries cross-compiles every platform, two at a time (the link
// step is single-threaded, the compile is not), and archives each binary
// with the licence and the README, as a user downloads it.
func buildBinaries(ctx context.Context, r *release) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, 2)
	)
	for _, p := range platforms {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := r.buildBinary(ctx, p); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", p, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

func (r *release) buildBinary(ctx context.Context, p platform) error {
	out := r.binaryPath(p)
	// CGO off: a static binary that needs no libc in the image. -trimpath
	// keeps the builder's paths out; -s -w drop the symbol and DWARF tables
	// (the module build information that verify reads stays).
	_, err := command(ctx, r.Root, []string{"CGO_ENABLED=0", "GOOS=" + p.OS, "GOARCH=" + p.Arch},
		"go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+r.Stamp(), "-o", out, "./cmd/stepgate")
	if err != nil {
		return err
	}
	entries := []tarEntry{{Name: "stepgate", Mode: 0o755, Source: out}}
	for _, doc := range []string{"LICENSE", "NOTICE", "README.md"} {
		entries = append(entries, tarEntry{Name: doc, Mode: 0o644, Source: filepath.Join(r.Root, doc)})
	}
	return writeTarGz(filepath.Join(r.Dist, r.archiveName(p)), entries, r.Time)
}

// tarEntry is one file or directory of an archive or an image layer.
type tarEntry struct {
	Name     string
	Mode     int64
	UID, GID int
	Dir      bool
	Body     []byte // the content, or
	Source   string // a file to copy it from
}

// writeTar writes entries in the order given, each with mtime and no user
// or group names, so that the same inputs give the same bytes.
func writeTar(w *tar.Writer, entries []tarEntry, mtime time.Time) error {
	for _, e := range entries {
		body := e.Body
		if e.Source != "" {
			b, err := os.ReadFile(e.Source)
			if err != nil {
				return err
			}
			body = b
		}
		h := &tar.Header{Name: e.Name, Mode: e.Mode, Uid: e.UID, Gid: e.GID, ModTime: mtime, Format: tar.FormatPAX}
		if e.Dir {
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(body))
		}
		if err := w.WriteHeader(h); err != nil {
			return err
		}
		if !e.Dir {
			if _, err := w.Write(body); err != nil {
				return err
			}
		}
	}
	return w.Close()
}

func writeTarGz(path string, entries []tarEntry, mtime time.Time) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zw, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	if err := writeTar(tar.NewWriter(zw), entries, mtime); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// metadata is dist/release.json: what verify checks the artefacts against.
type metadata struct {
	Version  string    `json:"version"`
	Stamp    string    `json:"stamp"`
	Revision string    `json:"revision"`
	Time     time.Time `json:"time"`
	Snapshot bool      `json:"snapshot"`
	Go       string    `json:"go"`
}

func writeMetadata(r *release) error {
	b, err := json.MarshalIndent(metadata{r.Version, r.Stamp(), r.Revision, r.Time, r.Snapshot, r.goVersion}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(r.Dist, "release.json"), append(b, '\n'), 0o644)
}
