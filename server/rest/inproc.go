package rest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// inproc is a grpc.ClientConnInterface that calls one service in this
// process through the same interceptors the gRPC listener runs, so that
// the REST gateway authenticates and authorises exactly as gRPC does.
// The caller's outgoing metadata becomes the handler's incoming metadata;
// the peer (with its TLS state) travels in the context unchanged.
type inproc struct {
	desc   *grpc.ServiceDesc
	impl   any
	unary  grpc.UnaryServerInterceptor
	stream grpc.StreamServerInterceptor
}

var _ grpc.ClientConnInterface = (*inproc)(nil)

func (c *inproc) serverContext(ctx context.Context) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	return metadata.NewIncomingContext(ctx, md.Copy())
}

func (c *inproc) methodName(full string) (string, error) {
	prefix := "/" + c.desc.ServiceName + "/"
	if !strings.HasPrefix(full, prefix) {
		return "", status.Errorf(codes.Unimplemented, "rest: %s is not a method of %s", full, c.desc.ServiceName)
	}
	return strings.TrimPrefix(full, prefix), nil
}

// Invoke runs a unary method. Messages are copied both ways, as a wire
// would, so neither side aliases the other's.
func (c *inproc) Invoke(ctx context.Context, method string, args, reply any, _ ...grpc.CallOption) error {
	name, err := c.methodName(method)
	if err != nil {
		return err
	}
	for _, m := range c.desc.Methods {
		if m.MethodName != name {
			continue
		}
		dec := func(in any) error { return copyMessage(in, args) }
		out, err := m.Handler(c.impl, c.serverContext(ctx), dec, c.unary)
		if err != nil {
			return err
		}
		return copyMessage(reply, out)
	}
	return status.Errorf(codes.Unimplemented, "rest: unknown method %s", method)
}

// NewStream runs a server-streaming method in a goroutine owned by the
// stream: it ends when the handler returns, and the handler's context
// ends with the caller's.
func (c *inproc) NewStream(ctx context.Context, sd *grpc.StreamDesc, method string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	name, err := c.methodName(method)
	if err != nil {
		return nil, err
	}
	if sd.ClientStreams {
		return nil, status.Errorf(codes.Unimplemented, "rest: client streaming (%s) is not served", method)
	}
	var h grpc.StreamHandler
	for _, s := range c.desc.Streams {
		if s.StreamName == name {
			h = s.Handler
		}
	}
	if h == nil {
		return nil, status.Errorf(codes.Unimplemented, "rest: unknown stream %s", method)
	}
	sctx, cancel := context.WithCancel(c.serverContext(ctx))
	p := &pipe{ctx: sctx, cancel: cancel, req: make(chan any, 1), msgs: make(chan proto.Message),
		header: make(chan struct{}), done: make(chan struct{})}
	info := &grpc.StreamServerInfo{FullMethod: method, IsServerStream: true}
	go func() {
		defer cancel()
		err := c.stream(c.impl, &serverSide{p}, info, h)
		p.finish(err)
	}()
	return &clientSide{p}, nil
}

// pipe joins the two halves of one in-process stream.
type pipe struct {
	ctx    context.Context
	cancel context.CancelFunc
	req    chan any           // the one request message
	msgs   chan proto.Message // server to client
	header chan struct{}      // closed at the first message or the end
	once   sync.Once
	done   chan struct{} // closed when the handler returned; err is then set
	err    error
}

func (p *pipe) sentHeader() { p.once.Do(func() { close(p.header) }) }

func (p *pipe) finish(err error) {
	p.err = err
	p.sentHeader()
	close(p.done)
}

type serverSide struct{ p *pipe }

func (s *serverSide) SetHeader(metadata.MD) error  { return nil }
func (s *serverSide) SendHeader(metadata.MD) error { s.p.sentHeader(); return nil }
func (s *serverSide) SetTrailer(metadata.MD)       {}
func (s *serverSide) Context() context.Context     { return s.p.ctx }

func (s *serverSide) SendMsg(m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "rest: %T is not a proto message", m)
	}
	s.p.sentHeader()
	select {
	case s.p.msgs <- proto.Clone(pm):
		return nil
	case <-s.p.ctx.Done():
		return status.FromContextError(s.p.ctx.Err()).Err()
	}
}

func (s *serverSide) RecvMsg(m any) error {
	select {
	case in, ok := <-s.p.req:
		if !ok {
			return io.EOF
		}
		return copyMessage(m, in)
	case <-s.p.ctx.Done():
		return status.FromContextError(s.p.ctx.Err()).Err()
	}
}

type clientSide struct{ p *pipe }

// Header waits, as on a wire, until the handler sent its first message or
// ended; a handler refused before sending (an interceptor's 401 or 403)
// reports its error here.
func (c *clientSide) Header() (metadata.MD, error) {
	select {
	case <-c.p.header:
	case <-c.p.ctx.Done():
	}
	select {
	case <-c.p.done:
		if c.p.err != nil {
			return nil, c.p.err
		}
	default:
	}
	return metadata.MD{}, nil
}

func (c *clientSide) Trailer() metadata.MD     { return metadata.MD{} }
func (c *clientSide) Context() context.Context { return c.p.ctx }

func (c *clientSide) CloseSend() error {
	close(c.p.req)
	return nil
}

// SendMsg takes the one request of a server stream.
func (c *clientSide) SendMsg(m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "rest: %T is not a proto message", m)
	}
	select {
	case c.p.req <- proto.Clone(pm):
		return nil
	default:
		return status.Error(codes.Internal, "rest: a server stream takes one request")
	}
}

func (c *clientSide) RecvMsg(m any) error {
	select {
	case msg := <-c.p.msgs:
		return copyMessage(m, msg)
	case <-c.p.done:
		// A message sent just before the end is still delivered first.
		select {
		case msg := <-c.p.msgs:
			return copyMessage(m, msg)
		default:
		}
		if c.p.err != nil {
			return c.p.err
		}
		return io.EOF
	}
}

func copyMessage(dst, src any) error {
	d, ok1 := dst.(proto.Message)
	s, ok2 := src.(proto.Message)
	if !ok1 || !ok2 {
		return status.Error(codes.Internal, fmt.Sprintf("rest: cannot copy %T into %T", src, dst))
	}
	proto.Reset(d)
	proto.Merge(d, s)
	return nil
}
