package telemetry

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"pgregory.net/rapid"
)

// TestKeyTable: every known key has its own slot of keyTable, so that
// matchKey finds it by the table, not by scanning.
func TestKeyTable(t *testing.T) {
	for key, name := range keyNames {
		if name == "" {
			continue
		}
		var b [8]byte
		copy(b[:], name+`":"xxxxxxxx"}`)
		u := binary.LittleEndian.Uint64(b[:])
		if s := keyTable[keyHash(u)]; s.key != key || u&s.mask != s.word || s.n != len(name)+1 {
			t.Errorf("keyTable slot of %s = %+v", name, s)
		}
		if got := keyOf([]byte(name)); got != key {
			t.Errorf("keyOf(%s) = %d, want %d", name, got, key)
		}
	}
}

// TestMatchKey: matchKey returns the key and end that scanning the string
// and looking its name up give, for the known names, their prefixes,
// extensions and near misses, at every distance from the end of the data.
func TestMatchKey(t *testing.T) {
	names := []string{"rollout", "variant", "time", "id", "unit", "latency_ms", "status", "error", "values"}
	var keys []string
	for _, n := range names {
		keys = append(keys, n, n+"x", n[:len(n)-1], strings.ToUpper(n[:1])+n[1:], n+`\`, "x"+n)
	}
	keys = append(keys, "", "latency_", "latency_m", "latency_mx", "latency_Ms", "v", "valuez", "variants")
	for _, k := range keys {
		for _, tail := range []string{``, `"`, `":`, `":1}`, `":"abcdefghijk"}`} {
			b := []byte(`"` + k + tail)
			got, gotEnd := matchKey(b, 1)
			want, wantEnd := keyOther, -1
			if end := refScanString(b, 1); end >= 0 {
				want, wantEnd = keyOf(b[1:end]), end+1
			}
			if got != want || gotEnd != wantEnd {
				t.Errorf("matchKey(%s) = %d, %d, want %d, %d", b, got, gotEnd, want, wantEnd)
			}
		}
	}
}

// TestMatchKeyRapid: matchKey equals scanning and looking up, for strings
// made of the keys' letters, quotes and backslashes.
func TestMatchKeyRapid(t *testing.T) {
	letters := []byte("rolutvaiemdsn_\"\\x:")
	rapid.Check(t, func(t *rapid.T) {
		var b []byte
		if rapid.Bool().Draw(t, "known") {
			b = append(b, rapid.SampledFrom(keyNames[1:]).Draw(t, "name")...)
		}
		b = append(b, rapid.SliceOfN(rapid.SampledFrom(letters), 0, 14).Draw(t, "rest")...)
		got, gotEnd := matchKey(b, 0)
		want, wantEnd := keyOther, -1
		if end := refScanString(b, 0); end >= 0 {
			want, wantEnd = keyOf(b[:end]), end+1
		}
		if got != want || gotEnd != wantEnd {
			t.Fatalf("matchKey(%q) = %d, %d, want %d, %d", b, got, gotEnd, want, wantEnd)
		}
	})
}

// refScanString is scanString one byte at a time.
func refScanString(b []byte, i int) int {
	for ; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i
		case c == '\\' || c < 0x20:
			return -1
		}
	}
	return -1
}

// TestScanString holds the word-at-a-time scanString equal to the byte loop,
// over strings rich in the bytes near the special ones.
func TestScanString(t *testing.T) {
	alphabet := []byte{'"', '\\', 0, 0x01, 0x1f, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x5c ^ 0x80, '"' ^ 0x80,
		0x7f, 0x80, 0x9f, 0xa0, 0xff, 'a', 'z', '0', '-'}
	rapid.Check(t, func(t *rapid.T) {
		b := rapid.SliceOfN(rapid.SampledFrom(alphabet), 0, 40).Draw(t, "b")
		i := rapid.IntRange(0, len(b)).Draw(t, "i")
		if got, want := scanString(b, i), refScanString(b, i); got != want {
			t.Fatalf("scanString(%q, %d) = %d, want %d", b, i, got, want)
		}
	})
	// Every byte value at every position of a word, after plain bytes.
	for c := range 256 {
		for pos := range 20 {
			b := []byte(strings.Repeat("a", pos) + string([]byte{byte(c)}) + strings.Repeat("b", 9) + `"`)
			if got, want := scanString(b, 0), refScanString(b, 0); got != want {
				t.Fatalf("scanString(%q) = %d, want %d", b, got, want)
			}
		}
	}
}

// numberAlphabet draws strings that are, or nearly are, JSON numbers.
var numberGen = rapid.Custom(func(t *rapid.T) string {
	if rapid.Bool().Draw(t, "free") {
		return rapid.StringOfN(rapid.SampledFrom([]rune("0123456789-+.eE x,}")), 0, 30, -1).Draw(t, "s")
	}
	var b strings.Builder
	if rapid.Bool().Draw(t, "neg") {
		b.WriteByte('-')
	}
	b.WriteString(rapid.StringMatching(`0|[1-9][0-9]{0,22}`).Draw(t, "int"))
	if rapid.Bool().Draw(t, "frac") {
		b.WriteString(rapid.StringMatching(`\.[0-9]{1,20}`).Draw(t, "frac"))
	}
	if rapid.IntRange(0, 3).Draw(t, "exp") == 0 {
		b.WriteString(rapid.StringMatching(`[eE][+-]?[0-9]{1,3}`).Draw(t, "exp"))
	}
	b.WriteString(rapid.SampledFrom([]string{"", ",", "}", " ", "x", ".", "e"}).Draw(t, "tail"))
	return b.String()
})

// checkNumbers holds parseFloat and parseInt equal to the parser they
// replace (the number's grammar, then simpleFloat or strconv), which
// skipped white space first; fastUnmarshal skips it before calling them.
func checkNumbers(t fataler, s string) {
	b := []byte(s)
	i := skipWS(b, 0)
	rp := refParser{b: b}
	wantF, okF := rp.float()
	f, end := parseFloat(b, i)
	if (end >= 0) != okF || okF && (end != rp.i || math.Float64bits(f) != math.Float64bits(wantF)) {
		t.Fatalf("parseFloat(%q) = %v, %d; want %v, %v, %d", s, f, end, wantF, okF, rp.i)
	}
	rp = refParser{b: b}
	wantI, okI := rp.int()
	n, end := parseInt(b, i)
	if (end >= 0) != okI || okI && (end != rp.i || n != wantI) {
		t.Fatalf("parseInt(%q) = %v, %d; want %v, %v, %d", s, n, end, wantI, okI, rp.i)
	}
}

func TestParseNumbers(t *testing.T) {
	for _, s := range []string{"0", "-0", "12.5", "200", "-200", "9223372036854775807", "9223372036854775808",
		"-9223372036854775808", "-9223372036854775809", "999999999999999999", "1000000000000000000",
		"123456789012345", "1234567890123456", "0.000000000000001", "1e400", "-1e400", "1e-400", "01", "-",
		"1.", ".5", "1e", "1e+", "2e2", "2E2", "1.5e2", "0.1000000000000000", "00", "-01", "1.5x", ""} {
		checkNumbers(t, s)
	}
	rapid.Check(t, func(t *rapid.T) { checkNumbers(t, numberGen.Draw(t, "s")) })
}

// FuzzParseNumber holds parseFloat and parseInt equal to the parser they
// replace.
func FuzzParseNumber(f *testing.F) {
	for _, s := range []string{"12.5", "-0.001", "200", "1e5", "9223372036854775808", "0.1234567890123456"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkNumbers(t, s) })
}

// checkReference holds Decode, and Decoders with and without SharedRollout,
// equal to the decoder they replace: the same Record and the same error,
// text included.
func checkReference(t testing.TB, data []byte) {
	want, werr := refDecode(data, true, nil)
	for _, c := range []struct {
		name string
		dec  func([]byte) (Record, error)
	}{
		{"Decode", Decode},
		{"Decoder", refTestDecoder.Decode},
		{"Decoder{SharedRollout}", refTestShared.Decode},
	} {
		r, err := c.dec(data)
		if !reflect.DeepEqual(r, want) || errText(err) != errText(werr) {
			t.Fatalf("%s(%q):\n got %+v, %v\nwant %+v, %v", c.name, data, r, err, want, werr)
		}
	}
	// The fast path answers exactly when it did, and fills w the same.
	var w, rw wireEvent
	ok, rok := fastUnmarshal(data, &w), refFastUnmarshal(data, &rw)
	if ok != rok || ok && !reflect.DeepEqual(w, rw) {
		t.Fatalf("fastUnmarshal(%q) = %v, %+v\nwant %v, %+v", data, ok, w, rok, rw)
	}
}

// fataler is what the checks need of a *testing.T, *testing.F's fuzz T or
// a *rapid.T.
type fataler interface {
	Fatalf(format string, args ...any)
}

var refTestDecoder, refTestShared = Decoder{}, Decoder{SharedRollout: true}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// seedEvents returns the events of testdata, docs/EVENTS.md and the tests.
func seedEvents(tb testing.TB) [][]byte {
	files, err := filepath.Glob("../testdata/events/*.json")
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, data)
	}
	for _, ex := range docExamples(tb) {
		out = append(out, []byte(ex.json))
	}
	for _, s := range []string{
		string(benchSingle), string(benchSingleValues),
		`{"rollout":"r","variant":"baseline","status":503}`,
		` { "rollout" : "r" , "variant":"canary", "latency_ms": 1.5e2, "error": true, "values": {} } `,
		`{"rollout":"r","variant":"canary","latency_ms":null,"values":{"a":1,"b":2.5},"status":200}`,
		`{"rollout":"r","variant":"canary","values":{"b":1,"a":2,"b":-3,"c":4,"b":5},"values":null}`,
		`{"rollout":"r","variant":"canary","time":"2026-02-29T10:00:00Z","status":200}`,
		`{"rollout":"r","variant":"canary","time":"2024-02-29T23:59:59.999999999-05:30","status":200}`,
		`{"rollout":"r","variant":"canary","time":"2026-11-26t10:00:00z","status":200}`,
		`{"rollout":"r","variant":"canary","time":"2026-11-26T10:00:00.1234567891+00:00","status":200}`,
		`{"rollout":"r","variant":"canary","time":"","id":"","unit":"","status":99}`,
		`{"rollout":"r","variant":"canary","id":"caf\u00e9","unit":"\u00e9t\u00e9","error":true}`,
		"{\"rollout\":\"r\",\"variant\":\"canary\",\"unit\":\"caf\xc3\xa9\",\"error\":true}",
		"{\"rollout\":\"r\",\"variant\":\"canary\",\"unit\":\"caf\xc3\",\"error\":true}",
		`{"rollout":"r","variant":"canary","status":600,"latency_ms":-1}`,
		`{"rollout":"r","variant":"canary","count":3,"errors":1}`,
		`{"rollout":"r","variant":"canary","Status":200}`,
		`{"rollout":"a-very-long-rollout-id-that-exceeds-sixty-four-bytes-by-quite-some-margin-indeed","variant":"canary","error":false}`,
		`{"latency_ms":12.5,"status":200,"error":false,"values":{"x.y":1e3,"z":0.5},"rollout":"r2","variant":"baseline","time":"0000-01-01T00:00:00Z"}`,
	} {
		out = append(out, []byte(s))
	}
	return out
}

// TestDecodeReference checks the seeds and, deterministically, every one
// of their one-byte deletions and many one-byte replacements.
func TestDecodeReference(t *testing.T) {
	subst := []byte{' ', '"', '\\', ',', ':', '{', '}', '[', '0', '9', '-', '.', 'e', 'n', 'T', 'Z', 0, 0x1f, 0x80, 0xff}
	n := 0
	for _, seed := range seedEvents(t) {
		checkReference(t, seed)
		n++
		step := 1
		if testing.Short() {
			step = 7
		}
		for i := 0; i < len(seed); i += step {
			del := append(append([]byte(nil), seed[:i]...), seed[i+1:]...)
			checkReference(t, del)
			for _, c := range subst {
				mod := append([]byte(nil), seed...)
				mod[i] = c
				checkReference(t, mod)
				n += 2
			}
		}
	}
	t.Logf("%d messages", n)
}

// FuzzDecodeReference holds the decoder equal to the one it replaced (see
// reference_test.go): the same Record, the same error text.
func FuzzDecodeReference(f *testing.F) {
	for _, data := range seedEvents(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkReference(t, data) })
}

// TestIsASCII holds isASCII equal to a byte loop, for every length up to
// 40 and a high byte at every position.
func TestIsASCII(t *testing.T) {
	for n := range 41 {
		b := []byte(strings.Repeat("a", n))
		if !isASCII(b) {
			t.Fatalf("isASCII(%q) = false", b)
		}
		for i := range n {
			for _, c := range []byte{0x80, 0xc3, 0xff} {
				b[i] = c
				if isASCII(b) {
					t.Fatalf("isASCII(%q) = true", b)
				}
			}
			b[i] = 0x7f
			if !isASCII(b) {
				t.Fatalf("isASCII(%q) = false", b)
			}
			b[i] = 'a'
		}
	}
}

// TestIntern: intern returns an equal string of its own memory, and a
// repeated string of up to internMaxLen bytes comes from the table without
// allocating; internHash spreads typical ids over the slots.
func TestIntern(t *testing.T) {
	for n := range internMaxLen + 2 {
		src := []byte(strings.Repeat("x", n))
		for i := range src {
			src[i] = byte('a' + (i*7)%26)
		}
		s := unsafe.String(unsafe.SliceData(src), len(src))
		got := intern(s)
		if got != s || n > 0 && unsafe.StringData(got) == unsafe.StringData(s) {
			t.Fatalf("intern(%q) = %q, aliasing %v", s, got, unsafe.StringData(got) == unsafe.StringData(s))
		}
		if allocs := testing.AllocsPerRun(100, func() { _ = intern(s) }); n <= internMaxLen && allocs != 0 {
			t.Errorf("intern of %d bytes: %v allocations, want 0", n, allocs)
		}
	}
	slots := make(map[uint32]bool)
	for i := range 500 {
		slots[internHash(fmt.Sprintf("checkout-%d", i))%internSlots] = true
	}
	t.Logf("500 ids fill %d slots", len(slots))
	if len(slots) < 350 { // about 396 for a random function
		t.Errorf("500 ids fill %d slots of %d", len(slots), internSlots)
	}
}

// TestIDBytes holds the table of ValidRollout and validName to their
// character classes, for every byte.
func TestIDBytes(t *testing.T) {
	for c := range 256 {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		s := "a" + string([]byte{byte(c)}) + "b"
		if got, want := ValidRollout(s), alnum || c == '_' || c == '-'; got != want {
			t.Errorf("ValidRollout(%q) = %v", s, got)
		}
		if got, want := validName(s), alnum || c == '_' || c == '-' || c == '.'; got != want {
			t.Errorf("validName(%q) = %v", s, got)
		}
	}
	for _, s := range []string{"", strings.Repeat("a", 64), strings.Repeat("a", 65)} {
		if got, want := ValidRollout(s), len(s) >= 1 && len(s) <= 64; got != want {
			t.Errorf("ValidRollout(%d bytes) = %v", len(s), got)
		}
		if got, want := validName(s), len(s) >= 1 && len(s) <= MaxNameLen; got != want {
			t.Errorf("validName(%d bytes) = %v", len(s), got)
		}
	}
}
