package telemetry

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// checkTime holds parseTime equal to time.Parse(time.RFC3339Nano, s) then
// UTC, to the bit: == on time.Time compares the wall clock and monotonic
// words and the location.
func checkTime(t fataler, s string) {
	want, err := time.Parse(time.RFC3339Nano, s)
	got, ok := parseTime(s)
	if ok != (err == nil) || ok && got != want.UTC() {
		t.Fatalf("parseTime(%q) = %v (%#v), %v; time.Parse = %v, %v", s, got, got, ok, want.UTC(), err)
	}
	ft, fok := fastRFC3339(s)
	if fok && (err != nil || ft != want.UTC()) {
		t.Fatalf("fastRFC3339(%q) = %v, true; time.Parse = %v, %v", s, ft, want.UTC(), err)
	}
	// It answers for every valid time of the strict form (time.Parse
	// also accepts zone offsets out of range, which it leaves to Parse).
	if !fok && err == nil && strictRFC3339.MatchString(s) {
		t.Fatalf("fastRFC3339(%q) fell back; time.Parse = %v", s, want.UTC())
	}
}

var strictRFC3339 = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`)

// timeGen draws RFC 3339 times, valid and not: fields in and out of range,
// every separator and zone form, fractions of 0 to 12 digits, and now and
// then a byte replaced or the string cut.
var timeGen = rapid.Custom(func(t *rapid.T) string {
	pick := func(label string, lo, hi int, width int) string {
		n := rapid.IntRange(lo, hi).Draw(t, label)
		return fmt.Sprintf("%0*d", width, n)
	}
	var b strings.Builder
	b.WriteString(pick("year", 0, 9999, 4))
	b.WriteString(rapid.SampledFrom([]string{"-", "-", "-", "/"}).Draw(t, "sep1"))
	b.WriteString(pick("month", 0, 13, 2))
	b.WriteString("-")
	b.WriteString(pick("day", 0, 32, 2))
	b.WriteString(rapid.SampledFrom([]string{"T", "T", "T", "t", " "}).Draw(t, "T"))
	b.WriteString(pick("hour", 0, 24, 2))
	b.WriteString(":")
	b.WriteString(pick("min", 0, 60, 2))
	b.WriteString(rapid.SampledFrom([]string{":", ":", ":", "."}).Draw(t, "sep2"))
	b.WriteString(pick("sec", 0, 61, 2))
	switch rapid.IntRange(0, 3).Draw(t, "fracKind") {
	case 1:
		b.WriteString("." + rapid.StringMatching(`[0-9]{1,12}`).Draw(t, "frac"))
	case 2:
		b.WriteString(rapid.SampledFrom([]string{".", ",5", ".5x", ".123456789"}).Draw(t, "oddFrac"))
	}
	switch rapid.IntRange(0, 3).Draw(t, "zoneKind") {
	case 0:
		b.WriteString(rapid.SampledFrom([]string{"Z", "Z", "z", "", "ZZ", "UTC"}).Draw(t, "z"))
	default:
		b.WriteString(rapid.SampledFrom([]string{"+", "-", " "}).Draw(t, "sign"))
		b.WriteString(pick("zh", 0, 25, 2))
		b.WriteString(rapid.SampledFrom([]string{":", ":", ":", ""}).Draw(t, "zsep"))
		b.WriteString(pick("zm", 0, 61, 2))
	}
	s := b.String()
	switch rapid.IntRange(0, 5).Draw(t, "mangle") {
	case 0:
		i := rapid.IntRange(0, len(s)-1).Draw(t, "at")
		c := rapid.SampledFrom([]byte("0159:-+.TZ /a\x00\xff")).Draw(t, "c")
		s = s[:i] + string([]byte{c}) + s[i+1:]
	case 1:
		s = s[:rapid.IntRange(0, len(s)).Draw(t, "cut")]
	}
	return s
})

func TestParseTime(t *testing.T) {
	for _, s := range []string{
		"2026-11-26T10:00:00.123Z", "2026-11-26T10:00:00Z", "2026-11-26T12:00:00+02:00",
		"2026-11-26T10:00:00.123456789+05:30", "2026-11-26T10:00:00.1234567891-00:00",
		"2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "2000-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
		"0000-01-01T00:00:00Z", "0000-01-01T00:00:00+23:59", "0000-02-29T00:00:00Z", "9999-12-31T23:59:59.999999999Z",
		"9999-12-31T23:59:59-23:59", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.5Z",
		"2026-11-26t10:00:00Z", "2026-11-26T10:00:00z", "2026-11-26T10:00:60Z", "2026-11-26T24:00:00Z",
		"2026-11-26T10:00:00+24:00", "2026-11-26T10:00:00+05:60", "2026-11-26T10:00:00.Z", "2026-11-26T10:00:00",
		"2026-11-26T10:00:00,5Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-04-31T00:00:00Z",
		"2026-1-26T10:00:00Z", "2026-11-26T1:00:00Z", "+026-11-26T10:00:00Z", "2026-11-26T10:00:00+0530",
		"2026-11-26T10:00:00.000000000Z", "2026-11-26T10:00:00.0Z", "", "Z", "2026-11-26T10:00:00ZZ",
	} {
		checkTime(t, s)
	}
	rapid.Check(t, func(t *rapid.T) { checkTime(t, timeGen.Draw(t, "s")) })
	// Every day of years around the leap rules, at both ends of the day.
	for _, y := range []int{0, 1, 4, 100, 400, 1600, 1900, 1970, 2000, 2024, 2100, 9999} {
		for d := time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC); d.Year() == y; d = d.AddDate(0, 0, 1) {
			checkTime(t, d.Format("2006-01-02T")+"00:00:00Z")
			checkTime(t, d.Format("2006-01-02T")+"23:59:59.999999999-23:59")
		}
	}
}

// TestFastRFC3339Answers: the usual shapes do not fall back to time.Parse.
func TestFastRFC3339Answers(t *testing.T) {
	for _, s := range []string{"2026-11-26T10:00:00.123Z", "2026-11-26T10:00:00Z", "2026-11-26T12:00:00+02:00",
		"2026-11-26T10:00:00.123456789-05:30"} {
		if _, ok := fastRFC3339(s); !ok {
			t.Errorf("fastRFC3339(%s) fell back", s)
		}
	}
}

// FuzzParseTime holds parseTime equal to time.Parse then UTC.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"2026-11-26T10:00:00.123Z", "2024-02-29T23:59:59.999999999-05:30",
		"0000-01-01T00:00:00+23:59", "2026-11-26t10:00:00z", "2026-11-26T10:00:00.1234567891+00:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkTime(t, s) })
}
