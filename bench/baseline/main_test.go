package main

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os/exec"
	"strings"
	"testing"
)

// The baseline is what every ratio of the bench is taken against: it must
// stay what a team would build with the standard library alone. A package
// of stepgate's (or the simulator) linked in would make the collector scan
// its globals and heap in the baseline too, and flatter stepgate.
func TestBaselineIsStandardLibraryOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p != "github.com/stepgate/stepgate/bench/baseline" {
			t.Errorf("the baseline links %s; it must build from the standard library alone", p)
		}
	}
}

func TestContractSendsWhatStepgateSends(t *testing.T) {
	in := httptest.NewRequest(http.MethodGet, "/admin/1k", nil)
	in.RemoteAddr = "192.0.2.7:40000"
	in.Header.Set("Cookie", "theme=dark; stepgate=SEALED; lang=en")
	pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
	values := []string{"id.token.sig", "sub-1", "alice", "1795000000", "MFA-Only", "otp,sms"}
	withContract(pr, values)
	h := pr.Out.Header
	if got := h.Get("Cookie"); got != "theme=dark; lang=en" {
		t.Errorf("Cookie = %q, want the step-up cookie taken out", got)
	}
	if got := h.Get("X-Real-Ip"); got != "192.0.2.7" {
		t.Errorf("X-Real-Ip = %q, want the peer", got)
	}
	for i, name := range []string{"X-Stepgate-Id-Token", "X-Stepgate-Subject", "X-Stepgate-User", "X-Stepgate-Auth-Time", "X-Stepgate-Acr", "X-Stepgate-Amr"} {
		if got := h.Get(name); got != values[i] {
			t.Errorf("%s = %q, want %q", name, got, values[i])
		}
	}
}
