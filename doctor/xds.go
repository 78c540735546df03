package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/shunt-dev/shunt/netns"
	"github.com/shunt-dev/shunt/sidecar"
	"github.com/shunt-dev/shunt/xds"
)

// controlPlaneCheck asks the sidecar's admin API (loopback, in the
// namespace) how it stands with its control plane: connected, every
// type in force, nothing refused.
func controlPlaneCheck(ns string) Check {
	return controlPlaneFrom(adminClient(ns), fmt.Sprintf("http://127.0.0.1:%d/xds_status", sidecar.AdminPort))
}

// certificateCheck asks the sidecar's admin API for its workload
// certificate.
func certificateCheck(ns string) Check {
	return certificateFrom(adminClient(ns), fmt.Sprintf("http://127.0.0.1:%d/certs", sidecar.AdminPort), time.Now())
}

// askAdmin reads one of the sidecar's admin endpoints (JSON) into v; when
// it cannot, it says why in c and returns false: no admin API to ask, the
// endpoint's 404 (what notFound says), or an answer that does not read.
func askAdmin(c *Check, client *http.Client, url, notFound string, v any) bool {
	resp, err := client.Get(url)
	if err != nil {
		c.Status, c.Detail = Info, "no sidecar admin API on loopback to ask ("+err.Error()+")"
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		c.Status, c.Detail = Info, notFound
		return false
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil || resp.StatusCode != http.StatusOK {
		c.Status, c.Detail = Fail, fmt.Sprintf("the sidecar's %s answered %s: %v", url[strings.LastIndexByte(url, '/'):], resp.Status, err)
		return false
	}
	return true
}

// adminClient reaches the sidecar's admin API on loopback in ns.
func adminClient(ns string) *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = netns.Do(ns, func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
}

func controlPlaneFrom(client *http.Client, url string) Check {
	c := Check{Name: "control plane"}
	var st xds.Status
	if !askAdmin(&c, client, url, "the sidecar takes no configuration from a control plane", &st) {
		return c
	}
	var types []string
	for _, t := range []string{xds.ListenerType, xds.RouteType, xds.ClusterType, xds.EndpointType, xds.NameTableType} {
		if v, ok := st.Versions[t]; ok {
			types = append(types, fmt.Sprintf("%s %s", shortType(t), clipVersion(v)))
		}
	}
	_, listeners := st.Versions[xds.ListenerType]
	_, clusters := st.Versions[xds.ClusterType]
	switch {
	case len(st.Nacked) > 0:
		var refused []string
		for _, t := range slices.Sorted(maps.Keys(st.Nacked)) {
			refused = append(refused, shortType(t)+": "+st.Nacked[t])
		}
		c.Status, c.Detail = Fail, "the sidecar refused its control plane's configuration: "+strings.Join(refused, "; ")
		c.Hint = "the last good configuration stays in force; the control plane's /debug/syncz shows the same refusal"
	case !st.Connected:
		c.Status, c.Detail = Fail, fmt.Sprintf("not connected to %s (%s)", st.Address, st.LastError)
		c.Hint = "the sidecar serves on with what it has and retries; check the control plane's address and that it runs"
	case !listeners || !clusters:
		c.Status, c.Detail = Fail, fmt.Sprintf("connected to %s, but listeners and clusters have not both come", st.Address)
		c.Hint = "the sidecar is not ready until they do; the control plane's /debug/syncz says what it sent"
	default:
		c.Status, c.Detail = Pass, fmt.Sprintf("connected to %s; in force: %s", st.Address, strings.Join(types, ", "))
	}
	return c
}

func shortType(t string) string {
	switch t {
	case xds.ListenerType:
		return "listeners"
	case xds.RouteType:
		return "routes"
	case xds.ClusterType:
		return "clusters"
	case xds.EndpointType:
		return "endpoints"
	case xds.NameTableType:
		return "names"
	}
	return t
}

func clipVersion(v string) string {
	if len(v) > 12 {
		return v[:12]
	}
	return v
}
