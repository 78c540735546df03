package meshgraph

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Layout: services in columns by how far down the call chains they are
// (callers left, the services they call right), in name order within a
// column.
const (
	nodeW, nodeH = 190, 46
	colGap       = 450 // column to column: room for an edge's labels
	rowGap       = 92  // row to row
	margin       = 30
)

// layout places each node: its column (the longest chain of calls that
// reaches it, cycles cut) and its row.
func layout(g Graph) (pos map[Node][2]int, cols, rows int) {
	out := map[Node][]Node{}
	for _, e := range g.Edges {
		out[e.From] = append(out[e.From], e.To)
	}
	depth := map[Node]int{}
	var visit func(n Node, d int, path map[Node]bool)
	visit = func(n Node, d int, path map[Node]bool) {
		if path[n] || d <= depth[n] && d > 0 {
			return // a cycle, or placed as deep already
		}
		if d > depth[n] {
			depth[n] = d
		}
		path[n] = true
		for _, m := range out[n] {
			visit(m, d+1, path)
		}
		delete(path, n)
	}
	for _, n := range g.Nodes {
		visit(n, 0, map[Node]bool{})
	}
	pos = map[Node][2]int{}
	count := map[int]int{}
	for _, n := range g.Nodes { // sorted by name
		c := depth[n]
		pos[n] = [2]int{c, count[c]}
		count[c]++
		cols, rows = max(cols, c+1), max(rows, count[c])
	}
	return pos, cols, rows
}

// SVG draws the graph: a box per service, an arrow per caller and
// service it calls, labelled with requests per second, error rate, p50
// and p99 and whether the calls are mutual TLS (green, a lock), plaintext
// (grey) or both (orange); an edge whose error rate passes 5% is red.
// Each node and edge carries its numbers as data- attributes.
func SVG(g Graph) string {
	pos, cols, rows := layout(g)
	w, h := 2*margin+max(cols, 1)*colGap-(colGap-nodeW), 2*margin+max(rows, 1)*rowGap
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" id="mesh-graph" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`, w, h, w, h)
	b.WriteString(`<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>`)
	xy := func(n Node) (float64, float64) {
		p := pos[n]
		return float64(margin + p[0]*colGap), float64(margin + p[1]*rowGap)
	}
	for _, e := range g.Edges {
		x1, y1 := xy(e.From)
		x2, y2 := xy(e.To)
		color, security := "#9e9e9e", "plaintext"
		switch {
		case e.MTLS >= 0.999:
			color, security = "#2e7d32", "🔒 mTLS"
		case e.MTLS > 0:
			color, security = "#ef6c00", fmt.Sprintf("🔓 %.0f%% mTLS", 100*e.MTLS)
		}
		if e.ErrorRate > 0.05 {
			color = "#c62828"
		}
		var path string
		var lx, ly float64
		if x2 > x1 {
			sx, sy, ex, ey := x1+nodeW, y1+nodeH/2, x2, y2+nodeH/2
			path = fmt.Sprintf("M%.0f,%.0f C%.0f,%.0f %.0f,%.0f %.0f,%.0f", sx, sy, (sx+ex)/2, sy, (sx+ex)/2, ey, ex, ey)
			lx, ly = (sx+ex)/2, (sy+ey)/2-6
		} else { // a call back or within a column: around below
			sx, sy, ex, ey := x1+nodeW/2+20, y1+nodeH, x2+nodeW/2-20, y2+nodeH
			path = fmt.Sprintf("M%.0f,%.0f C%.0f,%.0f %.0f,%.0f %.0f,%.0f", sx, sy, sx, sy+60, ex, ey+60, ex, ey)
			lx, ly = (sx+ex)/2, math.Max(sy, ey)+50
		}
		fmt.Fprintf(&b, `<g class="edge" data-from="%s" data-to="%s" data-rps="%.2f" data-error-rate="%.4f" data-p50="%s" data-p99="%s" data-mtls="%.2f">`,
			attr(e.From.String()), attr(e.To.String()), e.RPS, e.ErrorRate, ms(e.P50), ms(e.P99), e.MTLS)
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="%.1f" marker-end="url(#arrow)"/>`, path, color, 1.5+math.Min(4, math.Log10(1+e.RPS)))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle" fill="%s">%.1f rps · %.1f%% errors</text>`, lx, ly-14, color, e.RPS, 100*e.ErrorRate)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle" fill="#555">p50 %s ms · p99 %s ms</text>`, lx, ly, ms(e.P50), ms(e.P99))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle" fill="%s">%s</text></g>`, lx, ly+30, color, security)
	}
	for _, n := range g.Nodes {
		x, y := xy(n)
		link, end := `<a href="`+attr(servicePath(n))+`">`, `</a>`
		if n.Name == "unknown" || n.Workload {
			link, end = "", ""
		}
		fmt.Fprintf(&b, `%s<g class="node" data-node="%s"><rect x="%.0f" y="%.0f" width="%d" height="%d" rx="8" fill="#e3f2fd" stroke="#1565c0"/>`,
			link, attr(n.String()), x, y, nodeW, nodeH)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle" font-weight="bold">%s</text>`, x+nodeW/2, y+20, html.EscapeString(n.Name))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle" fill="#555">%s</text></g>%s`, x+nodeW/2, y+36, html.EscapeString(orUnknown(n.Namespace)), end)
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func attr(s string) string { return html.EscapeString(s) }

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// ms prints a duration in milliseconds, "-" when there is none.
func ms(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.0f", v)
}
