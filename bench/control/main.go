// Command control measures shunt's control plane at scale: a world of
// -services services (in -namespaces namespaces, -endpoints endpoints
// each, every one visible to every sidecar, as Istio's default) served to
// -clients ADS clients (with -scoped, each namespace's scoped to its own
// services by a Sidecar), first over state of the world, then over delta,
// by one control plane process (this program again, with -serve: the same
// control.Server shunt-control runs). Each change replaces one endpoint of
// one service, as an EndpointSlice update does; it is timed from the
// change to each client having the new endpoints (it ACKs at once), and
// the bytes of the pushes are summed. The server's CPU and memory come
// from /proc.
//
//	go run ./bench/control [-services 1000 -endpoints 10 -clients 200 -changes 30]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/shunt-dev/shunt/control"
	"github.com/shunt-dev/shunt/xds"
)

var (
	services   = flag.Int("services", 1000, "services in the mesh")
	namespaces = flag.Int("namespaces", 10, "namespaces they are spread over")
	endpoints  = flag.Int("endpoints", 10, "ready endpoints per service")
	clients    = flag.Int("clients", 200, "connected sidecars")
	changes    = flag.Int("changes", 30, "endpoint changes timed per protocol")
	debounce   = flag.Duration("debounce-after", 10*time.Millisecond, "the server's --debounce-after")
	serve      = flag.Bool("serve", false, "be the control plane (the bench starts itself so)")
	settle     = flag.Duration("settle", 10*time.Second, "how long after the changes the server's RSS is read again (the runtime returns memory to the kernel over time)")
	profile    = flag.String("cpuprofile", "", "write the server's CPU profile of the changes here, and its heap at the end to this name and .heap")
	only       = flag.String("only", "", "run one protocol: sotw or delta")
	scoped     = flag.Bool("scoped", false, "each namespace has a Sidecar whose egress is its own services (./*)")
)

func main() {
	flag.Parse()
	if *serve {
		runServer()
		return
	}
	exe, err := os.Executable()
	check(err)
	child := exec.Command(exe, "-serve", "-services", strconv.Itoa(*services), "-namespaces", strconv.Itoa(*namespaces),
		"-endpoints", strconv.Itoa(*endpoints), "-debounce-after", debounce.String(), "-cpuprofile", *profile, "-scoped="+strconv.FormatBool(*scoped))
	child.Stderr = os.Stderr
	child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // gone with the bench, however it ends
	out, err := child.StdoutPipe()
	check(err)
	check(child.Start())
	defer child.Process.Kill()
	var xdsAddr, changeAddr string
	_, err = fmt.Fscan(bufio.NewReader(out), &xdsAddr, &changeAddr)
	check(err)
	pid := child.Process.Pid
	serverPID = pid
	scope := "all visible to all"
	if *scoped {
		scope = "each namespace's sidecars scoped to its own by a Sidecar"
	}
	fmt.Printf("world: %d services × %d endpoints in %d namespaces, %s; %d clients; debounce %s; %d changes per protocol\n",
		*services, *endpoints, *namespaces, scope, *clients, *debounce, *changes)
	fmt.Printf("server at rest: RSS %.0f MB\n", rssMB(pid, "VmRSS"))
	for _, delta := range []bool{false, true} {
		if *only == "" || (*only == "delta") == delta {
			runRound(delta, xdsAddr, changeAddr, pid)
		}
	}
	if *profile != "" {
		resp, err := http.Get("http://" + changeAddr + "/stop-profile")
		check(err)
		resp.Body.Close()
	}
	fmt.Printf("server peak RSS (VmHWM): %.0f MB\n", rssMB(pid, "VmHWM"))
}

func runRound(delta bool, xdsAddr, changeAddr string, pid int) {
	name := "state of the world"
	if delta {
		name = "delta"
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	check(err)
	defer conn.Close()
	cpu0, start := cpuSeconds(pid), time.Now()
	cs := make([]*client, *clients)
	for i := range cs {
		cs[i] = &client{node: nodeFor(i)}
		go cs[i].run(ctx, discoveryv3.NewAggregatedDiscoveryServiceClient(conn), delta)
	}
	waitAll(cs, func(i int) bool { return cs[i].edsCount.Load() > 0 }, time.Minute, "initial sync")
	sync := time.Since(start)
	syncCPU := cpuSeconds(pid) - cpu0
	var syncBytes int64
	for _, c := range cs {
		syncBytes += c.bytes.Load()
	}
	var all, each []time.Duration
	var pushed int64
	var pushedResources int64
	cpu1 := cpuSeconds(pid)
	var affectedClients int
	for range *changes {
		n := int(changeSeq.Add(1))
		// The clients the change reaches: all, or the changed service's
		// namespace's when scoped.
		affected := func(i int) bool { return !*scoped || i%*namespaces == changedService(n)%*namespaces }
		before := make([]int64, len(cs))
		var bytes0, res0 int64
		for i, c := range cs {
			before[i] = c.edsCount.Load()
			bytes0 += c.edsBytes.Load()
			res0 += c.edsResources.Load()
		}
		t0 := time.Now()
		resp, err := http.Get("http://" + changeAddr + "/change?n=" + strconv.Itoa(n))
		check(err)
		resp.Body.Close()
		waitAll(cs, func(i int) bool { return !affected(i) || cs[i].edsCount.Load() > before[i] }, 30*time.Second, "change")
		var worst time.Duration
		for i, c := range cs {
			pushed += c.edsBytes.Load()
			pushedResources += c.edsResources.Load()
			if !affected(i) {
				continue
			}
			affectedClients++
			d := c.lastEDS().Sub(t0)
			each = append(each, d)
			worst = max(worst, d)
		}
		pushed -= bytes0
		pushedResources -= res0
		all = append(all, worst)
		time.Sleep(20 * time.Millisecond)
	}
	changeCPU := cpuSeconds(pid) - cpu1
	fmt.Printf("\n%s:\n", name)
	fmt.Printf("  initial sync of %d clients: %s, server CPU %.2fs, %.1f MB pushed (%.0f KB per client)\n",
		len(cs), sync.Round(time.Millisecond), syncCPU, float64(syncBytes)/1e6, float64(syncBytes)/1e3/float64(len(cs)))
	fmt.Printf("  change to every client it reaches updated (%d on average): p50 %s  p99 %s  max %s\n",
		affectedClients / *changes, pct(all, 50), pct(all, 99), pct(all, 100))
	fmt.Printf("  change to one client updated:   p50 %s  p99 %s\n", pct(each, 50), pct(each, 99))
	fmt.Printf("  per change: %.1f KB pushed in all, %.0f bytes and %.1f endpoint resources per client; server CPU %.0f ms\n",
		float64(pushed)/1e3/float64(*changes), float64(pushed)/float64(affectedClients),
		float64(pushedResources)/float64(affectedClients), changeCPU*1000/float64(*changes))
	fmt.Printf("  server RSS with %d clients: %.0f MB", len(cs), rssMB(pid, "VmRSS"))
	time.Sleep(*settle)
	fmt.Printf(", %.0f MB %s later\n", rssMB(pid, "VmRSS"), *settle)
}

func waitAll(cs []*client, ok func(int) bool, limit time.Duration, what string) {
	deadline := time.Now().Add(limit)
	for {
		done := true
		for i := range cs {
			if !ok(i) {
				done = false
				break
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			missing := 0
			for i := range cs {
				if !ok(i) {
					missing++
				}
			}
			fail(fmt.Sprintf("%s: %d of %d clients not updated in %s", what, missing, len(cs), limit))
		}
		time.Sleep(time.Millisecond)
	}
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s) - 1) * p / 100
	return s[i].Round(100 * time.Microsecond)
}

// client is a sidecar that takes every type whole (wildcards) and ACKs at once.
type client struct {
	node         *corev3.Node
	bytes        atomic.Int64
	edsBytes     atomic.Int64
	edsResources atomic.Int64
	edsCount     atomic.Int64
	mu           sync.Mutex
	edsAt        time.Time
}

func (c *client) lastEDS() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.edsAt
}

func (c *client) gotEDS(size, resources int) {
	c.mu.Lock()
	c.edsAt = time.Now()
	c.mu.Unlock()
	c.edsBytes.Add(int64(size))
	c.edsResources.Add(int64(resources))
	c.edsCount.Add(1)
}

var types = []string{xds.ClusterType, xds.EndpointType, xds.ListenerType, xds.RouteType}

func (c *client) run(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient, delta bool) {
	if delta {
		st, err := ads.DeltaAggregatedResources(ctx)
		if err == nil {
			follow(c, st.Send, st.Recv,
				func(t string) *discoveryv3.DeltaDiscoveryRequest {
					return &discoveryv3.DeltaDiscoveryRequest{Node: c.node, TypeUrl: t}
				},
				func(r *discoveryv3.DeltaDiscoveryResponse) (*discoveryv3.DeltaDiscoveryRequest, int) {
					return &discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()},
						len(r.GetResources()) + len(r.GetRemovedResources())
				})
		}
		return
	}
	st, err := ads.StreamAggregatedResources(ctx)
	if err == nil {
		follow(c, st.Send, st.Recv,
			func(t string) *discoveryv3.DiscoveryRequest {
				return &discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: t}
			},
			func(r *discoveryv3.DiscoveryResponse) (*discoveryv3.DiscoveryRequest, int) {
				return &discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()},
					len(r.GetResources())
			})
	}
}

// response is what follow reads of either protocol's responses.
type response interface {
	proto.Message
	GetTypeUrl() string
}

// follow subscribes to every type, then counts and ACKs each response
// until the stream ends.
func follow[Req any, Resp response](c *client, send func(Req) error, recv func() (Resp, error),
	first func(typeURL string) Req, ack func(Resp) (Req, int)) {
	for _, t := range types {
		if send(first(t)) != nil {
			return
		}
	}
	for {
		resp, err := recv()
		if err != nil {
			return
		}
		size := proto.Size(resp)
		c.bytes.Add(int64(size))
		req, resources := ack(resp)
		if resp.GetTypeUrl() == xds.EndpointType {
			c.gotEDS(size, resources)
		}
		if send(req) != nil {
			return
		}
	}
}

func nodeFor(i int) *corev3.Node {
	ns := fmt.Sprintf("ns-%d", i%*namespaces)
	ip := netip.AddrFrom4([4]byte{10, 200, byte(i / 250), byte(i%250 + 1)})
	return &corev3.Node{Id: fmt.Sprintf("sidecar~%s~pod-%d.%s~%s.svc.cluster.local", ip, i, ns, ns)}
}

// runServer is the control plane: the generated world, served, and
// /change to replace one endpoint of service n.
func runServer() {
	w := control.NewWorld()
	for i := range *services {
		ns := fmt.Sprintf("ns-%d", i%*namespaces)
		s := &control.Service{Name: fmt.Sprintf("svc-%d", i), Namespace: ns,
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i / 250), byte(i%250 + 1)})},
			Ports:     []control.Port{{Name: "http", Port: 80, Protocol: "http", TargetPort: 8080}},
			Selector:  map[string]string{"app": fmt.Sprintf("svc-%d", i)}}
		s.Hostname = s.Name + "." + ns + ".svc.cluster.local"
		w.PutService(s)
		w.PutSlice(ns+"/"+s.Name, ns+"/"+s.Name+"-1", sliceFor(i, 0))
	}
	if *scoped {
		for n := range *namespaces {
			ns := fmt.Sprintf("ns-%d", n)
			w.PutSidecar(&control.Sidecar{Name: "default", Namespace: ns, Hosts: []string{"./*"}})
		}
	}
	control.TuneGC() // as shunt-control runs
	srv, err := control.NewServer(control.DefaultMesh(), w, *debounce, 10*time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	check(err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	g := control.NewGRPCServer(grpc.MaxConcurrentStreams(1 << 20))
	srv.Register(g)
	go srv.Run(context.Background())
	go g.Serve(ln)
	hln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	fmt.Println(ln.Addr(), hln.Addr())
	http.Serve(hln, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stop-profile" {
			pprof.StopCPUProfile()
			if f, err := os.Create(*profile + ".heap"); err == nil {
				pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
			return
		}
		n, _ := strconv.Atoi(r.URL.Query().Get("n")) // every change new, across rounds
		if n == 1 && *profile != "" {
			f, err := os.Create(*profile)
			check(err)
			check(pprof.StartCPUProfile(f))
		}
		i := changedService(n)
		ns := fmt.Sprintf("ns-%d", i%*namespaces)
		srv.Update(func(w *control.World) {
			w.PutSlice(ns+"/svc-"+strconv.Itoa(i), ns+"/svc-"+strconv.Itoa(i)+"-1", sliceFor(i, n))
		})
	}))
}

// changeSeq numbers the changes, across rounds, so each is new.
var changeSeq atomic.Int64

// changedService is the service the nth change moves an endpoint of.
func changedService(n int) int { return (n * 37) % *services }

// sliceFor is service i's endpoints at generation gen: the last one
// moves with each generation.
func sliceFor(i, gen int) []control.Endpoint {
	eps := make([]control.Endpoint, *endpoints)
	for e := range eps {
		host := e
		if e == len(eps)-1 {
			host = e + gen
		}
		eps[e] = control.Endpoint{Addr: netip.AddrFrom4([4]byte{10, byte(100 + i/250), byte(i % 250), byte(host % 250)}),
			Ports: map[string]uint16{"http": 8080}, Ready: true}
	}
	return eps
}

func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	check(err)
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

func rssMB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

// serverPID is the control plane's process, which a failure asks for
// its goroutines' stacks (on its stderr) before the bench ends.
var serverPID int

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench/control:", msg)
	if serverPID != 0 {
		syscall.Kill(serverPID, syscall.SIGQUIT)
		time.Sleep(2 * time.Second)
	}
	os.Exit(1)
}
