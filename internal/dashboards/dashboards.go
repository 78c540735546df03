// Package dashboards checks Istio's published Grafana dashboards against
// a Prometheus that scrapes shunt's sidecars: each panel's queries, with
// the dashboard's template variables resolved as Grafana resolves them.
package dashboards

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Dashboard is a dashboard's template variables and panels.
type Dashboard struct {
	Key, Title string
	Vars       []Var
	Panels     []Panel
}

// Var is a template variable.
type Var struct {
	Name  string // with its $
	Kind  string // one (a value chosen), all (All chosen), custom (values listed)
	Query string // query_result(EXPR), label_values(LABEL), or for custom the values
	Regex string // what query_result's lines are cut to, /.../ with one group
}

// Panel is a panel's targets.
type Panel struct {
	Title   string
	Targets []string
}

// Parse reads the dashboards file (see testdata/istio-dashboards.txt).
func Parse(r io.Reader) ([]Dashboard, error) {
	var out []Dashboard
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			key, title, ok := strings.Cut(strings.TrimPrefix(line, "["), "] ")
			if !ok {
				return nil, fmt.Errorf("line %d: want [key] title", n)
			}
			out = append(out, Dashboard{Key: key, Title: title})
		case len(out) == 0:
			return nil, fmt.Errorf("line %d: before any dashboard", n)
		default:
			f := strings.Split(line, "\t")
			d := &out[len(out)-1]
			switch {
			case f[0] == "var" && len(f) >= 4:
				v := Var{Name: f[1], Kind: f[2], Query: f[3]}
				if len(f) > 4 {
					v.Regex = f[4]
				}
				d.Vars = append(d.Vars, v)
			case f[0] == "panel" && len(f) == 3:
				if i := slices.IndexFunc(d.Panels, func(p Panel) bool { return p.Title == f[1] }); i >= 0 {
					d.Panels[i].Targets = append(d.Panels[i].Targets, f[2])
				} else {
					d.Panels = append(d.Panels, Panel{Title: f[1], Targets: []string{f[2]}})
				}
			default:
				return nil, fmt.Errorf("line %d: not a var or panel line", n)
			}
		}
	}
	return out, sc.Err()
}

// Sample is one series of an instant query's answer.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Prometheus answers instant queries.
type Prometheus struct {
	URL    string // http://host:port
	Client *http.Client
}

// Query runs an instant query.
func (p *Prometheus) Query(expr string) ([]Sample, error) {
	var body struct {
		Status, Error string
		Data          struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		}
	}
	if err := p.get("/api/v1/query?query="+url.QueryEscape(expr), &body); err != nil {
		return nil, err
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("%s: %s", expr, body.Error)
	}
	var vec []struct {
		Metric map[string]string
		Value  [2]any
	}
	switch body.Data.ResultType {
	case "vector":
		if err := json.Unmarshal(body.Data.Result, &vec); err != nil {
			return nil, err
		}
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(body.Data.Result, &v); err != nil {
			return nil, err
		}
		vec = append(vec, struct {
			Metric map[string]string
			Value  [2]any
		}{Value: v})
	default:
		return nil, fmt.Errorf("%s: a %s answer", expr, body.Data.ResultType)
	}
	out := make([]Sample, 0, len(vec))
	for _, s := range vec {
		text, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: value %q", expr, text)
		}
		out = append(out, Sample{Labels: s.Metric, Value: v})
	}
	return out, nil
}

// LabelValues are a label's values, as label_values(LABEL) lists them.
func (p *Prometheus) LabelValues(label string) ([]string, error) {
	var body struct {
		Status string
		Data   []string
	}
	if err := p.get("/api/v1/label/"+url.PathEscape(label)+"/values", &body); err != nil {
		return nil, err
	}
	return body.Data, nil
}

func (p *Prometheus) get(path string, into any) error {
	c := p.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Get(p.URL + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(into)
}

// HasData says an answer has a value Grafana would draw (not NaN).
func HasData(s []Sample) bool {
	return slices.ContainsFunc(s, func(s Sample) bool { return !math.IsNaN(s.Value) })
}

// RateInterval is what Grafana gives $__rate_interval with Prometheus'
// default 15 s scrape interval: four of them.
const RateInterval = "1m"

// Expand puts a selection's values in for its variables, longest names
// first so that no name is taken for the start of another.
func Expand(expr string, sel map[string]string) string {
	names := make([]string, 0, len(sel)+1)
	for n := range sel {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	for _, n := range names {
		expr = strings.ReplaceAll(expr, n, sel[n])
	}
	return strings.ReplaceAll(expr, "$__rate_interval", RateInterval)
}

// Selections are every way a user can set the dashboard's variables, in
// Grafana's terms: each value of a single-value variable (but "unknown",
// which names no service or workload), All for a multi-value one
// (Grafana's (a|b) of its values, regex-escaped), each value of a custom
// one. A variable's query sees the values chosen before it.
func (p *Prometheus) Selections(vars []Var) ([]map[string]string, error) {
	sels := []map[string]string{{}}
	for _, v := range vars {
		var next []map[string]string
		for _, sel := range sels {
			values, err := p.values(v, sel)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", v.Name, err)
			}
			if v.Kind == "all" {
				escaped := make([]string, len(values))
				for i, val := range values {
					escaped[i] = regexEscape(val)
				}
				next = append(next, with(sel, v.Name, "("+strings.Join(escaped, "|")+")"))
				continue
			}
			for _, val := range values {
				if val != "unknown" {
					next = append(next, with(sel, v.Name, val))
				}
			}
		}
		sels = next
	}
	return sels, nil
}

func with(sel map[string]string, name, value string) map[string]string {
	out := make(map[string]string, len(sel)+1)
	for k, v := range sel {
		out[k] = v
	}
	out[name] = value
	return out
}

// values are a variable's values given the ones chosen before it.
func (p *Prometheus) values(v Var, sel map[string]string) ([]string, error) {
	switch {
	case v.Kind == "custom":
		return strings.Split(v.Query, ","), nil
	case strings.HasPrefix(v.Query, "label_values(") && strings.HasSuffix(v.Query, ")"):
		return p.LabelValues(strings.TrimSuffix(strings.TrimPrefix(v.Query, "label_values("), ")"))
	case strings.HasPrefix(v.Query, "query_result(") && strings.HasSuffix(v.Query, ")"):
		samples, err := p.Query(Expand(strings.TrimSuffix(strings.TrimPrefix(v.Query, "query_result("), ")"), sel))
		if err != nil {
			return nil, err
		}
		re, err := regexp.Compile(strings.TrimSuffix(strings.TrimPrefix(v.Regex, "/"), "/"))
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		var out []string
		for _, s := range samples {
			if m := re.FindStringSubmatch(resultLine(s)); m != nil && !seen[m[1]] {
				seen[m[1]] = true
				out = append(out, m[1])
			}
		}
		sort.Strings(out)
		return out, nil
	}
	return nil, fmt.Errorf("query %q is not one this check reads", v.Query)
}

// resultLine is a sample as Grafana's query_result writes it for a
// variable's regex: {label="value", ...} value.
func resultLine(s Sample) string {
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, s.Labels[k])
	}
	return "{" + strings.Join(parts, ", ") + "} " + strconv.FormatFloat(s.Value, 'g', -1, 64)
}

// regexEscape escapes a value for a regex in a PromQL string, as
// Grafana's Prometheus data source does for multi-value variables: the
// regex's backslashes doubled for the string.
func regexEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\^$.|?*+()[]{}`, r) {
			b.WriteString(`\\`)
		}
		b.WriteRune(r)
	}
	return b.String()
}
