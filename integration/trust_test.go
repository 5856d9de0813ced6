package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

// TestProcessDepartedNodeCertificateRefused runs four node processes; one leaves with `node leave`. Its
// certificate and key, still in its data dir, are then used from outside against every other node's rpc, raft and
// blob ALPNs: each is refused from the first try after the departure, a connection it opened while a member is
// closed within a second,
// and a forwarded write carrying the admin token's id (which a member's state holds) is not committed.
// Before issue 12, that certificate (valid 5 years) created an app and minted an admin token after the leave.
func TestProcessDepartedNodeCertificateRefused(t *testing.T) {
	needProcesses(t)
	m := startPmesh(t, 4)
	leader := m.waitHealthy(m.nodes...)
	var gone *pnode
	for _, n := range m.nodes {
		if n != leader {
			gone = n
			break
		}
	}
	tlsDir := filepath.Join(gone.dir, "tls")
	spy := listenAs(t, tlsDir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open, err := spy.Dial(ctx, leader.quic(), transport.ALPNRPC)
	if err != nil {
		t.Fatalf("a member's certificate was refused before it left: %v", err)
	}

	cli := startProc(t, "leave-cli", "leave", "--addr", gone.api(), "--token", m.admin)
	if code, ok := cli.Wait(60 * time.Second); !ok || code != 0 {
		t.Fatalf("node leave: exited=%v code=%d\n%s%s", ok, code, cli.Stdout(), cli.Stderr())
	}
	left := time.Now()
	select {
	case <-open.Context().Done():
	case <-time.After(time.Until(left.Add(time.Second))):
		t.Error("the connection the departed node opened as a member was still open a second after it left")
	}

	// The files stay in the departed node's data dir; a fresh endpoint presents them to every other member.
	for _, n := range m.live() {
		if n == gone {
			continue // it is on its way out
		}
		for _, alpn := range []string{transport.ALPNRPC, transport.ALPNRaft, transport.ALPNBlob} {
			start := time.Now()
			if err := attempt(t, tlsDir, n.quic(), alpn); err == nil {
				t.Errorf("%s accepted the departed node's certificate on %s", n.name, alpn)
			} else {
				t.Logf("%s refused it on %s after %v: %v", n.name, alpn, time.Since(start).Round(time.Millisecond), firstLine(err))
			}
		}
	}
	t.Logf("all refusals done %v after the departure", time.Since(left).Round(time.Millisecond))
	if code, ok := gone.proc.Wait(30 * time.Second); !ok || code != 0 {
		t.Fatalf("%s after leaving: exited=%v code=%d", gone.name, ok, code)
	}

	adminID, _, _ := strings.Cut(m.admin, ".")
	body, err := raftfsm.Encode(&raftfsm.AppPut{App: raftfsm.App{Name: "evil", Repo: "https://example.com/evil.git"}, Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := spy.Call(ctx, leader.quic(), "apply", map[string]any{"data": body, "token": adminID}, nil); err == nil {
		t.Fatal("the departed node's certificate committed a write")
	}
	if has, err := m.hasApp(leader, "evil", true); err != nil || has {
		t.Fatalf("app created through a departed node's certificate: %v %v", has, err)
	}
}

// listenAs starts a QUIC endpoint with the identity stored in tlsDir.
func listenAs(t *testing.T, tlsDir string) *transport.Endpoint {
	t.Helper()
	id, err := transport.LoadIdentity(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := transport.Listen(transport.Config{Bind: "127.0.0.1:0", Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

// attempt connects to addr for alpn with the identity in tlsDir and opens a stream. It returns nil only if the
// connection is still up a second later: a TLS 1.3 client may finish its handshake before the server has refused
// its certificate, and the refusal then closes the connection.
func attempt(t *testing.T, tlsDir, addr, alpn string) error {
	t.Helper()
	ep := listenAs(t, tlsDir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := ep.Dial(ctx, addr, alpn)
	if err != nil {
		return err
	}
	if _, err := conn.OpenStreamSync(ctx); err != nil {
		return err
	}
	select {
	case <-conn.Context().Done():
		return context.Cause(conn.Context())
	case <-time.After(time.Second):
		return nil
	}
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(fmt.Sprint(err), "\n")
	return s
}
