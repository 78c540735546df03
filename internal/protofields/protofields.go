// Package protofields writes the fields of a protobuf message descriptor,
// for the few messages of Istio's protocols that shunt describes in Go
// (their wire is Istio's; their Go types are not vendored).
package protofields

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Scalar is a field of a scalar type, repeated or not.
func Scalar(name string, number int32, typ descriptorpb.FieldDescriptorProto_Type, repeated bool) *descriptorpb.FieldDescriptorProto {
	label := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
	if repeated {
		label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	}
	return &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(number), Label: label.Enum(),
		Type: typ.Enum(), JsonName: proto.String(name)}
}

// String is a string field.
func String(name string, number int32, repeated bool) *descriptorpb.FieldDescriptorProto {
	return Scalar(name, number, descriptorpb.FieldDescriptorProto_TYPE_STRING, repeated)
}

// Message is a field of the message type typeName (fully qualified,
// with its leading dot).
func Message(name string, number int32, typeName string, repeated bool) *descriptorpb.FieldDescriptorProto {
	f := Scalar(name, number, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, repeated)
	f.TypeName = proto.String(typeName)
	return f
}
