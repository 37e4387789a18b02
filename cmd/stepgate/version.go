package main

import (
	"fmt"
	"io"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
)

// version is stamped at release with -ldflags "-X main.version=v1.2.3"
// (the Dockerfile does). Unstamped, buildVersion derives one from what the
// Go toolchain recorded, so that a source build is still identifiable.
var version string

// versionInfo is what `stepgate version` prints; Version is also the
// version label of stepgate_build_info.
type versionInfo struct {
	Version   string // stamped, a module version, or dev-<commit time>-<revision>[+dirty]
	Revision  string // VCS revision (full), "" when unknown
	Time      string // commit time of Revision (RFC 3339), "" when unknown
	Modified  bool   // built from a working tree with uncommitted changes
	GoVersion string
	Platform  string // GOOS/GOARCH of the running binary
}

// pseudoVersion matches a Go pseudo-version's time-and-revision tail
// (go.dev/ref/mod#pseudo-versions): not a release.
var pseudoVersion = regexp.MustCompile(`[-.]\d{14}-[0-9a-f]{12}(\+dirty)?$`)

// buildVersion decides the version from the stamped string and the build
// info (nil when the binary carries none). In order: the stamped version; a
// released module version (go install …@v1.2.3, or a build at a tag); the
// VCS revision and its time, "+dirty" when the tree was modified; a
// pseudo-version without VCS data (go install …@commit); "dev".
func buildVersion(stamped string, bi *debug.BuildInfo) versionInfo {
	v := versionInfo{Version: stamped, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	var module string
	if bi != nil {
		v.GoVersion = bi.GoVersion
		if m := bi.Main.Version; m != "(devel)" {
			module = m
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Revision = s.Value
			case "vcs.time":
				v.Time = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if v.Version != "" {
		return v
	}
	release := module != "" && !pseudoVersion.MatchString(module) && !strings.HasSuffix(module, "+dirty")
	switch {
	case release:
		v.Version = module
	case v.Revision != "":
		v.Version = "dev-" + compactTime(v.Time) + shortRevision(v.Revision)
		if v.Modified {
			v.Version += "+dirty"
		}
	case module != "":
		v.Version = module
	default:
		v.Version = "dev"
	}
	return v
}

// currentVersion is this binary's version.
func currentVersion() versionInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return buildVersion(version, bi)
}

// compactTime turns 2026-01-06T14:31:00Z into "20260106143100-", the form
// of a pseudo-version, so that dev versions sort by commit time; "" stays "".
func compactTime(t string) string {
	var b strings.Builder
	for _, c := range t {
		if c >= '0' && c <= '9' {
			b.WriteRune(c)
		}
		if b.Len() == 14 {
			return b.String() + "-"
		}
	}
	return ""
}

// shortRevision is the first 12 characters of a revision, as Go's
// pseudo-versions and `git log --abbrev=12` show it.
func shortRevision(r string) string {
	if len(r) > 12 {
		return r[:12]
	}
	return r
}

// printVersion is `stepgate version` and `stepgate -version`.
func printVersion(w io.Writer, v versionInfo) {
	fmt.Fprintf(w, "stepgate %s\n", v.Version)
	rev := v.Revision
	if rev == "" {
		rev = "unknown (built without VCS information)"
	} else if v.Modified {
		rev += " (with uncommitted changes)"
	}
	fmt.Fprintf(w, "revision: %s\n", rev)
	if v.Time != "" {
		fmt.Fprintf(w, "commit time: %s\n", v.Time)
	}
	fmt.Fprintf(w, "go: %s %s\n", v.GoVersion, v.Platform)
}
