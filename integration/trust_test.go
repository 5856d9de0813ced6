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

	cli := startProc(t, "leave-cli", "leave", gone.name, "--yes", "--addr", gone.api(), "--token", m.admin)
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

// TestProcessCARotationAndRestart rotates the CA of a three-process mesh with the CLI, with writes through every
// node at each stage, then stops a node with TERM and starts it again on the identity it stored (the new CA's
// certificate), and kills another with SIGKILL and restarts it: both rejoin and take writes.
func TestProcessCARotationAndRestart(t *testing.T) {
	needProcesses(t)
	m := startPmesh(t, 3)
	leader := m.waitHealthy(m.nodes...)
	writes := 0
	writeAll := func(stage string) {
		t.Helper()
		for _, n := range m.live() {
			writes++
			if err := m.createApp(n, fmt.Sprintf("app%d", writes)); err != nil {
				t.Fatalf("write through %s %s: %v", n.name, stage, err)
			}
		}
	}
	cli := func(args ...string) string {
		t.Helper()
		p := startProc(t, "cli", append(args, "--addr", leader.api(), "--token", m.admin)...)
		if code, ok := p.Wait(60 * time.Second); !ok || code != 0 {
			t.Fatalf("node %v: exited=%v code=%d\n%s%s", args, ok, code, p.Stdout(), p.Stderr())
		}
		return p.Stdout()
	}
	before, err := transport.LoadIdentity(filepath.Join(m.nodes[1].dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	if err := before.Save(filepath.Join(m.dir, "old-tls")); err != nil { // a copy of a member's old identity
		t.Fatal(err)
	}
	cli("ca", "rotate")
	writeAll("after the rotation started")
	m.eventually(30*time.Second, "every member to hold a certificate from the next CA", func() (bool, string) {
		out := cli("ca", "status", "--json")
		return strings.Contains(out, `"next_ca_hash"`) && !strings.Contains(out, `"missing"`), out
	})
	out := cli("ca", "rotate", "--finish", "--grace", "2s")
	if !strings.Contains(out, "rotation finished") {
		t.Errorf("node ca rotate --finish printed %q", out)
	}
	writeAll("after the finish")
	m.eventually(30*time.Second, "every member to store its certificate from the new CA", func() (bool, string) {
		for _, n := range m.nodes {
			id, err := transport.LoadIdentity(filepath.Join(n.dir, "tls"))
			if err != nil {
				return false, err.Error()
			}
			if id.CAHash == before.CAHash || strings.Contains(string(id.CAPEM), strings.TrimSpace(string(before.CAPEM))) {
				return false, n.name + " still trusts or presents the old CA"
			}
		}
		return true, ""
	})
	// A certificate from the old CA is now refused.
	if err := attempt(t, filepath.Join(m.dir, "old-tls"), leader.quic(), transport.ALPNRPC); err == nil {
		t.Error("a certificate from the replaced CA was accepted")
	}

	var stopped, killed *pnode
	for _, n := range m.nodes {
		switch {
		case n == leader:
		case stopped == nil:
			stopped = n
		default:
			killed = n
		}
	}
	stopped.proc.Stop()
	m.restart(stopped)
	killed.proc.Kill()
	m.restart(killed)
	m.waitHealthy(m.nodes...)
	writeAll("after the restarts")
}
