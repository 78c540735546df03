package control

import (
	"cmp"
	"encoding/json"
	"fmt"
	"regexp"
)

var grpcRouteSchema = schema{
	"parentRefs": listOf{schema{"group": nil, "kind": nil, "name": nil, "namespace": nil, "port": nil, "sectionName": nil}},
	"hostnames":  nil,
	"rules": listOf{schema{
		"name": nil,
		"matches": listOf{schema{"method": schema{"type": nil, "service": nil, "method": nil},
			"headers": gatewayMatchValue}},
		"backendRefs": listOf{schema{"group": nil, "kind": nil, "name": nil, "namespace": nil, "port": nil, "weight": nil}},
		// A filter of a type shunt does not run is reported by its type.
		"filters": listOf{schema{"type": nil,
			"requestHeaderModifier":  gatewayHeaderModifier,
			"responseHeaderModifier": gatewayHeaderModifier,
			"requestMirror":          schema{"backendRef": gatewayBackendRef, "percent": nil, "fraction": schema{"numerator": nil, "denominator": nil}},
			"extensionRef":           nil}},
	}},
}

// GRPCRouteFrom reads a Gateway API GRPCRoute manifest (YAML or JSON):
// as an HTTPRoute's, its rules route the requests of the Services it is
// bound to, matched by gRPC service and method (the request's path,
// /SERVICE/METHOD) and headers. One bound to no Service is nil.
func GRPCRouteFrom(doc []byte, domain string) (*HTTPRoute, error) {
	return gatewayRouteFrom(doc, "GRPCRoute", grpcRouteSchema, domain, grpcMatch)
}

// grpcMatch is a GRPCRoute's match as a path: a service and a method
// exactly (/S/M), a service (/S/), a method of any service, or either
// by regular expression; and headers.
func grpcMatch(m gatewayMatch, path string) (HTTPMatch, error) {
	hm := HTTPMatch{URI: StringMatch{Prefix: "/"}}
	if len(m.Method) > 0 {
		var gm struct{ Type, Service, Method string }
		if err := json.Unmarshal(m.Method, &gm); err != nil {
			return hm, fmt.Errorf("%s.method: %v", path, err)
		}
		switch gm.Type {
		case "", "Exact":
			switch {
			case gm.Service != "" && gm.Method != "":
				hm.URI = StringMatch{Exact: "/" + gm.Service + "/" + gm.Method}
			case gm.Service != "":
				hm.URI = StringMatch{Prefix: "/" + gm.Service + "/"}
			case gm.Method != "":
				hm.URI = StringMatch{Regex: "/[^/]+/" + regexp.QuoteMeta(gm.Method)}
			default:
				return hm, fmt.Errorf("%s.method: a service or a method is needed", path)
			}
		case "RegularExpression":
			hm.URI = StringMatch{Regex: "/" + cmp.Or(gm.Service, "[^/]+") + "/" + cmp.Or(gm.Method, "[^/]+")}
		default:
			return hm, fmt.Errorf("%s.method.type: %q is not Exact or RegularExpression", path, gm.Type)
		}
	}
	headerMatches(&hm, m)
	return hm, nil
}
