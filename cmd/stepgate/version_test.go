package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	vcs := func(main string, kv ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/stepgate/stepgate", Version: main}}
		for i := 0; i+1 < len(kv); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return bi
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	for _, tt := range []struct {
		name     string
		stamped  string
		bi       *debug.BuildInfo
		want     string
		revision string
	}{
		{"a stamped version wins, and the revision is still read", "v1.2.3", vcs("(devel)", "vcs.revision", rev, "vcs.time", "2026-01-06T14:31:00Z"), "v1.2.3", rev},
		{"a source build in a clean checkout names its commit", "", vcs("(devel)", "vcs.revision", rev, "vcs.time", "2026-01-06T14:31:00Z", "vcs.modified", "false"),
			"dev-20260106143100-0123456789ab", rev},
		{"a source build with local changes says +dirty", "", vcs("(devel)", "vcs.revision", rev, "vcs.time", "2026-01-06T14:31:00Z", "vcs.modified", "true"),
			"dev-20260106143100-0123456789ab+dirty", rev},
		{"Go's own pseudo-version of a checkout gives way to the revision", "", vcs("v0.0.0-20260106143100-0123456789ab+dirty", "vcs.revision", rev, "vcs.time", "2026-01-06T14:31:00Z", "vcs.modified", "true"),
			"dev-20260106143100-0123456789ab+dirty", rev},
		{"a build at a release tag is that release", "", vcs("v1.4.0", "vcs.revision", rev, "vcs.time", "2026-01-06T14:31:00Z"), "v1.4.0", rev},
		{"go install at a release", "", vcs("v1.4.0"), "v1.4.0", ""},
		{"go install at a commit keeps the pseudo-version", "", vcs("v0.0.0-20260106143100-0123456789ab"), "v0.0.0-20260106143100-0123456789ab", ""},
		{"a revision without a time", "", vcs("(devel)", "vcs.revision", rev), "dev-0123456789ab", rev},
		{"no VCS information at all", "", vcs("(devel)"), "dev", ""},
		{"no build information at all", "", nil, "dev", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := buildVersion(tt.stamped, tt.bi)
			if got.Version != tt.want || got.Revision != tt.revision {
				t.Errorf("version %q, revision %q; want %q, %q", got.Version, got.Revision, tt.want, tt.revision)
			}
			if got.GoVersion == "" || got.Platform != runtime.GOOS+"/"+runtime.GOARCH {
				t.Errorf("go %q on %q", got.GoVersion, got.Platform)
			}
		})
	}
}

func TestPrintVersionSaysWhatWasBuilt(t *testing.T) {
	var b strings.Builder
	printVersion(&b, buildVersion("", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.time", Value: "2026-01-06T14:31:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}}))
	want := "stepgate dev-20260106143100-0123456789ab+dirty\n" +
		"revision: 0123456789abcdef0123456789abcdef01234567 (with uncommitted changes)\n" +
		"commit time: 2026-01-06T14:31:00Z\n" +
		"go: go1.26.0 " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestVersionCommand(t *testing.T) {
	want := currentVersion()
	for _, args := range [][]string{{"version"}, {"-version"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, _, err := runWith(t, map[string]string{}, args...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(out, "stepgate "+want.Version+"\nrevision: ") || !strings.Contains(out, "\ngo: "+want.GoVersion+" ") {
				t.Errorf("got %q, want the version, revision and Go version", out)
			}
		})
	}
	if _, _, err := runWith(t, map[string]string{}, "version", "--long"); err == nil {
		t.Error("version with an argument was accepted")
	}
}
