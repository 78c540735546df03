package capture

import (
	"fmt"
	"strconv"
	"strings"
)

// Describe spells a rule's conditions for a person: "tcp dport 80 uid 1337";
// "any" for a rule with none.
func (r Rule) Describe() string {
	if len(r.Conds) == 0 {
		return "any"
	}
	parts := make([]string, len(r.Conds))
	for i, c := range r.Conds {
		parts[i] = DescribeCond(c)
	}
	return strings.Join(parts, " ")
}

// DescribeCond spells one condition, "!" before a negated value.
func DescribeCond(c Cond) string {
	neg := func(not bool) string {
		if not {
			return "!"
		}
		return ""
	}
	switch c := c.(type) {
	case Proto:
		return c.Name
	case Source:
		return "src " + neg(c.Not) + c.Prefix.String()
	case Dest:
		return "dst " + neg(c.Not) + c.Prefix.String()
	case InInterface:
		return "in " + neg(c.Not) + c.Name
	case OutInterface:
		return "out " + neg(c.Not) + c.Name
	case DestPorts:
		return "dport " + neg(c.Not) + portList(c.Ports)
	case SourcePorts:
		return "sport " + neg(c.Not) + portList(c.Ports)
	case Mark:
		return "mark " + neg(c.Not) + strconv.FormatUint(uint64(c.Value), 10)
	case ConnMark:
		return "ctmark " + strconv.FormatUint(uint64(c.Value), 10)
	case FamilyIs:
		return string(c.Family)
	case OwnerUID:
		return "uid " + neg(c.Not) + strconv.FormatUint(uint64(c.UID), 10)
	case OwnerGID:
		return "gid " + neg(c.Not) + strconv.FormatUint(uint64(c.GID), 10)
	case ConnState:
		return "ct " + strings.Join(c.States, ",")
	}
	return fmt.Sprintf("unknown condition %T", c)
}

func portList(ports []PortRange) string {
	list := make([]string, len(ports))
	for i, p := range ports {
		list[i] = p.String()
	}
	return strings.Join(list, ",")
}
