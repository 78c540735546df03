package dashboards_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/dashboards"
	"github.com/shunt-dev/shunt/internal/testnet"
)

func TestMain(m *testing.M) { testnet.Main(m) }

// The mesh: productpage calls reviews, which calls ratings over HTTP and,
// on every fifth request, over TCP; shop's services have these cluster
// IPs.
const (
	reviewsIP  = "10.96.0.11"
	ratingsIP  = "10.96.0.12"
	promAddr   = "127.0.0.1:9099"
	controlAt  = ":15010"
	controlMon = "127.0.0.1:15014"
)

var manifest = `
apiVersion: v1
kind: Pod
metadata: {name: productpage-v1-5f4d584748-x2x9z, namespace: shop, labels: {app: productpage, version: v1, pod-template-hash: 5f4d584748}}
spec: {containers: [{name: app, image: app}]}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1-6c5d8b9f7-k2j4q, namespace: shop, labels: {app: reviews, version: v1, pod-template-hash: 6c5d8b9f7}}
spec: {containers: [{name: app, image: app}]}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-v1-7d9f6c4b8-p8m2n, namespace: shop, labels: {app: ratings, version: v1, pod-template-hash: 7d9f6c4b8}}
spec: {containers: [{name: app, image: app}]}
status: {podIP: 10.2.0.2}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {selector: {app: reviews}, clusterIP: ` + reviewsIP + `, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec: {selector: {app: ratings}, clusterIP: ` + ratingsIP + `, ports: [{name: http, port: 9080}, {name: tcp-echo, port: 9000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-1, namespace: shop, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{name: http, port: 9080}]
endpoints: [{addresses: [10.1.0.1], conditions: {ready: true}, targetRef: {kind: Pod, name: reviews-v1-6c5d8b9f7-k2j4q}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ratings-1, namespace: shop, labels: {kubernetes.io/service-name: ratings}}
addressType: IPv4
ports: [{name: http, port: 9080}, {name: tcp-echo, port: 9000}]
endpoints: [{addresses: [10.2.0.2], conditions: {ready: true}, targetRef: {kind: Pod, name: ratings-v1-7d9f6c4b8-p8m2n}}]
`

// TestIstioDashboards runs Istio's mesh, service and workload dashboards'
// queries against Debian's Prometheus scraping three shunt sidecars
// configured by shunt-control (plaintext, as the mesh is without a CA
// here): every target returns data for some choice of the dashboard's
// variables, but those that select connection_security_policy
// "mutual_tls", which must return none in a plaintext mesh.
func TestIstioDashboards(t *testing.T) {
	testnet.RequireRoot(t, "iptables-nft-save", "setpriv")
	if _, err := exec.LookPath("prometheus"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus is not installed (.ci/deps tests installs it)")
		}
		t.Skip("prometheus is not installed")
	}
	f, err := os.Open("testdata/istio-dashboards.txt")
	if err != nil {
		t.Fatal(err)
	}
	boards, err := dashboards.Parse(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}

	productpage, reviews, ratings := testnet.NewNS(t, "pp"), testnet.NewNS(t, "rv"), testnet.NewNS(t, "rt")
	testnet.Link(t, productpage, "eth0", "10.1.0.5/24", reviews, "eth0", "10.1.0.1/24")
	testnet.Link(t, reviews, "rt0", "10.2.0.1/24", ratings, "eth0", "10.2.0.2/24")
	productpage.Run(t, "ip", "route", "add", "default", "via", "10.1.0.1")
	ratings.Run(t, "ip", "route", "add", "default", "via", "10.2.0.1")
	reviews.Run(t, "ip", "route", "add", "10.96.0.0/12", "dev", "rt0") // the cluster IPs: captured before they leave

	// shunt-control and Prometheus beside reviews, their ports not
	// captured; they run as the sidecars' user, so that Prometheus'
	// scrapes are not either, as from a pod of its own (shunt-control
	// reads its mesh graph from Prometheus rather than scrape the sidecars
	// itself: reviews' own would come back in through its inbound
	// listener, which a sidecar's user's traffic to its own pod does).
	dir, err := os.MkdirTemp("/tmp", "shunt-dashboards-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(manifest), 0o644)
	reviews.Start(t, "shunt-control", "setpriv", "--reuid=1337", "--regid=1337", "--clear-groups", testnet.ControlBinary(t), "--from-file", filepath.Join(dir, "mesh.yaml"), "--addr", controlAt,
		"--monitor-addr", controlMon, "--enable-auto-mtls=false", "--prometheus-url", "http://"+promAddr)
	reviews.WaitHTTP(t, "http://"+controlMon+"/ready")

	sidecar := func(ns *testnet.NS, pod, ip, control, excluded string) {
		bin := testnet.ShuntBinary(t)
		args := []string{"redirect", "--network-namespace", ns.Path, "--log_output_level", "warn",
			"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "*", "-d", "15090,15021,15020" + excluded}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("shunt redirect: %v: %s", err, out)
		}
		ns.Start(t, pod+"'s sidecar", "env", "POD_NAME="+pod, "POD_NAMESPACE=shop", "INSTANCE_IP="+ip,
			`ISTIO_METAJSON_LABELS={"app":"`+strings.Split(pod, "-")[0]+`","version":"v1","pod-template-hash":"`+strings.Split(pod, "-")[2]+`"}`,
			bin, "proxy", "--uid", "1337", "--gid", "1337", "--xds-address", control)
		ns.WaitHTTP(t, "http://127.0.0.1:15021/healthz/ready")
	}
	sidecar(reviews, "reviews-v1-6c5d8b9f7-k2j4q", "10.1.0.1", "127.0.0.1"+controlAt, ",15010,15014,9099")
	sidecar(ratings, "ratings-v1-7d9f6c4b8-p8m2n", "10.2.0.2", "10.2.0.1"+controlAt, "")
	sidecar(productpage, "productpage-v1-5f4d584748-x2x9z", "10.1.0.5", "10.1.0.1"+controlAt, "")

	serveApps(t, reviews, ratings)
	stop := drive(t, productpage)
	defer stop()

	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(`global: {scrape_interval: 1s}
scrape_configs:
- job_name: sidecars
  metrics_path: /stats/prometheus
  static_configs: [{targets: ["10.1.0.5:15090", "127.0.0.1:15090", "10.2.0.2:15090"]}]
- job_name: control
  static_configs: [{targets: ["`+controlMon+`"]}]
`), 0o644)
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o755)
	os.Chown(data, 1337, 1337)
	reviews.Start(t, "prometheus", "setpriv", "--reuid=1337", "--regid=1337", "--clear-groups",
		"prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+data, "--web.listen-address="+promAddr)
	prom := &dashboards.Prometheus{URL: "http://" + promAddr, Client: reviews.HTTPClient()}
	// Every target up, and a few scrapes of the traffic in (irate needs
	// two samples, rate over a minute a few).
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		up, err := prom.Query(`sum(up) == 4 and on() sum(count_over_time(istio_requests_total{reporter="destination"}[1m])) > 20`)
		if err == nil && len(up) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus has not scraped the four targets and the traffic: %v %v", up, err)
		}
	}

	var report strings.Builder
	for _, d := range boards {
		sels, err := prom.Selections(d.Vars)
		if err != nil {
			t.Fatalf("%s: %v", d.Title, err)
		}
		checkNames(t, prom, d, sels)
		if len(d.Vars) > 0 && len(sels) == 0 {
			t.Errorf("%s: its variables have no values", d.Title)
			continue
		}
		fmt.Fprintf(&report, "%s (%d choices of its variables)\n", d.Title, len(sels))
		for _, p := range d.Panels {
			var empty, wrong []string
			for _, target := range p.Targets {
				found, err := anyData(prom, target, sels)
				if err != nil {
					t.Errorf("%s / %s: %v", d.Title, p.Title, err)
					continue
				}
				mtls := strings.Contains(target, `connection_security_policy="mutual_tls"`)
				switch {
				case mtls && found:
					wrong = append(wrong, target)
				case !mtls && !found:
					empty = append(empty, target)
				}
			}
			status := "data"
			if len(empty) > 0 {
				status = fmt.Sprintf("%d of %d targets EMPTY", len(empty), len(p.Targets))
				t.Errorf("%s / %s: no data for %d target(s), first: %s", d.Title, p.Title, len(empty), empty[0])
			}
			if len(wrong) > 0 {
				t.Errorf("%s / %s: mutual TLS traffic in a plaintext mesh: %s", d.Title, p.Title, wrong[0])
			}
			fmt.Fprintf(&report, "  %-70s %s\n", p.Title, status)
		}
	}
	t.Logf("Istio's dashboards against shunt's sidecars:\n%s", report.String())

	// shunt-control's mesh graph, read from the same Prometheus: the
	// calls by service and by workload, each end named.
	for view, want := range map[string][]string{"": {"productpage.shop → reviews.shop", "reviews.shop → ratings.shop"},
		"?view=workloads": {"productpage-v1.shop → reviews-v1.shop", "reviews-v1.shop → ratings-v1.shop"}} {
		var g struct{ Edges []struct{ From, To string } }
		resp, err := reviews.HTTPClient().Get("http://" + controlMon + "/graph.json" + view)
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&g)
		resp.Body.Close()
		var got []string
		for _, e := range g.Edges {
			got = append(got, e.From+" → "+e.To)
		}
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("the mesh graph%s: %q %v, want %q", view, got, err, want)
		}
	}
}

// checkNames checks that the dashboards name the mesh's services and
// workloads as Istio's would: the services are the ones that have
// sidecars, by their FQDNs, whichever sidecar reports them (the inbound
// one reads its cluster's metadata); a caller and a callee name each
// other's workloads (the metadata exchange).
func checkNames(t *testing.T, prom *dashboards.Prometheus, d dashboards.Dashboard, sels []map[string]string) {
	t.Helper()
	values := func(v string) []string {
		var out []string
		for _, sel := range sels {
			if !slices.Contains(out, sel[v]) {
				out = append(out, sel[v])
			}
		}
		slices.Sort(out)
		return out
	}
	// labelsOf are the values of label in a panel's plaintext target's
	// answer under the selection where the variable has the value.
	labelsOf := func(panel, variable, value, label string, more ...string) []string {
		t.Helper()
		i := slices.IndexFunc(d.Panels, func(p dashboards.Panel) bool { return p.Title == panel })
		j := slices.IndexFunc(sels, func(sel map[string]string) bool {
			if sel[variable] != value {
				return false
			}
			for k := 0; k+1 < len(more); k += 2 {
				if sel[more[k]] != more[k+1] {
					return false
				}
			}
			return true
		})
		if i < 0 || j < 0 {
			t.Fatalf("%s: no panel %q or no choice of %s = %s", d.Title, panel, variable, value)
		}
		target := d.Panels[i].Targets[len(d.Panels[i].Targets)-1] // the plaintext one
		samples, err := prom.Query(dashboards.Expand(target, sels[j]))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range samples {
			if !slices.Contains(out, s.Labels[label]) {
				out = append(out, s.Labels[label])
			}
		}
		slices.Sort(out)
		return out
	}
	const reviewsHost, ratingsHost = "reviews.shop.svc.cluster.local", "ratings.shop.svc.cluster.local"
	var checks [][3]any
	switch d.Key {
	case "service":
		checks = [][3]any{
			{"the services", values("$service"), []string{ratingsHost, reviewsHost}},
			{"reviews' callers, as it reports them", labelsOf("Incoming Requests By Source And Response Code", "$service", reviewsHost, "source_workload", "$qrep", "destination"),
				[]string{"productpage-v1"}},
			{"reviews' answers, as it reports them", labelsOf("Incoming Requests By Source And Response Code", "$service", reviewsHost, "response_code", "$qrep", "destination"),
				[]string{"200", "503"}},
			{"reviews' callers, as they report it", labelsOf("Incoming Requests By Source And Response Code", "$service", reviewsHost, "source_workload", "$qrep", "source"),
				[]string{"productpage-v1"}},
			{"ratings' workloads", labelsOf("Incoming Requests By Destination Workload And Response Code", "$service", ratingsHost, "destination_workload"),
				[]string{"ratings-v1"}},
		}
	case "workload":
		checks = [][3]any{
			{"the workloads", values("$workload"), []string{"productpage-v1", "ratings-v1", "reviews-v1"}},
			{"productpage's calls", labelsOf("Outgoing Requests By Destination And Response Code", "$workload", "productpage-v1", "destination_service"),
				[]string{reviewsHost}},
			{"reviews' callers", labelsOf("Inbound: Incoming Requests By Source And Response Code", "$workload", "reviews-v1", "source_workload", "$qrep", "destination"),
				[]string{"productpage-v1"}},
		}
	}
	for _, c := range checks {
		if got, want := c[1].([]string), c[2].([]string); !slices.Equal(got, want) {
			t.Errorf("%s: %s are %q, want %q", d.Title, c[0], got, want)
		}
	}
}

// anyData says a target returns data for some selection.
func anyData(prom *dashboards.Prometheus, target string, sels []map[string]string) (bool, error) {
	if len(sels) == 0 {
		sels = []map[string]string{{}}
	}
	for _, sel := range sels {
		s, err := prom.Query(dashboards.Expand(target, sel))
		if err != nil {
			return false, err
		}
		if dashboards.HasData(s) {
			return true, nil
		}
	}
	return false, nil
}

// serveApps runs ratings (HTTP on 9080, 503 for /ratings/fail; a TCP
// echo on 9000) and reviews (HTTP on 9080: it asks ratings, over TCP
// too when asked ?tcp, and answers with ratings' status).
func serveApps(t *testing.T, reviews, ratings *testnet.NS) {
	ratingsApp := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/fail") {
			http.Error(w, "no ratings", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "5 stars")
	})}
	go ratingsApp.Serve(ratings.Listener(t, "0.0.0.0:9080"))
	t.Cleanup(func() { ratingsApp.Close() })
	echo := ratings.Listener(t, "0.0.0.0:9000")
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()

	client := reviews.HTTPClient()
	reviewsApp := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("tcp") {
			if err := echoOnce(reviews, ratingsIP+":9000"); err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
		}
		resp, err := client.Get("http://" + ratingsIP + ":9080/ratings" + strings.TrimPrefix(r.URL.Path, "/reviews"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	})}
	go reviewsApp.Serve(reviews.Listener(t, "0.0.0.0:9080"))
	t.Cleanup(func() { reviewsApp.Close() })
}

// echoOnce sends 100 bytes to an echo server from inside ns and reads
// them back.
func echoOnce(ns *testnet.NS, addr string) error {
	var c net.Conn
	if err := ns.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr, 5*time.Second); return err }); err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := bytes.Repeat([]byte("x"), 100)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_, err := io.ReadFull(c, msg)
	return err
}

// drive has productpage call reviews about 20 times a second (one in ten
// failing, one in five with a TCP exchange) until stopped; it fails the
// test if most calls do.
func drive(t *testing.T, productpage *testnet.NS) (stop func()) {
	client := productpage.HTTPClient()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			path := "/reviews/1"
			switch {
			case i%10 == 9:
				path = "/reviews/fail"
			case i%5 == 0:
				path += "?tcp"
			}
			resp, err := client.Get("http://" + reviewsIP + ":9080" + path)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if err != nil || resp.StatusCode != 200 && !strings.HasSuffix(path, "/fail") {
				failed.Add(1)
			} else {
				ok.Add(1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return func() {
		cancel()
		wg.Wait()
		if failed.Load() > ok.Load()/10 {
			t.Errorf("%d of %d calls through the mesh failed", failed.Load(), failed.Load()+ok.Load())
		}
	}
}
