package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyDirection enforces DESIGN.md's dependency direction: the
// pure packages never import NATS, YAML or each other the wrong way.
func TestDependencyDirection(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	tests := []struct {
		pkg       string
		forbidden []string
	}{
		{"github.com/verdict-dev/verdict/analyzer", []string{"nats-io", "yaml", "verdict/policy", "verdict/engine", "log/slog", "math/rand"}},
		{"github.com/verdict-dev/verdict/policy", []string{"nats-io", "verdict/engine", "verdict/ingest", "verdict/actuator"}},
		{"github.com/verdict-dev/verdict/telemetry", []string{"nats-io", "yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", tt.pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps %s: %v\n%s", tt.pkg, err, out)
			}
			for _, dep := range strings.Fields(string(out)) {
				for _, f := range tt.forbidden {
					if strings.Contains(dep, f) {
						t.Errorf("%s depends on %s (forbidden: %q)", tt.pkg, dep, f)
					}
				}
			}
		})
	}
}
