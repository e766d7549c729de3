package policy_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	_ "time/tzdata" // goldens mention time zones; do not depend on the host's

	"github.com/verdict-dev/verdict/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/policy")

const testdata = "../testdata/policy"

// golden compares got with the named golden file, or rewrites the file
// when -update is set.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(name, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run go test -update after checking):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// printed is what the golden file of a good policy file holds: each
// policy's normalized form after a comment with its hash.
func printed(ps []*policy.Policy) []byte {
	var b bytes.Buffer
	for i, p := range ps {
		if i > 0 {
			b.WriteString("---\n")
		}
		b.WriteString("# " + p.Hash + "\n")
		b.Write(p.Normalized())
	}
	return b.Bytes()
}

func TestGood(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(testdata, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, file := range files {
		if strings.HasSuffix(file, ".bad.yaml") {
			continue
		}
		n++
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			ps, err := policy.Parse(filepath.Base(file), data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(ps) == 0 {
				t.Fatal("Parse returned no policies")
			}
			for _, p := range ps {
				checkRoundTrip(t, p)
			}
			golden(t, strings.TrimSuffix(file, ".yaml")+".golden", printed(ps))
		})
	}
	if n < 2 {
		t.Fatalf("found %d good policy files, want at least 2", n)
	}
}

func TestBad(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(testdata, "*.bad.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("found %d bad policy files, want at least 30", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			ps, err := policy.Parse(filepath.Base(file), data)
			if err == nil {
				t.Fatalf("Parse succeeded, want errors")
			}
			if ps != nil {
				t.Errorf("Parse returned %d policies with errors, want none", len(ps))
			}
			var list policy.ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("Parse error is %T, want policy.ErrorList", err)
			}
			golden(t, strings.TrimSuffix(file, ".yaml")+".golden", []byte(err.Error()+"\n"))
		})
	}
}

// TestGoldenOrphans catches golden files left behind by renamed tests.
func TestGoldenOrphans(t *testing.T) {
	goldens, _ := filepath.Glob(filepath.Join(testdata, "*.golden"))
	for _, g := range goldens {
		if _, err := os.Stat(strings.TrimSuffix(g, ".golden") + ".yaml"); err != nil {
			t.Errorf("%s has no policy file", g)
		}
	}
}

// fataler is the part of testing.TB and rapid.T that checkRoundTrip uses.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// checkRoundTrip checks that p's normalized form parses to an equal
// policy with the same hash and the same normalized form.
func checkRoundTrip(t fataler, p *policy.Policy) {
	t.Helper()
	norm := p.Normalized()
	ps, err := policy.Parse("normalized.yaml", norm)
	if err != nil {
		t.Fatalf("parsing the normalized form of %s: %v\n%s", p.Name, err, norm)
	}
	if len(ps) != 1 {
		t.Fatalf("normalized form of %s holds %d policies, want 1", p.Name, len(ps))
	}
	q := ps[0]
	if diff := compare(p, q); diff != "" {
		t.Fatalf("policy %s changed through its normalized form: %s\n%s", p.Name, diff, norm)
	}
	if got := q.Normalized(); !bytes.Equal(got, norm) {
		t.Fatalf("normalizing %s twice: got\n%s\nwant\n%s", p.Name, got, norm)
	}
}
