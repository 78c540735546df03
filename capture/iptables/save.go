package iptables

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/shunt-dev/shunt/capture"
)

// ParseSave reads iptables-save output and returns shunt's part of it: the
// chains named with shunt's prefix and the rules in built-in (or any other)
// chains that jump into them. Everything else is left out, so nothing a
// user or kube-proxy wrote can be mistaken for shunt's.
func ParseSave(text string) (*Ruleset, error) {
	rs := &Ruleset{}
	var t *TableRules
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			t = rs.table(line[1:])
		case line == "COMMIT":
			t = nil
		case t == nil:
			return nil, fmt.Errorf("line %d: %q is outside a table", n, line)
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if owned(name) {
				t.Chains = append(t.Chains, name)
			}
		case strings.HasPrefix(line, "-A "):
			fields, err := tokens(line)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			chain, target := fields[1], target(fields)
			switch {
			case owned(chain):
				t.Rules[chain] = append(t.Rules[chain], line)
			case owned(target):
				t.Jumps = append(t.Jumps, line)
			}
		default:
			return nil, fmt.Errorf("line %d: %q is not iptables-save output", n, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return rs, nil
}

// CountRules counts the rules in iptables-save output, shunt's or not.
func CountRules(text string) int {
	return strings.Count(text, "\n-A ")
}

func owned(chain string) bool { return strings.HasPrefix(chain, capture.ChainPrefix) }

// target is the chain or target a rule's "-j" or "-g" names.
func target(fields []string) string {
	for i := len(fields) - 2; i >= 0; i-- {
		if fields[i] == "-j" || fields[i] == "-g" {
			return fields[i+1]
		}
	}
	return ""
}

// tokens splits a rule line as iptables-restore does: on spaces, with
// double-quoted strings kept whole and backslash escapes inside them.
func tokens(line string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inQuote, escaped, started := false, false, false
	for _, r := range line {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case inQuote && r == '\\':
			escaped = true
		case r == '"':
			inQuote, started = !inQuote, true
		case r == ' ' && !inQuote:
			if started {
				out, started = append(out, cur.String()), false
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
			started = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote in %q", line)
	}
	if started {
		out = append(out, cur.String())
	}
	if len(out) < 2 {
		return nil, fmt.Errorf("%q names no chain", line)
	}
	return out, nil
}
