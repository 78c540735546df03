package proxy

import (
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Istio's metadata exchange over HTTP (its istio.metadata_exchange
// filter): a sidecar sends its workload's metadata with each outbound
// request, and the inbound sidecar answers with its own to a caller that
// sent some; each side strips the peer's before the app sees it. It is
// how a sidecar names the workload at the other end in Istio's metrics
// (source_workload at the destination, destination_workload at the
// source) without mutual TLS.
const (
	peerMetadataIDHeader = "x-envoy-peer-metadata-id"
	peerMetadataHeader   = "x-envoy-peer-metadata"
)

var (
	peerMetadataIDName = []byte(peerMetadataIDHeader)
	peerMetadataName   = []byte(peerMetadataHeader)
)

// Config.PeerMetadata's modes: what the sidecar's own configuration
// asks of the exchange.
const (
	PeerMetadataAlways = "always"  // Istio's default
	PeerMetadataInMesh = "in-mesh" // Istio's IN_MESH: not sent to PassthroughCluster
	PeerMetadataOff    = "off"     // no part in it
)

// The node metadata's keys, and the labels Istio's stats read.
const (
	mdName, mdNamespace, mdWorkload, mdCluster, mdLabels = "NAME", "NAMESPACE", "WORKLOAD_NAME", "CLUSTER_ID", "LABELS"
	labelCanonicalName, labelCanonicalRevision           = "service.istio.io/canonical-name", "service.istio.io/canonical-revision"
)

// peerExchangeCacheSize bounds the peers remembered: a peer's metadata is
// decoded once, then found by its header value.
const peerExchangeCacheSize = 1024

// peerExchange is the sidecar's side of the exchange: what it sends, and
// the peers it has read. Which connection managers take part, and how,
// their istio.metadata_exchange filters say (mxConfig).
type peerExchange struct {
	id, value []byte // x-envoy-peer-metadata-id and x-envoy-peer-metadata
	// idVals and valueVals are the same as HTTP/2 header values (shared:
	// read only).
	idVals, valueVals []string

	mu    sync.RWMutex
	peers map[string]*Workload
}

// newPeerExchange sends self's metadata under node id, with pod its
// instance name.
func newPeerExchange(self Workload, pod, id string) *peerExchange {
	value := encodePeerMetadata(self, pod)
	return &peerExchange{id: []byte(id), value: []byte(value), idVals: []string{id}, valueVals: []string{value},
		peers: map[string]*Workload{}}
}

// peer is the workload a peer's x-envoy-peer-metadata names; nil for a
// value that is not Istio's metadata.
// value may be a view of a request's buffer: the cache keeps a copy.
func (x *peerExchange) peer(value string) *Workload {
	if x == nil || value == "" {
		return nil
	}
	x.mu.RLock()
	w, ok := x.peers[value]
	x.mu.RUnlock()
	if ok {
		return w
	}
	w = decodePeerMetadata(value)
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.peers) >= peerExchangeCacheSize {
		clear(x.peers)
	}
	if prev, ok := x.peers[value]; ok {
		return prev // one pointer per peer: the metrics key on it
	}
	x.peers[strings.Clone(value)] = w
	return w
}

// HTTP/2's (canonical) names of the exchange's headers.
var (
	peerMetadataKey   = http.CanonicalHeaderKey(peerMetadataHeader)
	peerMetadataIDKey = http.CanonicalHeaderKey(peerMetadataIDHeader)
)

// takePeerMetadata strips the exchange's headers from an HTTP/2 request
// (see h1conn.takePeerMetadata).
func (s *h2stream) takePeerMetadata() {
	mx := s.h.hcm.mx
	if !mx.any() {
		return
	}
	h := s.r.Header
	value := h.Get(peerMetadataKey)
	delete(h, peerMetadataKey)
	delete(h, peerMetadataIDKey)
	if mx.readRequest && value != "" {
		s.peer, s.peerAsked = s.h.p.peers.peer(value), mx.answer
	}
}

// sendPeerMetadata adds the sidecar's metadata to a request to cl.
func (s *h2stream) sendPeerMetadata(cl *cluster) {
	if s.h.hcm.mx.sendsTo(cl.name) {
		x := s.h.p.peers
		s.r.Header[peerMetadataIDKey], s.r.Header[peerMetadataKey] = x.idVals, x.valueVals
	}
}

// answerPeerMetadata takes the upstream sidecar's metadata from a
// response's headers hdr, and answers a caller that sent its own with the
// sidecar's.
func (s *h2stream) answerPeerMetadata(hdr http.Header) {
	mx := s.h.hcm.mx
	if !mx.any() {
		return
	}
	if mx.readResponse {
		s.peer = s.h.p.peers.peer(hdr.Get(peerMetadataKey))
	}
	delete(hdr, peerMetadataKey)
	delete(hdr, peerMetadataIDKey)
	if s.peerAsked {
		x := s.h.p.peers
		hdr[peerMetadataIDKey], hdr[peerMetadataKey] = x.idVals, x.valueVals
	}
}

// encodePeerMetadata is w's metadata as Istio's sidecars send it: a
// google.protobuf.Struct, keys in order, in standard base64. What w does
// not know is left out.
func encodePeerMetadata(w Workload, pod string) string {
	labels := structFields(nil, map[string]string{labelCanonicalName: w.CanonicalService,
		labelCanonicalRevision: w.CanonicalRevision, "app": w.App, "version": w.Version})
	top := map[string]string{mdName: pod, mdNamespace: w.Namespace, mdWorkload: w.Name, mdCluster: w.Cluster}
	keys := []string{mdLabels}
	for k, v := range top {
		if known(v) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b []byte
	for _, k := range keys {
		var value []byte
		if k == mdLabels {
			value = protowire.AppendTag(value, 5, protowire.BytesType) // struct_value
			value = protowire.AppendBytes(value, labels)
		} else {
			value = protowire.AppendTag(value, 3, protowire.BytesType) // string_value
			value = protowire.AppendString(value, top[k])
		}
		b = appendStructEntry(b, k, value)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// structFields appends a Struct's fields of string values, keys in order,
// the unknown left out.
func structFields(b []byte, fields map[string]string) []byte {
	keys := make([]string, 0, len(fields))
	for k, v := range fields {
		if known(v) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		value := protowire.AppendTag(nil, 3, protowire.BytesType)
		b = appendStructEntry(b, k, protowire.AppendString(value, fields[k]))
	}
	return b
}

// appendStructEntry appends one entry of a Struct's fields map (field 1:
// key 1, Value 2).
func appendStructEntry(b []byte, key string, value []byte) []byte {
	entry := protowire.AppendTag(nil, 1, protowire.BytesType)
	entry = protowire.AppendString(entry, key)
	entry = protowire.AppendTag(entry, 2, protowire.BytesType)
	entry = protowire.AppendBytes(entry, value)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendBytes(b, entry)
}

func known(s string) bool { return s != "" && s != "unknown" }

// decodePeerMetadata reads a peer's x-envoy-peer-metadata as Istio's
// stats do: the workload, namespace and cluster, and the app, version and
// canonical service and revision from its labels. nil when the value is
// not base64 of a Struct.
func decodePeerMetadata(value string) *Workload {
	raw, err := base64.StdEncoding.DecodeString(value)
	if err != nil {
		if raw, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(value, "=")); err != nil {
			return nil
		}
	}
	var s structpb.Struct
	if proto.Unmarshal(raw, &s) != nil {
		return nil
	}
	str := func(m map[string]*structpb.Value, k string) string {
		if v := m[k].GetStringValue(); v != "" {
			return v
		}
		return "unknown"
	}
	f := s.GetFields()
	labels := f[mdLabels].GetStructValue().GetFields()
	w := unknownWorkload
	w.Name, w.Namespace, w.Cluster = str(f, mdWorkload), str(f, mdNamespace), str(f, mdCluster)
	w.App, w.Version = str(labels, "app"), str(labels, "version")
	w.CanonicalService, w.CanonicalRevision = str(labels, labelCanonicalName), str(labels, labelCanonicalRevision)
	return &w
}
