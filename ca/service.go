package ca

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Authenticator tells who holds a token: the namespace and service
// account of a Kubernetes service-account token, say (a TokenReview).
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (namespace, serviceAccount string, err error)
}

// Service is Istio's IstioCertificateService: it signs a caller's CSR
// for the identity its token proves, in TrustDomain.
type Service struct {
	TrustDomain string
	Auth        Authenticator
	Log         *slog.Logger

	authority atomic.Pointer[Authority]
	counts    ServiceCounts
}

// ServiceCounts are the requests the service answered, as Istio's
// citadel_server_* counters count them.
type ServiceCounts struct {
	CSRs, Issued, AuthFailures, CSRErrors atomic.Int64
}

// NewService is a service signing with a.
func NewService(a *Authority, trustDomain string, auth Authenticator, log *slog.Logger) *Service {
	s := &Service{TrustDomain: trustDomain, Auth: auth, Log: log}
	s.authority.Store(a)
	return s
}

// SetAuthority signs with a from now on (a rotated root, say).
func (s *Service) SetAuthority(a *Authority) { s.authority.Store(a) }

// Authority is the authority signing now.
func (s *Service) Authority() *Authority { return s.authority.Load() }

// Counts are the service's counters.
func (s *Service) Counts() *ServiceCounts { return &s.counts }

// Register serves the service on g.
func (s *Service) Register(g *grpc.Server) {
	g.RegisterService(&grpc.ServiceDesc{
		ServiceName: "istio.v1.auth.IstioCertificateService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "CreateCertificate", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			d, _ := wireTypes()
			req := dynamicpb.NewMessage(d)
			if err := dec(req); err != nil {
				return nil, err
			}
			csr, ttl := readRequest(req)
			chain, err := s.create(ctx, csr, ttl)
			if err != nil {
				return nil, err
			}
			return newResponse(chain), nil
		}}},
		Metadata: "security/v1alpha1/ca.proto",
	}, s)
}

// create authenticates the caller and signs its CSR.
func (s *Service) create(ctx context.Context, csr string, ttlSeconds int64) ([]string, error) {
	s.counts.CSRs.Add(1)
	token, err := bearer(ctx)
	if err == nil {
		var ns, sa string
		ns, sa, err = s.Auth.Authenticate(ctx, token)
		if err == nil {
			id := Identity{TrustDomain: s.TrustDomain, Namespace: ns, ServiceAccount: sa}
			chain, err := s.Authority().Sign([]byte(csr), id, time.Duration(ttlSeconds)*time.Second)
			if err != nil {
				s.counts.CSRErrors.Add(1)
				s.Log.Warn("certificate refused", "identity", id.String(), "err", err)
				code := codes.InvalidArgument
				if errors.Is(err, ErrNotTheCaller) {
					code = codes.PermissionDenied
				}
				return nil, status.Errorf(code, "%v", err)
			}
			s.counts.Issued.Add(1)
			s.Log.Debug("certificate issued", "identity", id.String())
			return chain, nil
		}
	}
	s.counts.AuthFailures.Add(1)
	s.Log.Warn("certificate request not authenticated", "err", err)
	return nil, status.Errorf(codes.Unauthenticated, "authenticating the caller: %v", err)
}

// bearer is the request's bearer token.
func bearer(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok && t != "" {
			return t, nil
		}
	}
	return "", errors.New("no bearer token in the request's authorization metadata")
}
