package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/policy"
)

const policyTestdata = "../../testdata/policy"

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestLintExitCodes(t *testing.T) {
	good := []string{filepath.Join(policyTestdata, "checkout.yaml"), filepath.Join(policyTestdata, "demo.yaml")}
	bad := filepath.Join(policyTestdata, "steps-not-100.bad.yaml")
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string // a substring of standard output
		stderr     string // a substring of standard error
		emptyError bool   // standard error must be empty
	}{
		{name: "valid", args: append([]string{"lint"}, good...), code: 0, stdout: "ok: 2 policies in 2 files\n", emptyError: true},
		{name: "one file", args: []string{"lint", good[1]}, code: 0, stdout: "ok: 1 policy in 1 file\n"},
		{name: "invalid", args: []string{"lint", good[0], bad}, code: 1,
			stderr: bad + ":4:19: steps[3]: the last step must be 100 (the rollout's end), got 50\n"},
		{name: "flags after files", args: []string{"lint", good[1], "--json"}, code: 0, stdout: `"ok": true`},
		{name: "after --", args: []string{"lint", "--", "--json"}, code: 1, stderr: "--json: stat: no such file or directory"},
		{name: "missing file", args: []string{"lint", "nope.yaml"}, code: 1, stderr: "nope.yaml: stat: no such file or directory"},
		{name: "no arguments", args: []string{"lint"}, code: 2, stderr: "no files or directories given"},
		{name: "unknown flag", args: []string{"lint", "--frobnicate", good[0]}, code: 2, stderr: "flag provided but not defined"},
		{name: "help", args: []string{"lint", "-h"}, code: 0, stdout: "Usage: verdict lint [--print] [--json] FILE|DIR...", emptyError: true},
		{name: "help long", args: []string{"lint", "--help"}, code: 0, stdout: "-print"},
		{name: "schema", args: []string{"schema"}, code: 0, stdout: `"$schema"`, emptyError: true},
		{name: "schema help", args: []string{"schema", "-h"}, code: 0, stdout: "Usage: verdict schema"},
		{name: "schema with arguments", args: []string{"schema", "x"}, code: 2, stderr: "takes no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tt.args...)
			if code != tt.code {
				t.Errorf("run(%q) = %d, want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.code, stdout, stderr)
			}
			if !strings.Contains(stdout, tt.stdout) {
				t.Errorf("run(%q) stdout = %q, want it to contain %q", tt.args, stdout, tt.stdout)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("run(%q) stderr = %q, want it to contain %q", tt.args, stderr, tt.stderr)
			}
			if tt.emptyError && stderr != "" {
				t.Errorf("run(%q) stderr = %q, want nothing", tt.args, stderr)
			}
		})
	}
}

// TestLintBadFiles checks that lint prints exactly the golden errors of
// every bad policy file, and that linting them together prints them all.
func TestLintBadFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(policyTestdata, "*.bad.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad policy files: %v", err)
	}
	var all []string
	for _, file := range files {
		golden, err := os.ReadFile(strings.TrimSuffix(file, ".yaml") + ".golden")
		if err != nil {
			t.Fatal(err)
		}
		// The goldens name the file by its base name.
		want := strings.ReplaceAll(string(golden), filepath.Base(file)+":", file+":")
		code, stdout, stderr := runCmd(t, "lint", file)
		if code != 1 || stdout != "" || stderr != want {
			t.Errorf("lint %s = %d, stdout %q, stderr:\n%s\nwant 1 and stderr:\n%s", file, code, stdout, stderr, want)
		}
		all = append(all, strings.Split(strings.TrimSuffix(want, "\n"), "\n")...)
	}
	code, _, stderr := runCmd(t, append([]string{"lint"}, files...)...)
	if got := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"); code != 1 || len(got) != len(all) {
		t.Errorf("lint of all bad files = %d with %d error lines, want 1 with %d", code, len(got), len(all))
	}
}

// TestLintPrint checks that --print writes a YAML stream that lints
// cleanly and holds the same policies with the same hashes.
func TestLintPrint(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(policyTestdata, "*.yaml"))
	var good []string
	for _, f := range files {
		if !strings.HasSuffix(f, ".bad.yaml") {
			good = append(good, f)
		}
	}
	want, err := policy.Load(good...)
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd(t, append([]string{"lint", "--print"}, good...)...)
	if code != 0 {
		t.Fatalf("lint --print = %d: %s", code, stderr)
	}
	if !strings.HasPrefix(stderr, "ok: ") {
		t.Errorf("lint --print stderr = %q, want the summary", stderr)
	}
	got, err := policy.Parse("printed.yaml", []byte(stdout))
	if err != nil {
		t.Fatalf("parsing lint --print output: %v\n%s", err, stdout)
	}
	if len(got) != len(want) {
		t.Fatalf("lint --print printed %d policies, want %d", len(got), len(want))
	}
	for _, p := range got {
		w := want[p.Name]
		if w == nil || w.Hash != p.Hash {
			t.Errorf("printed policy %s has hash %s, want %v", p.Name, p.Hash, w)
			continue
		}
		if !strings.Contains(stdout, "# "+w.Hash+"\n") {
			t.Errorf("lint --print does not show the hash of %s", p.Name)
		}
	}
}

func TestLintJSON(t *testing.T) {
	demo := filepath.Join(policyTestdata, "demo.yaml")
	bad := filepath.Join(policyTestdata, "duplicate-metric.bad.yaml")

	code, stdout, _ := runCmd(t, "lint", "--json", "--print", demo)
	var res lintResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("lint --json output is not JSON: %v\n%s", err, stdout)
	}
	if code != 0 || !res.OK || res.Files != 1 || len(res.Policies) != 1 || len(res.Errors) != 0 {
		t.Fatalf("lint --json %s = %d, %+v; want 0, ok with 1 policy", demo, code, res)
	}
	if p := res.Policies[0]; p.Name != "demo" || !strings.HasPrefix(p.Hash, "sha256:") || !strings.Contains(p.Normalized, "name: demo") {
		t.Errorf("policy = %+v, want demo with hash and normalized form", p)
	}

	code, stdout, _ = runCmd(t, "lint", "--json", bad)
	res = lintResult{}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("lint --json output is not JSON: %v\n%s", err, stdout)
	}
	want := lintError{File: bad, Line: 9, Col: 11, Path: "metrics[1].name", Message: `duplicate metric name "latency" (first at line 6)`}
	if code != 1 || res.OK || len(res.Errors) != 1 || res.Errors[0] != want {
		t.Errorf("lint --json %s = %d, %+v; want 1 with error %+v", bad, code, res, want)
	}
}

func TestSchemaIsJSON(t *testing.T) {
	code, stdout, _ := runCmd(t, "schema")
	var v map[string]any
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil {
		t.Fatalf("schema = %d, %v", code, err)
	}
	if v["$schema"] != "http://json-schema.org/draft-07/schema#" {
		t.Errorf("$schema = %v", v["$schema"])
	}
}
