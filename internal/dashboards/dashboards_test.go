package dashboards_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/shunt-dev/shunt/internal/dashboards"
)

// TestDashboardsFile: the three dashboards are there with their panels,
// and every variable a target or a variable's query uses is defined
// before it is used.
func TestDashboardsFile(t *testing.T) {
	f, err := os.Open("testdata/istio-dashboards.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	boards, err := dashboards.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"mesh": 7, "service": 22, "workload": 19}
	ref := regexp.MustCompile(`\$[a-z_]+`)
	for _, d := range boards {
		if len(d.Panels) != want[d.Key] {
			t.Errorf("%s: %d panels, want %d", d.Key, len(d.Panels), want[d.Key])
		}
		defined := []string{"$__rate_interval"}
		for _, v := range d.Vars {
			for _, name := range ref.FindAllString(v.Query, -1) {
				if !slices.Contains(defined, name) {
					t.Errorf("%s: variable %s uses %s before it is defined", d.Key, v.Name, name)
				}
			}
			defined = append(defined, v.Name)
		}
		for _, p := range d.Panels {
			for _, target := range p.Targets {
				for _, name := range ref.FindAllString(target, -1) {
					if !slices.Contains(defined, name) {
						t.Errorf("%s / %s: %s is not a variable of the dashboard", d.Key, p.Title, name)
					}
				}
			}
		}
		delete(want, d.Key)
	}
	if len(want) > 0 {
		t.Errorf("dashboards missing: %v", want)
	}
}

// TestSelections: variables resolve as Grafana's do: a single-value
// variable is each of its values but "unknown", read from its
// query_result with its regex; All is the values regex-escaped in
// (a|b); later queries see the values chosen before.
func TestSelections(t *testing.T) {
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/label/reporter/values" {
			json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": []string{"destination", "source"}})
			return
		}
		q := r.URL.Query().Get("query")
		queries = append(queries, q)
		var result []map[string]any
		series := func(labels map[string]string) {
			result = append(result, map[string]any{"metric": labels, "value": []any{1.7e9, "1"}})
		}
		switch {
		case strings.Contains(q, "by (destination_service)"):
			series(map[string]string{"destination_service": "reviews.shop.svc.cluster.local"})
			series(map[string]string{"destination_service": "unknown"})
		case strings.Contains(q, "by (source_workload)"):
			series(map[string]string{"source_workload": "productpage-v1"})
			series(map[string]string{"source_workload": "web.v2"})
		}
		json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"resultType": "vector", "result": result}})
	}))
	defer srv.Close()
	prom := &dashboards.Prometheus{URL: srv.URL}
	sels, err := prom.Selections([]dashboards.Var{
		{Name: "$service", Kind: "one", Query: `query_result(sum(istio_requests_total{}) by (destination_service))`, Regex: `/.*destination_service="([^"]*).*/`},
		{Name: "$qrep", Kind: "one", Query: "label_values(reporter)"},
		{Name: "$srcwl", Kind: "all", Query: `query_result(sum(istio_requests_total{reporter="$qrep", destination_service="$service"}) by (source_workload))`, Regex: `/.*workload="([^"]*).*/`},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(sels) != 2 {
		t.Fatalf("selections %v, want the one service (not unknown) by two reporters", sels)
	}
	for i, rep := range []string{"destination", "source"} {
		want := map[string]string{"$service": "reviews.shop.svc.cluster.local", "$qrep": rep, "$srcwl": `(productpage-v1|web\\.v2)`}
		for k, v := range want {
			if sels[i][k] != v {
				t.Errorf("selection %d: %s = %q, want %q", i, k, sels[i][k], v)
			}
		}
	}
	if !slices.Contains(queries, `sum(istio_requests_total{reporter="source", destination_service="reviews.shop.svc.cluster.local"}) by (source_workload)`) {
		t.Errorf("the workload variable's query did not see the service and reporter chosen: %q", queries)
	}
	if got := dashboards.Expand(`rate(x{a=~"$srcwl"}[$__rate_interval])`, sels[0]); got != `rate(x{a=~"(productpage-v1|web\\.v2)"}[1m])` {
		t.Errorf("expanded to %s", got)
	}
}
