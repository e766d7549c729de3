package telemetry

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/verdict-dev/verdict/analyzer"
)

// Encode returns the wire JSON of r: the single form when r.Batch is nil,
// the batch form otherwise. Decode(Encode(r)) reproduces a valid r. Encode
// does not validate r beyond refusing numbers JSON cannot carry.
func Encode(r *Record) ([]byte, error) { return Append(nil, r) }

// Append appends the wire JSON of r to dst, as Encode does. It allocates
// nothing beyond growing dst (and sorting value names, when there are any),
// so a load generator can reuse one buffer.
func Append(dst []byte, r *Record) ([]byte, error) {
	start := len(dst)
	dst = append(dst, `{"rollout":`...)
	dst = appendString(dst, r.Rollout)
	dst = append(dst, `,"variant":`...)
	switch r.Variant {
	case analyzer.Baseline:
		dst = append(dst, `"baseline"`...)
	case analyzer.Canary:
		dst = append(dst, `"canary"`...)
	default:
		return dst[:start], errors.New("telemetry: encode: invalid variant")
	}
	if !r.Time.IsZero() {
		dst = append(dst, `,"time":"`...)
		dst = r.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	if r.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = appendString(dst, r.ID)
	}
	var ok bool
	if r.Batch == nil {
		dst, ok = appendSingle(dst, r)
	} else {
		dst, ok = appendBatch(dst, r.Batch)
	}
	if !ok {
		return dst[:start], errors.New("telemetry: encode: non-finite number")
	}
	return append(dst, '}'), nil
}

func appendSingle(dst []byte, r *Record) ([]byte, bool) {
	o := &r.Single
	ok := true
	if o.HasLatency {
		dst = append(dst, `,"latency_ms":`...)
		dst, ok = appendFloat(dst, o.LatencyMs, ok)
	}
	if o.HasOutcome {
		dst = append(dst, `,"error":`...)
		dst = strconv.AppendBool(dst, o.Error)
	}
	if r.Unit != "" {
		dst = append(dst, `,"unit":`...)
		dst = appendString(dst, r.Unit)
	}
	if len(r.Values) > 0 {
		dst = append(dst, `,"values":{`...)
		vals := r.Values
		if !sortedValues(vals) {
			vals = canonicalValues(vals)
		}
		for i, v := range vals {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, v.Name)
			dst = append(dst, ':')
			dst, ok = appendFloat(dst, v.Value, ok)
		}
		dst = append(dst, '}')
	}
	return dst, ok
}

func appendBatch(dst []byte, b *BatchRecord) ([]byte, bool) {
	ok := true
	dst = append(dst, `,"count":`...)
	dst = strconv.AppendInt(dst, b.Requests, 10)
	dst = append(dst, `,"errors":`...)
	dst = strconv.AppendInt(dst, b.Errors, 10)
	if b.Latency.N > 0 {
		dst = append(dst, `,"latency":`...)
		dst, ok = appendSummary(dst, b.Latency, ok)
		if len(b.Buckets) > 0 {
			dst = append(dst, `,"buckets":[`...)
			for i, bk := range b.Buckets {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, '[')
				dst = strconv.AppendInt(dst, int64(bk.Index), 10)
				dst = append(dst, ',')
				dst = strconv.AppendInt(dst, bk.Count, 10)
				dst = append(dst, ']')
			}
			dst = append(dst, ']')
		}
		dst = append(dst, '}')
	}
	if len(b.Values) > 0 {
		dst = append(dst, `,"values":{`...)
		for i, name := range sortedKeys(b.Values) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, name)
			dst = append(dst, ':')
			dst, ok = appendSummary(dst, b.Values[name], ok)
			dst = append(dst, '}')
		}
		dst = append(dst, '}')
	}
	return dst, ok
}

// appendSummary appends an unclosed summary object.
func appendSummary(dst []byte, s analyzer.Summary, ok bool) ([]byte, bool) {
	dst = append(dst, `{"n":`...)
	dst = strconv.AppendInt(dst, s.N, 10)
	dst = append(dst, `,"sumLog":`...)
	dst, ok = appendFloat(dst, s.SumLog, ok)
	dst = append(dst, `,"sumLogSq":`...)
	dst, ok = appendFloat(dst, s.SumLogSq, ok)
	return dst, ok // the caller closes the object
}

// appendFloat appends the shortest representation that parses back to f.
func appendFloat(dst []byte, f float64, ok bool) ([]byte, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, '0'), false
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64), ok
}

// sortedValues reports whether vs is sorted by name, names distinct, as
// Decode returns them.
func sortedValues(vs []Value) bool {
	for i := 1; i < len(vs); i++ {
		if vs[i-1].Name >= vs[i].Name {
			return false
		}
	}
	return true
}

// canonicalValues returns a copy of vs sorted by name, a repeated name
// keeping its last value (what Decode makes of a repeated key).
func canonicalValues(vs []Value) []Value {
	out := slices.Clone(vs)
	slices.SortStableFunc(out, func(a, b Value) int { return strings.Compare(a.Name, b.Name) })
	j := 0
	for i := range out {
		if j > 0 && out[j-1].Name == out[i].Name {
			out[j-1] = out[i]
			continue
		}
		out[j] = out[i]
		j++
	}
	return out[:j]
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json does.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
