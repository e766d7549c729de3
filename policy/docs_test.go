package policy

import (
	"encoding/json"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
)

// yamlBlocks returns the ```yaml blocks of a Markdown file with the line
// each starts on.
func yamlBlocks(md string) (blocks []string, lines []int) {
	var cur []string
	in := false
	for i, line := range strings.Split(md, "\n") {
		switch {
		case !in && strings.TrimSpace(line) == "```yaml":
			in, cur = true, nil
			lines = append(lines, i+2)
		case in && strings.TrimSpace(line) == "```":
			in = false
			blocks = append(blocks, strings.Join(cur, "\n")+"\n")
		case in:
			cur = append(cur, line)
		}
	}
	return blocks, lines
}

// TestDocs parses every ```yaml example of docs/POLICY.md, and checks that
// the document mentions every field and preset, so that it cannot rot.
func TestDocs(t *testing.T) {
	data, err := os.ReadFile("../docs/POLICY.md")
	if err != nil {
		t.Fatal(err)
	}
	md := string(data)
	blocks, lines := yamlBlocks(md)
	if len(blocks) < 5 {
		t.Fatalf("found %d yaml examples in docs/POLICY.md, want at least 5", len(blocks))
	}
	for i, b := range blocks {
		ps, err := Parse("docs/POLICY.md", []byte(b))
		if err != nil {
			t.Errorf("example at docs/POLICY.md:%d: %v", lines[i], err)
			continue
		}
		if len(ps) == 0 {
			t.Errorf("example at docs/POLICY.md:%d holds no policy", lines[i])
		}
	}
	var names []string
	names = append(names, policyFields...)
	names = append(names, metricFields...)
	names = append(names, stepFields...)
	names = append(names, presetNames()...)
	for _, name := range names {
		if !strings.Contains(md, "`"+name+"`") {
			t.Errorf("docs/POLICY.md does not mention `%s`", name)
		}
	}
}

// TestDocsDefaultMetrics checks the documented default metrics.
func TestDocsDefaultMetrics(t *testing.T) {
	data, err := os.ReadFile("../docs/POLICY.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks, _ := yamlBlocks(string(data))
	for _, b := range blocks {
		if !strings.Contains(b, "name: defaults\n") {
			continue
		}
		ps, err := Parse("docs", []byte(b))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := ps[0].Metrics, DefaultMetrics(); !slices.Equal(got, want) {
			t.Errorf("documented default metrics = %+v, want %+v", got, want)
		}
		return
	}
	t.Error("docs/POLICY.md has no example named defaults")
}

// TestSchemaFields checks that the JSON Schema knows the same fields and
// presets as the parser.
func TestSchemaFields(t *testing.T) {
	var s struct {
		Properties map[string]struct {
			Enum       []string                   `json:"enum"`
			Properties map[string]json.RawMessage `json:"properties"`
			Items      struct {
				OneOf []struct {
					Properties map[string]json.RawMessage `json:"properties"`
				} `json:"oneOf"`
			} `json:"items"`
		} `json:"properties"`
		Definitions map[string]struct {
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"definitions"`
	}
	if err := json.Unmarshal(Schema(), &s); err != nil {
		t.Fatalf("Schema() is not JSON: %v", err)
	}
	keys := func(m map[string]json.RawMessage) []string { return slices.Sorted(maps.Keys(m)) }
	sorted := func(s []string) []string { return slices.Sorted(slices.Values(s)) }
	tests := []struct {
		what      string
		got, want []string
	}{
		{"policy fields", slices.Sorted(maps.Keys(s.Properties)), sorted(policyFields)},
		{"stepDefaults fields", keys(s.Properties["stepDefaults"].Properties), sorted(stepDefaultFields)},
		{"metric fields", keys(s.Definitions["metric"].Properties), sorted(metricFields)},
		{"presets", sorted(s.Properties["preset"].Enum), presetNames()},
	}
	if oneOf := s.Properties["steps"].Items.OneOf; len(oneOf) == 2 {
		tests = append(tests, struct {
			what      string
			got, want []string
		}{"step fields", keys(oneOf[1].Properties), sorted(stepFields)})
	} else {
		t.Errorf("schema steps.items.oneOf has %d entries, want 2", len(oneOf))
	}
	for _, tt := range tests {
		if !slices.Equal(tt.got, tt.want) {
			t.Errorf("schema %s = %v, want %v", tt.what, tt.got, tt.want)
		}
	}
}
