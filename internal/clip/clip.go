// Package clip keeps what a user typed short when a message repeats it: a
// flag value can be a whole file's worth of text, and an error line that
// echoes it in full buries the reason.
package clip

import (
	"strconv"
	"unicode/utf8"
)

// Max is the most characters of a value a message repeats.
const Max = 100

// Quote is strconv.Quote of s, cut to Max characters with a note of how
// many more there were.
func Quote(s string) string {
	head, rest := split(s)
	if rest == 0 {
		return strconv.Quote(s)
	}
	return strconv.Quote(head) + more(rest)
}

// Cut is s as it is, cut to Max characters with a note of how many more
// there were.
func Cut(s string) string {
	head, rest := split(s)
	if rest == 0 {
		return s
	}
	return head + more(rest)
}

func more(n int) string { return "… (" + strconv.Itoa(n) + " more characters)" }

// split returns s's first Max characters and how many follow.
func split(s string) (string, int) {
	n := 0
	for i := range s {
		if n == Max {
			return s[:i], utf8.RuneCountInString(s[i:])
		}
		n++
	}
	return s, 0
}
