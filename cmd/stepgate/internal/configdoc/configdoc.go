// Package configdoc writes stepgate's configuration reference
// (docs/configuration.md) from the source of its config struct: the env
// tags give the names, defaults and required settings, the field types the
// kinds of value, the doc comments the descriptions. It reads source, not a
// reflected value, because only the source has the comments.
//
// It must never invent what the struct does not say: a field without a
// doc comment is an error, not an empty row.
package configdoc

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"strconv"
	"strings"
)

// Field is one environment variable.
type Field struct {
	Name     string // STEPGATE_…
	Type     string // in words: text, true or false, duration, …
	Default  string // Markdown
	Required bool
	Secret   bool
	Doc      string // Markdown, one paragraph
}

// Fields reads the fields of the struct typeName in the Go source src,
// prefixing every env name with prefix.
func Fields(src []byte, typeName, prefix string) ([]Field, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "config.go", src, parser.ParseComments)
	if err != nil {
		return nil, fmt.Errorf("configdoc: %w", err)
	}
	var st *ast.StructType
	ast.Inspect(f, func(n ast.Node) bool {
		if ts, ok := n.(*ast.TypeSpec); ok && ts.Name.Name == typeName {
			st, _ = ts.Type.(*ast.StructType)
		}
		return st == nil
	})
	if st == nil {
		return nil, fmt.Errorf("configdoc: no struct %s", typeName)
	}
	var out []Field
	for _, fl := range st.Fields.List {
		if fl.Tag == nil && len(fl.Names) == 1 && !fl.Names[0].IsExported() {
			continue // not a variable: state the loader keeps beside them
		}
		if fl.Tag == nil || len(fl.Names) != 1 {
			return nil, fmt.Errorf("configdoc: %s: want one named field with an env tag", fset.Position(fl.Pos()))
		}
		raw, err := strconv.Unquote(fl.Tag.Value)
		if err != nil {
			return nil, fmt.Errorf("configdoc: %s: %w", fset.Position(fl.Pos()), err)
		}
		tag := reflect.StructTag(raw)
		env, opts, _ := strings.Cut(tag.Get("env"), ",")
		if env == "" {
			return nil, fmt.Errorf("configdoc: field %s has no env tag", fl.Names[0].Name)
		}
		fd := Field{
			Name:     prefix + env,
			Type:     typeWords(fl.Type),
			Required: strings.Contains(","+opts+",", ",required,"),
			Secret:   tag.Get("secret") == "true",
		}
		var doc []string
		for _, line := range strings.Split(strings.TrimSpace(fl.Doc.Text()), "\n") {
			if d, ok := strings.CutPrefix(line, "Default: "); ok {
				fd.Default = strings.TrimSuffix(d, ".")
				continue
			}
			doc = append(doc, strings.TrimSpace(line))
		}
		fd.Doc = strings.TrimSpace(strings.Join(doc, " "))
		if fd.Doc == "" {
			return nil, fmt.Errorf("configdoc: field %s (%s) has no doc comment to describe it", fl.Names[0].Name, fd.Name)
		}
		if def, ok := tag.Lookup("envDefault"); ok {
			if fd.Default != "" {
				return nil, fmt.Errorf("configdoc: field %s has both envDefault and a Default: line", fl.Names[0].Name)
			}
			fd.Default = "`" + def + "`"
		}
		out = append(out, fd)
	}
	return out, nil
}

// typeWords names a field's kind of value as an operator writes it.
func typeWords(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.Ident:
		switch t.Name {
		case "string":
			return "text"
		case "bool":
			return "`true` or `false`"
		case "int", "int64":
			return "whole number"
		case "float64":
			return "number"
		}
		return t.Name
	case *ast.SelectorExpr:
		if x, ok := t.X.(*ast.Ident); ok && x.Name == "time" && t.Sel.Name == "Duration" {
			return "duration"
		}
	}
	return fmt.Sprintf("%T", e)
}

// Markdown is the configuration reference page.
func Markdown(fields []Field, prefix string) []byte {
	var b bytes.Buffer
	b.WriteString(`# Configuration reference

<!-- Generated from the config struct in cmd/stepgate/config.go by
     go generate ./cmd/stepgate: edit the struct's doc comments, not this file. -->

stepgate is configured by environment variables only, all named ` + "`" + prefix + "…`" + `.

- Every secret can also be given as ` + "`NAME_FILE`" + `: a path whose content (one trailing newline
  dropped) is the value. Not both.
- A ` + "`" + prefix + "`" + ` name that is not in this list stops start-up, with the nearest real name
  (` + "`STEPGATE_RULS: not a stepgate setting; did you mean STEPGATE_RULES?`" + `). The exceptions
  are the variables Kubernetes injects for a Service named ` + "`stepgate`" + ` when service links
  are on (` + "`STEPGATE_SERVICE_HOST`, `STEPGATE_SERVICE_PORT[_<PORT NAME>]`, `STEPGATE_PORT`,\n  `STEPGATE_PORT_<port>_<TCP|UDP|SCTP>[_PROTO|_PORT|_ADDR]`" + `), accepted only with the values
  Kubernetes gives them. The Helm chart and the kustomize base set ` + "`enableServiceLinks: false`" + `.
- Rules that protect nothing (no ` + "`mfa`, `approve` or `deny`" + ` rule, and an ` + "`allow`" + ` default) stop
  start-up unless ` + "`STEPGATE_ALLOW_UNPROTECTED=true`" + `.
- Every missing or invalid value is reported at once. ` + "`stepgate -check-config`" + ` checks a
  configuration without starting, and explains the rules, identity and store it would use.

| Variable | Value | Default | Meaning |
|---|---|---|---|
`)
	for _, f := range fields {
		def := f.Default
		switch {
		case f.Required:
			def = "*required*"
		case def == "":
			def = "*empty*"
		}
		doc := f.Doc
		if f.Secret {
			doc += " *Secret: also as `" + f.Name + "_FILE`.*"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", f.Name, f.Type, cell(def), cell(doc))
	}
	return b.Bytes()
}

// cell keeps a table cell on one row.
func cell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}
