package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/shoal-ci/shoal/errs"
	"io"
	"runtime/debug"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// MaxFrame is the largest request or response body frame, in bytes.
const MaxFrame = 16 << 20

// requestReadTimeout bounds how long a served stream may take to deliver its request, so that a peer which opens
// streams and sends nothing cannot pin goroutines until the connection dies.
const requestReadTimeout = 30 * time.Second

// Error codes this package puts on RemoteErrors it creates itself.
const (
	CodeInternal      = errs.Internal
	CodeUnknownMethod = "unknown_method"
	CodeBadRequest    = errs.BadRequest
)

// Stream error code for cancelling an RPC stream.
const codeCancelled quic.StreamErrorCode = 1

// Handler serves one RPC. peer is the caller's verified node name ("" for join RPCs). The result is sent back as
// JSON; an error travels as a RemoteError, with its code if it has an `ErrorCode() string` method.
type Handler func(ctx context.Context, peer string, body json.RawMessage) (any, error)

// RemoteError is an error returned by the handler on the other node: Shoal's one error type, as the call
// carried it.
type RemoteError = errs.Error

type rpcRequest struct {
	Method string          `json:"method"`
	Body   json.RawMessage `json:"body,omitempty"`
}

type rpcResponse struct {
	Body  json.RawMessage `json:"body,omitempty"`
	Error *RemoteError    `json:"error,omitempty"`
}

// rpcMux is the method table of one RPC ALPN, with each method's request frame limit.
type rpcMux struct {
	mu      sync.RWMutex
	methods map[string]method
	// maxFrame is the largest limit of any method: a frame above it is refused before its body is read.
	maxFrame int
	// streamsPerConn bounds the requests in flight on one connection (0: only the QUIC stream limit).
	streamsPerConn int
}

type method struct {
	h        Handler
	maxFrame int
}

func (m *rpcMux) lookup(name string) (method, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	h, ok := m.methods[name]
	return h, ok
}

func (m *rpcMux) frameLimit() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.maxFrame
}

// HandleRPC serves method on ALPNRPC, which only peers with a mesh certificate can reach. Its request frames are
// limited to DefaultRPCMaxFrame bytes.
func (e *Endpoint) HandleRPC(method string, h Handler) {
	e.HandleRPCLimit(method, DefaultRPCMaxFrame, h)
}

// HandleRPCLimit is HandleRPC for a method whose requests may be up to maxFrame bytes (at most MaxFrame).
func (e *Endpoint) HandleRPCLimit(method string, maxFrame int, h Handler) {
	e.handleRPC(ALPNRPC, &e.rpc, method, min(maxFrame, MaxFrame), 0, h)
}

// HandleJoinRPC serves method on ALPNJoin, which needs no client certificate: the joiner has none yet. The
// handler's peer is always "", and it must authenticate the request itself (the join token's secret). Requests
// are limited to JoinMaxFrame bytes, and a connection to joinStreamsPerConn requests at a time.
func (e *Endpoint) HandleJoinRPC(method string, h Handler) {
	e.handleRPC(ALPNJoin, &e.join, method, JoinMaxFrame, joinStreamsPerConn, h)
}

func (e *Endpoint) handleRPC(alpn string, mux **rpcMux, name string, maxFrame, streams int, h Handler) {
	e.mu.Lock()
	if *mux == nil {
		m := &rpcMux{methods: map[string]method{}, streamsPerConn: streams}
		*mux = m
		e.handlers[alpn] = func(conn *quic.Conn, peer string) { e.serveRPCConn(conn, peer, m) }
	}
	m := *mux
	e.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.methods[name] = method{h: h, maxFrame: maxFrame}
	m.maxFrame = max(m.maxFrame, maxFrame)
}

func (e *Endpoint) serveRPCConn(conn *quic.Conn, peer string, mux *rpcMux) {
	var slots chan struct{}
	if mux.streamsPerConn > 0 {
		slots = make(chan struct{}, mux.streamsPerConn)
	}
	for {
		st, err := conn.AcceptStream(conn.Context())
		if err != nil {
			return
		}
		if e.refuseStream(conn) { // membership is checked on every stream, not only at the handshake
			return
		}
		if slots != nil {
			select {
			case slots <- struct{}{}:
			default:
				// Over the limit: reset the stream at once, so its data is neither read nor buffered.
				st.CancelRead(codeCancelled)
				st.CancelWrite(codeCancelled)
				continue
			}
		}
		e.wg.Add(1) // the counter is positive (this handler holds it), so adding here cannot race Close's Wait
		go func() {
			defer e.wg.Done()
			if slots != nil {
				defer func() { <-slots }()
			}
			e.serveRPCStream(st, peer, mux)
		}()
	}
}

func (e *Endpoint) serveRPCStream(st *quic.Stream, peer string, mux *rpcMux) {
	resp := e.dispatch(st, peer, mux)
	frame, err := json.Marshal(resp)
	if err != nil {
		frame, _ = json.Marshal(rpcResponse{Error: &RemoteError{Code: CodeInternal, Message: "encode response: " + err.Error()}})
	}
	st.SetWriteDeadline(time.Now().Add(requestReadTimeout))
	if err := writeFrame(st, frame); err != nil {
		e.log.Debug("RPC response not delivered", "peer", peer, "err", err)
		st.CancelWrite(codeCancelled)
		return
	}
	st.Close()
}

func (e *Endpoint) dispatch(st *quic.Stream, peer string, mux *rpcMux) (resp rpcResponse) {
	st.SetReadDeadline(time.Now().Add(requestReadTimeout))
	raw, err := readFrame(st, mux.frameLimit())
	if err != nil {
		st.CancelRead(codeCancelled)
		return errorResponse(CodeBadRequest, "read request: "+err.Error())
	}
	var req rpcRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return errorResponse(CodeBadRequest, "decode request: "+err.Error())
	}
	m, ok := mux.lookup(req.Method)
	if !ok {
		return errorResponse(CodeUnknownMethod, fmt.Sprintf("unknown method %q (is the other node running the same version?)", req.Method))
	}
	if len(raw) > m.maxFrame {
		return errorResponse(CodeBadRequest, fmt.Sprintf("request of %d bytes exceeds the %d byte limit of %q", len(raw), m.maxFrame, req.Method))
	}
	h := m.h
	defer func() {
		// A handler bug answers this request with an error instead of taking the whole node down.
		if r := recover(); r != nil {
			e.log.Error("RPC handler panicked", "method", req.Method, "peer", peer, "panic", r, "stack", string(debug.Stack()))
			resp = errorResponse(CodeInternal, fmt.Sprintf("handler for %q failed", req.Method))
		}
	}()
	// The stream's context ends when the caller cancels (it stops reading) or the connection dies.
	result, err := h(st.Context(), peer, req.Body)
	if err != nil {
		code := CodeInternal
		var coded interface{ ErrorCode() string }
		if errors.As(err, &coded) && coded.ErrorCode() != "" {
			code = coded.ErrorCode()
		}
		return errorResponse(code, err.Error())
	}
	body, err := json.Marshal(result)
	if err != nil {
		return errorResponse(CodeInternal, fmt.Sprintf("encode result of %q: %v", req.Method, err))
	}
	return rpcResponse{Body: body}
}

func errorResponse(code, msg string) rpcResponse {
	return rpcResponse{Error: &RemoteError{Code: code, Message: msg}}
}

// readFrame reads one request or response frame of at most limit bytes, then expects the end of the stream: one
// request per stream. Memory grows with the bytes that really arrive, not with the length the header declares.
func readFrame(r io.Reader, limit int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if int64(n) > int64(limit) {
		return nil, fmt.Errorf("frame of %d bytes exceeds the %d byte limit", n, limit)
	}
	var body bytes.Buffer
	body.Grow(int(min(n, 64<<10)))
	if got, err := io.CopyN(&body, r, int64(n)); err != nil {
		return nil, fmt.Errorf("frame body: %w (%d of %d bytes)", err, got, n)
	}
	buf := body.Bytes()
	var extra [1]byte
	if m, err := io.ReadFull(r, extra[:]); m > 0 {
		return nil, errors.New("data after the frame; one frame per stream direction")
	} else if !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("end of frame: %w", err)
	}
	return buf, nil
}

func writeFrame(w io.Writer, body []byte) error {
	if len(body) > MaxFrame {
		return fmt.Errorf("frame of %d bytes exceeds the %d byte limit", len(body), MaxFrame)
	}
	var buf bytes.Buffer
	buf.Grow(4 + len(body))
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(body)))
	buf.Write(hdr[:])
	buf.Write(body)
	_, err := w.Write(buf.Bytes())
	return err
}

// Call sends one request to the node at addr over ALPNRPC and decodes the response into resp (which may be nil).
// An error from the remote handler is a *RemoteError. Call is not retried once the request may have been
// handled, since the method may not be idempotent. A cached connection is replaced by a fresh dial, once, when it
// is found dead before the stream opens, or when the peer answers the request with a stateless reset: the process
// now at addr (a restart of the node, which shares its reset key) has no state for the connection, so no handler
// saw the request. That is the common case after a crash: QUIC's keep-alive pings are too small to draw a reset,
// so a stale connection looks alive until the first request on it.
func (e *Endpoint) Call(ctx context.Context, addr, method string, req, resp any) error {
	for attempt := 0; ; attempt++ {
		conn, err := e.Dial(ctx, addr, ALPNRPC)
		if err != nil {
			return fmt.Errorf("call %s on %s: %w", method, addr, err)
		}
		st, err := conn.OpenStreamSync(ctx)
		if err != nil {
			var reset *quic.StatelessResetError
			if attempt == 0 && ctx.Err() == nil && (conn.Context().Err() != nil || errors.As(err, &reset)) {
				continue // the cached connection died (a restarted peer's reset may end it just now); Dial redials it
			}
			return fmt.Errorf("call %s on %s: open stream: %w", method, addr, err)
		}
		if err := roundTrip(ctx, st, method, req, resp); err != nil {
			var re *RemoteError
			if errors.As(err, &re) {
				return re
			}
			var reset *quic.StatelessResetError
			if attempt == 0 && ctx.Err() == nil && errors.As(err, &reset) {
				e.log.Debug("the peer restarted under a cached connection: calling again on a fresh one", "addr", addr, "method", method)
				continue
			}
			return fmt.Errorf("call %s on %s: %w", method, addr, err)
		}
		return nil
	}
}

// roundTrip writes one request on st, closes the send side, and reads the response.
func roundTrip(ctx context.Context, st *quic.Stream, method string, req, resp any) error {
	stop := context.AfterFunc(ctx, func() {
		st.CancelWrite(codeCancelled)
		st.CancelRead(codeCancelled)
	})
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	var body json.RawMessage
	if req != nil {
		b, err := json.Marshal(req)
		if err != nil {
			st.CancelWrite(codeCancelled)
			st.CancelRead(codeCancelled)
			return fmt.Errorf("encode request: %w", err)
		}
		body = b
	}
	frame, err := json.Marshal(rpcRequest{Method: method, Body: body})
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	if err := writeFrame(st, frame); err != nil {
		st.CancelRead(codeCancelled)
		return ctxErr(ctx, fmt.Errorf("send request: %w", err))
	}
	st.Close()
	raw, err := readFrame(st, MaxFrame)
	if err != nil {
		st.CancelRead(codeCancelled)
		return ctxErr(ctx, fmt.Errorf("read response: %w", err))
	}
	var r rpcResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	if r.Error != nil {
		return r.Error
	}
	if resp != nil && len(r.Body) > 0 {
		if err := json.Unmarshal(r.Body, resp); err != nil {
			return fmt.Errorf("decode response body into %T: %w", resp, err)
		}
	}
	return nil
}

// ctxErr reports the caller's cancellation rather than the stream error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}
