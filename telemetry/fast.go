package telemetry

import (
	"encoding/binary"
	"math/bits"
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
// differential fuzz test (FuzzDecode) holds the two decoders equal where
// this one answers, and FuzzDecodeReference holds it to the parser it
// replaced (reference_test.go).
//
// data must be valid UTF-8. The string fields of w alias data (no copy):
// the caller must call w.own before a Record keeps them. Value names are
// interned.
//
// It scans with a local index, which the compiler keeps in a register,
// matches the known keys by one table lookup and word comparison (see
// matchKey) and strings 8 bytes at a time (see scanString).
func fastUnmarshal(data []byte, w *wireEvent) bool {
	b := data
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipWS(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return false
		}
		key, j := matchKey(b, i+1)
		if j < 0 {
			return false
		}
		i = skipWS(b, j)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipWS(b, i+1)
		if i >= len(b) {
			return false
		}
		if b[i] == 'n' { // null: same as absent, and resets an earlier duplicate
			if !hasLit(b, i, "null") || !w.setNull(key) {
				return false
			}
			i += len("null")
		} else if i = w.set(b, i, key); i < 0 {
			return false
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return skipWS(b, i+1) == len(b)
		default:
			return false
		}
	}
}

// The keys fastUnmarshal knows; keyOther is any other.
const (
	keyOther = iota
	keyRollout
	keyVariant
	keyTime
	keyID
	keyUnit
	keyLatencyMs
	keyStatus
	keyError
	keyValues
)

// keyOf returns the key called name.
func keyOf(name []byte) int {
	switch string(name) {
	case "rollout":
		return keyRollout
	case "variant":
		return keyVariant
	case "time":
		return keyTime
	case "id":
		return keyID
	case "unit":
		return keyUnit
	case "latency_ms":
		return keyLatencyMs
	case "status":
		return keyStatus
	case "error":
		return keyError
	case "values":
		return keyValues
	}
	return keyOther
}

// A word with every byte 1, and one with every byte's high bit.
const (
	wordLowBytes = 0x0101010101010101
	wordHighBits = 0x8080808080808080
)

// keyNames are the names of the known keys.
var keyNames = [...]string{keyRollout: "rollout", keyVariant: "variant", keyTime: "time", keyID: "id",
	keyUnit: "unit", keyLatencyMs: "latency_ms", keyStatus: "status", keyError: "error", keyValues: "values"}

// A keySlot of keyTable holds a known key: the first 8 bytes of its name
// and closing quote as a little-endian word loads them (word, under mask),
// the length of the name and quote, and the key.
type keySlot struct {
	word, mask uint64
	n, key     int
}

// keyTable holds each known key at keyHash of its first word. The hash,
// the first byte of the name xor its third (5 bits), tells the nine keys
// apart; an empty slot matches no word.
var keyTable = func() (t [32]keySlot) {
	for i := range t {
		t[i].word = 1 // under mask 0: no match
	}
	for key, name := range keyNames {
		if name == "" {
			continue
		}
		var b [8]byte
		n := copy(b[:], name+`"`)
		w := binary.LittleEndian.Uint64(b[:])
		s := &t[keyHash(w)]
		if s.mask != 0 {
			panic("telemetry: keyTable: " + name + " collides")
		}
		*s = keySlot{word: w, mask: 1<<(8*n) - 1, n: len(name) + 1, key: key}
	}
	return t
}()

func keyHash(u uint64) uint64 { return (u ^ u>>16) & 31 }

// matchKey reads the key string whose first byte is b[i] (after the opening
// quote): it returns which key it is and the index after its closing quote,
// or -1 when it is not a plain string. A known key is recognised by one
// table lookup and word comparison (latency_ms, 11 bytes with the quote,
// by three more byte comparisons); other keys are scanned and looked up by
// name.
func matchKey(b []byte, i int) (key, next int) {
	if len(b)-i >= 8 {
		u := binary.LittleEndian.Uint64(b[i:])
		if s := &keyTable[keyHash(u)]; u&s.mask == s.word {
			if s.key != keyLatencyMs {
				return s.key, i + s.n
			}
			if len(b)-i >= 11 && b[i+8] == 'm' && b[i+9] == 's' && b[i+10] == '"' {
				return keyLatencyMs, i + 11
			}
		}
	}
	end := scanString(b, i)
	if end < 0 {
		return keyOther, -1
	}
	return keyOf(b[i:end]), end + 1
}

// skipWS returns the index of the first byte from i on that is not JSON
// white space. The common case, no white space, costs one comparison.
func skipWS(b []byte, i int) int {
	for i < len(b) && b[i] <= ' ' {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// hasLit reports whether b holds lit at i.
func hasLit(b []byte, i int, lit string) bool {
	return len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit
}

// scanString returns the index of the quote that closes the string whose
// first byte is b[i], or -1 when an escape or a control character comes
// first or the string does not end. It tests 8 bytes at a time: a byte is
// special when it is the quote, the backslash or below 0x20, and the
// lowest special byte of a word is found exactly (the borrows of the
// subtractions below only ever mark bytes above a special one).
func scanString(b []byte, i int) int {
	for ; len(b)-i >= 8; i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		if m := specialBytes(x); m != 0 {
			shift := bits.TrailingZeros64(m) &^ 7 // of the first special byte
			if byte(x>>shift) == '"' {
				return i + shift>>3
			}
			return -1
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; !plainStringByte[c] {
			if c == '"' {
				return i
			}
			return -1
		}
	}
	return -1
}

// specialBytes returns the high bit of each byte of x that is a quote, a
// backslash or a control byte (below 0x20); above the lowest such byte it
// may also mark others.
func specialBytes(x uint64) uint64 {
	q := x ^ ('"' * wordLowBytes)
	s := x ^ ('\\' * wordLowBytes)
	return ((q-wordLowBytes)&^q | (s-wordLowBytes)&^s | (x-0x20*wordLowBytes)&^x) & wordHighBits
}

func (w *wireEvent) setNull(key int) bool {
	switch key {
	case keyRollout, keyVariant, keyTime, keyID, keyUnit:
	case keyLatencyMs:
		w.LatencyMs, w.HasLatency = 0, false
	case keyStatus:
		w.Status, w.HasStatus = 0, false
	case keyError:
		w.Error, w.HasError = false, false
	case keyValues:
		w.fastN, w.Values = 0, nil
	default:
		return false
	}
	return true
}

// set reads the value of key, which starts at b[i] (not white space, not
// null), into w, and returns the index after it, or -1 to fall back. A
// string is left aliasing b (see own).
func (w *wireEvent) set(b []byte, i int, key int) int {
	var dst *string
	switch key {
	case keyRollout:
		dst = &w.Rollout
	case keyVariant:
		dst = &w.Variant
	case keyTime:
		dst = &w.Time
	case keyID:
		dst = &w.ID
	case keyUnit:
		dst = &w.Unit
	case keyLatencyMs:
		w.LatencyMs, i = parseFloat(b, i)
		w.HasLatency = i >= 0
		return i
	case keyStatus:
		w.Status, i = parseInt(b, i)
		w.HasStatus = i >= 0
		return i
	case keyError:
		switch {
		case hasLit(b, i, "true"):
			w.Error, w.HasError = true, true
			return i + len("true")
		case hasLit(b, i, "false"):
			w.Error, w.HasError = false, true
			return i + len("false")
		}
		return -1
	case keyValues:
		return w.values(b, i)
	default:
		return -1
	}
	if b[i] != '"' {
		return -1
	}
	end := scanString(b, i+1)
	if end < 0 {
		return -1
	}
	*dst = unsafe.String(&b[i+1], end-i-1)
	return end + 1
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
	slot := &internTable[internHash(s)%internSlots]
	if p := slot.Load(); p != nil && *p == s {
		return *p
	}
	c := strings.Clone(s)
	slot.Store(&c)
	return c
}

// internHash hashes s, of at most internMaxLen bytes, for the intern
// table: 8 bytes per multiplication, the last 1 to 8 bytes loaded as one
// word (overlapping the word before when s is longer than 8 bytes), in
// the manner of wyhash. It only places strings in slots: a poorer spread
// would only cost more misses.
func internHash(s string) uint32 {
	const (
		k0 = 0x9e3779b97f4a7c15
		k1 = 0xbf58476d1ce4e5b9
	)
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	h := uint64(len(s)) * k0
	var last uint64
	switch n := len(b); {
	case n >= 8:
		for ; len(b) > 8; b = b[8:] {
			h = (h ^ binary.LittleEndian.Uint64(b)) * k1
			h ^= h >> 31
		}
		last = binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(s[len(s)-8:]), 8))
	case n >= 4:
		last = uint64(binary.LittleEndian.Uint32(b)) | uint64(binary.LittleEndian.Uint32(b[n-4:]))<<32
	case n > 0:
		last = uint64(b[0]) | uint64(b[n/2])<<8 | uint64(b[n-1])<<16
	}
	h = (h ^ last) * k1
	h ^= h >> 32
	h *= k0
	return uint32(h >> 32)
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

// plainStringByte tells the bytes that stand for themselves inside a JSON
// string: all but the quote, the backslash and control characters.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

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

// parseFloat converts the JSON number at b[i] as strconv.ParseFloat does
// and returns the index after it, or -1 when b[i] starts no valid number
// or ParseFloat fails. It checks the grammar and gathers the digits in one
// pass; the usual number (no exponent, at most 15 digits) is converted as
// simpleFloat does, others by ParseFloat.
func parseFloat(b []byte, i int) (float64, int) {
	start := i
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	mant, digits, i := intPart(b, i)
	if i < 0 {
		return 0, -1
	}
	frac := 0
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i]-'0' >= 10 {
			return 0, -1
		}
		for ; i < len(b) && b[i]-'0' < 10; i++ {
			mant = mant*10 + uint64(b[i]-'0')
			frac++
		}
		digits += frac
	}
	if i < len(b) && b[i]|0x20 == 'e' {
		if i = exponentEnd(b, i+1); i < 0 {
			return 0, -1
		}
		return slowFloat(b, start, i)
	}
	if digits > 15 {
		return slowFloat(b, start, i)
	}
	f := float64(mant) / pow10[frac]
	if neg {
		f = -f
	}
	return f, i
}

// intPart reads the integer part of a JSON number at b[i] (after any
// minus sign): a lone 0 or digits without a leading zero. It returns their
// value (wrapping past 19 digits, which callers send to strconv), how many
// there are, and the index after them, or -1 when b[i] is no digit.
func intPart(b []byte, i int) (v uint64, digits, next int) {
	switch {
	case i < len(b) && b[i] == '0':
		return 0, 1, i + 1
	case i < len(b) && b[i]-'1' < 9:
		for ; i < len(b) && b[i]-'0' < 10; i++ {
			v = v*10 + uint64(b[i]-'0')
			digits++
		}
		return v, digits, i
	}
	return 0, 0, -1
}

// exponentEnd returns the index after the exponent of a JSON number whose
// 'e' precedes b[i], or -1 when it has no digit.
func exponentEnd(b []byte, i int) int {
	if i < len(b) && (b[i] == '+' || b[i] == '-') {
		i++
	}
	if i >= len(b) || b[i]-'0' >= 10 {
		return -1
	}
	for i < len(b) && b[i]-'0' < 10 {
		i++
	}
	return i
}

// slowFloat converts the number b[start:end] with strconv.ParseFloat.
func slowFloat(b []byte, start, end int) (float64, int) {
	f, err := strconv.ParseFloat(unsafe.String(&b[start], end-start), 64)
	if err != nil {
		return 0, -1
	}
	return f, end
}

// parseInt converts the JSON number at b[i] as strconv.ParseInt (base 10,
// 64 bits) does and returns the index after it, or -1 when b[i] starts no
// valid number or ParseInt fails (a fraction or an exponent, or out of
// range). Up to 18 digits cannot overflow and are converted here.
func parseInt(b []byte, i int) (int64, int) {
	start := i
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	v, digits, i := intPart(b, i)
	if i < 0 {
		return 0, -1
	}
	if i < len(b) && (b[i] == '.' || b[i]|0x20 == 'e') {
		return 0, -1 // valid JSON perhaps, but not for ParseInt
	}
	if digits > 18 {
		n, err := strconv.ParseInt(unsafe.String(&b[start], i-start), 10, 64)
		if err != nil {
			return 0, -1
		}
		return n, i
	}
	if neg {
		return -int64(v), i
	}
	return int64(v), i
}

// values reads the flat object of numbers at b[i] into w.fastVals and
// returns the index after it, or -1.
func (w *wireEvent) values(b []byte, i int) int {
	if b[i] != '{' {
		return -1
	}
	w.Values = nil
	w.fastN = 0
	w.fastHasValues = true
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return -1
		}
		end := scanString(b, i+1)
		if end < 0 {
			return -1
		}
		name := b[i+1 : end]
		i = skipWS(b, end+1)
		if i >= len(b) || b[i] != ':' {
			return -1
		}
		var f float64
		if f, i = parseFloat(b, skipWS(b, i+1)); i < 0 {
			return -1
		}
		w.addValue(name, f)
		i = skipWS(b, i)
		if i >= len(b) {
			return -1
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return i + 1
		default:
			return -1
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
