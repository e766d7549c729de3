package telemetry

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzDecode checks that Decode never panics, that every error is an *Error
// with a known Reason, and that a decoded record survives Encode and Decode
// unchanged.
func FuzzDecode(f *testing.F) {
	files, err := filepath.Glob("../testdata/events/*.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, ex := range docExamples(f) {
		f.Add([]byte(ex.json))
	}
	known := make(map[Reason]bool)
	for _, r := range Reasons() {
		known[r] = true
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Decode(data)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || !known[e.Reason] {
				t.Fatalf("Decode(%q) = %v, want an *Error with a known reason", data, err)
			}
			return
		}
		enc, err := Encode(&r)
		if err != nil {
			t.Fatalf("Encode(Decode(%q)) = %v", data, err)
		}
		r2, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(Decode(%q))) = %v; encoded %s", data, err, enc)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip of %q:\n got %+v\nwant %+v\nencoded %s", data, r2, r, enc)
		}
	})
}
