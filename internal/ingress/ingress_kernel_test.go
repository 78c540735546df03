// Package ingress_test runs shunt's gateway end to end: shunt-control
// serving Gateway API objects, `shunt gateway` in a namespace of its own,
// a client outside and the services behind it in namespaces the test
// makes.
package ingress_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shunt-dev/shunt/internal/catest"
	"github.com/shunt-dev/shunt/internal/otlptest"
	"github.com/shunt-dev/shunt/internal/testnet"
)

func TestMain(m *testing.M) { testnet.Main(m) }

const manifest = `
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: shunt}
spec: {controllerName: shunt.dev/gateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: shop}
spec:
  gatewayClassName: shunt
  listeners:
  - {name: http, port: 8080, protocol: HTTP, hostname: "*.example.com"}
  - {name: https, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: shop-cert}, {name: api-cert}]}}
  - {name: tls, port: 9444, protocol: TLS, hostname: "*.internal.example", tls: {mode: Passthrough}}
  - {name: tcp, port: 9000, protocol: TCP}
  - {name: tls-terminate, port: 9446, protocol: TLS, hostname: "*.term.example", tls: {mode: Terminate, certificateRefs: [{name: term-cert}]}}
---
apiVersion: v1
kind: Pod
metadata: {name: public-gw-5f4d58-x2x9z, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: public, app: public-gw, istio: ingressgateway}}
spec: {containers: [{name: proxy, image: shunt}]}
status: {podIP: 10.3.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {clusterIP: 10.96.1.1, ports: [{name: http, port: 9080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-1, namespace: shop, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{name: http, port: 9080}]
endpoints: [{addresses: [10.4.0.2], conditions: {ready: true}}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec: {clusterIP: 10.96.1.2, ports: [{name: http, port: 9080, targetPort: 9081}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ratings-1, namespace: shop, labels: {kubernetes.io/service-name: ratings}}
addressType: IPv4
ports: [{name: http, port: 9081}]
endpoints: [{addresses: [10.4.0.2], conditions: {ready: true}}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: 10.96.1.3, ports: [{name: tls, port: 5432, targetPort: 9443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: shop, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: tls, port: 9443}]
endpoints: [{addresses: [10.4.0.2], conditions: {ready: true}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: db, namespace: shop}
spec:
  parentRefs: [{name: public, sectionName: tls}]
  hostnames: [db.internal.example]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: ratings-terminated, namespace: shop}
spec:
  parentRefs: [{name: public, sectionName: tls-terminate}]
  hostnames: [ratings.term.example]
  rules: [{backendRefs: [{name: ratings, port: 9080}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db-tcp, namespace: shop}
spec:
  parentRefs: [{name: public, sectionName: tcp}]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: shop}
spec:
  parentRefs: [{name: public}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /reviews}}]
    backendRefs: [{name: reviews, port: 9080}]
  - matches: [{path: {type: PathPrefix, value: /ratings}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
    backendRefs: [{name: ratings, port: 9080}]
  - matches: [{headers: [{name: x-canary, value: "yes"}]}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-via, value: canary}]}}]
    backendRefs: [{name: ratings, port: 9080}]
  - matches: [{path: {type: PathPrefix, value: /foreign}}]
    backendRefs: [{name: web, namespace: team, port: 80}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-ingress, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 8081, name: http, protocol: HTTP}, hosts: [istio.example.com]}
  - {port: {number: 8083, name: http-limited, protocol: HTTP}, hosts: [istio.example.com]}
  - {port: {number: 8082, name: http-redirect, protocol: HTTP}, hosts: [istio.example.com], tls: {httpsRedirect: true}}
  - {port: {number: 9443, name: https, protocol: HTTPS}, hosts: [istio.example.com], tls: {mode: SIMPLE, credentialName: istio-cert}}
  - {port: {number: 9445, name: tls, protocol: TLS}, hosts: [istio-db.internal.example], tls: {mode: PASSTHROUGH}}
  - {port: {number: 9001, name: tcp, protocol: TCP}, hosts: ["*"]}
---
# Istio's local rate limit at the gateway, on one of its ports: a bucket
# of two requests a minute.
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: edge-ratelimit, namespace: shop}
spec:
  workloadSelector: {labels: {app: public-gw}}
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: GATEWAY, listener: {portNumber: 8083, filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
            token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 60s}
            filter_enabled: {runtime_key: local_rate_limit_enabled, default_value: {numerator: 100, denominator: HUNDRED}}
            filter_enforced: {runtime_key: local_rate_limit_enforced, default_value: {numerator: 100, denominator: HUNDRED}}
            response_headers_to_add: [{append: false, header: {key: x-local-rate-limit, value: "true"}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: istio-db, namespace: shop}
spec:
  hosts: [istio-db.internal.example]
  gateways: [istio-ingress]
  tls: [{match: [{port: 9445, sniHosts: [istio-db.internal.example]}], route: [{destination: {host: db, port: {number: 5432}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: istio-db-tcp, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [istio-ingress]
  tcp: [{match: [{port: 9001}], route: [{destination: {host: db, port: {number: 5432}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: istio-shop, namespace: shop}
spec:
  hosts: [istio.example.com]
  gateways: [istio-ingress]
  http:
  - match: [{uri: {prefix: /ratings}}]
    route: [{destination: {host: ratings, port: {number: 9080}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  selector: {matchLabels: {app: public-gw}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/reviews/admin*"]}}]}, {from: [{source: {ipBlocks: [10.3.0.0/24]}}], to: [{operation: {methods: [DELETE]}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: shop}
spec:
  parentRefs: [{name: public, sectionName: https}]
  hostnames: [api.example.com]
  rules: [{backendRefs: [{name: reviews, port: 9080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-to-https, namespace: shop}
spec:
  parentRefs: [{name: public, sectionName: http}]
  hostnames: [api.example.com]
  rules: [{filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: team, namespace: team}
spec:
  parentRefs: [{name: public, namespace: shop}]
  hostnames: [team.example.com]
  rules: [{backendRefs: [{name: reviews, namespace: shop, port: 9080}]}]
`

// TestGateway: a client outside reaches two services through `shunt
// gateway`, configured by shunt-control from a Gateway and an HTTPRoute
// (and, on another port, Istio's Gateway and a VirtualService):
// by path (a path segment's prefix, rewritten), by header (a header
// set on the way), in Gateway API's precedence; a host no route names,
// a path no rule takes and a route the listener does not admit (another
// namespace's) are 404; a backend in another namespace, 500; what the
// AuthorizationPolicy on the gateway's pod denies, 403. Over HTTPS each
// host gets its certificate by SNI (two Secrets), HTTP/1.1 and h2; plain
// HTTP is redirected; a renewed Secret is served without a restart. The gateway logs, counts (Istio's metrics,
// reporter source) and traces what it forwards.
func TestGateway(t *testing.T) {
	testnet.RequireRoot(t)
	outside, gw, apps := testnet.NewNS(t, "out"), testnet.NewNS(t, "gw"), testnet.NewNS(t, "apps")
	testnet.Link(t, outside, "eth0", "10.3.0.2/24", gw, "eth0", "10.3.0.1/24")
	testnet.Link(t, gw, "eth1", "10.4.0.1/24", apps, "eth0", "10.4.0.2/24")

	// The apps: each says who it is, the path and the x-via header it got.
	for port, name := range map[string]string{"9080": "reviews", "9081": "ratings"} {
		app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s via=%s", name, r.URL.Path, r.Header.Get("x-via"))
		})}
		go app.Serve(apps.Listener(t, "0.0.0.0:"+port))
		t.Cleanup(func() { app.Close() })
	}
	// A service that terminates TLS itself, which the gateway passes
	// through by SNI.
	dbCert, dbKey := catest.ServerCert(t, "db.internal.example", "istio-db.internal.example")
	dbPair, err := tls.X509KeyPair(dbCert, dbKey)
	if err != nil {
		t.Fatal(err)
	}
	db := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "db %s via=%s", r.URL.Path, r.Header.Get("x-via"))
	})}
	go db.Serve(tls.NewListener(apps.Listener(t, "0.0.0.0:9443"), &tls.Config{Certificates: []tls.Certificate{dbPair}}))
	t.Cleanup(func() { db.Close() })
	col, err := otlptest.ServeIn(gw.Do, "127.0.0.1:4317", "127.0.0.1:4318", true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(col.Close)

	dir := t.TempDir()
	shopCert, shopKey := catest.ServerCert(t, "shop.example.com")
	apiCert, apiKey := catest.ServerCert(t, "api.example.com")
	istioCert, istioKey := catest.ServerCert(t, "istio.example.com")
	termCert, termKey := catest.ServerCert(t, "*.term.example")
	writeManifest := func(shopCert, shopKey []byte) {
		text := manifest + tlsSecret("shop-cert", shopCert, shopKey) + tlsSecret("api-cert", apiCert, apiKey) + tlsSecret("istio-cert", istioCert, istioKey) +
			tlsSecret("term-cert", termCert, termKey)
		os.WriteFile(filepath.Join(dir, "mesh.yaml.new"), []byte(text), 0o644)
		os.Rename(filepath.Join(dir, "mesh.yaml.new"), filepath.Join(dir, "mesh.yaml"))
	}
	writeManifest(shopCert, shopKey)
	gw.Start(t, "shunt-control", testnet.ControlBinary(t), "--from-file", filepath.Join(dir, "mesh.yaml"), "--addr", "127.0.0.1:15010",
		"--monitor-addr", "127.0.0.1:15014", "--access-log-file", "/dev/stdout", "--tracing-collector", "127.0.0.1:4317", "--tracing-sampling", "100")
	gw.WaitHTTP(t, "http://127.0.0.1:15014/ready")
	proxyLog := gw.Start(t, "shunt gateway", "env", "POD_NAME=public-gw-5f4d58-x2x9z", "POD_NAMESPACE=shop", "INSTANCE_IP=10.3.0.1",
		`ISTIO_METAJSON_LABELS={"gateway.networking.k8s.io/gateway-name":"public","app":"public-gw"}`, "OTEL_BSP_SCHEDULE_DELAY=100",
		testnet.ShuntBinary(t), "gateway", "--xds-address", "127.0.0.1:15010", "--uid", "1337", "--gid", "1337")
	client := outside.HTTPClient()
	get := func(host, path string, headers ...string) (int, string) {
		t.Helper()
		port, method := "8080", "GET"
		if strings.HasPrefix(host, "istio.") {
			port = "8081" // the Istio Gateway's server
		}
		if m, p, ok := strings.Cut(path, " "); ok {
			method, path = m, p
		}
		req, _ := http.NewRequest(method, "http://10.3.0.1:"+port+path, nil)
		req.Host = host
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if code, _ := get("shop.example.com", "/reviews/1"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			code, body := get("shop.example.com", "/reviews/1")
			t.Fatalf("the gateway never served: %d %s", code, body)
		}
	}
	for _, c := range []struct {
		host, path string
		headers    []string
		code       int
		body       string
	}{
		{"shop.example.com", "/reviews/1", nil, 200, "reviews /reviews/1 via="},
		{"shop.example.com:8080", "/reviews", nil, 200, "reviews /reviews via="},
		{"shop.example.com", "/ratings/5", nil, 200, "ratings /5 via="},
		{"shop.example.com", "/ratings", nil, 200, "ratings / via="},
		{"shop.example.com", "/reviews/1", []string{"x-canary", "yes"}, 200, "reviews /reviews/1 via="}, // the path's rule ranks first
		{"shop.example.com", "/other", []string{"x-canary", "yes"}, 200, "ratings /other via=canary"},
		{"shop.example.com", "/ratingsx", nil, 404, ""},                          // /ratings is a path segment
		{"other.example.com", "/reviews/1", nil, 404, ""},                        // no route names the host
		{"team.example.com", "/", nil, 404, ""},                                  // another namespace's route: allowedRoutes Same
		{"shop.example.com", "/foreign", nil, 500, ""},                           // a backend in another namespace: no ReferenceGrant
		{"istio.example.com", "/ratings/7", nil, 200, "ratings /ratings/7 via="}, // Istio's Gateway and VirtualService
		{"istio.example.com", "/reviews", nil, 404, ""},
		{"shop.example.com", "/reviews/admin/users", nil, 403, ""}, // the AuthorizationPolicy on the gateway's pod
		{"shop.example.com", "DELETE /reviews/1", nil, 403, ""},    // … by method from the outside's addresses
		{"shop.example.com", "POST /reviews/1", nil, 200, "reviews /reviews/1 via="},
	} {
		code, body := get(c.host, c.path, c.headers...)
		if code != c.code || c.code == 200 && body != c.body {
			t.Errorf("%s%s %v: %d %q, want %d %q", c.host, c.path, c.headers, code, body, c.code, c.body)
		}
	}
	// HTTPS: the certificate the client's SNI names, HTTP/1.1 or h2 by
	// ALPN; plain HTTP to api.example.com is sent there (301).
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(shopCert)
	roots.AppendCertsFromPEM(apiCert)
	roots.AppendCertsFromPEM(istioCert)
	roots.AppendCertsFromPEM(dbCert)
	https := func(host, path string, h2 bool) (cert *x509.Certificate, proto, body string, err error) {
		port := "8443"
		switch {
		case strings.HasPrefix(host, "istio."):
			port = "9443" // the Istio Gateway's HTTPS server
		case strings.HasSuffix(host, ".internal.example"):
			port = "9444" // the TLS passthrough listener
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: host, RootCAs: roots}, ForceAttemptHTTP2: h2,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var c net.Conn
				err := outside.Do(func() (err error) { c, err = (&net.Dialer{}).DialContext(ctx, "tcp", "10.3.0.1:"+port); return err })
				return c, err
			}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + host + path)
		if err != nil {
			return nil, "", "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.TLS.PeerCertificates[0], resp.Proto, string(b), nil
	}
	for _, c := range []struct {
		host, path string
		h2         bool
		proto      string
		body       string
	}{
		{"shop.example.com", "/reviews/1", false, "HTTP/1.1", "reviews /reviews/1 via="},
		{"shop.example.com", "/ratings/2", true, "HTTP/2.0", "ratings /2 via="},
		{"api.example.com", "/v1/x", false, "HTTP/1.1", "reviews /v1/x via="},
		{"istio.example.com", "/ratings/3", true, "HTTP/2.0", "ratings /ratings/3 via="}, // credentialName, the pod's namespace's
		{"db.internal.example", "/q", false, "HTTP/1.1", "db /q via="},                   // passed through: the service's own certificate
	} {
		cert, proto, body, err := https(c.host, c.path, c.h2)
		if err != nil || cert.Subject.CommonName != c.host || proto != c.proto || body != c.body {
			t.Errorf("https://%s%s: %v %v %q, want %s's certificate, %s, %q", c.host, c.path, err, proto, body, c.host, c.proto, c.body)
		}
	}
	// The EnvoyFilter's local rate limit on 8083: two requests a minute,
	// then 429 with its header; 8081, the same routes, is not limited.
	var limited []string
	for range 4 {
		req, _ := http.NewRequest("GET", "http://10.3.0.1:8083/ratings/1", nil)
		req.Host = "istio.example.com"
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		limited = append(limited, fmt.Sprintf("%d %s %s", resp.StatusCode, resp.Header.Get("x-local-rate-limit"), b))
	}
	if want := "200  ratings /ratings/1 via=|200  ratings /ratings/1 via=|429 true local_rate_limited|429 true local_rate_limited"; strings.Join(limited, "|") != want {
		t.Errorf("the gateway's local rate limit: %q, want %q", strings.Join(limited, "|"), want)
	}
	if code, _ := get("istio.example.com", "/ratings/1"); code != 200 {
		t.Errorf("the unlimited port after the limited one's bucket ran out: %d", code)
	}
	// The TCP listener passes any connection to the TCPRoute's backend:
	// the service's own TLS, whatever the SNI; so do the Istio Gateway's
	// TLS PASSTHROUGH server, for the SNI its VirtualService's tls route
	// names, and its TCP server, as its tcp route says.
	dbTLS := func(port, sni string) error {
		var c *tls.Conn
		err := outside.Do(func() (err error) {
			c, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", "10.3.0.1:"+port, &tls.Config{ServerName: sni, RootCAs: roots})
			return err
		})
		if err != nil {
			return err
		}
		defer c.Close()
		if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "db.internal.example" {
			return fmt.Errorf("the certificate of %s", cn)
		}
		return nil
	}
	for _, c := range []struct{ port, sni, what string }{
		{"9000", "db.internal.example", "the TCP listener"},
		{"9445", "istio-db.internal.example", "the Istio TLS PASSTHROUGH server"},
		{"9001", "db.internal.example", "the Istio TCP server"},
	} {
		if err := dbTLS(c.port, c.sni); err != nil {
			t.Errorf("TLS through %s (SNI %s): %v", c.what, c.sni, err)
		}
	}
	if err := dbTLS("9445", "db.internal.example"); err == nil {
		t.Errorf("the Istio TLS PASSTHROUGH server passed an SNI no tls route names")
	}
	// A TLS listener in Terminate mode ends TLS with its certificate and
	// sends the bytes within to its TLSRoute's backend (here an HTTP
	// service, which sees the request in plaintext).
	roots.AppendCertsFromPEM(termCert)
	var term *tls.Conn
	err = outside.Do(func() (err error) {
		term, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", "10.3.0.1:9446", &tls.Config{ServerName: "ratings.term.example", RootCAs: roots})
		return err
	})
	if err != nil {
		t.Errorf("TLS to the Terminate listener: %v", err)
	} else {
		term.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(term, "GET /terminated HTTP/1.1\r\nHost: ratings.term.example\r\nConnection: close\r\n\r\n")
		b, _ := io.ReadAll(term)
		term.Close()
		if cn := term.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "*.term.example" || !strings.HasSuffix(string(b), "ratings /terminated via=") {
			t.Errorf("through the Terminate listener: certificate %q, %q", cn, b)
		}
	}
	for _, host := range []string{"nowhere.test", "nowhere.internal.example"} {
		if _, _, _, err := https(host, "/", false); err == nil {
			t.Errorf("SNI %s, which no certificate or route names, was served", host)
		}
	}
	// The same two hosts with curl, as an operator checks them: each
	// its own certificate by SNI (--resolve), h2 where offered.
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, append(append([]byte{}, shopCert...), apiCert...), 0o644)
	for _, c := range []struct{ host, path, want string }{
		{"shop.example.com", "/reviews/1", "reviews /reviews/1 via= 2"},
		{"api.example.com", "/v1/x", "reviews /v1/x via= 2"},
	} {
		out, err := outside.Command("curl", "-sS", "--http2", "--resolve", c.host+":8443:10.3.0.1", "--cacert", caFile,
			"-w", " %{http_version}", "https://"+c.host+":8443"+c.path).CombinedOutput()
		if err != nil || string(out) != c.want {
			t.Errorf("curl https://%s:8443%s: %q, %v; want %q", c.host, c.path, out, err, c.want)
		}
	}
	noRedirect := outside.HTTPClient()
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, c := range []struct{ url, host, location string }{
		{"http://10.3.0.1:8080/v1/x?q=1", "api.example.com", "https://api.example.com/v1/x?q=1"},
		{"http://10.3.0.1:8082/ratings/3?q=1", "istio.example.com", "https://istio.example.com/ratings/3?q=1"}, // Istio's httpsRedirect
	} {
		req, _ := http.NewRequest("GET", c.url, nil)
		req.Host = c.host
		if resp, err := noRedirect.Do(req); err != nil || resp.StatusCode != 301 || resp.Header.Get("Location") != c.location {
			t.Errorf("plain HTTP to %s: %v %v, want 301 to %s", c.url, resp, err, c.location)
		}
	}
	// The Secret renewed: the new certificate is served, the gateway not
	// restarted (the control plane reads its file again).
	newCert, newKey := catest.ServerCert(t, "shop.example.com")
	writeManifest(newCert, newKey)
	roots.AppendCertsFromPEM(newCert)
	renewed, _ := pem.Decode(newCert)
	testnet.WaitFor(t, "the renewed certificate served", func() bool {
		cert, _, body, err := https("shop.example.com", "/reviews/1", false)
		return err == nil && bytes.Equal(cert.Raw, renewed.Bytes) && body == "reviews /reviews/1 via="
	})

	// Istio's metrics, as a gateway reports them: reporter source, the
	// gateway the source, the service by its FQDN.
	_, text, err := gw.HTTPGet("http://127.0.0.1:15090/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	want := `reporter="source",source_workload="public-gw",source_canonical_service="public-gw"`
	found := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "istio_requests_total{") && strings.Contains(line, `destination_service="reviews.shop.svc.cluster.local"`) &&
			strings.Contains(line, `reporter="source"`) && strings.Contains(line, `source_workload="public-gw"`) && strings.Contains(line, `response_code="200"`) {
			found = true
		}
	}
	if !found {
		t.Errorf("no istio_requests_total with %s for reviews:\n%s", want, grep(text, "istio_requests_total{"))
	}
	// The access log: Envoy's line, the route's cluster.
	testnet.WaitFor(t, "the access log", func() bool {
		return strings.Contains(proxyLog.String(), `"GET /reviews/1 HTTP/1.1" 200`) && strings.Contains(proxyLog.String(), "outbound|9080||reviews.shop.svc.cluster.local")
	})
	// Its spans: one per request it forwarded, named by its workload.
	spans := col.WaitSpans(t, 6, 10*time.Second)
	var names []string
	for _, s := range spans {
		if s.Resource["service.name"] != "public-gw.shop" {
			t.Errorf("a span of %q, want the gateway's, public-gw.shop", s.Resource["service.name"])
		}
		names = append(names, s.Name)
	}
	// Named as Istio's routes name them (their decorators): the
	// destination and the path; a request no route took, as Envoy does.
	for _, want := range []string{"reviews.shop.svc.cluster.local:9080/reviews*", "ratings.shop.svc.cluster.local:9080/ratings*", "egress other.example.com"} {
		if !slices.Contains(names, want) {
			t.Errorf("no span named %q: %q", want, names)
		}
	}
	t.Logf("the gateway's spans: %q", names)
}

// tlsSecret is a TLS Secret of shop's manifest document.
func tlsSecret(name string, cert, key []byte) string {
	return fmt.Sprintf("---\napiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: shop}\ntype: kubernetes.io/tls\n"+
		"data: {tls.crt: %s, tls.key: %s}\n", name, base64.StdEncoding.EncodeToString(cert), base64.StdEncoding.EncodeToString(key))
}

func grep(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
