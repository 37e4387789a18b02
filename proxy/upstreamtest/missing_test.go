//go:build unix

package upstreamtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

var ghost = Kind{Name: "ghost", Package: "ghost-server", binary: "/nonexistent/ghost-server"}

// A server that is not installed skips the test loudly on a developer's
// machine: nothing is started, nothing fails.
func TestAMissingServerSkipsOutsideCI(t *testing.T) {
	t.Setenv("CI", "")
	var sub *testing.T
	t.Run("ghost", func(t *testing.T) {
		sub = t
		ghost.Start(t)
		t.Error("Start returned for a missing binary")
	})
	if !sub.Skipped() {
		t.Errorf("a missing server did not skip the test")
	}
}

// Under CI=true (where .ci/run installs every server) the same test fails,
// naming the Debian package to install.
func TestAMissingServerFailsUnderCI(t *testing.T) {
	if os.Getenv("UPSTREAMTEST_GHOST") == "1" {
		ghost.Start(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestAMissingServerFailsUnderCI$", "-test.v")
	cmd.Env = append(os.Environ(), "CI=true", "UPSTREAMTEST_GHOST=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the test passed under CI=true with its server missing:\n%s", out)
	}
	if !strings.Contains(string(out), "--- FAIL") || !strings.Contains(string(out), "apt-get install ghost-server") {
		t.Errorf("want a failure naming the package; got:\n%s", out)
	}
}
