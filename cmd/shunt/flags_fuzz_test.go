package main

import (
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/shunt-dev/shunt/capture/istioargs"
	"github.com/shunt-dev/shunt/internal/clip"
)

// Every command checks its flags in PreRunE, before it touches anything;
// these targets feed every flag (and every environment variable read in
// place of one) every kind of bad value and hold each refusal to the
// contract: exit code 2, the flag (or variable) named, the value echoed
// at most clip.Max characters, no strconv text, and no file made.

// baseArgs make each command's other inputs valid, so that an error is
// the fuzzed flag's own.
var baseArgs = map[string][]string{
	"inject":  {"--filename", "-"},
	"trace":   {"--dst", "10.96.0.10", "--dport", "80"},
	"proxy":   {"--uid", "1337", "--gid", "1337"},
	"gateway": {"--uid", "1337", "--gid", "1337", "--xds-address", "127.0.0.1:15010"},
	"webhook": {"--cert", "tls.crt", "--key", "tls.key"},
	"certs":   {"--dir", "certs"},
}

// baseEnv is each command's environment, to the same end: a gateway's
// pod names itself.
var baseEnv = map[string][]string{
	"gateway": {"POD_NAME", "public-gw-1", "POD_NAMESPACE", "default"},
}

type flagCase struct{ cmd, flag, env string }

// flagCases lists every flag of every command, and every variable that
// stands in for one, in a stable order.
func flagCases() []flagCase {
	var cases []flagCase
	root := newRootCmd()
	cmds := root.Commands()
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].Name() < cmds[j].Name() })
	for _, c := range cmds {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			cases = append(cases, flagCase{cmd: c.Name(), flag: f.Name})
		})
	}
	for _, e := range istioargs.RegisterRedirect(pflag.NewFlagSet("", pflag.ContinueOnError)).EnvNames() {
		cases = append(cases, flagCase{cmd: "redirect", env: e})
	}
	for _, e := range proxyEnv {
		cases = append(cases, flagCase{cmd: "proxy", env: e.env})
	}
	for _, e := range []string{"ISTIO_KUBE_APP_PROBERS", "INSTANCE_IP"} {
		cases = append(cases, flagCase{cmd: "proxy", env: e})
	}
	return cases
}

var badValues = []string{"", " ", "-1", "-2", "0", "1", "65536", "4294967295", "4294967296", "99999999999999999999",
	"abc", "1e9", "0x10", "-5s", "1h", "true", "*", ",", "1,,2", "10.0.0.0/33", "::1", "[::1]:0", "0.0.0.0:15000",
	"/nonexistent/file", "x\x00y", "é", strings.Repeat("9", 300), strings.Repeat("x,", 200)}

// TestEveryFlagRefusesBadValues gives every flag and variable each of the
// bad values; FuzzFlagValues goes on from a few of them.
func TestEveryFlagRefusesBadValues(t *testing.T) {
	for _, fc := range flagCases() {
		t.Run(fc.cmd+" "+fc.name(), func(t *testing.T) {
			t.Chdir(t.TempDir())
			for _, v := range badValues {
				checkContract(t, fc, v)
			}
		})
	}
}

func FuzzFlagValues(f *testing.F) {
	cases := flagCases()
	for i := range cases {
		for _, v := range []string{"-2", "abc", strings.Repeat("9", 300)} {
			f.Add(uint16(i), v)
		}
	}
	f.Fuzz(func(t *testing.T, index uint16, value string) {
		t.Chdir(t.TempDir())
		checkContract(t, cases[int(index)%len(cases)], value)
	})
}

// checkContract checks one value of one flag against the contract, in a
// working directory that must stay empty.
func checkContract(t *testing.T, fc flagCase, value string) {
	t.Helper()
	if fc.env != "" && strings.ContainsRune(value, 0) {
		return // an environment variable cannot hold a NUL
	}
	err := checkFlagValue(t, fc, value)
	if entries, _ := os.ReadDir("."); len(entries) > 0 {
		t.Errorf("%s %s=%q made files while checking its flags: %v", fc.cmd, fc.name(), value, entries)
	}
	if err == nil {
		return
	}
	msg := err.Error()
	switch {
	case exitCode(err) != exitUsage:
		t.Errorf("%s %s=%.40q: exit %d, want %d: %s", fc.cmd, fc.name(), value, exitCode(err), exitUsage, msg)
	case !fc.named(msg):
		t.Errorf("%s %s=%.40q: the error does not name %s: %s", fc.cmd, fc.name(), value, fc.name(), msg)
	case len(value) > clip.Max+8 && strings.Contains(msg, value[:clip.Max+8]):
		t.Errorf("%s %s: the error repeats more than %d characters of the value", fc.cmd, fc.name(), clip.Max)
	case strings.Contains(msg, "strconv.") || strings.Contains(msg, "invalid argument"):
		t.Errorf("%s %s=%.40q: the error leaks parser text: %s", fc.cmd, fc.name(), value, msg)
	case len(msg) > 2000:
		t.Errorf("%s %s: the error is %d characters long", fc.cmd, fc.name(), len(msg))
	}
}

func (fc flagCase) name() string {
	if fc.env != "" {
		return "$" + fc.env
	}
	return "--" + fc.flag
}

// named says whether a message names the flag, its shorthand, or the
// variable; aliases of a flag count (they share a value).
func (fc flagCase) named(msg string) bool {
	if fc.env != "" {
		return strings.Contains(msg, "$"+fc.env) || strings.Contains(msg, "--")
	}
	return strings.Contains(msg, "--"+fc.flag)
}

// checkFlagValue parses one command line with the value given to the
// flag (or the variable set) and runs the command's checks, not the
// command.
func checkFlagValue(t *testing.T, fc flagCase, value string) error {
	root := newRootCmd()
	cmd, _, err := root.Find([]string{fc.cmd})
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	base := baseArgs[fc.cmd]
	for i := 0; i+1 < len(base); i += 2 {
		if base[i] != "--"+fc.flag {
			args = append(args, base[i], base[i+1])
		}
	}
	for env := baseEnv[fc.cmd]; len(env) >= 2; env = env[2:] {
		t.Setenv(env[0], env[1])
	}
	if fc.env != "" {
		t.Setenv(fc.env, value)
	} else {
		args = append(args, "--"+fc.flag+"="+value)
	}
	if err := cmd.ParseFlags(args); err != nil {
		return root.FlagErrorFunc()(cmd, err)
	}
	if cmd.PreRunE == nil {
		if cmd.HasAvailableFlags() {
			t.Fatalf("%s has flags but no PreRunE to check them", fc.cmd)
		}
		return nil
	}
	return cmd.PreRunE(cmd, nil)
}
