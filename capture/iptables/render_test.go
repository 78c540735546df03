package iptables

import (
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/internal/captest"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

func TestRenderGolden(t *testing.T) {
	if len(captest.GoldenCases) < 25 {
		t.Fatalf("only %d golden cases; every axis needs one", len(captest.GoldenCases))
	}
	for _, tc := range captest.GoldenCases {
		t.Run(tc.Name, func(t *testing.T) {
			cfg := captest.Seed()
			tc.Mutate(&cfg)
			plan, err := capture.Build(cfg)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := RenderAll(plan)
			if err != nil {
				t.Fatal(err)
			}
			got := rs.String()
			captest.Golden(t, filepath.Join("testdata", tc.Name+".golden"), got, *update)
			assertParsesBack(t, rs.V4)
			assertParsesBack(t, rs.V6)
		})
	}
}

// assertParsesBack checks that what Render makes is what ParseSave reads, so
// a live namespace holding these rules compares equal to the plan.
func assertParsesBack(t *testing.T, rs *Ruleset) {
	t.Helper()
	var save strings.Builder
	for _, tab := range rs.Tables {
		save.WriteString("*" + tab.Name + "\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
		for _, c := range tab.Chains {
			save.WriteString(":" + c + " - [0:0]\n")
		}
		for _, j := range tab.Jumps {
			save.WriteString(j + "\n")
		}
		for _, c := range tab.Chains {
			for _, r := range tab.Rules[c] {
				save.WriteString(r + "\n")
			}
		}
		save.WriteString("COMMIT\n")
	}
	back, err := ParseSave(save.String())
	if err != nil {
		t.Fatal(err)
	}
	if !Equal(back, rs) {
		t.Errorf("rendered rules do not read back equal:\n%s", Diff(back, rs))
	}
	if tx := Transaction(back, rs, false); tx != "" {
		t.Errorf("re-applying the same rules is not a no-op:\n%s", tx)
	}
}

func TestRenderRejectsWhatIptablesCannotSay(t *testing.T) {
	cases := []struct {
		name string
		rule capture.Rule
		want string
	}{
		{"ports without protocol", capture.Rule{Conds: []capture.Cond{capture.DestPorts{Ports: captest.Ports(80)}}, Verdict: capture.Return{}}, "without a protocol"},
		{"negated long port list", capture.Rule{Conds: []capture.Cond{capture.Proto{Name: "tcp"}, capture.DestPorts{Ports: captest.PortSeq(1, 16), Not: true}}, Verdict: capture.Return{}}, "cannot be split"},
		{"long purpose", capture.Rule{Verdict: capture.Return{}, Purpose: strings.Repeat("x", 300)}, "longer than the kernel keeps"},
		{"unknown verdict", capture.Rule{Verdict: nil}, "no iptables form"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := RenderRule("SHUNT_OUTPUT", tc.rule, capture.IPv4)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestQuoteMatchesIptablesSave(t *testing.T) {
	for in, want := range map[string]string{
		"plain_word-1": "plain_word-1",
		"two words":    `"two words"`,
		`it's "x"`:     `"it\'s \"x\""`,
		"":             `""`,
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}
