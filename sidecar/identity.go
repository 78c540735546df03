package sidecar

// A workload's identity, with Istio's names and paths, which the
// injector, the sidecar and the control plane must agree on.
const (
	// TokenAudience is the audience of the service-account token the
	// sidecar proves itself to the CA with.
	TokenAudience = "istio-ca"
	// TokenDir is where the injector mounts that token, as the file
	// TokenFile.
	TokenDir  = "/var/run/secrets/tokens"
	TokenFile = TokenDir + "/istio-token"
	// RootConfigMap is each namespace's trust bundle, its key RootCertKey,
	// mounted at RootCertDir.
	RootConfigMap = "istio-ca-root-cert"
	RootCertKey   = "root-cert.pem"
	RootCertDir   = "/var/run/secrets/istio"
	// TLSModeLabel marks a pod whose sidecar speaks the mesh's mutual TLS
	// (value TLSModeIstio): the control plane sends it mutual TLS.
	TLSModeLabel = "security.istio.io/tlsMode"
	TLSModeIstio = "istio"
)
