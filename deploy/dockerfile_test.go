package deploy

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	line int    // 1-based line where it starts
	cmd  string // upper-cased, e.g. "FROM"
	args string
}

// stage is one FROM … up to the next FROM.
type stage struct {
	image, name  string
	instructions []instruction
}

// parseDockerfile splits a Dockerfile into stages. It understands what our
// Dockerfile uses: comments, parser directives, and backslash continuations
// (comment lines inside a continuation are skipped, as BuildKit does).
func parseDockerfile(text string) ([]stage, error) {
	var (
		insts   []instruction
		current *instruction
	)
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if strings.HasPrefix(line, "#") || (line == "" && current == nil) {
			continue
		}
		cont := strings.HasSuffix(line, "\\")
		line = strings.TrimSpace(strings.TrimSuffix(line, "\\"))
		if current == nil {
			cmd, args, _ := strings.Cut(line, " ")
			current = &instruction{line: i + 1, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		} else if line != "" {
			current.args += " " + line
		}
		if !cont {
			insts = append(insts, *current)
			current = nil
		}
	}
	if current != nil {
		return nil, fmt.Errorf("line %d: unterminated continuation", current.line)
	}
	var stages []stage
	for _, in := range insts {
		if in.cmd == "FROM" {
			fields := strings.Fields(in.args)
			fields = slices.DeleteFunc(fields, func(f string) bool { return strings.HasPrefix(f, "--") })
			st := stage{image: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				st.name = fields[2]
			}
			stages = append(stages, st)
			continue
		}
		if in.cmd == "ARG" && len(stages) == 0 {
			continue // global build args before the first FROM
		}
		if len(stages) == 0 {
			return nil, fmt.Errorf("line %d: %s before FROM", in.line, in.cmd)
		}
		stages[len(stages)-1].instructions = append(stages[len(stages)-1].instructions, in)
	}
	return stages, nil
}

func (s stage) find(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instructions {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// checkDockerfile returns every violated property of the image build.
func checkDockerfile(text string) []string {
	stages, err := parseDockerfile(text)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if len(stages) < 2 {
		return []string{fmt.Sprintf("want a multi-stage build, got %d stage(s)", len(stages))}
	}

	stageNames := map[string]bool{}
	for _, s := range stages {
		image := s.image
		if !stageNames[image] {
			if strings.Contains(image, "@sha256:") {
				// pinned by digest
			} else if name := image[strings.LastIndex(image, "/")+1:]; !strings.Contains(name, ":") {
				fail("FROM %s has no tag", image)
			} else if tag := name[strings.LastIndex(name, ":")+1:]; tag == "latest" {
				fail("FROM %s uses the latest tag", image)
			}
		}
		if s.name != "" {
			stageNames[s.name] = true
		}
	}

	// The build stage: a static, reproducible, version-stamped binary.
	build := stages[0]
	if !strings.HasPrefix(build.image, "golang:") {
		fail("build stage image %q is not golang:", build.image)
	}
	all := ""
	for _, in := range build.instructions {
		all += in.cmd + " " + in.args + "\n"
	}
	if !strings.Contains(all, "CGO_ENABLED=0") {
		fail("build stage does not set CGO_ENABLED=0")
	}
	if !slices.ContainsFunc(build.find("ARG"), func(in instruction) bool { return in.args == "VERSION=dev" }) {
		fail("build stage lacks ARG VERSION=dev")
	}
	var goBuild string
	for _, in := range build.find("RUN") {
		if strings.Contains(in.args, "go build") {
			goBuild = in.args
		}
	}
	for _, want := range []string{"-trimpath", "-s -w", "-X main.version=${VERSION}", "./cmd/stepgate"} {
		if !strings.Contains(goBuild, want) {
			fail("go build does not use %s", want)
		}
	}

	// The final stage: distroless, non-root, nothing to run but stepgate.
	final := stages[len(stages)-1]
	if !strings.HasPrefix(final.image, "gcr.io/distroless/static") || !strings.HasSuffix(final.image, ":nonroot") {
		fail("final image %q is not gcr.io/distroless/static…:nonroot", final.image)
	}
	users := final.find("USER")
	if len(users) == 0 {
		fail("final stage sets no USER")
	} else if u := users[len(users)-1].args; u != "65532" && u != "65532:65532" && u != "nonroot" && u != "nonroot:nonroot" {
		fail("final USER is %q, want 65532 (nonroot)", u)
	}
	if runs := final.find("RUN"); len(runs) > 0 {
		fail("final stage has RUN at line %d; it has no shell and must need none", runs[0].line)
	}
	if hc := final.find("HEALTHCHECK"); len(hc) > 0 {
		fail("final stage has a HEALTHCHECK; distroless has no shell or curl to run it")
	}
	entry := final.find("ENTRYPOINT")
	if len(entry) != 1 || entry[0].args != `["/stepgate"]` {
		fail(`final ENTRYPOINT must be exactly ["/stepgate"] (exec form, no shell), got %v`, entry)
	}
	expose := final.find("EXPOSE")
	var ports []string
	for _, in := range expose {
		ports = append(ports, strings.Fields(in.args)...)
	}
	for _, p := range []string{"8080", "9090"} {
		if !slices.Contains(ports, p) {
			fail("final stage does not EXPOSE %s", p)
		}
	}
	copies := final.find("COPY")
	if !slices.ContainsFunc(copies, func(in instruction) bool {
		return strings.HasPrefix(in.args, "--from="+build.name+" ") && strings.HasSuffix(in.args, " /stepgate")
	}) {
		fail("final stage does not COPY --from=%s the binary to /stepgate", build.name)
	}
	return problems
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	good := string(data)
	if problems := checkDockerfile(good); len(problems) > 0 {
		for _, p := range problems {
			t.Error(p)
		}
	}

	// Each rule must fire when the Dockerfile regresses.
	tests := []struct {
		name        string
		old, new    string
		wantProblem string
	}{
		{"a single-stage build is refused", "FROM gcr.io/distroless/static-debian12:nonroot\nCOPY --from=build /out/stepgate /stepgate\n", "", "multi-stage"},
		{"cgo left on is refused", "CGO_ENABLED=0", "CGO_ENABLED=1", "CGO_ENABLED=0"},
		{"a root final user is refused", "USER 65532:65532", "USER root", "want 65532"},
		{"no final user is refused", "USER 65532:65532\n", "", "sets no USER"},
		{"a latest tag is refused", "gcr.io/distroless/static-debian12:nonroot", "gcr.io/distroless/static-debian12:latest", "latest"},
		{"an untagged builder is refused", "golang:${GO_VERSION}", "golang", "has no tag"},
		{"a shell-form entry point is refused", `ENTRYPOINT ["/stepgate"]`, "ENTRYPOINT /stepgate", "ENTRYPOINT"},
		{"a shell command in the final stage is refused", `ENTRYPOINT ["/stepgate"]`, "RUN echo hi\nENTRYPOINT [\"/stepgate\"]", "RUN at line"},
		{"an unstamped version is refused", "-X main.version=${VERSION}", "", "main.version"},
		{"a missing admin port is refused", "EXPOSE 8080 9090", "EXPOSE 8080", "EXPOSE 9090"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(good, tt.old) {
				t.Fatalf("Dockerfile no longer contains %q; update the test", tt.old)
			}
			problems := checkDockerfile(strings.ReplaceAll(good, tt.old, tt.new))
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tt.wantProblem) }) {
				t.Errorf("got problems %q, want one containing %q", problems, tt.wantProblem)
			}
		})
	}
}

func TestDockerignoreKeepsTheContextSmallAndTheSourcesIn(t *testing.T) {
	data, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for line := range strings.SplitSeq(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	for _, want := range []string{".git", "deploy"} {
		if !slices.Contains(patterns, want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
	for _, needed := range []string{"go.mod", "go.sum", "cmd", "*.go", "**/*.go", "*"} {
		if slices.Contains(patterns, needed) {
			t.Errorf(".dockerignore excludes %s, which the build needs", needed)
		}
	}
}
