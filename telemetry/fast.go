package telemetry

import (
	"strconv"
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
// data must be valid UTF-8. Strings are copied out of data.
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
		w.LatencyMs = nil
	case "status":
		w.Status = nil
	case "error":
		w.Error = nil
	case "values":
		w.fastValues, w.Values = nil, nil
	default:
		return false
	}
	return true
}

func (w *wireEvent) set(p *parser, key []byte) bool {
	switch string(key) {
	case "rollout":
		return p.strInto(&w.Rollout)
	case "variant", "time":
		// Not retained past Decode (only parsed or quoted into an error),
		// so they may alias data.
		s, ok := p.str()
		if ok {
			v := unsafe.String(unsafe.SliceData(s), len(s))
			if key[0] == 'v' {
				w.Variant = v
			} else {
				w.Time = v
			}
		}
		return ok
	case "id":
		return p.strInto(&w.ID)
	case "unit":
		return p.strInto(&w.Unit)
	case "latency_ms":
		f, ok := p.float()
		if ok {
			w.LatencyMs = &f
		}
		return ok
	case "status":
		n, ok := p.int()
		if ok {
			w.Status = &n
		}
		return ok
	case "error":
		var b bool
		switch {
		case p.lit("true"):
			b = true
		case p.lit("false"):
		default:
			return false
		}
		w.Error = &b
		return true
	case "values":
		return p.values(w)
	}
	return false
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
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

func (p *parser) strInto(dst *string) bool {
	s, ok := p.str()
	if ok {
		*dst = string(s)
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
	f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(n), len(n)), 64)
	return f, err == nil
}

func (p *parser) int() (int64, bool) {
	n, ok := p.number()
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(unsafe.String(unsafe.SliceData(n), len(n)), 10, 64)
	return v, err == nil
}

// values parses a flat object of numbers.
func (p *parser) values(w *wireEvent) bool {
	if !p.byte('{') {
		return false
	}
	w.Values = nil
	w.fastValues = nil
	w.fastHasValues = true
	if p.peek() == '}' {
		p.i++
		return true
	}
	m := make(map[string]float64, 2)
	for {
		k, ok := p.str()
		if !ok || !p.byte(':') {
			return false
		}
		f, ok := p.float()
		if !ok {
			return false
		}
		m[string(k)] = f
		switch p.next() {
		case ',':
		case '}':
			w.fastValues = m
			return true
		default:
			return false
		}
	}
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
