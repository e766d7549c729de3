package policy_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/policy"
)

// TestHostile feeds Parse inputs meant to make a YAML parser hang, crash or
// allocate without bound, and checks each is refused quickly with an error.
func TestHostile(t *testing.T) {
	header := "apiVersion: verdict/v1\nkind: Policy\nname: x\nsteps: [100]\n"
	tests := []struct {
		name string
		data []byte
		want string // in the error
	}{
		{"too large", append([]byte(header+"# "), bytes.Repeat([]byte("x"), policy.MaxFileSize)...), "more than the limit"},
		{"billion laughs", []byte(header + laughs(9)), "anchors and aliases are not allowed"},
		{"alias to a mapping", []byte("a: &a {x: 1}\nb: *a\n"), "anchors and aliases are not allowed"},
		{"recursive alias", []byte("a: &a [*a]\n"), "anchors and aliases are not allowed"},
		{"merge key", []byte(header + "<<: {alpha: 0.1}\n"), "<<: unknown field"},
		{"deep flow", []byte(header + "x: " + strings.Repeat("[", 100) + strings.Repeat("]", 100) + "\n"), "nesting deeper than 64"},
		{"deep block", []byte(header + deepBlock(100)), "nesting deeper than 64"},
		{"very deep flow", []byte(header + "x: " + strings.Repeat("[", 500000) + "\n"), "exceeded max depth"},
		{"many documents", bytes.Repeat([]byte("---\nx\n"), 20000), "want a mapping"},
		{"long key", []byte(header + strings.Repeat("k", 500000) + ": 1\n"), "syntax error"},
		{"UTF-16", []byte{0xff, 0xfe, 0x00, 0x01}, "want a mapping"},
		{"invalid UTF-8", []byte("name: \xff\xfe\n"), "syntax error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			ps, err := policy.Parse("hostile.yaml", tt.data)
			if elapsed := time.Since(start); elapsed > 10*time.Second {
				t.Errorf("Parse took %v", elapsed)
			}
			if err == nil {
				t.Fatalf("Parse returned %d policies, want an error", len(ps))
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse error = %.300s, want it to contain %q", err, tt.want)
			}
			var list policy.ErrorList
			if !errors.As(err, &list) {
				t.Errorf("Parse error is %T, want policy.ErrorList", err)
			}
		})
	}
}

// laughs returns the n-level "billion laughs" alias bomb, which expands to
// 9^n strings in a parser that follows aliases.
func laughs(n int) string {
	var b strings.Builder
	b.WriteString("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i <= n; i++ {
		p := "*l" + string(rune('0'+i-1))
		b.WriteString("l" + string(rune('0'+i)) + ": &l" + string(rune('0'+i)) + " [")
		b.WriteString(strings.TrimSuffix(strings.Repeat(p+", ", 9), ", "))
		b.WriteString("]\n")
	}
	return b.String()
}

// deepBlock returns n levels of nested block mappings.
func deepBlock(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(strings.Repeat(" ", i) + "k:\n")
	}
	return b.String()
}

func TestFileSizeLimit(t *testing.T) {
	doc := "apiVersion: verdict/v1\nkind: Policy\nname: x\nsteps: [100]\n"
	pad := policy.MaxFileSize - len(doc)
	ok := doc + "#" + strings.Repeat(" ", pad-2) + "\n"
	if len(ok) != policy.MaxFileSize {
		t.Fatalf("test file is %d bytes, want %d", len(ok), policy.MaxFileSize)
	}
	if _, err := policy.Parse("limit.yaml", []byte(ok)); err != nil {
		t.Errorf("Parse of a file of exactly MaxFileSize bytes: %v", err)
	}
	if _, err := policy.Parse("limit.yaml", []byte(ok+"\n")); err == nil {
		t.Errorf("Parse of a file of MaxFileSize+1 bytes succeeded, want an error")
	}
}
