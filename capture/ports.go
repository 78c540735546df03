package capture

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/shunt-dev/shunt/internal/clip"
)

// PortRange is an inclusive range of TCP or UDP ports; a single port has Lo == Hi.
type PortRange struct {
	Lo, Hi uint16
}

// Port is the range holding only p.
func Port(p uint16) PortRange { return PortRange{p, p} }

// Contains reports whether p is in the range.
func (r PortRange) Contains(p uint16) bool { return r.Lo <= p && p <= r.Hi }

// String is the iptables spelling: "80" or "8000:8080".
func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d:%d", r.Lo, r.Hi)
}

// ParsePort parses one port number, 1 to 65535.
func ParsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil || n == 0 || n > 65535 {
		return 0, fmt.Errorf("%s is not a port (1-65535)", clip.Quote(s))
	}
	return uint16(n), nil
}

// ParsePortRange parses "80", "8000:8080" or "8000-8080".
func ParsePortRange(s string) (PortRange, error) {
	s = strings.TrimSpace(s)
	sep := strings.IndexAny(s, ":-")
	if sep < 0 {
		p, err := ParsePort(s)
		return Port(p), err
	}
	lo, err := ParsePort(s[:sep])
	if err != nil {
		return PortRange{}, fmt.Errorf("%s is not a port range: %w", clip.Quote(s), err)
	}
	hi, err := ParsePort(s[sep+1:])
	if err != nil {
		return PortRange{}, fmt.Errorf("%s is not a port range: %w", clip.Quote(s), err)
	}
	if lo > hi {
		return PortRange{}, fmt.Errorf("%s is not a port range: %d is above %d", clip.Quote(s), lo, hi)
	}
	return PortRange{lo, hi}, nil
}

// ParsePortList parses a comma-separated list of ports and ranges. Empty
// items are skipped, as istio-iptables does.
func ParsePortList(s string) ([]PortRange, error) {
	var out []PortRange
	for _, item := range SplitList(s) {
		r, err := ParsePortRange(item)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// PortsContain reports whether p is in any of the ranges.
func PortsContain(ranges []PortRange, p uint16) bool {
	for _, r := range ranges {
		if r.Contains(p) {
			return true
		}
	}
	return false
}

// SplitList splits a comma-separated list, dropping empty items and spaces.
func SplitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
