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
		// The fast path must agree with encoding/json wherever it answers.
		slow, serr := decode(data, false)
		if !reflect.DeepEqual(r, slow) || reason(err) != reason(serr) {
			t.Fatalf("Decode(%q):\nfast %+v, %v\nslow %+v, %v", data, r, err, slow, serr)
		}
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

func reason(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// TestFastPathAnswers checks that the fast path handles the common shapes,
// so the benchmark measures it and not the fallback.
func TestFastPathAnswers(t *testing.T) {
	for _, in := range []string{
		string(benchSingle), string(benchSingleValues),
		`{"rollout":"r","variant":"baseline","status":503}`,
		` { "rollout" : "r" , "variant":"canary", "latency_ms": 1.5e2, "error": true, "values": {} } `,
		`{"rollout":"r","variant":"canary","latency_ms":null,"values":{"a":1,"b":2.5},"status":200}`,
	} {
		var w wireEvent
		if !fastUnmarshal([]byte(in), &w) {
			t.Errorf("fastUnmarshal(%s) fell back", in)
		}
	}
	for _, in := range []string{
		`{"rollout":"r","variant":"canary","Status":200}`,        // cased key
		`{"rollout":"r\u0031","variant":"canary","status":200}`,  // escape
		`{"rollout":"r","variant":"canary","status":2e2}`,        // not an integer literal
		`{"rollout":"r","variant":"canary","status":200,"x":1}`,  // unknown key
		`{"rollout":"r","variant":"canary","count":1}`,           // batch
		`{"rollout":"r","variant":"canary","latency_ms":01}`,     // invalid number
		`{"rollout":"r","variant":"canary","status":200}{}`,      // trailing data
		`{"rollout":"r","variant":"canary","values":{"a":null}}`, // null value in values
	} {
		var w wireEvent
		if fastUnmarshal([]byte(in), &w) {
			t.Errorf("fastUnmarshal(%s) answered, want fallback", in)
		}
	}
}
