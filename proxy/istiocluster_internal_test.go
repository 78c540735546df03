package proxy

import (
	"fmt"
	"testing"
)

// TestIstioClusterService: the destination service labels of Istio's
// cluster names, as Istio's stats read them.
func TestIstioClusterService(t *testing.T) {
	for _, c := range []struct{ cluster, want string }{
		{"outbound|10000||backend-service.default.svc.cluster.local", "backend-service.default.svc.cluster.local backend-service default true"},
		{"outbound|9080|v2|reviews.bookinfo.svc.cluster.local", "reviews.bookinfo.svc.cluster.local reviews bookinfo true"},
		{"inbound|8080||", "   false"},
		{"outbound|443||api.example.com", "api.example.com api.example.com  true"},
		{"PassthroughCluster", "   false"},
		{"app_service", "   false"},
		{"outbound|80|x", "   false"},
	} {
		host, name, ns, ok := istioClusterService(c.cluster)
		if got := fmt.Sprint(host, " ", name, " ", ns, " ", ok); got != c.want {
			t.Errorf("%s: %q, want %q", c.cluster, got, c.want)
		}
	}
}
