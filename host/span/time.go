package span

import (
	"errors"
	"fmt"
	"time"
)

// TimeLayout is the only accepted form of at: UTC RFC 3339 with exactly six
// fractional digits. Postgres timestamptz keeps microseconds, so a span whose
// at is written this way hashes to the same value when read back.
const TimeLayout = "2006-01-02T15:04:05.000000Z"

// FormatTime formats t in UTC with exactly six fractional digits. Digits
// below the microsecond are truncated, not rounded; callers that also store
// t should truncate it the same way (t.Truncate(time.Microsecond)).
func FormatTime(t time.Time) string {
	return t.UTC().Format(TimeLayout)
}

// ParseTime parses an at value, accepting only the exact TimeLayout form.
func ParseTime(s string) (time.Time, error) {
	f, reason := parseTimeFields(s)
	if reason != "" {
		return time.Time{}, errors.New(reason)
	}
	return time.Date(f[0], time.Month(f[1]), f[2], f[3], f[4], f[5], f[6]*1000, time.UTC), nil
}

// checkTime is ParseTime's verdict: "" or the reason s is refused.
func checkTime(s string) string {
	_, reason := parseTimeFields(s)
	return reason
}

// timeDigits marks the positions of TimeLayout that hold digits; the others
// must equal TimeLayout's byte.
var timeDigits = func() (d [len(TimeLayout)]bool) {
	for _, i := range []int{0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22, 23, 24, 25} {
		d[i] = true
	}
	return d
}()

// parseTimeFields checks s against TimeLayout byte by byte and returns year,
// month, day, hour, minute, second and microsecond, with the same verdicts
// as matching the layout's shape and then time.Parse (ranges, days in the
// month, leap years) and year >= 1 (Postgres has no year 0).
func parseTimeFields(s string) (f [7]int, reason string) {
	shape := len(s) == len(TimeLayout)
	for i := 0; shape && i < len(s); i++ {
		if timeDigits[i] {
			shape = s[i] >= '0' && s[i] <= '9'
		} else {
			shape = s[i] == TimeLayout[i]
		}
	}
	if !shape {
		return f, fmt.Sprintf("must be UTC RFC 3339 with exactly six fractional digits (%s), got %q", TimeLayout, truncate(s, 40))
	}
	num := func(a, b int) int {
		n := 0
		for _, c := range []byte(s[a:b]) {
			n = n*10 + int(c-'0')
		}
		return n
	}
	f = [7]int{num(0, 4), num(5, 7), num(8, 10), num(11, 13), num(14, 16), num(17, 19), num(20, 26)}
	year, month, day := f[0], f[1], f[2]
	if month < 1 || month > 12 || day < 1 || day > daysIn(month, year) || f[3] > 23 || f[4] > 59 || f[5] > 59 {
		return f, fmt.Sprintf("is not a valid time: %q", s)
	}
	if year < 1 {
		return f, fmt.Sprintf("year must be >= 1, got %q", s)
	}
	return f, ""
}

// daysIn is the number of days of month in year (proleptic Gregorian, as
// the time package counts).
func daysIn(month, year int) int {
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

// truncate shortens s for an error message without splitting a rune.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
