package picture_test

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/picture"
	"github.com/shunt-dev/shunt/capture/trace"
	"github.com/shunt-dev/shunt/internal/captest"
)

func seed() *capture.Plan {
	c := captest.Seed()
	c.DropInvalid = true
	c.ExcludeInterfaces = []string{"eth9"}
	p, err := capture.Build(c)
	if err != nil {
		panic(err)
	}
	return p
}

// render turns an SVG into a PNG with librsvg, a real renderer, and checks
// it came out as a PNG of some size.
func render(t *testing.T, svg string) {
	t.Helper()
	if _, err := exec.LookPath("rsvg-convert"); err != nil {
		t.Skip("rsvg-convert is not installed (.ci/run installs librsvg2-bin)")
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "p.svg"), filepath.Join(dir, "p.png")
	if err := os.WriteFile(in, []byte(svg), 0o644); err != nil {
		t.Fatal(err)
	}
	if msg, err := exec.Command("rsvg-convert", "-o", out, in).CombinedOutput(); err != nil {
		t.Fatalf("rsvg-convert: %v: %s", err, msg)
	}
	png, err := os.ReadFile(out)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 5000 {
		t.Fatalf("no PNG came out (%d bytes, %v)", len(png), err)
	}
}

var hitRow = regexp.MustCompile(`class="rule hit" data-rule="([A-Z_]+#\d+)"`)
var hitJump = regexp.MustCompile(`class="jump hit" data-from="([A-Z_]+#\d+)"`)

func TestPlanPicture(t *testing.T) {
	p := seed()
	svg := picture.Plan(p)
	render(t, svg)
	for _, c := range p.Chains {
		if !strings.Contains(svg, `data-chain="`+c.Name+`"`) {
			t.Errorf("no box for %s", c.Name)
		}
		for _, r := range c.Rules {
			if !strings.Contains(svg, htmlEscape(r.Purpose[:min(len(r.Purpose), 60)])) {
				t.Errorf("no row says %q", r.Purpose)
			}
		}
	}
	for _, hook := range []string{"nat PREROUTING", "nat OUTPUT", "mangle PREROUTING"} {
		if !strings.Contains(svg, `data-hook="`+hook+`"`) {
			t.Errorf("no box for the %s hook", hook)
		}
	}
	if strings.Contains(svg, `hit"`) {
		t.Error("a plan picture highlights something")
	}
}

// TestTracePicture: the highlighted rows are exactly the rules the tracer
// reports matching, and the red arrows exactly the jumps among them.
func TestTracePicture(t *testing.T) {
	p := seed()
	packets := []trace.Packet{
		{Direction: trace.Out, Proto: "tcp", Src: netip.MustParseAddr("10.1.0.5"), Dst: netip.MustParseAddr("10.96.0.10"), DstPort: 10000, UID: 101, GID: 101, OutIface: "eth0"},
		{Direction: trace.Out, Proto: "tcp", Src: netip.MustParseAddr("10.1.0.5"), Dst: netip.MustParseAddr("10.1.0.5"), DstPort: 8080, UID: 1337, GID: 1337, OutIface: "lo"},
		{Direction: trace.In, Proto: "tcp", Src: netip.MustParseAddr("10.2.0.9"), Dst: netip.MustParseAddr("10.1.0.5"), DstPort: 15021, InIface: "eth0"},
	}
	for _, pkt := range packets {
		res, err := trace.Trace(p, pkt)
		if err != nil {
			t.Fatal(err)
		}
		svg := picture.Trace(p, res)
		render(t, svg)
		var want, wantJumps []string
		for _, s := range res.Matched() {
			want = append(want, s.Chain+"#"+strconv.Itoa(s.Index))
			if _, ok := s.Rule.Verdict.(capture.Jump); ok {
				wantJumps = append(wantJumps, s.Chain+"#"+strconv.Itoa(s.Index))
			}
		}
		got := matches(hitRow, svg)
		if !slices.Equal(sorted(got), sorted(want)) {
			t.Errorf("%s: highlighted %v, tracer matched %v", pkt, got, want)
		}
		if gotJ := matches(hitJump, svg); !slices.Equal(sorted(gotJ), sorted(wantJumps)) {
			t.Errorf("%s: red jumps %v, taken %v", pkt, gotJ, wantJumps)
		}
		if !strings.Contains(svg, htmlEscape("verdict: "+res.Verdict())) {
			t.Errorf("%s: no verdict %q in the picture", pkt, res.Verdict())
		}
	}
}

func matches(re *regexp.Regexp, s string) []string {
	var out []string
	for _, m := range re.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s)
}
