package clip

import (
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"abc", `"abc"`},
		{"", `""`},
		{strings.Repeat("x", 100), `"` + strings.Repeat("x", 100) + `"`},
		{strings.Repeat("x", 101), `"` + strings.Repeat("x", 100) + `"… (1 more characters)`},
		{strings.Repeat("é", 240000), `"` + strings.Repeat("é", 100) + `"… (239900 more characters)`},
		{"a\nb", `"a\nb"`},
	} {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%.20q…) = %.140s, want %.140s", tc.in, got, tc.want)
		}
	}
}
