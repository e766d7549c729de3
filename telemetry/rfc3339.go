package telemetry

import "time"

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
	if len(s) < len("2006-01-02T15:04:05Z") ||
		s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	year, ok1 := digits4(s[0], s[1], s[2], s[3])
	month, ok2 := digits2(s[5], s[6])
	day, ok3 := digits2(s[8], s[9])
	hour, ok4 := digits2(s[11], s[12])
	minute, ok5 := digits2(s[14], s[15])
	sec, ok6 := digits2(s[17], s[18])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) ||
		month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
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
		for ; n < 9; n++ {
			nsec *= 10
		}
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

// digits2 returns the number written by two decimal digits.
func digits2(a, b byte) (uint, bool) {
	a, b = a-'0', b-'0'
	return uint(a)*10 + uint(b), a < 10 && b < 10
}

// digits4 returns the number written by four decimal digits.
func digits4(a, b, c, d byte) (uint, bool) {
	hi, ok1 := digits2(a, b)
	lo, ok2 := digits2(c, d)
	return hi*100 + lo, ok1 && ok2
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

// daysSinceEpoch returns the days from 1970-01-01 to the date, of the
// proleptic Gregorian calendar, for years 0 to 9999 (after H. Hinnant's
// days_from_civil, with the year shifted by 400 to stay positive).
func daysSinceEpoch(year, month, day uint) int64 {
	y := year + 400 // years start in March: January and February belong to the year before
	if month <= 2 {
		y--
	}
	era := y / 400
	yoe := y - era*400                        // [0, 399]
	doy := (153*((month+9)%12)+2)/5 + day - 1 // [0, 365], from March 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy    // [0, 146096]
	return int64(era-1)*146097 + int64(doe) - 719468
}
