package transport

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// ALPNs served by a node's endpoint. Every one of them requires a mesh client certificate except ALPNJoin.
const (
	ALPNRaft = "shoal-raft/1" // Raft RPC streams
	ALPNBlob = "shoal-blob/1" // piece exchange (later issue; generic Handle/Dial serve it)
	ALPNRPC  = "shoal-rpc/1"  // node-to-node request/response (write forwarding, read index)
	ALPNJoin = "shoal-join/1" // join: the ONLY ALPN a client without a mesh certificate may use
)

// QUIC timings. The handshake timeout is short so that dialing a dead peer fails fast (Raft retries on its own
// schedule); keep-alives well below the idle timeout keep quiet peer connections open.
const (
	handshakeIdleTimeout = 3 * time.Second
	maxIdleTimeout       = 30 * time.Second
	keepAlivePeriod      = 5 * time.Second
	// Raft pipelining plus many concurrent piece and RPC streams pass quic-go's default of 100 easily.
	maxIncomingStreams = 10000
	// dialTimeout bounds a whole dial; the handshake idle timeout usually ends it much sooner.
	dialTimeout = 10 * time.Second
	// Piece-exchange connections must notice a silent peer (killed, cut off) within about two seconds: a request
	// in flight to it, or a seed's upload slot busy sending to it, otherwise waits for the 30 s idle timeout while
	// live peers could serve or take the piece. The dialer's idle timeout binds both ends (QUIC takes the
	// smaller of the two advertised), and keep-alives four times as often keep a quiet but live connection open.
	BlobIdleTimeout     = 2 * time.Second
	blobKeepAlivePeriod = 500 * time.Millisecond
)

// Application error codes sent when this side closes a connection.
const (
	codeClosing   quic.ApplicationErrorCode = 0
	codeNoHandler quic.ApplicationErrorCode = 1
	codeNoPeer    quic.ApplicationErrorCode = 2
	codeBusy      quic.ApplicationErrorCode = 3
	codeRevoked   quic.ApplicationErrorCode = 4 // the peer's certificate expired or its CA is no longer trusted
	codeNotMember quic.ApplicationErrorCode = 5 // the mesh no longer lists the peer as a member
)

// ErrClosed is returned by an Endpoint's methods after Close.
var ErrClosed = errors.New("transport endpoint is closed")

// Config configures Listen.
type Config struct {
	Bind     string // "127.0.0.1:7422"; port 0 picks a free port
	Identity *Identity
	Logger   *slog.Logger
	// HandshakeBurst and HandshakeRate (per second) bound the handshakes from one source IP (limits.go);
	// 0 takes the defaults.
	HandshakeBurst int
	HandshakeRate  float64
}

// ConnHandler serves one accepted connection; the connection is closed when it returns.
type ConnHandler func(conn *quic.Conn, peer string)

// Endpoint is a node's single QUIC endpoint: one UDP socket that accepts connections for the ALPNs that have a
// handler and dials peers from the same socket, so a peer sees our bound address as our remote address.
type Endpoint struct {
	id    atomic.Pointer[Identity] // swapped by SetIdentity when the certificate is renewed
	check atomic.Pointer[PeerCheck]
	log   *slog.Logger
	udp   *net.UDPConn
	tr    *quic.Transport
	ln    *quic.Listener
	qconf *quic.Config

	ctx    context.Context // cancelled by Close; parent of dials and accept
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the endpoint starts

	closeOnce sync.Once
	closeErr  error

	acceptedTotal atomic.Int64 // connections that passed the handshake and reached a handler

	// Limits on strangers (limits.go): handshakes per source IP, before and after address validation, and the
	// join connections served at once.
	unverified, verified *sourceLimiter
	joinConns            atomic.Int64
	refusedHandshakes    atomic.Int64

	mu        sync.Mutex
	closed    bool
	handlers  map[string]ConnHandler
	accepted  map[*quic.Conn]struct{}
	dials     map[dialKey]*dialEntry
	rpc       *rpcMux
	join      *rpcMux
	raft      *raftLayer
	advertise net.Addr

	trustMu sync.Mutex               // serialises Revalidate
	trusted map[*quic.Conn]trustMark // the connections Revalidate last found trusted (trust.go)
}

type dialKey struct{ addr, alpn string }

// dialEntry is one cached or in-flight connection; done is closed once conn or err is set.
type dialEntry struct {
	done chan struct{}
	conn *quic.Conn
	err  error
	// redial, set while the handshake runs, abandons it for a fresh one (see peerIsBack).
	redial context.CancelFunc
}

func quicConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:  handshakeIdleTimeout,
		MaxIdleTimeout:        maxIdleTimeout,
		KeepAlivePeriod:       keepAlivePeriod,
		MaxIncomingStreams:    maxIncomingStreams,
		MaxIncomingUniStreams: -1,
	}
}

// dialConfig is the QUIC configuration of a connection dialed for alpn: the endpoint's, with a short idle
// timeout and keep-alive for the piece exchange (see BlobIdleTimeout).
func (e *Endpoint) dialConfig(alpn string) *quic.Config {
	if alpn != ALPNBlob {
		return e.qconf
	}
	c := e.qconf.Clone()
	c.MaxIdleTimeout = BlobIdleTimeout
	c.KeepAlivePeriod = blobKeepAlivePeriod
	return c
}

// Listen binds the UDP socket and starts accepting connections. Connections for an ALPN without a handler are
// refused during the handshake, so register handlers (Handle, HandleRPC, HandleJoinRPC, RaftLayer) early.
func Listen(cfg Config) (*Endpoint, error) {
	if cfg.Identity == nil {
		return nil, errors.New("transport: listen: no node identity; load or create one first")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	udpAddr, err := net.ResolveUDPAddr("udp", cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("transport: resolve bind address %q: %w", cfg.Bind, err)
	}
	resetKey, err := statelessResetKey(cfg.Identity)
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp", udpAddr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen on UDP %s: %w (is another node using this port?)", cfg.Bind, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Endpoint{
		log:        log,
		udp:        udp,
		qconf:      quicConfig(),
		ctx:        ctx,
		cancel:     cancel,
		handlers:   map[string]ConnHandler{},
		accepted:   map[*quic.Conn]struct{}{},
		dials:      map[dialKey]*dialEntry{},
		unverified: newSourceLimiter(cmp.Or(float64(cfg.HandshakeBurst), handshakeBurst), cmp.Or(cfg.HandshakeRate, handshakeRate)),
		verified:   newSourceLimiter(cmp.Or(float64(cfg.HandshakeBurst), handshakeBurst), cmp.Or(cfg.HandshakeRate, handshakeRate)),
	}
	// A source over its handshake rate must first prove its address with a Retry (a spoofer cannot), and a proven
	// source over its rate is refused: a flood of handshakes costs this node little, and a spoofed one cannot make
	// it refuse a real peer.
	e.id.Store(cfg.Identity)
	e.tr = &quic.Transport{Conn: udp, StatelessResetKey: resetKey,
		VerifySourceAddress: func(a net.Addr) bool { return !e.unverified.allow(a) }}
	lconf := e.qconf.Clone()
	lconf.GetConfigForClient = func(info *quic.ClientInfo) (*quic.Config, error) {
		if info.AddrVerified && !e.verified.allow(info.RemoteAddr) {
			if e.refusedHandshakes.Add(1)%100 == 1 {
				e.log.Warn("refusing handshakes from a source over its rate", "remote", info.RemoteAddr.String(),
					"refused_total", e.refusedHandshakes.Load())
			}
			return nil, errors.New("too many handshakes from this address")
		}
		return e.qconf, nil
	}
	e.ln, err = e.tr.Listen(e.serverTLS(), lconf)
	if err != nil {
		cancel()
		e.tr.Close()
		udp.Close()
		return nil, fmt.Errorf("transport: start QUIC listener on %s: %w", udp.LocalAddr(), err)
	}
	e.wg.Add(1)
	go e.acceptLoop()
	log.Info("QUIC endpoint listening", "addr", udp.LocalAddr().String(), "node", cfg.Identity.Name)
	return e, nil
}

// RefusedHandshakes counts the handshakes refused because their source exceeded its rate.
func (e *Endpoint) RefusedHandshakes() int64 { return e.refusedHandshakes.Load() }

// Addr is the bound UDP address (with the real port when Bind asked for port 0).
func (e *Endpoint) Addr() net.Addr { return e.udp.LocalAddr() }

// Identity is the node identity the endpoint authenticates with.
func (e *Endpoint) Identity() *Identity { return e.id.Load() }

// Handle routes accepted connections of alpn, once mutual TLS has succeeded, to h, each in its own goroutine.
// peer is the verified node name (certificate CommonName); it is "" on ALPNJoin. The connection is closed when h
// returns, and h must return once conn.Context() is done. A later Handle for the same ALPN replaces h for new
// connections.
func (e *Endpoint) Handle(alpn string, h func(conn *quic.Conn, peer string)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if h == nil {
		delete(e.handlers, alpn)
		return
	}
	e.handlers[alpn] = h
}

func (e *Endpoint) servedALPNs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	protos := make([]string, 0, len(e.handlers))
	for p := range e.handlers {
		protos = append(protos, p)
	}
	slices.Sort(protos) // a stable server preference, should a client offer several
	return protos
}

func (e *Endpoint) acceptLoop() {
	defer e.wg.Done()
	for {
		conn, err := e.ln.Accept(e.ctx)
		if err != nil {
			if e.ctx.Err() == nil {
				e.log.Error("QUIC accept loop stopped", "err", err)
			}
			return
		}
		e.serveConn(conn)
	}
}

func (e *Endpoint) serveConn(conn *quic.Conn) {
	alpn := conn.ConnectionState().TLS.NegotiatedProtocol
	peer := PeerName(conn)
	if alpn == ALPNJoin {
		peer = "" // join handlers must not trust a name they did not ask for
	} else if peer == "" {
		// The handshake requires a certificate on every ALPN but join; this guards that invariant.
		e.log.Warn("refused connection without a node certificate", "remote", conn.RemoteAddr().String(), "alpn", alpn)
		conn.CloseWithError(codeNoPeer, "a mesh node certificate is required")
		return
	}
	if alpn == ALPNJoin {
		if e.joinConns.Add(1) > joinConnsMax {
			e.joinConns.Add(-1)
			e.log.Warn("refused a join connection: too many at once", "remote", conn.RemoteAddr().String(), "max", joinConnsMax)
			conn.CloseWithError(codeBusy, "too many join connections; retry later")
			return
		}
	}
	e.mu.Lock()
	h := e.handlers[alpn]
	if e.closed || h == nil {
		e.mu.Unlock()
		if alpn == ALPNJoin {
			e.joinConns.Add(-1)
		}
		conn.CloseWithError(codeNoHandler, "protocol not served: "+alpn)
		return
	}
	e.peerIsBack(conn.RemoteAddr().String())
	e.accepted[conn] = struct{}{}
	e.acceptedTotal.Add(1)
	e.wg.Add(1)
	e.mu.Unlock()
	e.log.Debug("accepted connection", "remote", conn.RemoteAddr().String(), "alpn", alpn, "peer", peer)
	go func() {
		defer e.wg.Done()
		defer func() {
			e.mu.Lock()
			delete(e.accepted, conn)
			e.mu.Unlock()
			if alpn == ALPNJoin {
				e.joinConns.Add(-1)
			}
			conn.CloseWithError(codeClosing, "")
		}()
		h(conn, peer)
	}()
}

// Dial returns a cached, mutually authenticated connection to addr for alpn: one per addr and ALPN, redialed once
// it has died, with concurrent dials for the same key sharing one handshake. The server must present a
// certificate from this node's CA. ctx bounds only the wait of this caller, not the shared dial.
func (e *Endpoint) Dial(ctx context.Context, addr, alpn string) (*quic.Conn, error) {
	key := dialKey{addr, alpn}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	ent := e.dials[key]
	if ent != nil {
		select {
		case <-ent.done:
			if ent.err == nil && ent.conn.Context().Err() == nil {
				e.mu.Unlock()
				return ent.conn, nil
			}
			ent = nil // failed or dead: dial again
		default: // in flight: share it
		}
	}
	if ent == nil {
		ent = &dialEntry{done: make(chan struct{})}
		e.dials[key] = ent
		e.wg.Add(1)
		go e.dial(key, ent)
	}
	e.mu.Unlock()
	select {
	case <-ent.done:
		if ent.err != nil {
			return nil, ent.err
		}
		return ent.conn, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("dial %s (%s): %w", addr, alpn, ctx.Err())
	}
}

// peerIsBack restarts the handshakes in flight to addr, which just reached this endpoint: a peer that was down
// when they began has been sent Initial packets it never saw, and QUIC retransmits them only after growing
// back-offs (or gives up after handshakeIdleTimeout), so the restarted peer would wait seconds to be reached
// (Raft's leader would not contact a restarted follower for 3-5 s). A fresh handshake takes one round trip.
// The caller holds e.mu.
func (e *Endpoint) peerIsBack(addr string) {
	for key, ent := range e.dials {
		if key.addr != addr || ent.redial == nil {
			continue
		}
		select {
		case <-ent.done:
		default:
			ent.redial()
		}
	}
}

// dial runs one handshake for ent and then stays with the connection until it dies, to drop it from the cache.
func (e *Endpoint) dial(key dialKey, ent *dialEntry) {
	defer e.wg.Done()
	var conn *quic.Conn
	var err error
	for {
		ctx, redial := context.WithCancel(e.ctx)
		e.mu.Lock()
		ent.redial = redial
		e.mu.Unlock()
		conn, err = e.connect(ctx, key.addr, key.alpn)
		again := err != nil && ctx.Err() != nil && e.ctx.Err() == nil
		redial()
		if !again {
			break
		}
		e.log.Debug("the peer reached us while a dial to it was pending: dialing afresh", "addr", key.addr, "alpn", key.alpn)
	}
	e.mu.Lock()
	ent.redial = nil
	if err == nil && e.closed {
		conn.CloseWithError(codeClosing, "endpoint closing")
		err = ErrClosed
	}
	ent.conn, ent.err = conn, err
	close(ent.done)
	if err != nil && e.dials[key] == ent {
		delete(e.dials, key)
	}
	e.mu.Unlock()
	if err != nil {
		e.log.Debug("dial failed", "addr", key.addr, "alpn", key.alpn, "err", err)
		return
	}
	e.log.Debug("dialed", "addr", key.addr, "alpn", key.alpn, "peer", PeerName(conn))
	<-conn.Context().Done() // Close closes every cached connection, so this wait ends
	e.mu.Lock()
	if e.dials[key] == ent {
		delete(e.dials, key)
	}
	e.mu.Unlock()
}

func (e *Endpoint) connect(ctx context.Context, addr, alpn string) (*quic.Conn, error) {
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: resolve: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, err := e.tr.Dial(ctx, udpAddr, e.clientTLS(alpn), e.dialConfig(alpn))
	if err != nil {
		if e.ctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("dial %s (%s): %w", addr, alpn, err)
	}
	return conn, nil
}

// Close closes every connection, stops the accept loop and waits for all goroutines the endpoint started,
// including connection handlers, then releases the UDP socket.
func (e *Endpoint) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		var conns []*quic.Conn
		for c := range e.accepted {
			conns = append(conns, c)
		}
		for _, ent := range e.dials {
			select {
			case <-ent.done:
				if ent.conn != nil {
					conns = append(conns, ent.conn)
				}
			default: // still dialing: cancelling ctx ends it, and dial closes what it got
			}
		}
		e.mu.Unlock()
		e.cancel()
		lnErr := e.ln.Close()
		// CloseWithError sends CONNECTION_CLOSE before returning, so peers learn at once that we are gone.
		for _, c := range conns {
			c.CloseWithError(codeClosing, "endpoint closing")
		}
		e.wg.Wait()
		trErr := e.tr.Close()
		udpErr := e.udp.Close()
		e.closeErr = errors.Join(lnErr, trErr, udpErr)
		e.log.Info("QUIC endpoint closed", "addr", e.udp.LocalAddr().String())
	})
	return e.closeErr
}
