package telemetry

import (
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"
)

// fastUnmarshal decodes the common shape of a single event into w without
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
func fastUnmarshal(data []byte, w *wireEvent) bool {
	p := parser{b: data}
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
			if !p.lit("null") || !w.setNull(key) {
				return false
			}
		} else if !w.set(&p, key) {
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

func (w *wireEvent) setNull(key []byte) bool {
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

func (w *wireEvent) set(p *parser, key []byte) bool {
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
// fastUnmarshal left aliasing the message, by copies: the rollout from the
// intern table (unless w.dec.SharedRollout), id and unit in one allocation
// for both (or from w.dec's chunk). Variant and time
// are only parsed or quoted into errors, so they may keep aliasing data.
func (w *wireEvent) own() {
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

// internSlots caches recently seen short strings (rollout ids, value
// names: few distinct values, one per message), so decoding them allocates
// nothing. A slot holds the last string that hashed to it; a miss allocates
// and replaces it. Lock-free and bounded: at most internSlots strings of at
// most internMaxLen bytes stay alive.
const (
	internSlots  = 1024
	internMaxLen = 64
)

var internTable [internSlots]atomic.Pointer[string]

// intern returns a string equal to s that does not alias s's memory.
func intern(s string) string {
	if len(s) > internMaxLen {
		return strings.Clone(s)
	}
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	slot := &internTable[h%internSlots]
	if p := slot.Load(); p != nil && *p == s {
		return *p
	}
	c := strings.Clone(s)
	slot.Store(&c)
	return c
}

type parser struct {
	b []byte
	i int
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) peek() byte {
	p.ws()
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *parser) next() byte {
	c := p.peek()
	if c != 0 {
		p.i++
	}
	return c
}

func (p *parser) byte(c byte) bool { return p.next() == c }

func (p *parser) end() bool {
	p.ws()
	return p.i == len(p.b)
}

func (p *parser) lit(s string) bool {
	if len(p.b)-p.i >= len(s) && string(p.b[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

// str returns the bytes of a string without escapes or control characters.
func (p *parser) str() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start := p.i
	// One table lookup per byte: this loop runs over every key and string
	// of every event.
	for i, c := range p.b[start:] {
		if plainStringByte[c] {
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

// plainStringByte tells the bytes that stand for themselves inside a JSON
// string: all but the quote, the backslash and control characters.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// strInto sets *dst to a string that aliases the message (see own).
func (p *parser) strInto(dst *string) bool {
	s, ok := p.str()
	if ok {
		*dst = unsafe.String(unsafe.SliceData(s), len(s))
	}
	return ok
}

// number returns the bytes of a JSON number, following its grammar exactly.
func (p *parser) number() ([]byte, bool) {
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

func (p *parser) float() (float64, bool) {
	n, ok := p.number()
	if !ok {
		return 0, false
	}
	if f, ok := simpleFloat(n); ok {
		return f, true
	}
	f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(n), len(n)), 64)
	return f, err == nil
}

// pow10 holds the powers of ten that a float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// simpleFloat converts a valid JSON number without exponent and with at
// most 15 digits, the usual latency or value ("12.5"), faster than
// strconv.ParseFloat and to the same float64: the digits as an integer
// (below 10^15, exact) divided by a power of ten (exact), which IEEE
// division rounds correctly. Anything else reports false.
func simpleFloat(n []byte) (float64, bool) {
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

func (p *parser) int() (int64, bool) {
	n, ok := p.number()
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(unsafe.String(unsafe.SliceData(n), len(n)), 10, 64)
	return v, err == nil
}

// values parses a flat object of numbers into w.fastVals.
func (p *parser) values(w *wireEvent) bool {
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
		w.addValue(k, f)
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
func (w *wireEvent) addValue(name []byte, f float64) {
	n := w.fastN
	i := 0
	for ; i < n; i++ {
		if c := compareName(w.fastVals[i].Name, name); c == 0 {
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

// compareName compares s with b as strings.Compare does, without
// converting b.
func compareName(s string, b []byte) int {
	return strings.Compare(s, unsafe.String(unsafe.SliceData(b), len(b)))
}

// fastBuckets parses [[index, count], ...] of plain integers; false means
// "use encoding/json".
func fastBuckets(raw []byte) ([][2]int64, bool) {
	p := parser{b: raw}
	if !p.byte('[') {
		return nil, false
	}
	if p.peek() == ']' {
		p.i++
		return nil, p.end()
	}
	pairs := make([][2]int64, 0, 64)
	for {
		var pair [2]int64
		if !p.byte('[') {
			return nil, false
		}
		for k := range 2 {
			n, ok := p.int()
			if !ok {
				return nil, false
			}
			pair[k] = n
			if k == 0 && !p.byte(',') {
				return nil, false
			}
		}
		if !p.byte(']') {
			return nil, false
		}
		pairs = append(pairs, pair)
		if len(pairs) > MaxBuckets {
			return nil, false
		}
		switch p.next() {
		case ',':
		case ']':
			return pairs, p.end()
		default:
			return nil, false
		}
	}
}
