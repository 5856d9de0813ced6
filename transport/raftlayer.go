package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go"
)

// errLayerClosed is what Accept returns after the Raft transport closed its stream layer.
var errLayerClosed = errors.New("raft stream layer is closed")

// raftLayer is raft.StreamLayer over ALPNRaft: every Raft connection is a QUIC stream, all streams to one peer
// share the endpoint's cached connection to it.
type raftLayer struct {
	e        *Endpoint
	incoming chan net.Conn
	ctx      context.Context // cancelled by Close or by the endpoint's Close
	cancel   context.CancelFunc
	once     sync.Once
}

var _ raft.StreamLayer = (*raftLayer)(nil)

// RaftLayer returns the endpoint's Raft stream layer and starts serving ALPNRaft. When Raft shuts down its
// transport closes the layer, which stops serving ALPNRaft; a later RaftLayer call returns a fresh layer.
func (e *Endpoint) RaftLayer() raft.StreamLayer {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.raft == nil {
		ctx, cancel := context.WithCancel(e.ctx)
		l := &raftLayer{e: e, incoming: make(chan net.Conn), ctx: ctx, cancel: cancel}
		e.raft = l
		e.handlers[ALPNRaft] = l.serveConn
	}
	return e.raft
}

// SetAdvertise sets the address the Raft layer reports as its own (Addr), which Raft records as this server's
// address in its configuration. Set it before creating the Raft transport when binding to 0.0.0.0.
func (e *Endpoint) SetAdvertise(addr net.Addr) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.advertise = addr
}

// serveConn hands the streams of one peer connection to Accept. It returns, closing the connection, when the
// layer closes, so that peers redial and reach whichever layer serves ALPNRaft next.
func (l *raftLayer) serveConn(conn *quic.Conn, _ string) {
	ctx, cancel := context.WithCancel(conn.Context())
	defer cancel()
	stop := context.AfterFunc(l.ctx, cancel)
	defer stop()
	for {
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		if l.e.refuseStream(conn) { // a removed node's open connection carries no more Raft streams
			return
		}
		select {
		case l.incoming <- newStreamConn(st, conn):
		case <-ctx.Done():
			st.CancelRead(codeCancelled)
			st.CancelWrite(codeCancelled)
			return
		}
	}
}

// Accept hands out the Raft streams peers opened, as net.Conns.
func (l *raftLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.incoming:
		return c, nil
	case <-l.ctx.Done():
		if l.e.ctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, errLayerClosed
	}
}

// Close stops handing out streams and stops serving ALPNRaft; streams already handed out stay Raft's to close.
func (l *raftLayer) Close() error {
	l.once.Do(func() {
		l.cancel()
		l.e.mu.Lock()
		if l.e.raft == l {
			l.e.raft = nil
			delete(l.e.handlers, ALPNRaft)
		}
		l.e.mu.Unlock()
	})
	return nil
}

// Addr is the advertised address if one was set, else the bound one.
func (l *raftLayer) Addr() net.Addr {
	l.e.mu.Lock()
	defer l.e.mu.Unlock()
	if l.e.advertise != nil {
		return l.e.advertise
	}
	return l.e.Addr()
}

// Dial opens a new stream to the peer at address on the cached connection, dialing it if needed.
func (l *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(l.e.ctx, timeout)
	defer cancel()
	conn, err := l.e.Dial(ctx, string(address), ALPNRaft)
	if err != nil {
		return nil, err
	}
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return newStreamConn(st, conn), nil
}

// streamConn is a QUIC stream dressed as a net.Conn, with its connection's addresses.
type streamConn struct {
	st     *quic.Stream
	local  net.Addr
	remote net.Addr
}

func newStreamConn(st *quic.Stream, conn *quic.Conn) *streamConn {
	return &streamConn{st: st, local: conn.LocalAddr(), remote: conn.RemoteAddr()}
}

// Read ends with io.EOF when either side closed the connection on purpose: Raft's transport logs any other read
// error as a broken command ("failed to decode incoming command"), which a clean shutdown is not.
func (c *streamConn) Read(b []byte) (int, error) {
	n, err := c.st.Read(b)
	if err != nil && closedOnPurpose(err) {
		err = io.EOF
	}
	return n, err
}

func (c *streamConn) Write(b []byte) (int, error) { return c.st.Write(b) }

// closedOnPurpose reports whether err ends a stream because its connection was closed, or the stream cancelled,
// with code 0: how Endpoint.Close and streamConn.Close end them.
func closedOnPurpose(err error) bool {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) {
		return ae.ErrorCode == 0
	}
	var se *quic.StreamError
	return errors.As(err, &se) && se.ErrorCode == 0
}

// Close is a full close, as net.Conn promises: Stream.Close alone would only end the sending side and leave the
// peer's writes to a reader that no longer exists.
func (c *streamConn) Close() error {
	c.st.CancelRead(0)
	return c.st.Close()
}

func (c *streamConn) LocalAddr() net.Addr                { return c.local }
func (c *streamConn) RemoteAddr() net.Addr               { return c.remote }
func (c *streamConn) SetDeadline(t time.Time) error      { return c.st.SetDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.st.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.st.SetWriteDeadline(t) }
