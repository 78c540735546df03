package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/iptables"
	"github.com/shunt-dev/shunt/capture/istioargs"
	"github.com/shunt-dev/shunt/capture/nftables"
	"github.com/shunt-dev/shunt/capture/picture"
)

func newExplainCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "explain [capture flags]",
		Short: "Print the rules a configuration makes, each with its purpose, without applying them",
		Example: "  shunt explain -p 15001 -z 15006 -u 1337 -i '*' -b '*' -d 15090,15021,15020\n" +
			"  shunt explain -i '*' -b '*' --format iptables\n" +
			"  shunt explain -i '*' -b '*' -m TPROXY --dual-stack --format nft",
		Args: cobra.NoArgs,
	}
	set := istioargs.RegisterCapture(cmd.Flags())
	format := "text"
	cmd.Flags().Var(newChoice(&format, "text", "iptables", "nft", "json", "svg"), "format", "text (annotated listing), iptables (iptables-restore input), nft (the nftables table), json, or svg (a picture)")
	var plan *capture.Plan
	cmd.PreRunE = func(*cobra.Command, []string) (err error) {
		plan, err = buildPlan(set)
		return err
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		out := cmd.OutOrStdout()
		switch format {
		case "text":
			return explainText(out, plan)
		case "iptables", "nft":
			return printRules(out, plan, format == "nft")
		case "json":
			return explainJSON(out, plan)
		case "svg":
			_, err := io.WriteString(out, picture.Plan(plan))
			return err
		}
		return nil
	}
	return cmd
}

// explainText lists every chain, entered from which hook, and every rule
// with what it matches, what it does and why.
func explainText(w io.Writer, plan *capture.Plan) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, c := range plan.Chains {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		from := "reached by jumps"
		if c.Hook != "" {
			from = "entered from " + string(c.Table) + " " + string(c.Hook)
		}
		fmt.Fprintf(tw, "%s (table %s, %s): %s\n", c.Name, c.Table, from, c.Purpose)
		fmt.Fprintf(tw, "  #\tmatch\tverdict\tpurpose\n")
		for j, r := range c.Rules {
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\n", j+1, r.Describe(), capture.VerdictString(r.Verdict), r.Purpose)
		}
	}
	for _, r := range plan.Routes {
		fmt.Fprintf(tw, "\npolicy route (%s): fwmark %d lookup table %d, local default dev lo: %s\n", r.Family, r.Mark, r.Table, r.Purpose)
	}
	for _, a := range plan.LoopbackAddrs {
		fmt.Fprintf(tw, "\naddress %s on lo: the proxy's IPv6 inbound passthrough source\n", a)
	}
	return tw.Flush()
}

type jsonRule struct {
	Match   string   `json:"match"`
	Verdict string   `json:"verdict"`
	Purpose string   `json:"purpose"`
	Lines   []string `json:"iptables"`
	NFT     string   `json:"nft"`
}

type jsonChain struct {
	Name    string     `json:"name"`
	Table   string     `json:"table"`
	Hook    string     `json:"hook,omitempty"`
	Purpose string     `json:"purpose"`
	Rules   []jsonRule `json:"rules"`
}

func explainJSON(w io.Writer, plan *capture.Plan) error {
	var chains []jsonChain
	for _, c := range plan.Chains {
		jc := jsonChain{Name: c.Name, Table: string(c.Table), Hook: string(c.Hook), Purpose: c.Purpose, Rules: []jsonRule{}}
		for _, r := range c.Rules {
			fam, err := capture.RuleFamily(r)
			if err != nil {
				return err
			}
			if fam == "" {
				fam = capture.IPv4
			}
			lines, err := iptables.RenderRule(c.Name, r, fam)
			if err != nil {
				return err
			}
			nft, err := nftables.RenderRule(r)
			if err != nil {
				return err
			}
			jc.Rules = append(jc.Rules, jsonRule{r.Describe(), capture.VerdictString(r.Verdict), r.Purpose, lines, nft})
		}
		chains = append(chains, jc)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"chains": chains, "families": plan.Families, "routes": plan.Routes})
}
