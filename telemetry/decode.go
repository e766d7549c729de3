package telemetry

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/verdict-dev/verdict/analyzer"
)

// wireEvent is the union of the single and batch forms, as both decoders
// fill it. Presence flags tell an absent (or null) field from a zero one
// where that matters; they are plain values, not pointers, so that the
// fast path allocates nothing for them.
type wireEvent struct {
	Rollout, Variant, Time, ID, Unit string

	LatencyMs  float64
	HasLatency bool
	Status     int64
	HasStatus  bool
	Error      bool
	HasError   bool
	Values     json.RawMessage // encoding/json path only
	Count      int64
	HasCount   bool
	Errors     int64
	HasErrors  bool
	Latency    *wireLatency

	// Set by fastUnmarshal instead of Values: the first fastN entries of
	// fastVals, sorted by name (see addValue).
	fastHasValues bool
	fastN         int
	fastVals      [MaxValues + 1]Value

	dec *Decoder // nil for Decode
}

// jsonEvent is wireEvent as encoding/json fills it: pointers tell an
// absent field from a zero one.
type jsonEvent struct {
	Rollout   string          `json:"rollout"`
	Variant   string          `json:"variant"`
	Time      string          `json:"time"`
	ID        string          `json:"id"`
	Unit      string          `json:"unit"`
	LatencyMs *float64        `json:"latency_ms"`
	Status    *int64          `json:"status"`
	Error     *bool           `json:"error"`
	Values    json.RawMessage `json:"values"`
	Count     *int64          `json:"count"`
	Errors    *int64          `json:"errors"`
	Latency   *wireLatency    `json:"latency"`
}

// wire converts j.
func (j *jsonEvent) wire() wireEvent {
	w := wireEvent{Rollout: j.Rollout, Variant: j.Variant, Time: j.Time, ID: j.ID, Unit: j.Unit,
		Values: j.Values, Latency: j.Latency}
	if j.LatencyMs != nil {
		w.LatencyMs, w.HasLatency = *j.LatencyMs, true
	}
	if j.Status != nil {
		w.Status, w.HasStatus = *j.Status, true
	}
	if j.Error != nil {
		w.Error, w.HasError = *j.Error, true
	}
	if j.Count != nil {
		w.Count, w.HasCount = *j.Count, true
	}
	if j.Errors != nil {
		w.Errors, w.HasErrors = *j.Errors, true
	}
	return w
}

type wireLatency struct {
	N        int64           `json:"n"`
	SumLog   float64         `json:"sumLog"`
	SumLogSq float64         `json:"sumLogSq"`
	Buckets  json.RawMessage `json:"buckets"` // [[index, count], ...], parsed by parseBuckets
}

type wireSummary struct {
	N        int64   `json:"n"`
	SumLog   float64 `json:"sumLog"`
	SumLogSq float64 `json:"sumLogSq"`
}

var null = []byte("null")

// Decode decodes and validates one telemetry message, single or batch. The
// error, when not nil, is an *Error carrying the Reason. Decode never panics.
//
// Unknown fields are ignored, for forward compatibility; known fields of the
// wrong type are rejected (ReasonBadJSON). Field names are matched as
// encoding/json does, so a differently cased key ("Rollout") is accepted.
func Decode(data []byte) (Record, error) { return decode(data, true, nil) }

// A Decoder decodes as Decode does, but takes the memory of the records'
// id, unit and values out of chunks it allocates for many records at once,
// instead of allocating for each record: fewer allocations when decoding a
// stream. A record keeps its chunk alive, so a Decoder suits records that
// are dropped soon after, such as a batch that is applied and discarded.
// The zero Decoder is ready to use; it is not safe for concurrent use.
type Decoder struct {
	// SharedRollout leaves a Record's Rollout aliasing the message, for a
	// caller that replaces it at once with its own copy of the id (ingest
	// takes the engine's): with many rollouts, Decode's cache of ids
	// misses and copies each.
	SharedRollout bool

	str  []byte  // unused part of the current chunk of string bytes
	vals []Value // unused part of the current chunk of values
}

// Chunk sizes of a Decoder. Longer ids and units, and more values, than
// fit in a quarter of a chunk are allocated on their own.
const (
	decoderStrChunk = 8 << 10
	decoderValChunk = 256
)

// Decode decodes and validates one telemetry message, as the function Decode.
func (d *Decoder) Decode(data []byte) (Record, error) { return decode(data, true, d) }

// string returns a copy of the bytes of a and b, concatenated.
func (d *Decoder) string(a, b string) string {
	n := len(a) + len(b)
	if n > decoderStrChunk/4 {
		return a + b
	}
	if len(d.str) < n {
		d.str = make([]byte, decoderStrChunk)
	}
	buf := d.str[:n:n]
	d.str = d.str[n:]
	copy(buf[copy(buf, a):], b)
	return unsafe.String(unsafe.SliceData(buf), n)
}

// values returns a copy of vs.
func (d *Decoder) values(vs []Value) []Value {
	n := len(vs)
	if n > decoderValChunk/4 {
		return append([]Value(nil), vs...)
	}
	if len(d.vals) < n {
		d.vals = make([]Value, decoderValChunk)
	}
	out := d.vals[:n:n]
	d.vals = d.vals[n:]
	copy(out, vs)
	return out
}

// decode is Decode, with the reflection-free fast path optional for tests
// and the memory taken from dec when it is not nil.
func decode(data []byte, fast bool, dec *Decoder) (Record, error) {
	if !isASCII(data) && !utf8.Valid(data) {
		return Record{}, reject(ReasonBadEncoding, "message is not valid UTF-8")
	}
	// w stays on the stack: the fallback decodes into its own jsonEvent.
	var w wireEvent
	w.dec = dec
	if fast && fastUnmarshal(data, &w) {
		// The fast path leaves rollout, id and unit aliasing data; the
		// Record must own them.
		w.own()
	} else {
		var j jsonEvent
		if err := json.Unmarshal(data, &j); err != nil {
			return Record{}, reject(ReasonBadJSON, "%s", jsonDetail(err))
		}
		w = j.wire()
		w.dec = dec
	}
	r := Record{Rollout: w.Rollout, ID: w.ID}
	if err := w.header(&r); err != nil {
		return Record{}, err
	}
	if w.HasCount {
		return r, w.batch(&r)
	}
	return r, w.single(&r)
}

// isASCII reports whether every byte of b is below 0x80, which makes b
// valid UTF-8: the usual message, checked 16 bytes at a time, faster
// than utf8.Valid's 8.
func isASCII(b []byte) bool {
	var acc uint64
	for ; len(b) >= 16; b = b[16:] {
		acc |= binary.LittleEndian.Uint64(b) | binary.LittleEndian.Uint64(b[8:])
	}
	if len(b) >= 8 {
		acc |= binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	for _, c := range b {
		acc |= uint64(c)
	}
	return acc&wordHighBits == 0
}

// jsonDetail shortens encoding/json's errors, which name Go types.
func jsonDetail(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "message"
		}
		return field + ": wrong type (" + te.Value + ")"
	}
	return err.Error()
}

// header validates the fields common to both forms.
func (w *wireEvent) header(r *Record) error {
	switch {
	case w.Rollout == "":
		return reject(ReasonMissingField, "rollout is missing")
	case !ValidRollout(w.Rollout):
		return reject(ReasonBadRollout, "rollout %.80q does not match [A-Za-z0-9_-]{1,64}", w.Rollout)
	}
	switch w.Variant {
	case "baseline":
		r.Variant = analyzer.Baseline
	case "canary":
		r.Variant = analyzer.Canary
	case "":
		return reject(ReasonMissingField, "variant is missing")
	default:
		return reject(ReasonBadVariant, "variant %.40q is neither baseline nor canary", w.Variant)
	}
	if w.Time != "" {
		t, ok := parseTime(w.Time) // time.Parse(time.RFC3339Nano, w.Time), in UTC
		if !ok {
			return reject(ReasonBadValue, "time %.40q is not RFC 3339", w.Time)
		}
		r.Time = t
	}
	if len(w.ID) > MaxIDLen {
		return reject(ReasonBadValue, "id is longer than %d bytes", MaxIDLen)
	}
	return nil
}

func (w *wireEvent) single(r *Record) error {
	if w.HasErrors || w.Latency != nil {
		return reject(ReasonMissingField, "count is missing: errors and latency belong to the batch form")
	}
	if len(w.Unit) > MaxIDLen {
		return reject(ReasonBadValue, "unit is longer than %d bytes", MaxIDLen)
	}
	o := &r.Single
	o.Variant = r.Variant
	if w.HasLatency {
		ms := w.LatencyMs
		if !(ms >= 0 && ms <= MaxLatencyMs) { // also catches NaN, which JSON cannot carry anyway
			return reject(ReasonBadValue, "latency_ms %g is outside [0, %g]", ms, float64(MaxLatencyMs))
		}
		o.HasLatency = true
		o.LatencyMs = math.Max(ms, MinLatencyMs)
	}
	if w.HasStatus {
		if s := w.Status; s < 100 || s > 599 {
			return reject(ReasonBadValue, "status %d is not an HTTP status", s)
		}
		o.HasOutcome = true
		o.Error = w.Status >= 500
	}
	if w.HasError {
		o.HasOutcome = true
		o.Error = w.Error
	}
	vals := w.fastVals[:w.fastN]
	if !w.fastHasValues && len(w.Values) > 0 && !bytes.Equal(w.Values, null) {
		var err error
		if vals, err = unmarshalValues(w.Values); err != nil {
			return err
		}
	}
	if len(vals) > MaxValues {
		return reject(ReasonBadValue, "values: more than %d entries", MaxValues)
	}
	for _, v := range vals {
		if !validName(v.Name) {
			return reject(ReasonBadValue, "values: name %.80q does not match [A-Za-z0-9_.-]{1,64}", v.Name)
		}
		if !(v.Value > 0 && v.Value <= MaxValue) {
			return reject(ReasonBadValue, "values.%s: %g is outside (0, %g]", v.Name, v.Value, float64(MaxValue))
		}
	}
	if len(vals) > 0 {
		if w.dec != nil {
			r.Values = w.dec.values(vals)
		} else {
			r.Values = append([]Value(nil), vals...) // one allocation of the exact size
		}
	}
	if !o.HasLatency && !o.HasOutcome && r.Values == nil {
		return reject(ReasonMissingField, "no signal: need latency_ms, status, error or values")
	}
	r.Unit = w.Unit
	o.Unit = UnitHash(w.Unit)
	return nil
}

// unmarshalValues decodes a single event's values with encoding/json, into
// a slice sorted by name (a repeated name keeps its last value, as in a map).
func unmarshalValues(raw json.RawMessage) ([]Value, error) {
	var m map[string]float64
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, reject(ReasonBadJSON, "values: %s", jsonDetail(err))
	}
	vals := make([]Value, 0, len(m))
	for name, v := range m {
		vals = append(vals, Value{Name: name, Value: v})
	}
	slices.SortFunc(vals, func(a, b Value) int { return strings.Compare(a.Name, b.Name) })
	return vals, nil
}

func (w *wireEvent) batch(r *Record) error {
	if w.HasLatency || w.HasStatus || w.HasError {
		return reject(ReasonBadJSON, "latency_ms, status and error belong to the single form, not a batch (count is set)")
	}
	count := w.Count
	if count < 1 {
		return reject(ReasonBadValue, "count %d is not positive", count)
	}
	b := &BatchRecord{Batch: analyzer.Batch{Variant: r.Variant, Requests: count}}
	if w.HasErrors {
		b.Errors = w.Errors
	}
	if b.Errors < 0 || b.Errors > count {
		return reject(ReasonBadValue, "errors %d is outside [0, count=%d]", b.Errors, count)
	}
	if l := w.Latency; l != nil {
		s := analyzer.Summary{N: l.N, SumLog: l.SumLog, SumLogSq: l.SumLogSq}
		if err := checkSummary("latency", s, count, math.Log(MinLatencyMs), math.Log(MaxLatencyMs)); err != nil {
			return err
		}
		b.Latency = s
		pairs, err := parseBuckets(l.Buckets)
		if err != nil {
			return err
		}
		buckets, err := checkBuckets(pairs, l.N)
		if err != nil {
			return err
		}
		b.Buckets = buckets
	}
	if len(w.Values) > 0 && !bytes.Equal(w.Values, null) {
		var vals map[string]wireSummary
		if err := json.Unmarshal(w.Values, &vals); err != nil {
			return reject(ReasonBadJSON, "values: %s", jsonDetail(err))
		}
		if len(vals) > MaxValues {
			return reject(ReasonBadValue, "values: more than %d entries", MaxValues)
		}
		if len(vals) > 0 {
			b.Values = make(map[string]analyzer.Summary, len(vals))
		}
		for name, v := range vals {
			if !validName(name) {
				return reject(ReasonBadValue, "values: name %.80q does not match [A-Za-z0-9_.-]{1,64}", name)
			}
			s := analyzer.Summary(v)
			if err := checkSummary("values."+name, s, count, math.Inf(-1), math.Log(MaxValue)); err != nil {
				return err
			}
			b.Values[name] = s
		}
	}
	r.Batch = b
	return nil
}

// checkSummary checks that s can be the sums of logs of n values whose logs
// lie in [lo, hi], n in [1, count].
func checkSummary(what string, s analyzer.Summary, count int64, lo, hi float64) error {
	if s.N < 1 || s.N > count {
		return reject(ReasonBadValue, "%s.n %d is outside [1, count=%d]", what, s.N, count)
	}
	if !finite(s.SumLog) || !finite(s.SumLogSq) {
		return reject(ReasonBadValue, "%s: sums must be finite", what)
	}
	n := float64(s.N)
	mean := s.SumLog / n
	const slack = 1e-9
	if mean < lo-slack*math.Abs(lo) || mean > hi+slack*math.Abs(hi) {
		return reject(ReasonBadValue, "%s: mean log %g is outside [%g, %g]", what, mean, lo, hi)
	}
	// Cauchy-Schwarz: sum(x^2) >= (sum x)^2 / n, up to rounding.
	if min := s.SumLog * s.SumLog / n; s.SumLogSq < min-1e-6*math.Max(1, min) {
		return reject(ReasonBadValue, "%s: sumLogSq %g is below sumLog^2/n = %g", what, s.SumLogSq, min)
	}
	return nil
}

// parseBuckets parses the [[index, count], ...] array, without reflection
// in the common case.
func parseBuckets(raw json.RawMessage) ([][2]int64, error) {
	if len(raw) == 0 || bytes.Equal(raw, null) {
		return nil, nil
	}
	if pairs, ok := fastBuckets(raw); ok {
		return pairs, nil
	}
	var slow [][]int64
	if err := json.Unmarshal(raw, &slow); err != nil {
		return nil, reject(ReasonBadJSON, "latency.buckets: %s", jsonDetail(err))
	}
	pairs := make([][2]int64, len(slow))
	for i, p := range slow {
		if len(p) != 2 {
			return nil, reject(ReasonBadValue, "latency.buckets[%d]: want [index, count]", i)
		}
		pairs[i] = [2]int64{p[0], p[1]}
	}
	return pairs, nil
}

// checkBuckets validates [index, count] pairs: strictly increasing indices in
// range, positive counts summing to n.
func checkBuckets(pairs [][2]int64, n int64) ([]analyzer.Bucket, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	if len(pairs) > MaxBuckets {
		return nil, reject(ReasonBadValue, "latency.buckets: more than %d buckets", MaxBuckets)
	}
	lo, hi := analyzer.MinBucket, analyzer.MaxBucket
	out := make([]analyzer.Bucket, len(pairs))
	var sum int64
	for i, p := range pairs {
		idx, c := p[0], p[1]
		if idx < int64(lo) || idx > int64(hi) {
			return nil, reject(ReasonBadValue, "latency.buckets[%d]: index %d is outside [%d, %d]", i, idx, lo, hi)
		}
		if i > 0 && idx <= int64(out[i-1].Index) {
			return nil, reject(ReasonBadValue, "latency.buckets[%d]: indices must increase", i)
		}
		if c < 1 || c > n-sum {
			return nil, reject(ReasonBadValue, "latency.buckets[%d]: count %d is not positive or makes the counts exceed latency.n=%d", i, c, n)
		}
		sum += c
		out[i] = analyzer.Bucket{Index: int32(idx), Count: c}
	}
	if sum != n {
		return nil, reject(ReasonBadValue, "latency.buckets: counts sum to %d, latency.n is %d", sum, n)
	}
	return out, nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
