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
// the drawing alone; /graph.json, the numbers; each by service, or with
// ?view=workloads by workload; /graph/service/NS/NAME, a service's page
// (see Options). source gives the graph and the scrape targets that
// failed.
func Handler(source func() (Graph, map[string]string), refresh time.Duration, opts Options) http.Handler {
	mux := http.NewServeMux()
	servicePage(mux, source, opts)
	// view is the graph of the request's view: ?view=workloads, else
	// services.
	view := func(r *http.Request) (Graph, map[string]string, bool) {
		g, failed := source()
		workloads := r.URL.Query().Get("view") == "workloads"
		return g.View(workloads), failed, workloads
	}
	mux.HandleFunc("/graph.svg", func(w http.ResponseWriter, r *http.Request) {
		g, _, _ := view(r)
		w.Header().Set("Content-Type", "image/svg+xml")
		fmt.Fprint(w, SVG(g))
	})
	mux.HandleFunc("/graph.json", func(w http.ResponseWriter, r *http.Request) {
		g, failed, _ := view(r)
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(jsonGraph(g, failed))
	})
	mux.HandleFunc("/graph", func(w http.ResponseWriter, r *http.Request) {
		g, failed, workloads := view(r)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		page(w, g, failed, refresh, workloads)
	})
	return mux
}

func page(w http.ResponseWriter, g Graph, failed map[string]string, refresh time.Duration, workloads bool) {
	fmt.Fprintf(w, `<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="%d"><title>shunt: the mesh</title>`+
		`<style>body{font-family:sans-serif;margin:20px;color:#222}table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}`+
		`td:first-child,td:nth-child(2),th:first-child,th:nth-child(2){text-align:left}.failed{color:#c62828}</style></head><body>`, int(refresh.Seconds()))
	views := `<b>services</b> · <a id="workloads" href="/graph?view=workloads">workloads</a>`
	if workloads {
		views = `<a id="services" href="/graph">services</a> · <b>workloads</b>`
	}
	fmt.Fprintf(w, `<h1>The mesh</h1><p id="views">%s</p><p id="window">Requests over the last %.0f s, from the sidecars' Istio metrics; refreshed every %s.</p>`,
		views, g.Seconds, refresh)
	if len(g.Edges) == 0 {
		fmt.Fprint(w, `<p id="empty">No requests in the window yet.</p>`)
	} else {
		fmt.Fprint(w, SVG(g))
		fmt.Fprint(w, `<table id="edges"><tr><th>from</th><th>to</th><th>req/s</th><th>errors</th><th>p50 ms</th><th>p99 ms</th><th>mTLS</th></tr>`)
		for _, e := range g.Edges {
			fmt.Fprintf(w, `<tr class="edge-row"><td>%s</td><td>%s</td><td>%.2f</td><td>%.1f%%</td><td>%s</td><td>%s</td><td>%.0f%%</td></tr>`,
				nodeLink(e.From), nodeLink(e.To), e.RPS, 100*e.ErrorRate, ms(e.P50), ms(e.P99), 100*e.MTLS)
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
