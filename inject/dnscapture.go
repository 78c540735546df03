package inject

import (
	"fmt"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/shunt-dev/shunt/internal/clip"
)

// DNS capture's annotations: shunt's, and Istio's proxy configuration,
// whose proxyMetadata ISTIO_META_DNS_CAPTURE turns it on.
const (
	DNSCaptureAnnotation  = "shunt.dev/dns-capture"
	IstioProxyConfig      = "proxy.istio.io/config"
	istioDNSCaptureEnvVar = "ISTIO_META_DNS_CAPTURE"
)

// dnsCapture says whether the pod's DNS is captured to the proxy's DNS
// proxy: the template's default, then Istio's proxy.istio.io/config, then
// shunt's annotation (which wins). What else Istio's proxy configuration
// says is not shunt's to run: a warning names it.
func (t Template) dnsCapture(ann map[string]string, w *warnings) (bool, error) {
	on := t.DNSCapture
	istio, istioSays := false, false
	if text, ok := ann[IstioProxyConfig]; ok {
		var pc map[string]any
		if err := yaml.Unmarshal([]byte(text), &pc); err != nil {
			return false, fmt.Errorf("%s: not a proxy configuration: %v", annotationField(IstioProxyConfig), err)
		}
		meta, _ := pc["proxyMetadata"].(map[string]any)
		var ignored []string
		for k := range pc {
			if k != "proxyMetadata" {
				ignored = append(ignored, k)
			}
		}
		for k := range meta {
			if k != istioDNSCaptureEnvVar {
				ignored = append(ignored, "proxyMetadata."+k)
			}
		}
		if len(ignored) > 0 {
			slices.Sort(ignored)
			w.addf("%s: shunt reads only proxyMetadata.%s; ignored: %s", IstioProxyConfig, istioDNSCaptureEnvVar, strings.Join(ignored, ", "))
		}
		if v, ok := meta[istioDNSCaptureEnvVar]; ok {
			b, err := parseBool(fmt.Sprint(v))
			if err != nil {
				return false, fmt.Errorf("%s: proxyMetadata.%s: %w", annotationField(IstioProxyConfig), istioDNSCaptureEnvVar, err)
			}
			on, istio, istioSays = b, b, true
		}
	}
	if v, ok := ann[DNSCaptureAnnotation]; ok {
		b, err := parseBool(v)
		if err != nil {
			return false, fmt.Errorf("%s: %w", annotationField(DNSCaptureAnnotation), err)
		}
		if istioSays && b != istio {
			w.addf("annotations %s=%s and %s's proxyMetadata.%s disagree; %s wins", DNSCaptureAnnotation, clip.Quote(v),
				IstioProxyConfig, istioDNSCaptureEnvVar, DNSCaptureAnnotation)
		}
		on = b
	}
	return on, nil
}
