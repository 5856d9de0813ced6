package transport

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
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
	eventually(t, 30*time.Second, "a call to reach the restarted server", func() bool {
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

	eventually(t, 25*time.Second, "a call to reach the restarted server before the idle timeout", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		defer ccancel()
		return cli.Call(cctx, addr, "ping", nil, nil) == nil
	})
	var reset *quic.StatelessResetError
	if cause := context.Cause(old.Context()); !errors.As(cause, &reset) {
		t.Fatalf("the stale connection ended with %v, want a stateless reset from the restarted node", cause)
	}
}
