package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stepgate/stepgate/proxy/challenge"
)

// The audit schema (docs/audit.schema.json) is held to every audit line the
// end-to-end suites write: newStack validates its stack's log at cleanup.
// The validator knows the part of JSON Schema the file uses: type, const,
// enum, pattern, required, properties, additionalProperties: false, items.

type jsonSchema struct {
	Type                 any                    `json:"type"`
	Const                any                    `json:"const"`
	Enum                 []any                  `json:"enum"`
	Pattern              string                 `json:"pattern"`
	Required             []string               `json:"required"`
	Properties           map[string]*jsonSchema `json:"properties"`
	AdditionalProperties *bool                  `json:"additionalProperties"`
	Items                *jsonSchema            `json:"items"`
}

var auditSchemaOnce = sync.OnceValues(func() (*jsonSchema, error) {
	b, err := os.ReadFile("../../docs/audit.schema.json")
	if err != nil {
		return nil, err
	}
	var s jsonSchema
	return &s, json.Unmarshal(b, &s)
})

func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		if v == float64(int64(v)) {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "?"
}

// validate returns what in v breaks s, at path.
func (s *jsonSchema) validate(path string, v any) []string {
	var errs []string
	if s.Type != nil {
		var types []string
		switch t := s.Type.(type) {
		case string:
			types = []string{t}
		case []any:
			for _, x := range t {
				types = append(types, x.(string))
			}
		}
		got := jsonType(v)
		if !slices.Contains(types, got) && !(got == "integer" && slices.Contains(types, "number")) {
			errs = append(errs, fmt.Sprintf("%s: %s, want %v", path, got, types))
		}
	}
	if s.Const != nil && fmt.Sprint(s.Const) != fmt.Sprint(v) {
		errs = append(errs, fmt.Sprintf("%s: %v, want %v", path, v, s.Const))
	}
	if s.Enum != nil && !slices.ContainsFunc(s.Enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
		errs = append(errs, fmt.Sprintf("%s: %v not in %v", path, v, s.Enum))
	}
	if str, ok := v.(string); ok && s.Pattern != "" && !regexp.MustCompile(s.Pattern).MatchString(str) {
		errs = append(errs, fmt.Sprintf("%s: %q does not match %s", path, str, s.Pattern))
	}
	if obj, ok := v.(map[string]any); ok {
		for _, r := range s.Required {
			if _, ok := obj[r]; !ok {
				errs = append(errs, fmt.Sprintf("%s: no %s", path, r))
			}
		}
		for k, fv := range obj {
			if ps, ok := s.Properties[k]; ok {
				errs = append(errs, ps.validate(path+"."+k, fv)...)
			} else if s.AdditionalProperties != nil && !*s.AdditionalProperties {
				errs = append(errs, fmt.Sprintf("%s: field %s is not in the schema", path, k))
			}
		}
	}
	if arr, ok := v.([]any); ok && s.Items != nil {
		for i, x := range arr {
			errs = append(errs, s.Items.validate(fmt.Sprintf("%s[%d]", path, i), x)...)
		}
	}
	return errs
}

// checkAuditLines validates every audit line in logs against the schema.
func checkAuditLines(t testing.TB, logs string) {
	t.Helper()
	s, err := auditSchemaOnce()
	if err != nil {
		t.Fatalf("docs/audit.schema.json: %v", err)
	}
	for _, line := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != "audit" {
			continue
		}
		if errs := s.validate("audit", m); len(errs) > 0 {
			t.Errorf("an audit line breaks docs/audit.schema.json: %s\n  %s", strings.Join(errs, "; "), line)
		}
		if m["event"] == "mfa.failed" && !slices.Contains(challenge.FailReasons, fmt.Sprint(m["reason"])) {
			t.Errorf("mfa.failed with reason %q, not one of the codes of docs/audit.md: %s", m["reason"], line)
		}
	}
}

func TestEveryMFAFailedReasonIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range challenge.FailReasons {
		if !strings.Contains(string(doc), "| `"+code+"` |") {
			t.Errorf("docs/audit.md does not list the mfa.failed reason %s (a row | `%s` | …)", code, code)
		}
	}
}

func TestAuditSchemaValidatorCatchesAChangedLine(t *testing.T) {
	for _, tt := range []struct {
		name string
		line string
		ok   bool
	}{
		{"a current line passes", `{"time":"2026-12-06T10:00:00Z","level":"INFO","msg":"audit","schema":"stepgate.audit/1","event":"mfa.started","user":"alice","client_ip":"127.0.0.1","path":"/admin/","flow_id":"f1"}`, true},
		{"a line without the version fails", `{"time":"2026-12-06T10:00:00Z","level":"INFO","msg":"audit","event":"mfa.started"}`, false},
		{"a new field fails", `{"time":"2026-12-06T10:00:00Z","level":"INFO","msg":"audit","schema":"stepgate.audit/1","event":"mfa.started","color":"red"}`, false},
		{"a retyped field fails", `{"time":"2026-12-06T10:00:00Z","level":"INFO","msg":"audit","schema":"stepgate.audit/1","event":"mfa.started","user":7}`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := auditSchemaOnce()
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(tt.line), &m); err != nil {
				t.Fatal(err)
			}
			if errs := s.validate("audit", m); (len(errs) == 0) != tt.ok {
				t.Errorf("validate = %v, want ok %v", errs, tt.ok)
			}
		})
	}
}
