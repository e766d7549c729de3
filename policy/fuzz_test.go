package policy_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/verdict-dev/verdict/policy"
)

// FuzzParse checks that Parse never panics and that every policy it
// accepts survives normalize, print, parse unchanged, hash included.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(testdata, "*.yaml"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := policy.Parse("fuzz.yaml", data)
		if err != nil {
			if ps != nil {
				t.Fatalf("Parse returned policies and an error: %v", err)
			}
			return
		}
		for _, p := range ps {
			checkRoundTrip(t, p)
		}
	})
}
