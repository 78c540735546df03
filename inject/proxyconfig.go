package inject

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// istioProxyConfig is what shunt reads of a pod's Istio proxy
// configuration (proxy.istio.io/config): proxyMetadata's
// ISTIO_META_DNS_CAPTURE and tracing.sampling. Anything else there is
// named in a warning.
type istioProxyConfig struct {
	dnsCapture *bool
	sampling   *float64
}

// readIstioProxyConfig reads the pod's proxy.istio.io/config, if any.
func readIstioProxyConfig(ann map[string]string, w *warnings) (istioProxyConfig, error) {
	var out istioProxyConfig
	text, ok := ann[IstioProxyConfig]
	if !ok {
		return out, nil
	}
	var pc map[string]any
	if err := yaml.Unmarshal([]byte(text), &pc); err != nil {
		return out, fmt.Errorf("%s: not a proxy configuration: %v", annotationField(IstioProxyConfig), err)
	}
	meta, _ := pc["proxyMetadata"].(map[string]any)
	tracing, _ := pc["tracing"].(map[string]any)
	var ignored []string
	for k := range pc {
		if k != "proxyMetadata" && k != "tracing" {
			ignored = append(ignored, k)
		}
	}
	for k := range meta {
		if k != istioDNSCaptureEnvVar {
			ignored = append(ignored, "proxyMetadata."+k)
		}
	}
	for k := range tracing {
		if k != "sampling" {
			ignored = append(ignored, "tracing."+k)
		}
	}
	if len(ignored) > 0 {
		slices.Sort(ignored)
		w.addf("%s: shunt reads only proxyMetadata.%s and tracing.sampling; ignored: %s", IstioProxyConfig, istioDNSCaptureEnvVar, strings.Join(ignored, ", "))
	}
	if v, ok := meta[istioDNSCaptureEnvVar]; ok {
		b, err := parseBool(fmt.Sprint(v))
		if err != nil {
			return out, fmt.Errorf("%s: proxyMetadata.%s: %w", annotationField(IstioProxyConfig), istioDNSCaptureEnvVar, err)
		}
		out.dnsCapture = &b
	}
	if v, ok := tracing["sampling"]; ok {
		f, err := strconv.ParseFloat(fmt.Sprint(v), 64)
		if err != nil || f < 0 || f > 100 {
			return out, fmt.Errorf("%s: tracing.sampling %s: not a percentage (0 to 100)", annotationField(IstioProxyConfig), fmt.Sprint(v))
		}
		out.sampling = &f
	}
	return out, nil
}
