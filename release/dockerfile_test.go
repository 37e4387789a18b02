package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The released image and the Dockerfile's must agree on what a deployment
// relies on (the chart's runAsUser, its probes on 9090, the entry point
// that `docker run IMAGE version` appends to).
func TestTheImageAndTheDockerfileAgree(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	last := func(instr string) string {
		m := regexp.MustCompile(`(?m)^`+instr+` (.*)$`).FindAllStringSubmatch(text, -1)
		if len(m) == 0 {
			t.Fatalf("the Dockerfile has no %s", instr)
		}
		return strings.TrimSpace(m[len(m)-1][1])
	}
	if got := last("USER"); got != imageUser {
		t.Errorf("Dockerfile USER %s, the release image's %s", got, imageUser)
	}
	if got, want := last("ENTRYPOINT"), `["`+imageEntrypoint+`"]`; got != want {
		t.Errorf("Dockerfile ENTRYPOINT %s, the release image's %s", got, want)
	}
	var ports []string
	for _, p := range strings.Fields(last("EXPOSE")) {
		ports = append(ports, p+"/tcp")
	}
	if slices.Sort(ports); !slices.Equal(ports, imagePorts) {
		t.Errorf("Dockerfile EXPOSE %v, the release image's %v", ports, imagePorts)
	}
}
