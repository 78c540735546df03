package doctor

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestCertificateCheck reads the sidecar's /certs as it answers in each
// state.
func TestCertificateCheck(t *testing.T) {
	now := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	cert := func(expires string) string {
		return `{"certificates": [{"ca_cert": [{"serial_number": "1"}], "cert_chain": [{"serial_number": "4cfb",
			"subject_alt_names": [{"uri": "spiffe://cluster.local/ns/default/sa/sleep"}], "expiration_time": "` + expires + `"}]}]}`
	}
	for _, c := range []struct {
		name   string
		code   int
		body   string
		status Status
		want   string
	}{
		{"no CA", 404, "no workload certificate", Info, "gets no certificate (no --ca-address)"},
		{"none yet", 200, `{"certificates": []}`, Fail, "no certificate yet"},
		{"in force", 200, cert("2026-12-03T07:30:00Z"), Pass, "spiffe://cluster.local/ns/default/sa/sleep (serial 4cfb), expires in 23h30m0s; trusts 1 root(s)"},
		{"expired", 200, cert("2026-12-02T07:59:00Z"), Fail, "spiffe://cluster.local/ns/default/sa/sleep expired at 2026-12-02T07:59:00Z"},
		{"garbled", 500, "oops", Fail, "answered 500"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(c.code)
			w.Write([]byte(c.body))
		}))
		got := certificateFrom(srv.Client(), srv.URL, now)
		srv.Close()
		if got.Status != c.status || !strings.Contains(got.Detail, c.want) {
			t.Errorf("%s: %s %q, want %s %q", c.name, got.Status, got.Detail, c.status, c.want)
		}
	}
}
