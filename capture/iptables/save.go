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
			chain, target, err := chainAndTarget(line)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
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

// chainAndTarget returns the chain a "-A" line appends to and the chain or
// target its "-j" (or "-g") names, skipping over double-quoted strings (a
// comment may say "-j"). It allocates nothing: a pod's rules are read on
// every run, and there may be thousands.
func chainAndTarget(line string) (chain, target string, err error) {
	rest := line[len("-A "):]
	end := strings.IndexByte(rest, ' ')
	if end < 0 {
		end = len(rest)
	}
	chain = rest[:end]
	if chain == "" {
		return "", "", fmt.Errorf("%q names no chain", line)
	}
	inQuote, escaped := false, false
	for i := 0; i < len(line); i++ {
		switch b := line[i]; {
		case escaped:
			escaped = false
		case inQuote && b == '\\':
			escaped = true
		case b == '"':
			inQuote = !inQuote
		case !inQuote && b == '-' && i > 0 && line[i-1] == ' ' && i+3 < len(line) &&
			(line[i+1] == 'j' || line[i+1] == 'g') && line[i+2] == ' ':
			t := line[i+3:]
			if sp := strings.IndexByte(t, ' '); sp >= 0 {
				t = t[:sp]
			}
			target = t
		}
	}
	if inQuote {
		return "", "", fmt.Errorf("unterminated quote in %q", line)
	}
	return chain, target, nil
}

// CountNatRules counts the rules of an iptables-save output's nat table,
// anyone's.
func CountNatRules(text string) int {
	n, inNat := 0, false
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			inNat = line == "*nat"
		case inNat && strings.HasPrefix(line, "-A "):
			n++
		}
	}
	return n
}
