package xds

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// Client keeps the proxy's configuration in step with a control plane.
type Client struct {
	// Address is the control plane's (host:port), over plaintext gRPC.
	Address string
	// Node is who the proxy is: the first request carries it.
	Node *corev3.Node
	// Base is the bootstrap whose static resources the dynamic ones join.
	Base *bootstrapv3.Bootstrap
	// Apply puts a configuration in force, or refuses it with why.
	Apply func(*bootstrapv3.Bootstrap) error
	// Names, if set, subscribes to the name table (NDS) and takes each
	// one the control plane sends, or refuses it with why.
	Names func([]NameEntry) error
	Log   *slog.Logger

	mu     sync.Mutex
	status Status
}

// Status is the client's view of its stream, for an operator.
type Status struct {
	Address   string `json:"address"`
	Connected bool   `json:"connected"`
	// Versions are the accepted version per type URL; Nacked the last
	// refusal per type URL.
	Versions  map[string]string `json:"versions"`
	Nacked    map[string]string `json:"nacked,omitempty"`
	LastError string            `json:"last_error,omitempty"`
}

// Status returns a copy of the client's status.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.Address = c.Address
	s.Versions, s.Nacked = cloneMap(c.status.Versions), cloneMap(c.status.Nacked)
	return s
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Backoff between connection attempts: jittered, doubling from the
// first to the most.
const (
	firstBackoff = 250 * time.Millisecond
	maxBackoff   = 30 * time.Second
)

// Run keeps a stream open until ctx ends, reconnecting with backoff; what
// it applied stays in force while the control plane is away.
func (c *Client) Run(ctx context.Context) error {
	conn, err := grpc.NewClient(c.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("xDS: %s: %v", c.Address, err)
	}
	defer conn.Close()
	st := &stream{c: c, res: newResources(), versions: map[string]string{}, nonces: map[string]string{}, names: map[string][]string{}}
	backoff := firstBackoff
	for ctx.Err() == nil {
		got, err := st.run(ctx, conn)
		c.setConnected(false, err)
		if ctx.Err() != nil {
			break
		}
		if got {
			backoff = firstBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		c.Log.Warn("xDS stream ended; reconnecting", "address", c.Address, "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		backoff = min(backoff*2, maxBackoff)
	}
	return nil
}

func (c *Client) setConnected(up bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.Connected = up
	if err != nil {
		c.status.LastError = err.Error()
	}
}

func (c *Client) record(typeURL, version, nack string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status.Versions == nil {
		c.status.Versions, c.status.Nacked = map[string]string{}, map[string]string{}
	}
	if nack == "" {
		c.status.Versions[typeURL] = version
		delete(c.status.Nacked, typeURL)
	} else {
		c.status.Nacked[typeURL] = nack
	}
}

// stream is the client's state across its streams: what it accepted,
// and per type the version, the last nonce and the names subscribed to.
type stream struct {
	c        *Client
	res      *resources
	versions map[string]string
	nonces   map[string]string
	names    map[string][]string // RDS and EDS; LDS and CDS are wildcards
	send     func(*discoveryv3.DiscoveryRequest) error
	first    bool
}

// run is one stream: it says whether the control plane answered at all.
func (st *stream) run(ctx context.Context, conn *grpc.ClientConn) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return false, err
	}
	st.first = true
	st.send = func(r *discoveryv3.DiscoveryRequest) error {
		if st.first {
			r.Node, st.first = st.c.Node, false
		}
		return s.Send(r)
	}
	// Clusters before listeners, as Envoy asks; then what they name, at
	// the versions already held (a new stream's server may skip them).
	for _, t := range []string{ClusterType, ListenerType, EndpointType, RouteType} {
		if (t == EndpointType || t == RouteType) && len(st.names[t]) == 0 {
			continue
		}
		if err := st.send(&discoveryv3.DiscoveryRequest{TypeUrl: t, VersionInfo: st.versions[t], ResourceNames: st.names[t]}); err != nil {
			return false, err
		}
	}
	if st.c.Names != nil {
		if err := st.send(&discoveryv3.DiscoveryRequest{TypeUrl: NameTableType, VersionInfo: st.versions[NameTableType]}); err != nil {
			return false, err
		}
	}
	got := false
	for {
		resp, err := s.Recv()
		if err != nil {
			return got, err
		}
		if !got {
			got = true
			st.c.setConnected(true, nil)
			st.c.Log.Info("xDS stream up", "address", st.c.Address)
		}
		if err := st.handle(resp); err != nil {
			return got, err
		}
	}
}

// handle takes one response: it is accepted (and, once nothing it needs
// is missing, applied) and ACKed, or NACKed with why; then the routes and
// endpoints the configuration names are subscribed to.
func (st *stream) handle(resp *discoveryv3.DiscoveryResponse) error {
	t := resp.GetTypeUrl()
	st.nonces[t] = resp.GetNonce()
	var next *resources
	var err error
	if t == NameTableType {
		next, err = st.res, st.nameTable(resp)
	} else if next, err = st.res.with(t, resp.GetResources()); err == nil {
		err = st.apply(next, t)
	}
	req := &discoveryv3.DiscoveryRequest{TypeUrl: t, ResponseNonce: resp.GetNonce(), ResourceNames: st.names[t]}
	if err != nil {
		msg := fmt.Sprintf("version %s refused: %v", resp.GetVersionInfo(), err)
		st.c.Log.Error("xDS configuration refused; the one in force stays", "type", shortType(t), "version", resp.GetVersionInfo(), "problems", err.Error())
		st.c.record(t, "", msg)
		req.VersionInfo = st.versions[t]
		req.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: msg}
		return st.send(req)
	}
	st.res = next
	st.versions[t] = resp.GetVersionInfo()
	st.c.record(t, resp.GetVersionInfo(), "")
	req.VersionInfo = resp.GetVersionInfo()
	if err := st.send(req); err != nil {
		return err
	}
	return st.subscribe()
}

// apply puts next, just changed in type t, in force once the listeners
// and clusters have both come and nothing they name is missing.
func (st *stream) apply(next *resources, t string) error {
	for _, need := range []string{ListenerType, ClusterType} {
		if _, ok := st.versions[need]; !ok && need != t {
			st.c.Log.Debug("xDS configuration warming", "waiting_for", shortType(need))
			return nil
		}
	}
	if missing := next.missing(); len(missing) > 0 {
		st.c.Log.Debug("xDS configuration warming", "waiting_for", strings.Join(missing, ", "))
		return nil
	}
	b, err := next.assemble(st.c.Base)
	if err == nil {
		err = st.c.Apply(b)
	}
	return err
}

// nameTable hands the name table a response carries (none: an empty one) to
// the client's Names.
func (st *stream) nameTable(resp *discoveryv3.DiscoveryResponse) error {
	if st.c.Names == nil {
		return fmt.Errorf("the name table was not asked for")
	}
	var entries []NameEntry
	for _, a := range resp.GetResources() {
		more, err := ReadNameTable(a)
		if err != nil {
			return err
		}
		entries = append(entries, more...)
	}
	return st.c.Names(entries)
}

// subscribe asks for the routes and endpoints the configuration names,
// when they changed.
func (st *stream) subscribe() error {
	for t, names := range map[string][]string{RouteType: st.res.routeNames(), EndpointType: st.res.endpointNames()} {
		if slices.Equal(names, st.names[t]) {
			continue
		}
		st.names[t] = names
		err := st.send(&discoveryv3.DiscoveryRequest{TypeUrl: t, VersionInfo: st.versions[t], ResponseNonce: st.nonces[t], ResourceNames: names})
		if err != nil {
			return err
		}
	}
	return nil
}

func shortType(t string) string { return t[strings.LastIndex(t, ".")+1:] }
