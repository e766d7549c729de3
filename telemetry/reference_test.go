package telemetry

// This file keeps, for the differential tests only, the single-event decoder
// as it was before the hand-written scanner of fast.go and the time parser
// of rfc3339.go (commit 651dc13): refDecode must give the same Record and
// the same error text as decode, for every input.

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/verdict-dev/verdict/analyzer"
)

// refFastUnmarshal decodes the common shape of a single event into w without
// reflection: a flat object whose keys are the known lower-case names, with
// strings free of escapes, plain numbers and a flat "values" object. On
// anything else (an unknown or differently cased key, an escape, a batch, a
// type mismatch, invalid JSON) it returns false and the caller uses
// encoding/json, which then defines the result, including the error. A
// differential fuzz test holds the two decoders equal where this one answers.
//
// data must be valid UTF-8. The string fields of w alias data (no copy):
// the caller must call w.own before a Record keeps them. Value names are
// interned.
func refFastUnmarshal(data []byte, w *wireEvent) bool {
	p := refParser{b: data}
	if !p.byte('{') {
		return false
	}
	if p.peek() == '}' {
		p.i++
		return p.end()
	}
	for {
		key, ok := p.str()
		if !ok || !p.byte(':') {
			return false
		}
		p.ws()
		if p.i >= len(p.b) {
			return false
		}
		if p.b[p.i] == 'n' { // null: same as absent, and resets an earlier duplicate
			if !p.lit("null") || !w.refsetNull(key) {
				return false
			}
		} else if !w.refset(&p, key) {
			return false
		}
		switch p.next() {
		case ',':
			continue
		case '}':
			return p.end()
		default:
			return false
		}
	}
}

func (w *wireEvent) refsetNull(key []byte) bool {
	switch string(key) {
	case "rollout", "variant", "time", "id", "unit":
	case "latency_ms":
		w.LatencyMs, w.HasLatency = 0, false
	case "status":
		w.Status, w.HasStatus = 0, false
	case "error":
		w.Error, w.HasError = false, false
	case "values":
		w.fastN, w.Values = 0, nil
	default:
		return false
	}
	return true
}

func (w *wireEvent) refset(p *refParser, key []byte) bool {
	switch string(key) {
	case "rollout":
		return p.strInto(&w.Rollout)
	case "variant":
		return p.strInto(&w.Variant)
	case "time":
		return p.strInto(&w.Time)
	case "id":
		return p.strInto(&w.ID)
	case "unit":
		return p.strInto(&w.Unit)
	case "latency_ms":
		w.LatencyMs, w.HasLatency = p.float()
		return w.HasLatency
	case "status":
		w.Status, w.HasStatus = p.int()
		return w.HasStatus
	case "error":
		switch {
		case p.lit("true"):
			w.Error = true
		case p.lit("false"):
			w.Error = false
		default:
			return false
		}
		w.HasError = true
		return true
	case "values":
		return p.values(w)
	}
	return false
}

// own replaces the strings a Record keeps (rollout, id, unit), which
// refFastUnmarshal left aliasing the message, by copies: the rollout from the
// intern table (unless w.dec.SharedRollout), id and unit in one allocation
// for both (or from w.dec's chunk). Variant and time
// are only parsed or quoted into errors, so they may keep aliasing data.
func (w *wireEvent) refown() {
	if w.dec == nil || !w.dec.SharedRollout {
		w.Rollout = intern(w.Rollout)
	}
	switch {
	case w.ID == "" && w.Unit == "":
	case w.dec != nil:
		s := w.dec.string(w.ID, w.Unit)
		w.ID, w.Unit = s[:len(w.ID)], s[len(w.ID):]
	case w.Unit == "":
		w.ID = strings.Clone(w.ID)
	case w.ID == "":
		w.Unit = strings.Clone(w.Unit)
	default:
		var b strings.Builder
		b.Grow(len(w.ID) + len(w.Unit))
		b.WriteString(w.ID)
		b.WriteString(w.Unit)
		s := b.String()
		w.ID, w.Unit = s[:len(w.ID)], s[len(w.ID):]
	}
}

type refParser struct {
	b []byte
	i int
}

func (p *refParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *refParser) peek() byte {
	p.ws()
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *refParser) next() byte {
	c := p.peek()
	if c != 0 {
		p.i++
	}
	return c
}

func (p *refParser) byte(c byte) bool { return p.next() == c }

func (p *refParser) end() bool {
	p.ws()
	return p.i == len(p.b)
}

func (p *refParser) lit(s string) bool {
	if len(p.b)-p.i >= len(s) && string(p.b[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

// str returns the bytes of a string without escapes or control characters.
func (p *refParser) str() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start := p.i
	// One table lookup per byte: this loop runs over every key and string
	// of every event.
	for i, c := range p.b[start:] {
		if refPlainStringByte[c] {
			continue
		}
		if c != '"' {
			return nil, false // an escape or a control character
		}
		p.i = start + i + 1
		return p.b[start : start+i], true
	}
	return nil, false
}

// refPlainStringByte tells the bytes that stand for themselves inside a JSON
// string: all but the quote, the backslash and control characters.
var refPlainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// strInto sets *dst to a string that aliases the message (see own).
func (p *refParser) strInto(dst *string) bool {
	s, ok := p.str()
	if ok {
		*dst = unsafe.String(unsafe.SliceData(s), len(s))
	}
	return ok
}

// number returns the bytes of a JSON number, following its grammar exactly.
func (p *refParser) number() ([]byte, bool) {
	p.ws()
	start, b, i := p.i, p.b, p.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return nil, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return nil, false
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return nil, false
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	p.i = i
	return b[start:i], true
}

func (p *refParser) float() (float64, bool) {
	n, ok := p.number()
	if !ok {
		return 0, false
	}
	if f, ok := refSimpleFloat(n); ok {
		return f, true
	}
	f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(n), len(n)), 64)
	return f, err == nil
}

// refSimpleFloat converts a valid JSON number without exponent and with at
// most 15 digits, the usual latency or value ("12.5"), faster than
// strconv.ParseFloat and to the same float64: the digits as an integer
// (below 10^15, exact) divided by a power of ten (exact), which IEEE
// division rounds correctly. Anything else reports false.
func refSimpleFloat(n []byte) (float64, bool) {
	neg := len(n) > 0 && n[0] == '-'
	if neg {
		n = n[1:]
	}
	var mant uint64
	digits, frac, dot := 0, 0, false
	for _, c := range n {
		switch {
		case c >= '0' && c <= '9':
			mant = mant*10 + uint64(c-'0')
			digits++
			if dot {
				frac++
			}
		case c == '.' && !dot:
			dot = true
		default:
			return 0, false // an exponent
		}
	}
	if digits == 0 || digits > 15 {
		return 0, false
	}
	f := float64(mant) / pow10[frac]
	if neg {
		f = -f
	}
	return f, true
}

func (p *refParser) int() (int64, bool) {
	n, ok := p.number()
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(unsafe.String(unsafe.SliceData(n), len(n)), 10, 64)
	return v, err == nil
}

// values parses a flat object of numbers into w.fastVals.
func (p *refParser) values(w *wireEvent) bool {
	if !p.byte('{') {
		return false
	}
	w.Values = nil
	w.fastN = 0
	w.fastHasValues = true
	if p.peek() == '}' {
		p.i++
		return true
	}
	for {
		k, ok := p.str()
		if !ok || !p.byte(':') {
			return false
		}
		f, ok := p.float()
		if !ok {
			return false
		}
		w.refaddValue(k, f)
		switch p.next() {
		case ',':
		case '}':
			return true
		default:
			return false
		}
	}
}

// addValue sets the value called name as a map would: a repeated name
// keeps its last value. w.fastVals stays sorted by name. Once it holds
// more than MaxValues names (which Decode rejects) further new names are
// not kept: the count is already over the limit.
func (w *wireEvent) refaddValue(name []byte, f float64) {
	n := w.fastN
	i := 0
	for ; i < n; i++ {
		if c := refCompareName(w.fastVals[i].Name, name); c == 0 {
			w.fastVals[i].Value = f
			return
		} else if c > 0 {
			break
		}
	}
	if n == len(w.fastVals) {
		return
	}
	copy(w.fastVals[i+1:n+1], w.fastVals[i:n])
	w.fastVals[i] = Value{Name: intern(unsafe.String(unsafe.SliceData(name), len(name))), Value: f}
	w.fastN = n + 1
}

// refCompareName compares s with b as strings.Compare does, without
// converting b.
func refCompareName(s string, b []byte) int {
	return strings.Compare(s, unsafe.String(unsafe.SliceData(b), len(b)))
}

// decode is Decode, with the reflection-free fast path optional for tests
// and the memory taken from dec when it is not nil.
func refDecode(data []byte, fast bool, dec *Decoder) (Record, error) {
	if !utf8.Valid(data) {
		return Record{}, reject(ReasonBadEncoding, "message is not valid UTF-8")
	}
	// w stays on the stack: the fallback decodes into its own jsonEvent.
	var w wireEvent
	w.dec = dec
	if fast && refFastUnmarshal(data, &w) {
		// The fast path leaves rollout, id and unit aliasing data; the
		// Record must own them.
		w.refown()
	} else {
		var j jsonEvent
		if err := json.Unmarshal(data, &j); err != nil {
			return Record{}, reject(ReasonBadJSON, "%s", jsonDetail(err))
		}
		w = j.wire()
		w.dec = dec
	}
	r := Record{Rollout: w.Rollout, ID: w.ID}
	if err := w.refheader(&r); err != nil {
		return Record{}, err
	}
	if w.HasCount {
		return r, w.batch(&r)
	}
	return r, w.refsingle(&r)
}

// header validates the fields common to both forms.
func (w *wireEvent) refheader(r *Record) error {
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
		t, err := time.Parse(time.RFC3339Nano, w.Time)
		if err != nil {
			return reject(ReasonBadValue, "time %.40q is not RFC 3339", w.Time)
		}
		r.Time = t.UTC()
	}
	if len(w.ID) > MaxIDLen {
		return reject(ReasonBadValue, "id is longer than %d bytes", MaxIDLen)
	}
	return nil
}

func (w *wireEvent) refsingle(r *Record) error {
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
