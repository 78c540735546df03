package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/shunt-dev/shunt/internal/clip"
	"github.com/shunt-dev/shunt/sidecar"
)

// checkXDS checks --xds-address against the rest of the command line.
// Without --config the control plane configures the whole sidecar: the
// flags that shape it are refused, and the proxy starts with no listener
// until the first configuration comes.
func (r *proxyRun) checkXDS(addr string, flags *pflag.FlagSet) error {
	if addr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("--xds-address %s: not host:port", clip.Quote(addr))
	}
	if r.workers > 1 {
		return errors.New("--xds-address with --workers: the control plane's configuration runs in one process")
	}
	if r.cfg.Bootstrap == nil {
		for _, name := range sidecarOnlyFlags {
			if flags.Changed(name) {
				return fmt.Errorf("--%s shapes the sidecar, which the control plane at --xds-address configures: "+
					"say it there (shunt-control's mesh flags)", name)
			}
		}
		r.cfg.Bootstrap = &bootstrapv3.Bootstrap{}
	}
	r.xdsAddress = addr
	return nil
}

// xdsNode is who the proxy tells the control plane it is: the
// bootstrap's node, else Istio's identity of a proxy of kind (sidecar or
// router) from the pod's environment
// (KIND~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local, with its metadata).
func xdsNode(bootstrapNode *corev3.Node, kind string, getenv func(string) (string, bool)) (*corev3.Node, error) {
	if bootstrapNode.GetId() != "" {
		return proto.Clone(bootstrapNode).(*corev3.Node), nil
	}
	env := func(k string) string { v, _ := getenv(k); return v }
	ns, pod, ip := env(sidecar.PodNamespaceEnv), env(sidecar.PodNameEnv), env(sidecar.InstanceIPEnv)
	if ns == "" || pod == "" {
		return nil, fmt.Errorf("--xds-address: the proxy's identity: the bootstrap has no node id, and $%s or $%s is unset",
			sidecar.PodNameEnv, sidecar.PodNamespaceEnv)
	}
	meta := map[string]any{"NAME": pod, "NAMESPACE": ns}
	for key, name := range map[string]string{"INSTANCE_IPS": sidecar.InstanceIPEnv, "SERVICE_ACCOUNT": sidecar.ServiceAccountEnv,
		"WORKLOAD_NAME": sidecar.WorkloadNameEnv, "CLUSTER_ID": sidecar.ClusterIDEnv,
		"INTERCEPTION_MODE": sidecar.InterceptionModeEnv} {
		if v := env(name); v != "" {
			meta[key] = v
		}
	}
	if v := env(sidecar.LabelsJSONEnv); v != "" {
		var labels map[string]any
		if err := json.Unmarshal([]byte(v), &labels); err != nil {
			return nil, fmt.Errorf("$%s: not a JSON object of labels: %v", sidecar.LabelsJSONEnv, err)
		}
		meta["LABELS"] = labels
	}
	md, err := structpb.NewStruct(meta)
	if err != nil {
		return nil, err
	}
	id := sidecar.NodeID(ip, pod, ns)
	if kind == "router" {
		id = "router" + strings.TrimPrefix(id, "sidecar")
	}
	return &corev3.Node{Id: id, Cluster: env(sidecar.WorkloadNameEnv) + "." + ns, Metadata: md}, nil
}
