package accesslog

import (
	"fmt"
	"strconv"
	"time"
)

// strftimeLayouts are the conversions Go's time layouts spell.
var strftimeLayouts = map[byte]string{'e': "_2", 'T': "15:04:05", 'F': "2006-01-02", 'a': "Mon", 'A': "Monday",
	'b': "Jan", 'h': "Jan", 'B': "January", 'z': "-0700", 'Z': "MST"}

// startTime compiles %START_TIME(FORMAT)%: strftime's conversions as Envoy
// takes them (UTC), with %s for epoch seconds and %f / %1f…%9f for the
// fraction of the second. The default is %Y-%m-%dT%H:%M:%S.%3fZ.
func startTime(layout string) (op, error) {
	type piece func(b []byte, t time.Time) []byte
	var pieces []piece
	lit := func(s string) piece { return func(b []byte, _ time.Time) []byte { return append(b, s...) } }
	pad := func(width int, get func(t time.Time) int) piece {
		return func(b []byte, t time.Time) []byte {
			v := get(t)
			for d, p := width-1, 10; d > 0; d, p = d-1, p*10 {
				if v < p {
					b = append(b, '0')
				}
			}
			return strconv.AppendInt(b, int64(v), 10)
		}
	}
	goLayout := func(l string) piece { return func(b []byte, t time.Time) []byte { return t.AppendFormat(b, l) } }
	for i := 0; i < len(layout); i++ {
		if layout[i] != '%' || i+1 == len(layout) {
			pieces = append(pieces, lit(layout[i:i+1]))
			continue
		}
		i++
		digits := 9
		if c := layout[i]; c >= '1' && c <= '9' && i+1 < len(layout) && layout[i+1] == 'f' {
			digits = int(c - '0')
			i++
		}
		if l, ok := strftimeLayouts[layout[i]]; ok {
			pieces = append(pieces, goLayout(l))
			continue
		}
		switch layout[i] {
		case 'Y':
			pieces = append(pieces, pad(4, func(t time.Time) int { return t.Year() }))
		case 'y':
			pieces = append(pieces, pad(2, func(t time.Time) int { return t.Year() % 100 }))
		case 'm':
			pieces = append(pieces, pad(2, func(t time.Time) int { return int(t.Month()) }))
		case 'd':
			pieces = append(pieces, pad(2, func(t time.Time) int { return t.Day() }))
		case 'H':
			pieces = append(pieces, pad(2, func(t time.Time) int { return t.Hour() }))
		case 'M':
			pieces = append(pieces, pad(2, func(t time.Time) int { return t.Minute() }))
		case 'S':
			pieces = append(pieces, pad(2, func(t time.Time) int { return t.Second() }))
		case 'j':
			pieces = append(pieces, pad(3, func(t time.Time) int { return t.YearDay() }))
		case 's':
			pieces = append(pieces, func(b []byte, t time.Time) []byte { return strconv.AppendInt(b, t.Unix(), 10) })
		case 'f':
			d := digits
			pieces = append(pieces, func(b []byte, t time.Time) []byte {
				frac := t.Nanosecond()
				for k := 9; k > d; k-- {
					frac /= 10
				}
				var digits [9]byte
				for k := d - 1; k >= 0; k-- {
					digits[k] = byte('0' + frac%10)
					frac /= 10
				}
				return append(b, digits[:d]...)
			})
		case '%':
			pieces = append(pieces, lit("%"))
		default:
			return op{}, fmt.Errorf("%%%c is not a time conversion shunt knows", layout[i])
		}
	}
	return op{fn: func(b []byte, r *Record) ([]byte, bool) {
		if r.Start.IsZero() {
			return b, false
		}
		t := r.Start.UTC()
		for _, p := range pieces {
			b = p(b, t)
		}
		return b, true
	}}, nil
}
