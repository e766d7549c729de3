package telemetry

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/verdict-dev/verdict/analyzer"
)

func TestDecodeSingle(t *testing.T) {
	in := `{"rollout":"checkout-42","variant":"canary","time":"2026-11-26T10:00:00.123Z","latency_ms":12.5,"status":200,"error":false,"unit":"user-123","id":"evt-000001","values":{"cpu_ms":3.1},"future":{"x":[1,2]}}`
	got, err := Decode([]byte(in))
	if err != nil {
		t.Fatalf("Decode = %v", err)
	}
	want := Record{
		Rollout: "checkout-42",
		Variant: analyzer.Canary,
		Time:    time.Date(2026, 11, 26, 10, 0, 0, 123e6, time.UTC),
		ID:      "evt-000001",
		Unit:    "user-123",
		Single: analyzer.Observation{
			Variant: analyzer.Canary, HasLatency: true, HasOutcome: true,
			LatencyMs: 12.5, Unit: UnitHash("user-123"),
		},
		Values: []Value{{Name: "cpu_ms", Value: 3.1}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Decode = %+v, want %+v", got, want)
	}
}

func TestDecodeOutcome(t *testing.T) {
	for _, tc := range []struct {
		in          string
		has, failed bool
	}{
		{`"status":200`, true, false},
		{`"status":499`, true, false},
		{`"status":500`, true, true},
		{`"status":503,"error":false`, true, false}, // explicit error wins
		{`"status":200,"error":true`, true, true},
		{`"error":true`, true, true},
		{`"latency_ms":1`, false, false},
		{`"latency_ms":1,"status":null`, false, false},
	} {
		r, err := Decode([]byte(`{"rollout":"r","variant":"baseline",` + tc.in + `}`))
		if err != nil {
			t.Fatalf("Decode(%s) = %v", tc.in, err)
		}
		if r.Single.HasOutcome != tc.has || r.Single.Error != tc.failed {
			t.Errorf("Decode(%s): HasOutcome, Error = %v, %v, want %v, %v", tc.in, r.Single.HasOutcome, r.Single.Error, tc.has, tc.failed)
		}
	}
}

func TestDecodeZeroLatencyIsFloored(t *testing.T) {
	r, err := Decode([]byte(`{"rollout":"r","variant":"canary","latency_ms":0}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Single.LatencyMs, MinLatencyMs; got != want {
		t.Fatalf("LatencyMs = %v, want %v", got, want)
	}
}

func TestDecodeTimeIsUTC(t *testing.T) {
	r, err := Decode([]byte(`{"rollout":"r","variant":"canary","error":false,"time":"2026-11-26T12:00:00+02:00"}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC); r.Time != want {
		t.Fatalf("Time = %v, want %v", r.Time, want)
	}
}

func TestDecodeBatch(t *testing.T) {
	in := `{"rollout":"checkout-42","variant":"baseline","id":"batch-17","count":10,"errors":2,
	  "latency":{"n":3,"sumLog":6,"sumLogSq":12.5,"buckets":[[100,1],[101,2]]},
	  "values":{"cpu_ms":{"n":2,"sumLog":1,"sumLogSq":0.5}}}`
	got, err := Decode([]byte(in))
	if err != nil {
		t.Fatalf("Decode = %v", err)
	}
	want := Record{
		Rollout: "checkout-42", Variant: analyzer.Baseline, ID: "batch-17",
		Batch: &BatchRecord{
			Batch: analyzer.Batch{
				Variant: analyzer.Baseline, Requests: 10, Errors: 2,
				Latency: analyzer.Summary{N: 3, SumLog: 6, SumLogSq: 12.5},
				Buckets: []analyzer.Bucket{{Index: 100, Count: 1}, {Index: 101, Count: 2}},
			},
			Values: map[string]analyzer.Summary{"cpu_ms": {N: 2, SumLog: 1, SumLogSq: 0.5}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Decode = %+v, want %+v", got, want)
	}
}

func TestDecodeRejects(t *testing.T) {
	const hdr = `"rollout":"r","variant":"canary"`
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		name, in string
		want     Reason
	}{
		{"empty", ``, ReasonBadJSON},
		{"truncated", `{"rollout":"r","variant":"can`, ReasonBadJSON},
		{"not an object", `[1,2]`, ReasonBadJSON},
		{"trailing garbage", `{` + hdr + `,"status":200}x`, ReasonBadJSON},
		{"latency as string", `{` + hdr + `,"latency_ms":"12"}`, ReasonBadJSON},
		{"NaN as string", `{` + hdr + `,"latency_ms":"NaN"}`, ReasonBadJSON},
		{"NaN bare", `{` + hdr + `,"latency_ms":NaN}`, ReasonBadJSON},
		{"status as float", `{` + hdr + `,"status":200.5}`, ReasonBadJSON},
		{"error as string", `{` + hdr + `,"error":"yes"}`, ReasonBadJSON},
		{"rollout as number", `{"rollout":42,"variant":"canary","status":200}`, ReasonBadJSON},
		{"values as list", `{` + hdr + `,"values":[1]}`, ReasonBadJSON},
		{"value as string", `{` + hdr + `,"values":{"cpu":"1"}}`, ReasonBadJSON},
		{"batch with status", `{` + hdr + `,"count":1,"status":200}`, ReasonBadJSON},
		{"count as float", `{` + hdr + `,"count":1.5}`, ReasonBadJSON},
		{"buckets wrong type", `{` + hdr + `,"count":1,"latency":{"n":1,"sumLog":1,"sumLogSq":1,"buckets":{"1":1}}}`, ReasonBadJSON},

		{"no rollout", `{"variant":"canary","status":200}`, ReasonMissingField},
		{"empty rollout", `{"rollout":"","variant":"canary","status":200}`, ReasonMissingField},
		{"no variant", `{"rollout":"r","status":200}`, ReasonMissingField},
		{"no signal", `{` + hdr + `,"unit":"u"}`, ReasonMissingField},
		{"empty values", `{` + hdr + `,"values":{}}`, ReasonMissingField},
		{"batch fields without count", `{` + hdr + `,"errors":1}`, ReasonMissingField},

		{"variant", `{"rollout":"r","variant":"Canary","status":200}`, ReasonBadVariant},
		{"variant other", `{"rollout":"r","variant":"v2","status":200}`, ReasonBadVariant},

		{"rollout dot", `{"rollout":"a.b","variant":"canary","status":200}`, ReasonBadRollout},
		{"rollout wildcard", `{"rollout":"a*","variant":"canary","status":200}`, ReasonBadRollout},
		{"rollout long", `{"rollout":"` + strings.Repeat("a", 65) + `","variant":"canary","status":200}`, ReasonBadRollout},

		{"non-UTF-8", "{\"rollout\":\"r\",\"variant\":\"canary\",\"unit\":\"\xff\",\"status\":200}", ReasonBadEncoding},

		{"negative latency", `{` + hdr + `,"latency_ms":-1}`, ReasonBadValue},
		{"absurd latency", `{` + hdr + `,"latency_ms":1e8}`, ReasonBadValue},
		{"huge latency", `{` + hdr + `,"latency_ms":1e400}`, ReasonBadJSON}, // out of float64 range: encoding/json calls it a type error
		{"status 99", `{` + hdr + `,"status":99}`, ReasonBadValue},
		{"status 600", `{` + hdr + `,"status":600}`, ReasonBadValue},
		{"bad time", `{` + hdr + `,"status":200,"time":"yesterday"}`, ReasonBadValue},
		{"long id", `{` + hdr + `,"status":200,"id":"` + long + `"}`, ReasonBadValue},
		{"long unit", `{` + hdr + `,"status":200,"unit":"` + long + `"}`, ReasonBadValue},
		{"zero value", `{` + hdr + `,"values":{"cpu":0}}`, ReasonBadValue},
		{"negative value", `{` + hdr + `,"values":{"cpu":-1}}`, ReasonBadValue},
		{"bad value name", `{` + hdr + `,"values":{"a b":1}}`, ReasonBadValue},
		{"count 0", `{` + hdr + `,"count":0}`, ReasonBadValue},
		{"errors > count", `{` + hdr + `,"count":1,"errors":2}`, ReasonBadValue},
		{"negative errors", `{` + hdr + `,"count":1,"errors":-1}`, ReasonBadValue},
		{"n > count", `{` + hdr + `,"count":1,"latency":{"n":2,"sumLog":2,"sumLogSq":2}}`, ReasonBadValue},
		{"n 0", `{` + hdr + `,"count":1,"latency":{"n":0,"sumLog":0,"sumLogSq":0}}`, ReasonBadValue},
		{"sumLogSq too small", `{` + hdr + `,"count":2,"latency":{"n":2,"sumLog":4,"sumLogSq":7}}`, ReasonBadValue},
		{"mean log absurd", `{` + hdr + `,"count":1,"latency":{"n":1,"sumLog":20,"sumLogSq":400}}`, ReasonBadValue},
		{"bucket sum", `{` + hdr + `,"count":3,"latency":{"n":3,"sumLog":3,"sumLogSq":3,"buckets":[[1,1],[2,1]]}}`, ReasonBadValue},
		{"bucket order", `{` + hdr + `,"count":2,"latency":{"n":2,"sumLog":2,"sumLogSq":2,"buckets":[[2,1],[1,1]]}}`, ReasonBadValue},
		{"bucket duplicate", `{` + hdr + `,"count":2,"latency":{"n":2,"sumLog":2,"sumLogSq":2,"buckets":[[1,1],[1,1]]}}`, ReasonBadValue},
		{"bucket range", `{` + hdr + `,"count":1,"latency":{"n":1,"sumLog":1,"sumLogSq":1,"buckets":[[100000,1]]}}`, ReasonBadValue},
		{"bucket pair", `{` + hdr + `,"count":1,"latency":{"n":1,"sumLog":1,"sumLogSq":1,"buckets":[[1,1,1]]}}`, ReasonBadValue},
		{"bucket zero count", `{` + hdr + `,"count":1,"latency":{"n":1,"sumLog":1,"sumLogSq":1,"buckets":[[1,0],[2,1]]}}`, ReasonBadValue},
		{"bucket overflow", `{` + hdr + `,"count":9223372036854775807,"latency":{"n":9223372036854775807,"sumLog":1,"sumLogSq":1,"buckets":[[1,9223372036854775807],[2,9223372036854775807]]}}`, ReasonBadValue},
		{"value n > count", `{` + hdr + `,"count":1,"values":{"cpu":{"n":2,"sumLog":1,"sumLogSq":1}}}`, ReasonBadValue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.in))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode(%.60s) = %v, want *Error %s", tc.in, err, tc.want)
			}
			if e.Reason != tc.want {
				t.Fatalf("Decode(%.60s) reason = %s (%v), want %s", tc.in, e.Reason, err, tc.want)
			}
			if e.Err == nil || !strings.HasPrefix(err.Error(), string(tc.want)+": ") {
				t.Fatalf("Decode(%.60s) error %q lacks a detail", tc.in, err)
			}
		})
	}
}

func TestBuilderRoundTrip(t *testing.T) {
	b := NewBuilder("checkout-42", analyzer.Canary)
	lat := []float64{0, 3, 12.5, 12.6, 250, 1e9}
	for i, ms := range lat {
		b.Add(ms, i%3 == 0)
		b.AddValue("cpu_ms", float64(i+1))
	}
	b.AddOutcome(true)
	if got, want := b.Count(), int64(len(lat)+1); got != want {
		t.Fatalf("Count() = %d, want %d", got, want)
	}
	r := b.Record("batch-1", time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC))
	data, err := Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatalf("Decode(%s) = %v", data, err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("Decode(Encode(r)) = %+v, want %+v", got, r)
	}
	if got, want := r.Batch.Errors, int64(3); got != want {
		t.Errorf("Errors = %d, want %d", got, want)
	}
	var n int64
	for _, bk := range r.Batch.Buckets {
		n += bk.Count
	}
	if n != r.Batch.Latency.N || n != int64(len(lat)) {
		t.Errorf("bucket counts sum to %d, latency.n = %d, want %d", n, r.Batch.Latency.N, len(lat))
	}
	if want := math.Log(MinLatencyMs); r.Batch.Latency.SumLog < want*float64(len(lat)) {
		t.Errorf("SumLog = %v below the floor", r.Batch.Latency.SumLog)
	}
	b.Reset()
	if b.Count() != 0 {
		t.Fatalf("Count() after Reset = %d", b.Count())
	}
}

func TestEncodeRejectsNonFinite(t *testing.T) {
	r := Record{Rollout: "r", Single: analyzer.Observation{HasLatency: true, LatencyMs: math.NaN()}}
	if _, err := Encode(&r); err == nil {
		t.Fatal("Encode(NaN latency) succeeded")
	}
}

func TestUnitHashStable(t *testing.T) {
	// FNV-1a 64, fixed forever: routers and the engine must agree on it.
	for _, unit := range []string{"user-123", "a", "\u00e9t\u00e9"} {
		h := fnv.New64a()
		h.Write([]byte(unit))
		if got, want := UnitHash(unit), h.Sum64(); got != want {
			t.Errorf("UnitHash(%q) = %#x, want %#x", unit, got, want)
		}
	}
	if got, want := UnitHash("user-123"), uint64(0x989ed0e241ff3353); got != want {
		t.Errorf("UnitHash(user-123) = %#x, want %#x", got, want)
	}
	if got := UnitHash(""); got != 0 {
		t.Errorf("UnitHash(\"\") = %#x, want 0", got)
	}
}

// TestDecodeOwnsStrings: the fast path parses strings in place; the
// Record it returns must not share memory with the message, which the
// transport reuses.
func TestDecodeOwnsStrings(t *testing.T) {
	for _, in := range []string{string(benchSingle), string(benchSingleValues),
		`{"rollout":"r-77","variant":"canary","status":200,"unit":"u-1"}`,
		`{"rollout":"r-77","variant":"canary","status":200,"id":"i-1"}`} {
		data := []byte(in)
		r, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		want, err := Decode([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		for i := range data {
			data[i] = 'X'
		}
		if !reflect.DeepEqual(r, want) {
			t.Fatalf("after overwriting the message: %+v, want %+v", r, want)
		}
	}
}

// TestValuesRepeatedAndOrder: values come sorted by name, and a repeated
// name keeps its last value (as encoding/json does for a map), in both
// decoders; an earlier bad value of a repeated name is overwritten, not
// rejected.
func TestValuesRepeatedAndOrder(t *testing.T) {
	in := []byte(`{"rollout":"r","variant":"canary","values":{"b":1,"a":2,"b":-3,"c":4,"b":5}}`)
	want := []Value{{"a", 2}, {"b", 5}, {"c", 4}}
	for _, fast := range []bool{true, false} {
		r, err := decode(in, fast, nil)
		if err != nil {
			t.Fatalf("fast=%v: %v", fast, err)
		}
		if !reflect.DeepEqual(r.Values, want) {
			t.Errorf("fast=%v: Values = %v, want %v", fast, r.Values, want)
		}
		if v, ok := r.Value("c"); !ok || v != 4 {
			t.Errorf("fast=%v: Value(c) = %v, %v", fast, v, ok)
		}
		if _, ok := r.Value("d"); ok {
			t.Errorf("fast=%v: Value(d) found", fast)
		}
	}
	// More than MaxValues distinct names, repeated names not counted twice.
	var b strings.Builder
	b.WriteString(`{"rollout":"r","variant":"canary","values":{`)
	for i := range MaxValues + 1 {
		fmt.Fprintf(&b, `"v%d":1,"v%d":2,`, i, i%3)
	}
	b.WriteString(`"v0":1}}`)
	for _, fast := range []bool{true, false} {
		if _, err := decode([]byte(b.String()), fast, nil); reason(err) != ReasonBadValue {
			t.Errorf("fast=%v: %d names: err %v, want bad-value", fast, MaxValues+1, err)
		}
	}
	// An unsorted or repeated slice is encoded sorted, the last of a name kept.
	r := Record{Rollout: "r", Variant: 1, Values: []Value{{"b", 1}, {"a", 2}, {"b", 3}}}
	r.Single.Variant = 1
	enc, err := Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(enc), `"values":{"a":2,"b":3}`) {
		t.Errorf("Encode = %s", enc)
	}
}

// TestDecoder: records from a Decoder equal Decode's and stay intact while
// the Decoder fills and replaces its chunks.
func TestDecoder(t *testing.T) {
	var d Decoder
	var got []Record
	var want []Record
	for i := range 3000 {
		in := fmt.Sprintf(`{"rollout":"r%d","variant":"canary","latency_ms":1,"id":"id-%d","unit":"u-%d","values":{"a%d":1,"b":%d}}`, i%7, i, i, i%3, i+1)
		if i%5 == 0 {
			in = fmt.Sprintf(`{"rollout":"r","variant":"canary","id":"%s","values":{"x":1}}`, strings.Repeat("i", i%(MaxIDLen+1)))
		}
		r, err := d.Decode([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		w, err := Decode([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		got, want = append(got, r), append(want, w)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatal("Decoder.Decode differs from Decode")
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := d.Decode(benchSingleValues); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0.1 {
		t.Errorf("Decoder.Decode: %.2f allocations a message", allocs)
	}
}

// TestDecoderSharedRollout: with SharedRollout the Record equals Decode's,
// its Rollout aliases the message and nothing else does.
func TestDecoderSharedRollout(t *testing.T) {
	d := Decoder{SharedRollout: true}
	for _, in := range []string{string(benchSingle), string(benchSingleValues),
		`{"rollout":"r-77","variant":"canary","status":200,"unit":"u-1","id":"i-1"}`} {
		data := []byte(in)
		r, err := d.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		want, err := Decode([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(r, want) {
			t.Fatalf("Decode = %+v, want %+v", r, want)
		}
		if i := strings.Index(in, r.Rollout); unsafe.StringData(r.Rollout) != &data[i] {
			t.Fatalf("Rollout %q does not alias the message", r.Rollout)
		}
		for i := range data {
			data[i] = 'X'
		}
		r.Rollout = want.Rollout
		if !reflect.DeepEqual(r, want) {
			t.Fatalf("after overwriting the message: %+v, want %+v", r, want)
		}
	}
}
