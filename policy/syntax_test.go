package policy_test

import (
	"errors"
	"testing"

	"github.com/verdict-dev/verdict/policy"
)

// TestSyntaxErrorLines checks the lines of YAML syntax errors, which
// yaml.v3 reports 0-based for some problems and 1-based for others.
func TestSyntaxErrorLines(t *testing.T) {
	tests := []struct {
		data string
		line int
	}{
		{"a: b\nc: [1, 2\nd: 3\n", 2},   // unclosed flow sequence, from its start
		{"a: b\nc: d: e\n", 2},          // scanner
		{"a: b\n\tc: d\n", 2},           // scanner: tab
		{"a: b\n- c\n", 2},              // parser
		{"a: b\nc:\n  - d\n e: f\n", 4}, // parser
	}
	for _, tt := range tests {
		_, err := policy.Parse("s.yaml", []byte(tt.data))
		var list policy.ErrorList
		if !errors.As(err, &list) || len(list) != 1 {
			t.Fatalf("Parse(%q) = %v, want one syntax error", tt.data, err)
		}
		if got := list[0].Line; got != tt.line {
			t.Errorf("Parse(%q) error on line %d, want %d: %v", tt.data, got, tt.line, err)
		}
	}
}
