package admin

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
)

const servicePrefix = "/amtops.v1.AdminService/"

// readMethods are the calls a read-role token or certificate may make; every other
// AdminService method needs the operate role, so a method added later is
// closed to readers until someone decides otherwise.
var readMethods = map[string]bool{
	pb.AdminService_WhoAmI_FullMethodName:           true,
	pb.AdminService_FleetSummary_FullMethodName:     true,
	pb.AdminService_ListDevices_FullMethodName:      true,
	pb.AdminService_GetDevice_FullMethodName:        true,
	pb.AdminService_GetDeviceLog_FullMethodName:     true,
	pb.AdminService_DeviceReadiness_FullMethodName:  true,
	pb.AdminService_ListCollections_FullMethodName:  true,
	pb.AdminService_GetBatch_FullMethodName:         true,
	pb.AdminService_ListBatches_FullMethodName:      true,
	pb.AdminService_WatchBatch_FullMethodName:       true,
	pb.AdminService_ListBatchJobs_FullMethodName:    true,
	pb.AdminService_ListAgents_FullMethodName:       true,
	pb.AdminService_ListCertificates_FullMethodName: true,
}

// Principal is the administrator behind a call.
type Principal struct {
	Name string
	Role domain.AdminRole
	via  string // "token" or "certificate", for messages
}

type principalKey struct{}

// principalFrom returns the caller the interceptor authenticated.
func principalFrom(ctx context.Context) (Principal, error) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	if !ok {
		return Principal{}, status.Error(codes.Unauthenticated, "admin: call not authenticated (interceptor missing)")
	}
	return p, nil
}

// authorize authenticates a call to method and checks its role. A bearer
// token wins; without one, a verified admin client certificate from the
// TLS handshake authenticates. Errors are gRPC statuses.
func (s *Service) authorize(ctx context.Context, method string) (context.Context, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "admin: no peer")
	}
	ti, tlsOK := p.AuthInfo.(credentials.TLSInfo)
	if !tlsOK {
		// Tokens must never cross the network in clear text.
		return nil, status.Error(codes.Unauthenticated, "admin: calls need TLS")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	var (
		pr  Principal
		err error
	)
	switch {
	case len(vals) > 0:
		pr, err = s.tokenPrincipal(ctx, method, vals)
	case len(ti.State.PeerCertificates) > 0:
		pr, err = s.certPrincipal(ctx, method, ti.State.PeerCertificates)
	default:
		err = status.Error(codes.Unauthenticated, "admin: missing credentials: send \"authorization: Bearer <admin token>\" or present an admin client certificate")
	}
	if err != nil {
		return nil, err
	}
	if pr.Role != domain.RoleOperate && !readMethods[method] {
		s.opts.Log.Warn().Str("method", method).Str("admin", pr.Name).Str("role", string(pr.Role)).Msg("admin call refused: role")
		return nil, status.Errorf(codes.PermissionDenied, "admin: %s needs the operate role; %s %q has the %s role",
			strings.TrimPrefix(method, servicePrefix), pr.via, pr.Name, pr.Role)
	}
	return context.WithValue(ctx, principalKey{}, pr), nil
}

// WhoAmI names the authenticated caller.
func (s *Service) WhoAmI(ctx context.Context, _ *pb.WhoAmIRequest) (*pb.WhoAmIResponse, error) {
	p, err := principalFrom(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.WhoAmIResponse{Name: p.Name, Role: string(p.Role), Via: p.via}, nil
}

// Authorize authenticates a call to method made outside the gRPC server
// (the console's event stream) with the same credentials and role table:
// ctx carries the peer and incoming metadata as a gRPC call's would.
func (s *Service) Authorize(ctx context.Context, method string) (context.Context, error) {
	return s.authorize(ctx, method)
}

// tokenPrincipal authenticates the bearer token in vals.
func (s *Service) tokenPrincipal(ctx context.Context, method string, vals []string) (Principal, error) {
	if len(vals) != 1 {
		return Principal{}, status.Error(codes.Unauthenticated, "admin: send one \"authorization: Bearer <admin token>\"")
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
		return Principal{}, status.Error(codes.Unauthenticated, "admin: authorization must be \"Bearer <admin token>\"")
	}
	rec, err := s.st.AuthenticateAdmin(ctx, strings.TrimSpace(token))
	if err != nil {
		s.opts.Log.Warn().Str("method", method).Msg("admin call with unknown token refused")
		if st, ok := status.FromError(api.ToStatus(err)); ok && st.Code() == codes.PermissionDenied {
			return Principal{}, status.Error(codes.Unauthenticated, "admin: token unknown or revoked")
		}
		return Principal{}, api.ToStatus(err)
	}
	return Principal{Name: rec.Name, Role: rec.Role, via: "token"}, nil
}

// certPrincipal authenticates an admin client certificate. The TLS layer
// has already checked it chains to the CA (VerifyClientCertIfGiven);
// VerifyAdmin checks it is an administrator's, not an agent's, and the
// store that its name has not been revoked since.
func (s *Service) certPrincipal(ctx context.Context, method string, chain []*x509.Certificate) (Principal, error) {
	if s.opts.CA == nil {
		return Principal{}, status.Error(codes.Unauthenticated, "admin: certificate login is not enabled on this server; send \"authorization: Bearer <admin token>\"")
	}
	name, role, serial, err := s.opts.CA.VerifyAdmin(chain[0], chain[1:])
	if err != nil {
		s.opts.Log.Warn().Str("method", method).Err(err).Msg("admin call with a non-admin certificate refused")
		return Principal{}, status.Error(codes.Unauthenticated, "admin: client certificate is not an administrator's")
	}
	rec, err := s.st.AuthenticateAdminCertificate(ctx, serial, name, domain.AdminRole(role))
	if err != nil {
		s.opts.Log.Warn().Str("method", method).Str("admin", name).Str("serial", serial).Msg("admin call with unknown certificate refused")
		if st, ok := status.FromError(api.ToStatus(err)); ok && st.Code() == codes.PermissionDenied {
			return Principal{}, status.Errorf(codes.Unauthenticated, "admin: certificate of %q unknown or revoked", name)
		}
		return Principal{}, api.ToStatus(err)
	}
	return Principal{Name: rec.Name, Role: rec.Role, via: "certificate"}, nil
}

// UnaryInterceptor authenticates AdminService calls and enforces roles.
// Other services' calls pass through untouched.
func (s *Service) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, servicePrefix) {
			return h(ctx, req)
		}
		ctx, err := s.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// StreamInterceptor is UnaryInterceptor for streaming calls (WatchBatch).
func (s *Service) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if !strings.HasPrefix(info.FullMethod, servicePrefix) {
			return h(srv, ss)
		}
		ctx, err := s.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return h(srv, &authedStream{ServerStream: ss, ctx: ctx})
	}
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a *authedStream) Context() context.Context { return a.ctx }

// TokenFile is the name of the bootstrap token file in the data directory.
const TokenFile = "admin.token"

// BootstrapName is the name of the first operate token.
const BootstrapName = "bootstrap"

// TokenStore is what Bootstrap needs (store.Store).
type TokenStore interface {
	CreateFirstAdminToken(ctx context.Context, name string, role domain.AdminRole) (token string, created bool, err error)
	RevokeAdminToken(ctx context.Context, name string) error
}

// Bootstrap makes sure an administrator can get in on a first start: when
// no admin token exists at all, it creates an operate token and writes it
// to dataDir/admin.token (mode 0600). Replicas racing make one token; the
// others report created false. A token that could not be written is
// revoked again, so that the next start retries.
func Bootstrap(ctx context.Context, st TokenStore, dataDir string) (path string, created bool, err error) {
	path = filepath.Join(dataDir, TokenFile)
	tok, created, err := st.CreateFirstAdminToken(ctx, BootstrapName, domain.RoleOperate)
	if err != nil || !created {
		return path, false, err
	}
	if err := writeSecretFile(path, []byte(tok+"\n")); err != nil {
		if rerr := st.RevokeAdminToken(context.WithoutCancel(ctx), BootstrapName); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return path, false, fmt.Errorf("admin: bootstrap token: %w", err)
	}
	return path, true, nil
}

// writeSecretFile writes data to path, readable by the owner only,
// replacing any older file atomically.
func writeSecretFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".admin-token-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
