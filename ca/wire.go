package ca

import (
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/shunt-dev/shunt/internal/protofields"
)

// createCertificate is Istio's CA method: a CSR and a TTL in, the
// certificate chain out; the caller proves who it is with its
// service-account token as a bearer credential.
const createCertificate = "/istio.v1.auth.IstioCertificateService/CreateCertificate"

// wireTypes are Istio's IstioCertificateRequest {csr = 1,
// validity_duration = 3 (seconds)} and IstioCertificateResponse
// {repeated cert_chain = 1}, as security/v1alpha1/ca.proto describes
// them; the request's metadata (4, a Struct for impersonation by a node
// agent) is not read.
var wireTypes = sync.OnceValues(func() (req, resp protoreflect.MessageDescriptor) {
	file := &descriptorpb.FileDescriptorProto{
		Name: proto.String("security/v1alpha1/ca.proto"), Package: proto.String("istio.v1.auth"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("IstioCertificateRequest"), Field: []*descriptorpb.FieldDescriptorProto{
				protofields.String("csr", 1, false),
				protofields.Scalar("validity_duration", 3, descriptorpb.FieldDescriptorProto_TYPE_INT64, false)}},
			{Name: proto.String("IstioCertificateResponse"), Field: []*descriptorpb.FieldDescriptorProto{
				protofields.String("cert_chain", 1, true)}},
		},
	}
	fd, err := protodesc.NewFile(file, protoregistry.GlobalFiles)
	if err != nil {
		panic(err) // a descriptor written here
	}
	return fd.Messages().ByName("IstioCertificateRequest"), fd.Messages().ByName("IstioCertificateResponse")
})

func newRequest(csr string, ttlSeconds int64) *dynamicpb.Message {
	d, _ := wireTypes()
	m := dynamicpb.NewMessage(d)
	m.Set(d.Fields().ByName("csr"), protoreflect.ValueOfString(csr))
	m.Set(d.Fields().ByName("validity_duration"), protoreflect.ValueOfInt64(ttlSeconds))
	return m
}

func readRequest(m *dynamicpb.Message) (csr string, ttlSeconds int64) {
	d, _ := wireTypes()
	return m.Get(d.Fields().ByName("csr")).String(), m.Get(d.Fields().ByName("validity_duration")).Int()
}

func newResponse(chain []string) *dynamicpb.Message {
	_, d := wireTypes()
	m := dynamicpb.NewMessage(d)
	l := m.Mutable(d.Fields().ByName("cert_chain")).List()
	for _, c := range chain {
		l.Append(protoreflect.ValueOfString(c))
	}
	return m
}

func readResponse(m *dynamicpb.Message) []string {
	_, d := wireTypes()
	l := m.Get(d.Fields().ByName("cert_chain")).List()
	out := make([]string, l.Len())
	for i := range out {
		out[i] = l.Get(i).String()
	}
	return out
}
