package xds

import (
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/shunt-dev/shunt/proxy/envoyconfig"
)

// Checked is apply behind the checks a --config file meets: a field
// shunt does not run is refused with its path, as from a file.
func Checked(apply func(*bootstrapv3.Bootstrap) error) func(*bootstrapv3.Bootstrap) error {
	return func(b *bootstrapv3.Bootstrap) error {
		js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
		if err != nil {
			return err
		}
		checked, err := envoyconfig.Parse(js)
		if err != nil {
			return err
		}
		return apply(checked)
	}
}
