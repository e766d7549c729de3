package telemetry

import (
	"encoding/binary"
	"time"
	"unsafe"
)

// parseTime returns what time.Parse(time.RFC3339Nano, s) then UTC return,
// and whether Parse succeeded. The usual shape is parsed by fastRFC3339;
// anything else is left to time.Parse.
func parseTime(s string) (time.Time, bool) {
	if t, ok := fastRFC3339(s); ok {
		return t, true
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	return t.UTC(), true
}

// fastRFC3339 parses the strict RFC 3339 form that time.Parse itself
// parses first, "2006-01-02T15:04:05[.fraction](Z|±07:00)", with the same
// checks (fields in range, the day within its month, upper-case T and Z,
// any number of fraction digits of which the first nine count), and
// returns the same instant in UTC. It reports false for anything else,
// which the caller leaves to time.Parse: false never means invalid.
func fastRFC3339(s string) (time.Time, bool) {
	if len(s) < len("2006-01-02T15:04:05Z") {
		return time.Time{}, false
	}
	// The first 16 bytes as two words, "2006-01-" and "02T15:04", checked
	// and converted 8 bytes at a time.
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	x, ok1 := dateWord(binary.LittleEndian.Uint64(b), 0x00ffff00ffffffff, 0x2d00002d00000000)
	y, ok2 := dateWord(binary.LittleEndian.Uint64(b[8:]), 0xffff00ffff00ffff, 0x00003a0000540000)
	sec, ok3 := digits2(s[17], s[18])
	if !(ok1 && ok2 && ok3) || s[16] != ':' {
		return time.Time{}, false
	}
	digit := func(w uint64, k uint) uint { return uint(w>>(8*k)) & 0xff }
	year := digit(x, 0)*1000 + digit(x, 1)*100 + digit(x, 2)*10 + digit(x, 3)
	month := digit(x, 5)*10 + digit(x, 6)
	day := digit(y, 0)*10 + digit(y, 1)
	hour := digit(y, 3)*10 + digit(y, 4)
	minute := digit(y, 6)*10 + digit(y, 7)
	if month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	i := 19
	var nsec uint
	if s[i] == '.' {
		i++
		n := 0
		for ; i < len(s) && s[i]-'0' < 10; i++ {
			if n < 9 {
				nsec = nsec*10 + uint(s[i]-'0')
				n++
			}
		}
		if n == 0 {
			return time.Time{}, false
		}
		nsec *= nsecScale[n]
	}
	var offset int
	switch rest := s[i:]; {
	case rest == "Z":
	case len(rest) == len("+07:00") && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, ok1 := digits2(rest[1], rest[2])
		om, ok2 := digits2(rest[4], rest[5])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return time.Time{}, false
		}
		offset = int(oh*3600 + om*60)
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, false
	}
	unix := daysSinceEpoch(year, month, day)*86400 + int64(hour*3600+minute*60+sec) - int64(offset)
	return time.Unix(unix, int64(nsec)).UTC(), true
}

// dateWord checks that the 8 bytes of w (little-endian) are decimal
// digits where digits has 0xff and equal seps elsewhere, and returns w with
// each digit replaced by its value. A byte is a digit when its high nibble
// is 3 and adding 6 leaves it 3; once every digit byte has the high nibble
// 3, adding 6 cannot carry into the next byte.
func dateWord(w, digits, seps uint64) (uint64, bool) {
	const (
		ones = 0x0101010101010101
		high = 0xf0 * ones
	)
	zero := '0' * ones & digits
	ok := w&^digits == seps && w&high&digits == zero && (w+6*ones&digits)&high&digits == zero
	return w - zero, ok
}

// digits2 returns the number written by two decimal digits.
func digits2(a, b byte) (uint, bool) {
	a, b = a-'0', b-'0'
	return uint(a)*10 + uint(b), a < 10 && b < 10
}

// daysIn returns the number of days of month (1 to 12) in year, of the
// proleptic Gregorian calendar, as package time counts them.
func daysIn(month, year uint) uint {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// nsecScale[n] turns n fraction digits into nanoseconds.
var nsecScale = [10]uint{1e9, 1e8, 1e7, 1e6, 1e5, 1e4, 1e3, 1e2, 1e1, 1}

// daysBefore[m] is the number of days of a year that are before month m
// (1 to 12), February counted with 28.
var daysBefore = [13]uint{0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334}

// daysSinceEpoch returns the days from 1970-01-01 to the date, of the
// proleptic Gregorian calendar, for years 0 to 9999. Years are shifted by
// 400 (a whole cycle of leap years) to keep the arithmetic unsigned.
func daysSinceEpoch(year, month, day uint) int64 {
	y := year + 400
	days := 365*y + (y-1)/4 - (y-1)/100 + (y-1)/400 + daysBefore[month] + day - 1
	if month > 2 && y%4 == 0 && (y%100 != 0 || y%400 == 0) {
		days++ // February 29
	}
	const epoch = 365*2370 + 2369/4 - 2369/100 + 2369/400 // 1970+400-01-01
	return int64(days) - epoch
}
