package transport

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/shoal-ci/shoal/internal/testutil"
)

// revocationList is a PeerCheck a test can change: the names in it are refused.
type revocationList struct {
	mu      sync.Mutex
	revoked map[string]bool
}

func (l *revocationList) revoke(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.revoked == nil {
		l.revoked = map[string]bool{}
	}
	l.revoked[name] = true
}

func (l *revocationList) check(leaf *x509.Certificate) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.revoked[leaf.Subject.CommonName] {
		return errors.New("removed from the mesh")
	}
	return nil
}

func callEcho(e *Endpoint, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out string
	return e.Call(ctx, addr, "echo", "x", &out)
}

// A peer that the check refuses is turned away during the handshake, on RPC, Raft and blob alike, and no
// handler runs.
func TestPeerCheckRefusesAtHandshake(t *testing.T) {
	ca := newTestCA(t, "mesh")
	srv := listenTest(t, newTestIdentity(t, ca, "server"), "")
	var list revocationList
	srv.SetPeerCheck(list.check)
	srv.HandleRPC("echo", func(_ context.Context, peer string, _ json.RawMessage) (any, error) { return peer, nil })
	srv.Handle(ALPNBlob, func(conn *quic.Conn, _ string) { <-conn.Context().Done() })
	srv.RaftLayer()
	list.revoke("gone")

	gone := listenTest(t, newTestIdentity(t, ca, "gone"), "")
	if err := callEcho(gone, srv.Addr().String()); err == nil {
		t.Fatal("a refused peer's RPC was answered")
	}
	for _, alpn := range []string{ALPNRaft, ALPNBlob, ALPNRPC} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := gone.Dial(ctx, srv.Addr().String(), alpn)
		cancel()
		if err != nil {
			continue
		}
		// A TLS 1.3 client finishes its side before the server has checked its certificate; the server's
		// refusal then closes the connection.
		select {
		case <-conn.Context().Done():
		case <-time.After(3 * time.Second):
			t.Errorf("%s: a refused peer's connection stayed open", alpn)
		}
	}
	if n := srv.acceptedTotal.Load(); n != 0 {
		t.Errorf("server accepted %d connections from a refused peer", n)
	}
	// A member is still served.
	if err := callEcho(listenTest(t, newTestIdentity(t, ca, "member"), ""), srv.Addr().String()); err != nil {
		t.Fatalf("a member was refused: %v", err)
	}
}

// The dialing side applies the check to the server too: a removed node cannot pose as a server either.
func TestPeerCheckOnTheClientSide(t *testing.T) {
	ca := newTestCA(t, "mesh")
	srv := listenTest(t, newTestIdentity(t, ca, "gone"), "")
	srv.HandleRPC("echo", func(_ context.Context, peer string, _ json.RawMessage) (any, error) { return peer, nil })
	cli := listenTest(t, newTestIdentity(t, ca, "member"), "")
	var list revocationList
	list.revoke("gone")
	cli.SetPeerCheck(list.check)
	err := callEcho(cli, srv.Addr().String())
	if err == nil {
		t.Fatal("the client talked to a server the check refuses")
	}
	t.Logf("refused as expected: %v", err)
}

// A connection opened while the peer was a member serves no further stream once it is not, and Revalidate
// closes it outright.
func TestRevokedPeerLosesItsOpenConnections(t *testing.T) {
	ca := newTestCA(t, "mesh")
	srv := listenTest(t, newTestIdentity(t, ca, "server"), "")
	var list revocationList
	srv.SetPeerCheck(list.check)
	srv.HandleRPC("echo", func(_ context.Context, peer string, _ json.RawMessage) (any, error) { return peer, nil })
	peer := listenTest(t, newTestIdentity(t, ca, "peer"), "")
	if err := callEcho(peer, srv.Addr().String()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := peer.Dial(ctx, srv.Addr().String(), ALPNRPC)
	if err != nil {
		t.Fatal(err)
	}

	list.revoke("peer")
	// Without Revalidate, the next stream on the open connection is refused and the connection closed.
	if err := callEcho(peer, srv.Addr().String()); err == nil {
		t.Fatal("a revoked peer's stream on an open connection was served")
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked peer's connection stayed open")
	}

	// Revalidate closes connections at once, without waiting for a stream.
	other := listenTest(t, newTestIdentity(t, ca, "other"), "")
	if err := callEcho(other, srv.Addr().String()); err != nil {
		t.Fatal(err)
	}
	oconn, err := other.Dial(ctx, srv.Addr().String(), ALPNRPC)
	if err != nil {
		t.Fatal(err)
	}
	list.revoke("other")
	if n := srv.Revalidate(); n != 1 {
		t.Errorf("Revalidate closed %d connections, want 1", n)
	}
	select {
	case <-oconn.Context().Done():
	case <-time.After(time.Second):
		t.Fatal("Revalidate did not close the revoked peer's connection within a second")
	}
}

// A certificate that expires while its connection is open is refused at the next stream.
func TestExpiredCertificateRefusedOnOpenConnection(t *testing.T) {
	ca := newTestCA(t, "mesh")
	srv := listenTest(t, newTestIdentity(t, ca, "server"), "")
	srv.HandleRPC("echo", func(_ context.Context, peer string, _ json.RawMessage) (any, error) { return peer, nil })
	key, keyPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := PublicKeyPEM(key)
	// A certificate with 2 s of life.
	certPEM, err := ca.SignNode("short", pub, []net.IP{net.IPv4(127, 0, 0, 1)}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity("short", ca.CertPEM, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	peer := listenTest(t, id, "")
	if err := callEcho(peer, srv.Addr().String()); err != nil {
		t.Fatal(err)
	}
	testutil.Until(t, 10*time.Second, "the certificate to expire", func() bool { return time.Now().After(id.Cert.Leaf.NotAfter) })
	err = callEcho(peer, srv.Addr().String())
	if err == nil {
		t.Fatal("an expired certificate's open connection was still served")
	}
	if IsNotMember(err) {
		t.Errorf("an expired certificate was reported as a departed member: %v", err)
	}
}

// A call in flight when the server learns that its caller departed fails with an error IsNotMember recognises:
// a node whose own departure was applied before the answer reached it knows from this that it is out.
func TestDepartedCallerIsToldItIsNotAMember(t *testing.T) {
	ca := newTestCA(t, "mesh")
	srv := listenTest(t, newTestIdentity(t, ca, "server"), "")
	var list revocationList
	srv.SetPeerCheck(list.check)
	started, release := make(chan struct{}), make(chan struct{})
	srv.HandleRPC("slow", func(ctx context.Context, _ string, _ json.RawMessage) (any, error) {
		close(started)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "late", nil
	})
	peer := listenTest(t, newTestIdentity(t, ca, "peer"), "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		var out string
		done <- peer.Call(ctx, srv.Addr().String(), "slow", nil, &out)
	}()
	<-started
	list.revoke("peer")
	if n := srv.Revalidate(); n != 1 {
		t.Errorf("Revalidate closed %d connections, want 1", n)
	}
	close(release)
	err := <-done
	if err == nil || !IsNotMember(err) {
		t.Fatalf("the departed caller's call ended with %v, want an error IsNotMember recognises", err)
	}
	if IsNotMember(errors.New("application error 0x5")) {
		t.Error("IsNotMember matched a plain error")
	}
}

// SetIdentity makes new handshakes present the renewed certificate.
func TestSetIdentityServesTheRenewedCertificate(t *testing.T) {
	ca := newTestCA(t, "mesh")
	first := newTestIdentity(t, ca, "server")
	srv := listenTest(t, first, "")
	srv.HandleRPC("echo", func(_ context.Context, peer string, _ json.RawMessage) (any, error) { return peer, nil })
	renewed := newTestIdentity(t, ca, "server")
	if err := srv.SetIdentity(renewed); err != nil {
		t.Fatal(err)
	}
	if err := srv.SetIdentity(newTestIdentity(t, ca, "someone-else")); err == nil {
		t.Fatal("SetIdentity accepted another node's certificate")
	}
	cli := listenTest(t, newTestIdentity(t, ca, "client"), "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := cli.Dial(ctx, srv.Addr().String(), ALPNRPC)
	if err != nil {
		t.Fatal(err)
	}
	got := conn.ConnectionState().TLS.PeerCertificates[0].SerialNumber
	if got.Cmp(renewed.Cert.Leaf.SerialNumber) != 0 {
		t.Fatalf("server presented serial %x, want the renewed %x", got, renewed.Cert.Leaf.SerialNumber)
	}
}
