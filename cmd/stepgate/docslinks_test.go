package main

// The manual is README.md and the pages under docs/ (issue 23): these tests
// keep it navigable — every relative link and image resolves to a file in
// the repository and every #anchor to a heading of the page it names — and
// keep README's test commands the ones CI runs.

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// repoRoot is the repository root, seen from this package's directory.
var repoRoot = filepath.Join("..", "..")

// docPages is every page whose links are checked: README.md, docs/*.md,
// and the other hand-written Markdown a reader reaches from them.
func docPages(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) < 12 {
		t.Fatalf("docs/ has %d pages, want the dozen README links", len(pages))
	}
	for _, p := range []string{"README.md", "SECURITY.md", "deploy/README.md", "deploy/helm/stepgate/README.md"} {
		pages = append(pages, filepath.Join(repoRoot, filepath.FromSlash(p)))
	}
	return pages
}

var (
	// [text](target) and ![alt](target); the target ends at white space or ')'.
	mdLink = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	// <img src="target"> and <a href="target">.
	htmlLink   = regexp.MustCompile(`(?:src|href)="([^"]+)"`)
	inlineCode = regexp.MustCompile("`[^`]*`")
	mdLinkText = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
	heading    = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
)

// markdownLines returns the lines of a Markdown file outside fenced code
// blocks, with their 1-based numbers.
func markdownLines(t *testing.T, path string) (lines []string, numbers []int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fence := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if fence == "" && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")) {
			fence = trimmed[:3]
			continue
		}
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		lines = append(lines, line)
		numbers = append(numbers, n)
	}
	return lines, numbers
}

// githubSlug is the anchor GitHub gives a heading: lower case, every
// character but letters, digits, '-', '_' and spaces dropped, spaces made '-'.
func githubSlug(h string) string {
	h = mdLinkText.ReplaceAllString(h, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors is the set of heading anchors of a Markdown file; a repeated
// heading gets -1, -2, … as on GitHub.
func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	lines, _ := markdownLines(t, path)
	out := map[string]bool{}
	seen := map[string]int{}
	for _, l := range lines {
		m := heading.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		s := githubSlug(m[1])
		if n := seen[s]; n > 0 {
			out[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

func TestEveryRelativeLinkInTheDocsResolves(t *testing.T) {
	cache := map[string]map[string]bool{}
	checked := 0
	for _, page := range docPages(t) {
		rel, _ := filepath.Rel(repoRoot, page)
		lines, numbers := markdownLines(t, page)
		for i, line := range lines {
			line = inlineCode.ReplaceAllString(line, "")
			var targets []string
			for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
				targets = append(targets, m[1])
			}
			for _, m := range htmlLink.FindAllStringSubmatch(line, -1) {
				targets = append(targets, m[1])
			}
			for _, target := range targets {
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				checked++
				where := fmt.Sprintf("%s:%d: link %q", rel, numbers[i], target)
				file, frag, _ := strings.Cut(target, "#")
				dest := page
				if file != "" {
					dest = filepath.Join(filepath.Dir(page), filepath.FromSlash(file))
					if r, err := filepath.Rel(repoRoot, dest); err != nil || strings.HasPrefix(r, "..") {
						t.Errorf("%s leaves the repository", where)
						continue
					}
					if _, err := os.Stat(dest); err != nil {
						t.Errorf("%s: no such file or directory", where)
						continue
					}
				}
				if frag == "" {
					continue
				}
				if !strings.HasSuffix(dest, ".md") {
					t.Errorf("%s: an anchor into a file that is not Markdown", where)
					continue
				}
				if cache[dest] == nil {
					cache[dest] = anchors(t, dest)
				}
				if !cache[dest][frag] {
					t.Errorf("%s: %s has no heading with anchor #%s", where, filepath.Base(dest), frag)
				}
			}
		}
	}
	if checked < 100 {
		t.Fatalf("only %d relative links checked: is the link pattern still right?", checked)
	}
}

// README's Documentation list links every page in docs/.
func TestTheREADMELinksEveryDocsPage(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, list, ok := strings.Cut(string(b), "\n## Documentation\n")
	if !ok {
		t.Fatal(`README.md has no "## Documentation" section`)
	}
	list, _, _ = strings.Cut(list, "\n## ")
	pages, _ := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	for _, p := range pages {
		name := "docs/" + filepath.Base(p)
		if name == "docs/README.md" {
			continue // the index, linked from the top of README
		}
		if !strings.Contains(list, "("+name+")") {
			t.Errorf("README's Documentation list does not link %s", name)
		}
	}
}

// The screenshots README shows stay small.
func TestTheDocsImagesAreSmall(t *testing.T) {
	images, _ := filepath.Glob(filepath.Join(repoRoot, "docs", "images", "*"))
	if len(images) == 0 {
		t.Fatal("no images in docs/images")
	}
	for _, p := range images {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 100<<10 {
			t.Errorf("%s is %d KB; keep each under 100 KB (crop it)", filepath.Base(p), fi.Size()>>10)
		}
	}
}

// README's "Two commands" are what .ci/run runs: the root module's go test
// line verbatim, and the deploy module's go test.
func TestTheREADMETestCommandsAreWhatCIRuns(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	ci, err := os.ReadFile(filepath.Join(repoRoot, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(readme), "\n## Two commands\n")
	if !ok {
		t.Fatal(`README.md has no "## Two commands" section`)
	}
	_, block, _ := strings.Cut(sec, "```sh\n")
	block, _, _ = strings.Cut(block, "```")
	var tests int
	for _, line := range strings.Split(block, "\n") {
		cmd, _, _ := strings.Cut(line, "#")
		cmd = strings.TrimSpace(cmd)
		if !strings.Contains(cmd, "go test") {
			continue
		}
		tests++
		if dir, rest, ok := strings.Cut(strings.Trim(cmd, "()"), " && "); ok {
			// (cd deploy && go test ./...): CI runs the same in the same directory.
			found := false
			for _, l := range strings.Split(string(ci), "\n") {
				if strings.Contains(l, "("+dir+" ") && strings.Contains(l, rest) {
					found = true
				}
			}
			if !found {
				t.Errorf(".ci/run does not run README's %q", cmd)
			}
			continue
		}
		if !bytes.Contains(ci, []byte("\n"+cmd+"\n")) {
			t.Errorf(".ci/run does not run README's %q as written", cmd)
		}
	}
	if tests != 2 {
		t.Errorf("README's Two commands block has %d go test lines, want 2 (root module, deploy module)", tests)
	}
}
