package policy_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/policy"
)

const (
	goodA = "apiVersion: verdict/v1\nkind: Policy\nname: a\nsteps: [10, 100]\n"
	goodB = "apiVersion: verdict/v1\nkind: Policy\nname: b\npreset: AllAtOnce\n"
)

// writeFiles creates the files in a new temporary directory and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func names(s policy.Set) []string {
	var n []string
	for name := range s {
		n = append(n, name)
	}
	slices.Sort(n)
	return n
}

func TestLoadDirectory(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"a.yaml":          goodA,
		"b.yml":           goodB,
		"README.md":       "not a policy",
		"notes.txt":       "apiVersion: nonsense",
		"sub/c.yaml":      "this: is not read",
		".hidden.yaml":    "neither: is this",
		"empty.yaml":      "# nothing here yet\n",
		"trailing.yaml":   "---\n",
		"dir.yaml/x.yaml": "nor: this",
	})
	set, err := policy.Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := names(set), []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("Load policies = %v, want %v", got, want)
	}
	if got, want := set["b"].File, filepath.Join(dir, "b.yml"); got != want {
		t.Errorf("File = %q, want %q", got, want)
	}
	if got, want := set["b"].Line, 1; got != want {
		t.Errorf("Line = %d, want %d", got, want)
	}
}

func TestLoadFilesAndDirectories(t *testing.T) {
	dir := writeFiles(t, map[string]string{"a.yaml": goodA, "b.policy": goodB})
	set, err := policy.Load(dir, filepath.Join(dir, "b.policy"), filepath.Join(dir, "a.yaml"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := names(set), []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("Load policies = %v, want %v", got, want)
	}
}

// TestLoadAllOrNothing checks that one bad file fails the whole load and
// that every file's errors are reported.
func TestLoadAllOrNothing(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"a.yaml": goodA,
		"b.yaml": goodB + "alpha: 1\n",
		"c.yaml": "apiVersion: verdict/v1\nkind: Policy\nname: c\nsteps: [100]\ncolour: red\n",
	})
	set, err := policy.Load(dir)
	if set != nil {
		t.Errorf("Load returned %d policies with an error, want none", len(set))
	}
	want := filepath.Join(dir, "b.yaml") + ":5:8: alpha: must be in (0, 0.5), got 1\n" +
		filepath.Join(dir, "c.yaml") + ":5:1: colour: unknown field"
	if err == nil || err.Error() != want {
		t.Errorf("Load error =\n%v\nwant\n%s", err, want)
	}
}

func TestLoadDuplicateAcrossFiles(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"a.yaml": goodA,
		"b.yaml": "# the same name as in a.yaml\n" + goodA,
	})
	_, err := policy.Load(dir)
	want := filepath.Join(dir, "b.yaml") + `:4:7: name: duplicate policy name "a" (first defined at ` +
		filepath.Join(dir, "a.yaml") + ":3)"
	if err == nil || err.Error() != want {
		t.Errorf("Load error =\n%v\nwant\n%s", err, want)
	}
	var list policy.ErrorList
	if !errors.As(err, &list) || len(list) != 1 || list[0].Path != "name" || list[0].Line != 4 {
		t.Errorf("Load error list = %#v, want one error at line 4 of name", list)
	}
}

func TestLoadMissing(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.yaml")
	_, err := policy.Load(missing)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want an error matching fs.ErrNotExist", err)
	}
	if want := missing + ": stat: no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("Load(missing) = %v, want %s", err, want)
	}
	var e *policy.Error
	if !errors.As(err, &e) || e.File != missing {
		t.Errorf("errors.As(*Error) = %v, want an Error about %s", e, missing)
	}
}

func TestLoadTooLarge(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"big.yaml": goodA + "#" + strings.Repeat("x", policy.MaxFileSize) + "\n",
	})
	_, err := policy.Load(dir)
	if err == nil || !strings.Contains(err.Error(), "more than the limit") {
		t.Errorf("Load = %v, want a size error", err)
	}
}

func TestLoadNothing(t *testing.T) {
	set, err := policy.Load(t.TempDir())
	if err != nil || len(set) != 0 {
		t.Errorf("Load(empty dir) = %v, %v; want an empty set", set, err)
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		err  policy.Error
		want string
	}{
		{policy.Error{File: "p.yaml", Line: 3, Col: 7, Path: "steps[1]", Msg: "bad"}, "p.yaml:3:7: steps[1]: bad"},
		{policy.Error{File: "p.yaml", Line: 3, Col: 7, Msg: "bad"}, "p.yaml:3:7: bad"},
		{policy.Error{File: "p.yaml", Line: 3, Msg: "bad"}, "p.yaml:3: bad"},
		{policy.Error{File: "p.yaml", Msg: "bad"}, "p.yaml: bad"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

// TestExampleSet loads the example policies that other packages' tests
// and the Makefile use.
func TestExampleSet(t *testing.T) {
	set, err := policy.Load(filepath.Join(testdata, "checkout.yaml"), filepath.Join(testdata, "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	demo := set["demo"]
	if demo == nil {
		t.Fatal("no demo policy")
	}
	want := []policy.Step{
		{Weight: 5, MinDuration: 10e9, MaxDuration: 120e9, MinRequests: 300},
		{Weight: 25, MinDuration: 10e9, MaxDuration: 120e9, MinRequests: 300},
		{Weight: 50, MinDuration: 10e9, MaxDuration: 120e9, MinRequests: 300},
		{Weight: 100, MinDuration: 10e9, MaxDuration: 120e9, MinRequests: 300},
	}
	if !slices.Equal(demo.Steps, want) {
		t.Errorf("demo steps = %+v, want %+v", demo.Steps, want)
	}
	checkout := set["checkout"]
	if got, want := len(checkout.Metrics), 4; got != want {
		t.Fatalf("checkout has %d metrics, want %d", got, want)
	}
	if m := checkout.Metrics[2]; m.Type != policy.TypeLatencyQuantile || m.Quantile != 0.99 || m.MaxIncrease != 0.25 {
		t.Errorf("checkout.metrics[2] = %+v, want p99 latency-quantile 0.99 25%%", m)
	}
}
