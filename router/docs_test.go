package router

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestRoutersDoc checks docs/ROUTERS.md against the code: its Go SDK
// example is Example in example_test.go (which the compiler checks), and
// its hash test vectors are the ones TestPointVectors checks.
func TestRoutersDoc(t *testing.T) {
	doc, err := os.ReadFile("../docs/ROUTERS.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, body, ok := strings.Cut(string(src), "// BEGIN ROUTERS.md\n")
	body, _, ok2 := strings.Cut(body, "\t// END ROUTERS.md")
	if !ok || !ok2 {
		t.Fatal("example_test.go: BEGIN/END ROUTERS.md markers not found")
	}
	var want strings.Builder
	for _, line := range strings.SplitAfter(body, "\n") {
		want.WriteString(strings.TrimPrefix(line, "\t"))
	}
	block := "```go\n" + want.String() + "```\n"
	if !strings.Contains(string(doc), block) {
		t.Errorf("docs/ROUTERS.md does not contain the Example of example_test.go verbatim:\n%s", block)
	}
	for _, v := range pointVectors {
		at5 := Route{Weight: 5}.Assign(v.unit)
		row := fmt.Sprintf("| `%s` | %d | %.4f | %v |", v.unit, v.hash, v.point, at5)
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/ROUTERS.md lacks the test vector row %s", row)
		}
	}
}
