package telemetry

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
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
		slow, serr := decode(data, false, nil)
		if !reflect.DeepEqual(r, slow) || reason(err) != reason(serr) {
			t.Fatalf("Decode(%q):\nfast %+v, %v\nslow %+v, %v", data, r, err, slow, serr)
		}
		// A Decoder decodes the same, with its memory from chunks.
		dr, derr := fuzzDecoder.Decode(data)
		if !reflect.DeepEqual(r, dr) || reason(err) != reason(derr) {
			t.Fatalf("Decoder.Decode(%q):\n got %+v, %v\nwant %+v, %v", data, dr, derr, r, err)
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

// fuzzDecoder is shared by the fuzz inputs of one process, so its chunks
// fill and are replaced.
var fuzzDecoder Decoder

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

// TestSimpleFloat: the fast float conversion gives ParseFloat's result
// wherever it answers, and answers for the usual shapes.
func TestSimpleFloat(t *testing.T) {
	for _, in := range []string{"0", "-0", "1", "12.5", "0.001", "3.1", "123456789012345", "0.123456789012345",
		"9999999.99999999", "-42.125", "5.75", "1e7", "1.5e2", "1234567890123456", "0.1000000000000000",
		"100.00", "7", "0.0000000000000000000001"} {
		want, err := strconv.ParseFloat(in, 64)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := simpleFloat([]byte(in))
		if !ok {
			if !strings.ContainsAny(in, "eE") && len(strings.Trim(in, "-.")) <= 15 {
				t.Errorf("simpleFloat(%s) did not answer", in)
			}
			continue
		}
		if math.Float64bits(got) != math.Float64bits(want) {
			t.Errorf("simpleFloat(%s) = %v, ParseFloat = %v", in, got, want)
		}
	}
}

// FuzzSimpleFloat holds simpleFloat equal to strconv.ParseFloat.
func FuzzSimpleFloat(f *testing.F) {
	for _, s := range []string{"12.5", "-0.001", "123456789012345", "0.5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p := parser{b: []byte(s)}
		n, ok := p.number()
		if !ok || p.i != len(s) {
			return // not a JSON number
		}
		got, ok := simpleFloat(n)
		if !ok {
			return
		}
		want, err := strconv.ParseFloat(string(n), 64)
		if err != nil || math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("simpleFloat(%s) = %v, ParseFloat = %v, %v", s, got, want, err)
		}
	})
}
