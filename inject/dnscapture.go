package inject

import (
	"fmt"

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
// shunt's annotation (which wins).
func (t Template) dnsCapture(ann map[string]string, pc istioProxyConfig, w *warnings) (bool, error) {
	on := t.DNSCapture
	istio, istioSays := false, pc.dnsCapture != nil
	if istioSays {
		on, istio = *pc.dnsCapture, *pc.dnsCapture
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
