package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stepgate/stepgate/cmd/stepgate/internal/configdoc"
)

const regenerate = "run `go generate ./cmd/stepgate` and commit docs/configuration.md"

// TestConfigurationReferenceIsCurrent keeps docs/configuration.md what the
// config struct generates: a setting added, renamed or redescribed without
// regenerating fails here.
func TestConfigurationReferenceIsCurrent(t *testing.T) {
	src, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	fields, err := configdoc.Fields(src, "config", envPrefix)
	if err != nil {
		t.Fatalf("%v (every field of config needs a doc comment)", err)
	}
	want := configdoc.Markdown(fields, envPrefix)
	got, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatalf("%v: %s", err, regenerate)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := range max(len(gl), len(wl)) {
			g, w := "", ""
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("docs/configuration.md is stale: %s.\nline %d is\n  %s\nwant\n  %s", regenerate, i+1, g, w)
			}
		}
	}

	// The page agrees with what the program reads: every variable, each
	// default as the env tag gives it, the required ones marked.
	var vars []reflect.StructField // the exported fields: the variables
	for sf := range reflect.TypeFor[config]().Fields() {
		if sf.IsExported() {
			vars = append(vars, sf)
		}
	}
	if len(fields) != len(vars) {
		t.Errorf("%d fields documented, config has %d", len(fields), len(vars))
	}
	page := string(got)
	for i, f := range fields {
		sf := vars[i]
		key, opts, _ := strings.Cut(sf.Tag.Get("env"), ",")
		if f.Name != envPrefix+key {
			t.Errorf("field %d documented as %s, reads %s", i, f.Name, envPrefix+key)
		}
		row := "| `" + f.Name + "` |"
		if !strings.Contains(page, row) {
			t.Errorf("no row for %s", f.Name)
		}
		if def, ok := sf.Tag.Lookup("envDefault"); ok && !strings.Contains(page, row+" "+f.Type+" | `"+def+"` |") {
			t.Errorf("the row of %s does not show the default `%s`", f.Name, def)
		}
		if opts == "required" && !strings.Contains(page, row+" "+f.Type+" | *required* |") {
			t.Errorf("the row of %s does not say it is required", f.Name)
		}
	}
}
