package transport

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// guardedServer serves RPC, Raft and join and counts every place a request byte could reach application code.
type guardedServer struct {
	e          *Endpoint
	ca         *CA
	rpcCalls   atomic.Int64
	raftConns  atomic.Int64
	raftStream atomic.Int64
	joinCalls  atomic.Int64
}

func newGuardedServer(t *testing.T) *guardedServer {
	ca := newTestCA(t, "mesh")
	g := &guardedServer{ca: ca, e: listenTest(t, newTestIdentity(t, ca, "server"), "")}
	g.e.HandleRPC("echo", func(_ context.Context, peer string, body json.RawMessage) (any, error) {
		g.rpcCalls.Add(1)
		return peer, nil
	})
	g.e.Handle(ALPNRaft, func(conn *quic.Conn, _ string) {
		g.raftConns.Add(1)
		for {
			st, err := conn.AcceptStream(conn.Context())
			if err != nil {
				return
			}
			g.raftStream.Add(1)
			st.CancelRead(0)
			st.Close()
		}
	})
	g.e.HandleJoinRPC("join", func(_ context.Context, peer string, body json.RawMessage) (any, error) {
		g.joinCalls.Add(1)
		if peer != "" {
			return nil, errors.New("join handler got a peer name")
		}
		var req struct{ Secret string }
		json.Unmarshal(body, &req)
		return map[string]string{"got": req.Secret}, nil
	})
	return g
}

func (g *guardedServer) assertUntouched(t *testing.T) {
	t.Helper()
	if n := g.e.acceptedTotal.Load(); n != 0 {
		t.Errorf("server accepted %d connections", n)
	}
	if g.rpcCalls.Load() != 0 || g.raftConns.Load() != 0 || g.raftStream.Load() != 0 || g.joinCalls.Load() != 0 {
		t.Errorf("handlers reached: rpc %d, raft conns %d, raft streams %d, join %d",
			g.rpcCalls.Load(), g.raftConns.Load(), g.raftStream.Load(), g.joinCalls.Load())
	}
}

// rawAttempt dials like a stranger would and, if its side of the handshake completes (a TLS 1.3 client finishes
// before the server has checked its certificate), tries to send a request. It reports whether a response came.
func rawAttempt(t *testing.T, addr string, tlsConf *tls.Config) (answered bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, tlsConf, &quic.Config{HandshakeIdleTimeout: 3 * time.Second})
	if err != nil {
		t.Logf("refused in handshake: %v", err)
		return false
	}
	defer conn.CloseWithError(0, "")
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Logf("refused after client-side handshake: %v", err)
		return false
	}
	writeFrame(st, []byte(`{"method":"echo"}`))
	st.Close()
	b, err := io.ReadAll(st)
	if err != nil {
		t.Logf("refused after client-side handshake: %v", err)
		return false
	}
	t.Logf("server answered %q", b)
	return true
}

func TestRefuseClientWithoutCertificate(t *testing.T) {
	g := newGuardedServer(t)
	for _, alpns := range [][]string{{ALPNRPC}, {ALPNRaft}, {ALPNJoin, ALPNRPC}, {ALPNRPC, ALPNJoin}} {
		if rawAttempt(t, g.e.Addr().String(), &tls.Config{NextProtos: alpns, InsecureSkipVerify: true}) {
			t.Fatalf("ALPN %v without a client certificate got an answer", alpns)
		}
	}
	g.assertUntouched(t)
	g.checkStillServes(t)
}

func TestRefuseClientFromAnotherCA(t *testing.T) {
	g := newGuardedServer(t)
	stranger := newTestIdentity(t, newTestCA(t, "other"), "stranger")
	for _, alpn := range []string{ALPNRPC, ALPNRaft} {
		conf := &tls.Config{
			NextProtos:         []string{alpn},
			InsecureSkipVerify: true,
			// Certificates alone would not be sent: crypto/tls withholds a certificate the server's acceptable
			// CA list does not name. Force it, as an attacker would.
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &stranger.Cert, nil },
		}
		if rawAttempt(t, g.e.Addr().String(), conf) {
			t.Fatalf("ALPN %s with another CA's certificate got an answer", alpn)
		}
	}
	// The same through the endpoint API: a stranger's endpoint cannot call, and cannot be called.
	se := listenTest(t, stranger, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := se.Call(ctx, g.e.Addr().String(), "echo", nil, nil); err == nil {
		t.Fatal("an endpoint from another mesh called RPC")
	}
	se.HandleRPC("echo", func(context.Context, string, json.RawMessage) (any, error) {
		t.Error("a mesh node's call reached a server of another mesh")
		return nil, nil
	})
	member := listenTest(t, newTestIdentity(t, g.ca, "member"), "")
	if err := member.Call(ctx, se.Addr().String(), "echo", nil, nil); err == nil {
		t.Fatal("a mesh node accepted a server certificate from another CA")
	}
	g.assertUntouched(t)
	g.checkStillServes(t)
}

func TestRefuseUnservedALPN(t *testing.T) {
	g := newGuardedServer(t)
	member := listenTest(t, newTestIdentity(t, g.ca, "member"), "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := member.Dial(ctx, g.e.Addr().String(), ALPNBlob); err == nil {
		t.Fatal("dial of an ALPN without a handler succeeded")
	}
	g.assertUntouched(t)
}

func TestCallJoin(t *testing.T) {
	g := newGuardedServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addr := g.e.Addr().String()

	other := newTestCA(t, "other")
	err := CallJoin(ctx, addr, other.Hash(), "join", map[string]string{"secret": "s3cret"}, nil)
	var mm *CAMismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("wrong CA hash: got %v (%T), want *CAMismatchError", err, err)
	}
	if mm.Want != other.Hash() || mm.Got != g.ca.Hash() || mm.Forged {
		t.Fatalf("mismatch %+v", mm)
	}
	t.Logf("mismatch message: %v", mm)
	g.assertUntouched(t)

	// A server presenting the pinned CA's certificate next to a leaf another CA signed is caught too.
	impostor := newTestIdentity(t, other, "server")
	impostor.Cert.Certificate = [][]byte{impostor.Cert.Certificate[0], g.ca.Cert.Raw}
	ie := listenTest(t, impostor, "")
	ie.HandleJoinRPC("join", func(context.Context, string, json.RawMessage) (any, error) {
		t.Error("the join request reached an impostor")
		return nil, nil
	})
	err = CallJoin(ctx, ie.Addr().String(), g.ca.Hash(), "join", nil, nil)
	if !errors.As(err, &mm) || !mm.Forged {
		t.Fatalf("impostor: got %v, want a forged CAMismatchError", err)
	}

	if err := CallJoin(ctx, addr, "not-a-hash", "join", nil, nil); err == nil || errors.As(err, &mm) {
		t.Fatalf("malformed hash: %v", err)
	}

	var resp map[string]string
	if err := CallJoin(ctx, addr, g.ca.Hash(), "join", map[string]string{"secret": "s3cret"}, &resp); err != nil {
		t.Fatal(err)
	}
	if resp["got"] != "s3cret" || g.joinCalls.Load() != 1 {
		t.Fatalf("join response %v, calls %d", resp, g.joinCalls.Load())
	}
	// Upper case hashes, as a user might paste them, work as well.
	if err := CallJoin(ctx, addr, upper(g.ca.Hash()), "join", nil, nil); err != nil {
		t.Fatal(err)
	}
	// Join RPC methods are not reachable on the mesh RPC ALPN, and mesh methods not on the join ALPN.
	var re *RemoteError
	if err := CallJoin(ctx, addr, g.ca.Hash(), "echo", nil, nil); !errors.As(err, &re) || re.Code != CodeUnknownMethod {
		t.Fatalf("mesh method over join: %v", err)
	}
	if g.rpcCalls.Load() != 0 {
		t.Fatal("a join connection reached a mesh RPC handler")
	}
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// checkStillServes shows that the refusals came from authentication, not from a broken server: a member gets in.
func (g *guardedServer) checkStillServes(t *testing.T) {
	t.Helper()
	member := listenTest(t, newTestIdentity(t, g.ca, "member"), "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var peer string
	if err := member.Call(ctx, g.e.Addr().String(), "echo", nil, &peer); err != nil {
		t.Fatal(err)
	}
	if peer != "member" || g.rpcCalls.Load() != 1 {
		t.Fatalf("peer %q, calls %d", peer, g.rpcCalls.Load())
	}
}
