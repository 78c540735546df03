package accesslog

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
)

type headers map[string][]byte

func (h headers) Get(name string) ([]byte, bool) { v, ok := h[name]; return v, ok }

// seedRecord is nginx's captured request in the seed scenario.
func seedRecord() *Record {
	return &Record{
		Start:    time.Date(2025, 12, 26, 3, 35, 12, 708_123_456, time.UTC),
		Protocol: "HTTP/1.0", Method: "GET", Path: "/test", Authority: "backend-service:10000", Scheme: "http",
		Request:      headers{"user-agent": []byte("curl/7.81.0"), "x-request-id": []byte("856d3200-abb3-486f-8e4c-8441f20bdbb0")},
		Response:     headers{"x-envoy-upstream-service-time": []byte("1"), "content-type": []byte("text/plain")},
		ResponseCode: 200, BytesReceived: 0, BytesSent: 40, Duration: 1500 * time.Microsecond,
		RequestDuration: 0, ResponseDuration: time.Millisecond, ResponseTxDuration: -1,
		UpstreamHost: netip.MustParseAddrPort("10.244.0.114:10000"), UpstreamCluster: "app_service",
		DownstreamRemote: netip.MustParseAddrPort("10.1.0.5:40001"), DownstreamLocal: netip.MustParseAddrPort("10.96.0.10:10000"),
		ResponseCodeDetails: "via_upstream",
	}
}

func TestFormats(t *testing.T) {
	tcp := &Record{Start: time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC), BytesReceived: 5, BytesSent: 7,
		Duration: 3 * time.Millisecond, UpstreamHost: netip.MustParseAddrPort("10.96.0.10:7000"), UpstreamCluster: "PassthroughCluster",
		Flags: UpstreamConnectionFailure | UpstreamRetryLimitExceeded, UpstreamFailureReason: "connect_refused",
		RequestDuration: -1, ResponseDuration: -1, ResponseTxDuration: -1}
	for _, tc := range []struct {
		name, format string
		r            *Record
		want         string
	}{
		{"the seed's format", `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %BYTES_SENT% %DURATION% %REQ(X-REQUEST-ID)% "%REQ(USER-AGENT)%" "%REQ(X-FORWARDED-FOR)%" %UPSTREAM_HOST% %UPSTREAM_CLUSTER% %RESPONSE_FLAGS%`,
			seedRecord(), `[2025-12-26T03:35:12.708Z] "GET /test HTTP/1.0" 200 40 1 856d3200-abb3-486f-8e4c-8441f20bdbb0 "curl/7.81.0" "-" 10.244.0.114:10000 app_service -`},
		{"Envoy's default", EnvoyDefault, seedRecord(),
			`[2025-12-26T03:35:12.708Z] "GET /test HTTP/1.0" 200 - 0 40 1 1 "-" "curl/7.81.0" "856d3200-abb3-486f-8e4c-8441f20bdbb0" "backend-service:10000" "10.244.0.114:10000"` + "\n"},
		{"a TCP flow in Envoy's default", EnvoyDefault, tcp,
			`[2026-01-02T03:04:05.006Z] "- - -" 0 UF,URX 5 7 3 - "-" "-" "-" "-" "10.96.0.10:7000"` + "\n"},
		{"Istio's default, TCP", IstioDefault, tcp,
			`[2026-01-02T03:04:05.006Z] "- - -" 0 UF,URX - - "connect_refused" 5 7 3 - "-" "-" "-" "-" "10.96.0.10:7000" PassthroughCluster - - - - -` + "\n"},
		{"truncation and fallback", `%REQ(X-MISSING?USER-AGENT):4% %REQ(:PATH):2% %RESP(CONTENT-TYPE)% %RESP(:STATUS)%`, seedRecord(), `curl /t text/plain 200`},
		{"time formats", `%START_TIME(%s)% %START_TIME(%Y/%m/%d %H:%M:%S.%6f)% %START_TIME(%F %T %1f %%)%`, seedRecord(),
			`1766720112 2025/12/26 03:35:12.708123 2025-12-26 03:35:12 7 %`},
		{"addresses", `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_PORT% %UPSTREAM_LOCAL_ADDRESS% %RESPONSE_CODE_DETAILS% %ROUTE_NAME%`,
			seedRecord(), `10.1.0.5 10000 - via_upstream -`},
		{"durations", `%REQUEST_DURATION% %RESPONSE_DURATION% %RESPONSE_TX_DURATION% 100%%`, seedRecord(), `0 1 - 100%`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Compile(tc.format)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(f.Append(nil, tc.r)); got != tc.want {
				t.Errorf("\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestJSONFormat(t *testing.T) {
	f, err := CompileJSON([]Field{{"code", "%RESPONSE_CODE%"}, {"ua", "%REQ(USER-AGENT)%"}, {"xff", "%REQ(X-FORWARDED-FOR)%"},
		{"line", `%REQ(:METHOD)% "%REQ(:PATH)%"`}, {"bytes", "%BYTES_SENT%"}, {"tx", "%RESPONSE_TX_DURATION%"}})
	if err != nil {
		t.Fatal(err)
	}
	out := f.Append(nil, seedRecord())
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if m["code"] != 200.0 || m["ua"] != "curl/7.81.0" || m["xff"] != nil || m["line"] != `GET "/test"` || m["bytes"] != 40.0 || m["tx"] != nil {
		t.Errorf("%s", out)
	}
	if !strings.HasPrefix(string(out), `{"code":200,"ua":"curl/7.81.0","xff":null,`) {
		t.Errorf("order or types: %s", out)
	}
}

func TestCompileRefuses(t *testing.T) {
	for _, bad := range []string{"%NOPE%", "%REQ()%", "%REQ(X", "%DURATION", "%PROTOCOL(x)%", "%START_TIME(%Q)%"} {
		if _, err := Compile(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestAppendAllocatesNothing(t *testing.T) {
	f, _ := Compile(EnvoyDefault)
	r := seedRecord()
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(1000, func() { buf = f.Append(buf[:0], r) }); n != 0 {
		t.Errorf("%v allocations per line", n)
	}
}

func BenchmarkEnvoyDefault(b *testing.B) {
	f, _ := Compile(EnvoyDefault)
	r := seedRecord()
	buf := make([]byte, 0, 1024)
	for b.Loop() {
		buf = f.Append(buf[:0], r)
	}
}
