package meshgraph

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strings"
)

// ServiceInfo is what the control plane knows of a service, for its page.
type ServiceInfo struct {
	Name, Namespace, Host string
	Ports                 []string // "http 9080 → 9080"
	// Routing are the rules that shape traffic to it: VirtualServices,
	// HTTPRoutes and DestinationRules; Policies those that guard its pods:
	// PeerAuthentications and AuthorizationPolicies.
	Routing, Policies []Item
	Endpoints         []Endpoint
	// Sidecars are its pods' sidecars connected to the control plane.
	Sidecars []SidecarSync
}

// Item is one rule: its kind and name, what it says, and what of it is
// not in force.
type Item struct {
	Kind, Name, Detail string
	Problems           []string
}

// Endpoint is one of a service's endpoints.
type Endpoint struct {
	Address string // IP:port
	Pod     string // namespace/name, or "" for an address that is not a pod's
	Ready   bool
}

// SidecarSync is a sidecar's sync status: the configuration it was sent
// and whether it took all of it.
type SidecarSync struct {
	Proxy, Connected string
	Synced           bool
	Detail           string // the versions sent and ACKed, or the refusal
}

// Options are the graph's links beyond itself.
type Options struct {
	// Describe finds a service by namespace and name (the graph's node:
	// a Kubernetes service, or a canonical service); nil for no service
	// pages.
	Describe func(namespace, name string) (ServiceInfo, bool)
	// TracingURL is a trace backend's UI (Jaeger's, http://jaeger:16686):
	// service pages link a search of the service's traces and a request
	// ID's; "" for none.
	TracingURL string
}

// servicePath is a node's page.
func servicePath(n Node) string {
	return "/graph/service/" + url.PathEscape(orUnknown(n.Namespace)) + "/" + url.PathEscape(n.Name)
}

// nodeLink is a node's name linking its page; a caller the sidecars could
// not name has none, nor has a workload.
func nodeLink(n Node) string {
	if n.Name == "unknown" || n.Workload {
		return html.EscapeString(n.String())
	}
	return `<a href="` + html.EscapeString(servicePath(n)) + `">` + html.EscapeString(n.String()) + `</a>`
}

// TraceSearch is the trace backend's search for a service's traces (its
// spans' service.name, Istio's canonical service.namespace), and with a
// request ID for the request's: Jaeger's UI search, whose tags are a JSON
// object (the sidecars tag spans guid:x-request-id).
func TraceSearch(base, service, requestID string) string {
	q := url.Values{"service": {service}}
	if requestID != "" {
		tags, _ := json.Marshal(map[string]string{"guid:x-request-id": requestID})
		q.Set("tags", string(tags))
	}
	return strings.TrimSuffix(base, "/") + "/search?" + q.Encode()
}

// servicePage serves /graph/service/NAMESPACE/NAME, and
// /graph/trace?service=S&id=ID, which sends the browser to the backend's
// search (a form on the service page asks for the ID; no script).
func servicePage(mux *http.ServeMux, source func() (Graph, map[string]string), opts Options) {
	mux.HandleFunc("GET /graph/trace", func(w http.ResponseWriter, r *http.Request) {
		if opts.TracingURL == "" {
			http.Error(w, "no trace backend (shunt-control --tracing-ui-url)", http.StatusNotFound)
			return
		}
		http.Redirect(w, r, TraceSearch(opts.TracingURL, r.URL.Query().Get("service"), strings.TrimSpace(r.URL.Query().Get("id"))), http.StatusFound)
	})
	mux.HandleFunc("GET /graph/service/{namespace}/{name}", func(w http.ResponseWriter, r *http.Request) {
		n := Node{Name: r.PathValue("name"), Namespace: r.PathValue("namespace")}
		info, ok := ServiceInfo{}, false
		if opts.Describe != nil {
			info, ok = opts.Describe(n.Namespace, n.Name)
		}
		g, _ := source()
		g = g.View(false)
		var in, out []Edge
		for _, e := range g.Edges {
			if e.To == n {
				in = append(in, e)
			}
			if e.From == n {
				out = append(out, e)
			}
		}
		if !ok && len(in)+len(out) == 0 {
			http.Error(w, "no service "+n.String()+" in the mesh or its graph", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		writeServicePage(w, n, info, ok, in, out, opts.TracingURL)
	})
}

func writeServicePage(w http.ResponseWriter, n Node, info ServiceInfo, known bool, in, out []Edge, tracingURL string) {
	esc := html.EscapeString
	fmt.Fprintf(w, `<!DOCTYPE html><html><head><meta charset="utf-8"><title>shunt: %s</title>`+
		`<style>body{font-family:sans-serif;margin:20px;color:#222}table{border-collapse:collapse;margin-bottom:12px}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}`+
		`.bad{color:#c62828}.good{color:#2e7d32}</style></head><body><p><a href="/graph">the mesh</a></p><h1 id="service">%s</h1>`, esc(n.String()), esc(n.String()))
	if known {
		fmt.Fprintf(w, `<p id="host">%s · ports %s</p>`, esc(info.Host), esc(strings.Join(info.Ports, ", ")))
	} else {
		fmt.Fprint(w, `<p id="host">Not a service the control plane knows: its calls only.</p>`)
	}
	edges := func(id, title string, es []Edge, other func(Edge) Node) {
		fmt.Fprintf(w, `<h2>%s</h2>`, title)
		if len(es) == 0 {
			fmt.Fprintf(w, `<p id="%s">None in the window.</p>`, id)
			return
		}
		fmt.Fprintf(w, `<table id="%s"><tr><th></th><th>req/s</th><th>errors</th><th>p50 ms</th><th>p99 ms</th><th>mTLS</th></tr>`, id)
		for _, e := range es {
			o := other(e)
			fmt.Fprintf(w, `<tr><td>%s</td><td>%.2f</td><td>%.1f%%</td><td>%s</td><td>%s</td><td>%.0f%%</td></tr>`,
				nodeLink(o), e.RPS, 100*e.ErrorRate, ms(e.P50), ms(e.P99), 100*e.MTLS)
		}
		fmt.Fprint(w, `</table>`)
	}
	edges("callers", "Called by", in, func(e Edge) Node { return e.From })
	edges("calls", "Calls", out, func(e Edge) Node { return e.To })
	if tracingURL != "" {
		svc := n.Name + "." + n.Namespace
		fmt.Fprintf(w, `<h2>Traces</h2><p><a id="traces" href="%s">%s's traces</a></p>`+
			`<form id="trace-search" action="/graph/trace" method="get"><input type="hidden" name="service" value="%s">`+
			`<label>request ID (x-request-id) <input name="id" size="40"></label> <button>find its trace</button></form>`,
			esc(TraceSearch(tracingURL, svc, "")), esc(svc), esc(svc))
	}
	if !known {
		fmt.Fprint(w, `</body></html>`)
		return
	}
	items := func(id, title string, list []Item) {
		fmt.Fprintf(w, `<h2>%s</h2>`, title)
		if len(list) == 0 {
			fmt.Fprintf(w, `<p id="%s">None.</p>`, id)
			return
		}
		fmt.Fprintf(w, `<table id="%s"><tr><th>kind</th><th>name</th><th>says</th><th>not in force</th></tr>`, id)
		for _, it := range list {
			fmt.Fprintf(w, `<tr><td>%s</td><td>%s</td><td>%s</td><td class="bad">%s</td></tr>`,
				esc(it.Kind), esc(it.Name), esc(it.Detail), esc(strings.Join(it.Problems, "; ")))
		}
		fmt.Fprint(w, `</table>`)
	}
	items("routing", "Routing", info.Routing)
	items("policies", "Policies", info.Policies)
	fmt.Fprint(w, `<h2>Endpoints</h2>`)
	if len(info.Endpoints) == 0 {
		fmt.Fprint(w, `<p id="endpoints" class="bad">None: calls to it fail.</p>`)
	} else {
		fmt.Fprint(w, `<table id="endpoints"><tr><th>address</th><th>pod</th><th>ready</th></tr>`)
		for _, e := range info.Endpoints {
			ready := `<td class="good">ready</td>`
			if !e.Ready {
				ready = `<td class="bad">not ready</td>`
			}
			fmt.Fprintf(w, `<tr><td>%s</td><td>%s</td>%s</tr>`, esc(e.Address), esc(e.Pod), ready)
		}
		fmt.Fprint(w, `</table>`)
	}
	fmt.Fprint(w, `<h2>Sidecars</h2>`)
	if len(info.Sidecars) == 0 {
		fmt.Fprint(w, `<p id="sidecars">None of its pods' sidecars is connected.</p>`)
	} else {
		fmt.Fprint(w, `<table id="sidecars"><tr><th>proxy</th><th>connected</th><th>sync</th><th></th></tr>`)
		for _, s := range info.Sidecars {
			state := `<td class="good">SYNCED</td>`
			if !s.Synced {
				state = `<td class="bad">STALE</td>`
			}
			fmt.Fprintf(w, `<tr><td>%s</td><td>%s</td>%s<td>%s</td></tr>`, esc(s.Proxy), esc(s.Connected), state, esc(s.Detail))
		}
		fmt.Fprint(w, `</table>`)
	}
	fmt.Fprint(w, `</body></html>`)
}
