//go:build ignore

// gen_configdoc writes docs/configuration.md from the config struct:
// go generate ./cmd/stepgate (run from cmd/stepgate).
package main

import (
	"log"
	"os"

	"github.com/stepgate/stepgate/cmd/stepgate/internal/configdoc"
)

func main() {
	src, err := os.ReadFile("config.go")
	if err != nil {
		log.Fatal(err)
	}
	fields, err := configdoc.Fields(src, "config", "STEPGATE_")
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile("../../docs/configuration.md", configdoc.Markdown(fields, "STEPGATE_"), 0o644); err != nil {
		log.Fatal(err)
	}
}
