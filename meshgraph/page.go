package meshgraph

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"slices"
	"time"
)

// Handler serves the graph: /graph, a page that draws it and refreshes
// itself every refresh (no script, nothing from elsewhere: it works
// without internet access), with the edges as a table too; /graph.svg,
// the drawing alone; /graph.json, the numbers. source gives the graph and
// the scrape targets that failed.
func Handler(source func() (Graph, map[string]string), refresh time.Duration) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/graph.svg", func(w http.ResponseWriter, _ *http.Request) {
		g, _ := source()
		w.Header().Set("Content-Type", "image/svg+xml")
		fmt.Fprint(w, SVG(g))
	})
	mux.HandleFunc("/graph.json", func(w http.ResponseWriter, _ *http.Request) {
		g, failed := source()
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(jsonGraph(g, failed))
	})
	mux.HandleFunc("/graph", func(w http.ResponseWriter, _ *http.Request) {
		g, failed := source()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		page(w, g, failed, refresh)
	})
	return mux
}

func page(w http.ResponseWriter, g Graph, failed map[string]string, refresh time.Duration) {
	fmt.Fprintf(w, `<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="%d"><title>shunt: the mesh</title>`+
		`<style>body{font-family:sans-serif;margin:20px;color:#222}table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}`+
		`td:first-child,td:nth-child(2),th:first-child,th:nth-child(2){text-align:left}.failed{color:#c62828}</style></head><body>`, int(refresh.Seconds()))
	fmt.Fprintf(w, `<h1>The mesh</h1><p id="window">Requests over the last %.0f s, from the sidecars' Istio metrics; refreshed every %s.</p>`, g.Seconds, refresh)
	if len(g.Edges) == 0 {
		fmt.Fprint(w, `<p id="empty">No requests in the window yet.</p>`)
	} else {
		fmt.Fprint(w, SVG(g))
		fmt.Fprint(w, `<table id="edges"><tr><th>from</th><th>to</th><th>req/s</th><th>errors</th><th>p50 ms</th><th>p99 ms</th><th>mTLS</th></tr>`)
		for _, e := range g.Edges {
			fmt.Fprintf(w, `<tr class="edge-row"><td>%s</td><td>%s</td><td>%.2f</td><td>%.1f%%</td><td>%s</td><td>%s</td><td>%.0f%%</td></tr>`,
				html.EscapeString(e.From.String()), html.EscapeString(e.To.String()), e.RPS, 100*e.ErrorRate, ms(e.P50), ms(e.P99), 100*e.MTLS)
		}
		fmt.Fprint(w, `</table>`)
	}
	if len(failed) > 0 {
		targets := make([]string, 0, len(failed))
		for t := range failed {
			targets = append(targets, t)
		}
		slices.Sort(targets)
		fmt.Fprint(w, `<p class="failed">Sidecars not read:</p><ul class="failed">`)
		for _, t := range targets {
			fmt.Fprintf(w, `<li>%s: %s</li>`, html.EscapeString(t), html.EscapeString(failed[t]))
		}
		fmt.Fprint(w, `</ul>`)
	}
	fmt.Fprint(w, `</body></html>`)
}

type jsonEdge struct {
	From, To  string
	RPS       float64  `json:"rps"`
	ErrorRate float64  `json:"error_rate"`
	P50       *float64 `json:"p50_ms"`
	P99       *float64 `json:"p99_ms"`
	MTLS      float64  `json:"mtls"`
}

func jsonGraph(g Graph, failed map[string]string) any {
	out := struct {
		Seconds float64           `json:"window_seconds"`
		Nodes   []string          `json:"nodes"`
		Edges   []jsonEdge        `json:"edges"`
		Failed  map[string]string `json:"failed,omitempty"`
	}{Seconds: g.Seconds, Nodes: []string{}, Edges: []jsonEdge{}, Failed: failed}
	for _, n := range g.Nodes {
		out.Nodes = append(out.Nodes, n.String())
	}
	num := func(v float64) *float64 {
		if v != v { // NaN
			return nil
		}
		return &v
	}
	for _, e := range g.Edges {
		out.Edges = append(out.Edges, jsonEdge{e.From.String(), e.To.String(), e.RPS, e.ErrorRate, num(e.P50), num(e.P99), e.MTLS})
	}
	return out
}
