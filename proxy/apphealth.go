package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The status port (15020) answers the kubelet's probes of the app, which
// injection rewrote to /app-health/<container>/<kind>: the proxy runs the
// original probe — HTTP, TCP or gRPC, with its timeout — against the app
// from 127.0.0.6, which capture lets through, and answers with its
// outcome. The probes come from ISTIO_KUBE_APP_PROBERS, as Istio's agent
// takes them, so either side can be Istio's.

// AppProbe is one original app probe, in the JSON form of Istio's
// ISTIO_KUBE_APP_PROBERS (a Kubernetes probe handler and its timeout).
type AppProbe struct {
	HTTPGet *struct {
		Path        string `json:"path,omitempty"`
		Port        int    `json:"port"`
		Host        string `json:"host,omitempty"`
		Scheme      string `json:"scheme,omitempty"`
		HTTPHeaders []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"httpHeaders,omitempty"`
	} `json:"httpGet,omitempty"`
	TCPSocket *struct {
		Port int    `json:"port"`
		Host string `json:"host,omitempty"`
	} `json:"tcpSocket,omitempty"`
	GRPC *struct {
		Port    int     `json:"port"`
		Service *string `json:"service,omitempty"`
	} `json:"grpc,omitempty"`
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

var appHealthPath = regexp.MustCompile(`^/app-health/[^/]+/(livez|readyz|startupz|prestopz|poststartz)$`)

// ParseAppProbes reads ISTIO_KUBE_APP_PROBERS' JSON; every entry must be
// one probe of a port, under an /app-health/<container>/<kind> path.
func ParseAppProbes(text string) (map[string]AppProbe, error) {
	probes := map[string]AppProbe{}
	if text == "" {
		return probes, nil
	}
	if err := json.Unmarshal([]byte(text), &probes); err != nil {
		return nil, fmt.Errorf("not the JSON of app probes: %w", err)
	}
	paths := make([]string, 0, len(probes))
	for path := range probes {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	for _, path := range paths {
		p := probes[path]
		if !appHealthPath.MatchString(path) {
			return nil, fmt.Errorf("%q is not /app-health/<container>/<livez|readyz|startupz|prestopz|poststartz>", path)
		}
		n, port := 0, 0
		if p.HTTPGet != nil {
			n, port = n+1, p.HTTPGet.Port
		}
		if p.TCPSocket != nil {
			n, port = n+1, p.TCPSocket.Port
		}
		if p.GRPC != nil {
			n, port = n+1, p.GRPC.Port
		}
		switch {
		case n != 1:
			return nil, fmt.Errorf("%s: give one of httpGet, tcpSocket and grpc, not %d", path, n)
		case port < 1 || port > 65535:
			return nil, fmt.Errorf("%s: port %d is not 1-65535", path, port)
		case p.TimeoutSeconds < 0:
			return nil, fmt.Errorf("%s: timeoutSeconds %d is negative", path, p.TimeoutSeconds)
		}
	}
	return probes, nil
}

// appProber runs app probes against target from source.
type appProber struct {
	probes     map[string]AppProbe
	target     netip.Addr // the pod's address (INSTANCE_IP), or loopback
	source     netip.Addr // 127.0.0.6 or ::6: capture lets it through
	statusPort string
}

func (a *appProber) timeout(p AppProbe) time.Duration {
	if p.TimeoutSeconds == 0 {
		return time.Second // Kubernetes' default
	}
	return time.Duration(p.TimeoutSeconds) * time.Second
}

func (a *appProber) dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, KeepAlive: -1, LocalAddr: &net.TCPAddr{IP: a.source.AsSlice()}}
}

func (a *appProber) addr(port int) string {
	return net.JoinHostPort(a.target.String(), strconv.Itoa(port))
}

// ServeHTTP answers /app-health/<container>/<kind>.
func (a *appProber) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, ok := a.probes[r.URL.Path]
	if !ok {
		http.Error(w, fmt.Sprintf("no app probe is configured for %s", r.URL.Path), http.StatusBadRequest)
		return
	}
	switch {
	case p.HTTPGet != nil:
		a.probeHTTP(w, r, p)
	case p.TCPSocket != nil:
		c, err := a.dialer(a.timeout(p)).DialContext(r.Context(), "tcp", a.addr(p.TCPSocket.Port))
		if err != nil {
			http.Error(w, "tcp probe: "+err.Error(), http.StatusInternalServerError)
			return
		}
		c.Close()
		w.WriteHeader(http.StatusOK)
	case p.GRPC != nil:
		a.probeGRPC(w, r, p)
	}
}

// probeHTTP runs an httpGet probe as the kubelet would: headers passed on
// (the kubelet's and the probe's own), HTTPS without verifying, redirects
// taken as success, the status and the start of the body passed back.
func (a *appProber) probeHTTP(w http.ResponseWriter, r *http.Request, p AppProbe) {
	g := p.HTTPGet
	scheme := "http"
	if g.Scheme == "HTTPS" {
		scheme = "https"
	}
	path := g.Path
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout(p))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+a.addr(g.Port)+path, nil)
	if err != nil {
		http.Error(w, "http probe: "+err.Error(), http.StatusInternalServerError)
		return
	}
	req.Host = r.Host
	if host, port, err := net.SplitHostPort(r.Host); err == nil && port == a.statusPort {
		req.Host = net.JoinHostPort(host, strconv.Itoa(g.Port))
	}
	for name, values := range r.Header {
		req.Header[name] = append([]string(nil), values...)
	}
	for _, h := range g.HTTPHeaders {
		if http.CanonicalHeaderKey(h.Name) == "Host" {
			req.Host = h.Value
			continue
		}
		req.Header.Set(h.Name, h.Value)
	}
	client := &http.Client{
		Transport: &http.Transport{DialContext: a.dialer(a.timeout(p)).DialContext, DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // the kubelet does not verify either
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		http.Error(w, "http probe: "+err.Error(), http.StatusInternalServerError)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		w.WriteHeader(http.StatusOK) // the kubelet counts a redirect as success
		return
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 10<<10))
}

// probeGRPC runs the gRPC health check (grpc.health.v1.Health/Check).
func (a *appProber) probeGRPC(w http.ResponseWriter, r *http.Request, p AppProbe) {
	timeout := a.timeout(p)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return a.dialer(timeout).DialContext(ctx, "tcp", addr)
		}),
	}
	if ua := r.Header.Get("User-Agent"); ua != "" {
		opts = append(opts, grpc.WithUserAgent(ua))
	}
	conn, err := grpc.NewClient("passthrough:///"+a.addr(p.GRPC.Port), opts...)
	if err != nil {
		http.Error(w, "grpc probe: "+err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	service := ""
	if p.GRPC.Service != nil {
		service = *p.GRPC.Service
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		http.Error(w, "grpc probe: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		http.Error(w, "grpc probe: "+resp.GetStatus().String(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
}
