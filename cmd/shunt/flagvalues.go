package main

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/proxy"
)

// Typed flag values: each checks its text when the flag is parsed and says
// what it wanted in plain words. flagError puts the flag's name and the
// value (clipped) in front.

// portValue is a TCP port, 1-65535.
type portValue struct{ p *uint16 }

func newPort(p *uint16) *portValue  { return &portValue{p} }
func (v *portValue) String() string { return strconv.Itoa(int(*v.p)) }
func (v *portValue) Type() string   { return "port" }
func (v *portValue) Set(s string) error {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return errors.New("is not a port (1-65535)")
	}
	*v.p = uint16(n)
	return nil
}

// durationValue is a duration, positive unless zero is allowed, at most max.
type durationValue struct {
	d         *time.Duration
	allowZero bool
	max       time.Duration
}

func newDuration(d *time.Duration, allowZero bool, max time.Duration) *durationValue {
	return &durationValue{d, allowZero, max}
}
func (v *durationValue) String() string { return v.d.String() }
func (v *durationValue) Type() string   { return "duration" }
func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	want := "a positive duration such as 5s"
	if v.allowZero {
		want = "a duration such as 5s (0 for none)"
	}
	switch {
	case err != nil, d < 0, d == 0 && !v.allowZero:
		return fmt.Errorf("is not %s", want)
	case v.max > 0 && d > v.max:
		return fmt.Errorf("is over the most allowed, %s", v.max)
	}
	*v.d = d
	return nil
}

// countValue is a whole number between min and max.
type countValue struct {
	n        *int
	min, max int
}

func newCount(n *int, min, max int) *countValue { return &countValue{n, min, max} }
func (v *countValue) String() string            { return strconv.Itoa(*v.n) }
func (v *countValue) Type() string              { return "int" }
func (v *countValue) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < int64(v.min) || n > int64(v.max) {
		return fmt.Errorf("is not a whole number from %d to %d", v.min, v.max)
	}
	*v.n = int(n)
	return nil
}

// choiceValue is one of a fixed list of words.
type choiceValue struct {
	s       *string
	choices []string
}

func newChoice(s *string, choices ...string) *choiceValue { return &choiceValue{s, choices} }
func (v *choiceValue) String() string                     { return *v.s }
func (v *choiceValue) Type() string                       { return "string" }
func (v *choiceValue) Set(s string) error {
	if !slices.Contains(v.choices, s) {
		return fmt.Errorf("is not %s", orList(v.choices))
	}
	*v.s = s
	return nil
}

func orList(words []string) string {
	if len(words) == 1 {
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// maxID is the highest UID or GID a process can have: (uid_t)-1, one more,
// means "leave unchanged" to setuid and setgid, the way a wrapped value
// would have left the proxy running as root.
const maxID = math.MaxUint32 - 1

// idValue is a UID or GID: a number (0 to 4294967294) or a name from the
// user or group database. set tells whether it was given.
type idValue struct {
	id    *uint32
	set   *bool
	group bool
}

func newID(id *uint32, set *bool, group bool) *idValue { return &idValue{id, set, group} }
func (v *idValue) String() string {
	if !*v.set {
		return ""
	}
	return strconv.FormatUint(uint64(*v.id), 10)
}
func (v *idValue) Type() string {
	if v.group {
		return "gid"
	}
	return "uid"
}
func (v *idValue) Set(s string) error {
	id, err := parseID(s, v.group)
	if err != nil {
		return err
	}
	*v.id, *v.set = id, true
	return nil
}

func parseID(s string, group bool) (uint32, error) {
	s = strings.TrimSpace(s)
	kind := "user"
	if group {
		kind = "group"
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		if n > maxID {
			return 0, fmt.Errorf("is not an ID (0 to %d)", uint64(maxID))
		}
		return uint32(n), nil
	}
	if s == "" || strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") || (s[0] >= '0' && s[0] <= '9') {
		return 0, fmt.Errorf("is not an ID (0 to %d) and not a %s name", uint64(maxID), kind)
	}
	var idText string
	if group {
		g, err := user.LookupGroup(s)
		if err != nil {
			return 0, fmt.Errorf("is not a number and not a %s here", kind)
		}
		idText = g.Gid
	} else {
		u, err := user.Lookup(s)
		if err != nil {
			return 0, fmt.Errorf("is not a number and not a %s here", kind)
		}
		idText = u.Uid
	}
	n, err := strconv.ParseUint(idText, 10, 32)
	if err != nil || n > maxID {
		return 0, fmt.Errorf("names %s ID %s, which is not usable", kind, idText)
	}
	return uint32(n), nil
}

// idListValue is a comma-separated list of UIDs or GIDs.
type idListValue struct {
	ids   *[]uint32
	group bool
	given bool
}

func newIDList(ids *[]uint32, group bool) *idListValue { return &idListValue{ids: ids, group: group} }
func (v *idListValue) String() string {
	parts := make([]string, len(*v.ids))
	for i, id := range *v.ids {
		parts[i] = strconv.FormatUint(uint64(id), 10)
	}
	return strings.Join(parts, ",")
}
func (v *idListValue) Type() string { return "ids" }
func (v *idListValue) Set(s string) error {
	if !v.given {
		*v.ids, v.given = nil, true
	}
	for _, item := range strings.Split(s, ",") {
		id, err := parseID(item, v.group)
		if err != nil {
			return fmt.Errorf("item %s %w", clip.Quote(item), err)
		}
		*v.ids = append(*v.ids, id)
	}
	return nil
}

// hostPortValue is a listening address, HOST:PORT or :PORT; empty turns
// the endpoint off when allowEmpty. loopbackOnly refuses any host that is
// not a loopback address (or localhost).
type hostPortValue struct {
	s            *string
	allowEmpty   bool
	loopbackOnly bool
}

func newHostPort(s *string, allowEmpty bool) *hostPortValue {
	return &hostPortValue{s: s, allowEmpty: allowEmpty}
}
func (v *hostPortValue) String() string { return *v.s }
func (v *hostPortValue) Type() string   { return "host:port" }
func (v *hostPortValue) Set(s string) error {
	if s == "" && v.allowEmpty {
		*v.s = s
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("is not HOST:PORT or :PORT")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return errors.New("has no port (1-65535)")
	}
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return errors.New("does not have an IP address or localhost as its host")
		}
	}
	*v.s = s
	return nil
}

var _ = []pflag.Value{(*portValue)(nil), (*durationValue)(nil), (*countValue)(nil), (*choiceValue)(nil),
	(*idValue)(nil), (*idListValue)(nil), (*hostPortValue)(nil)}

// accessLogFormatValue is an access log format (see proxy.AccessLogFormat),
// compiled when set so that a bad operator is refused at once.
type accessLogFormatValue struct{ s *string }

func (v accessLogFormatValue) String() string { return *v.s }
func (v accessLogFormatValue) Type() string   { return "format" }
func (v accessLogFormatValue) Set(s string) error {
	if _, err := proxy.AccessLogFormat(s); err != nil {
		return errors.New(clip.Cut(err.Error()))
	}
	*v.s = s
	return nil
}

// portProtocolsValue is PORT=PROTOCOL pairs, with Istio's protocol names,
// comma-separated or repeated.
// It keeps the names given; proxy.IstioProtocol says what each means.
type portProtocolsValue struct{ m *map[uint16]string }

func (v portProtocolsValue) String() string {
	var parts []string
	for _, p := range slices.Sorted(maps.Keys(*v.m)) {
		parts = append(parts, fmt.Sprintf("%d=%s", p, (*v.m)[p]))
	}
	return strings.Join(parts, ",")
}
func (v portProtocolsValue) Type() string { return "port=protocol" }
func (v portProtocolsValue) Set(s string) error {
	next := maps.Clone(*v.m)
	if next == nil {
		next = map[uint16]string{}
	}
	for item := range strings.SplitSeq(s, ",") {
		port, name, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return fmt.Errorf("%s is not PORT=PROTOCOL", clip.Quote(item))
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("%s is not a port (1-65535)", clip.Quote(port))
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if _, err := proxy.IstioProtocol(name); err != nil {
			return fmt.Errorf("port %d: %s is not a protocol Istio names (http, http2, grpc, grpc-web, tcp, tls, https, mongo, mysql, redis)", n, clip.Quote(name))
		}
		next[uint16(n)] = name
	}
	*v.m = next
	return nil
}
