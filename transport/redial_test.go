package transport

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/shoal-ci/shoal/internal/testutil"
)

// TestRedialAfterRestart restarts the server on the same port, as a node restart does, and checks that the client
// drops its dead cached connection and reaches the new process.
func TestRedialAfterRestart(t *testing.T) {
	ca := newTestCA(t, "test")
	srvID := newTestIdentity(t, ca, "server")
	srv := listenTest(t, srvID, "")
	cli := listenTest(t, newTestIdentity(t, ca, "client"), "")
	serve := func(e *Endpoint, gen int) {
		e.HandleRPC("gen", func(context.Context, string, json.RawMessage) (any, error) { return gen, nil })
	}
	serve(srv, 1)
	addr := srv.Addr().String()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var gen int
	if err := cli.Call(ctx, addr, "gen", nil, &gen); err != nil || gen != 1 {
		t.Fatalf("first call: %d, %v", gen, err)
	}
	old, err := cli.Dial(ctx, addr, ALPNRPC)
	if err != nil {
		t.Fatal(err)
	}

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	srv2 := listenTest(t, srvID, addr)
	serve(srv2, 2)

	// Poll: the old connection's close notice may still be in flight when the first call goes out.
	testutil.Until(t, 30*time.Second, "a call to reach the restarted server", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		err := cli.Call(cctx, addr, "gen", nil, &gen)
		if err != nil {
			t.Logf("call: %v", err)
		}
		return err == nil && gen == 2
	})
	if old.Context().Err() == nil {
		t.Fatal("the old cached connection is still open")
	}
	now, err := cli.Dial(ctx, addr, ALPNRPC)
	if err != nil || now == old {
		t.Fatalf("dial after restart: same conn %v, %v", now == old, err)
	}
}

// TestRedialAfterCrash loses the server without a close notice: the restarted process shares the node key, so its
// stateless reset ends the client's stale connection at its next packet instead of after the idle timeout.
func TestRedialAfterCrash(t *testing.T) {
	ca := newTestCA(t, "test")
	srvID := newTestIdentity(t, ca, "server")
	srv := listenTest(t, srvID, "")
	cli := listenTest(t, newTestIdentity(t, ca, "client"), "")
	srv.HandleRPC("ping", func(context.Context, string, json.RawMessage) (any, error) { return "pong", nil })
	addr := srv.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cli.Call(ctx, addr, "ping", nil, nil); err != nil {
		t.Fatal(err)
	}
	old, err := cli.Dial(ctx, addr, ALPNRPC)
	if err != nil {
		t.Fatal(err)
	}
	// Crash: drop the socket without CONNECTION_CLOSE. Transport.Close does not notify peers.
	srv.cancel()
	srv.tr.Close()
	srv.udp.Close()
	t.Cleanup(func() { srv.Close() }) // reaps the handler goroutines once their connections time out locally

	srv2 := listenTest(t, srvID, addr)
	srv2.HandleRPC("ping", func(context.Context, string, json.RawMessage) (any, error) { return "pong", nil })

	// The first call goes out on the stale connection: keep-alive pings are too small to draw a stateless reset,
	// so the connection looks alive until the request itself does. Call retries on a fresh connection, so the
	// caller never sees the reset (a node reading a deployment log from a restarted peer failed on it).
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	if err := cli.Call(cctx, addr, "ping", nil, nil); err != nil {
		t.Fatalf("the first call after the peer restarted: %v", err)
	}
	var reset *quic.StatelessResetError
	if cause := context.Cause(old.Context()); !errors.As(cause, &reset) {
		t.Fatalf("the stale connection ended with %v, want a stateless reset from the restarted node", cause)
	}
}

// TestPendingDialRestartsWhenPeerCallsBack: a dial to a peer that is down waits in QUIC's handshake, whose
// Initial packets are resent after growing back-offs: a peer restarted in between would be reached only at the
// next resend, or not at all before the handshake's idle timeout (3 s) ends the dial. When the restarted peer reaches
// this endpoint first (Raft's restarted follower asking for votes, gossip), the pending dial starts afresh and
// completes in a round trip (issue 13: a restarted node is contacted by the leader within a heartbeat).
func TestPendingDialRestartsWhenPeerCallsBack(t *testing.T) {
	ca := newTestCA(t, "test")
	srvID := newTestIdentity(t, ca, "server")
	srv := listenTest(t, srvID, "")
	cli := listenTest(t, newTestIdentity(t, ca, "client"), "")
	cli.HandleRPC("ping", func(context.Context, string, json.RawMessage) (any, error) { return "pong", nil })
	addr := srv.Addr().String()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dialed := make(chan error, 1)
	go func() {
		_, err := cli.Dial(ctx, addr, ALPNRPC)
		dialed <- err
	}()
	// Set up the case: let the pending handshake pass its last resend before the idle timeout (3 s), so that
	// without a fresh handshake the dial would fail at 3 s, however soon the peer is back. This pause waits for
	// no condition.
	time.Sleep(2200 * time.Millisecond)

	srv2 := listenTest(t, srvID, addr)
	srv2.HandleRPC("ping", func(context.Context, string, json.RawMessage) (any, error) { return "pong", nil })
	if err := srv2.Call(ctx, cli.Addr().String(), "ping", nil, nil); err != nil {
		t.Fatalf("the restarted peer calls the client: %v", err)
	}
	back := time.Now()
	select {
	case err := <-dialed:
		if err != nil {
			t.Fatalf("the pending dial failed: %v", err)
		}
		t.Logf("the pending dial completed %s after the peer called back", time.Since(back))
	case <-time.After(600 * time.Millisecond):
		t.Fatal("the pending dial did not complete within 600 ms of the restarted peer calling back: it waited for a resend")
	}
}
