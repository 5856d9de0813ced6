package transport

import (
	"context"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// crash drops an endpoint's socket without CONNECTION_CLOSE, as kill -9 does: its peers hear nothing more.
func crash(t *testing.T, e *Endpoint) {
	e.cancel()
	e.tr.Close()
	e.udp.Close()
	t.Cleanup(func() { e.Close() }) // reaps the handler goroutines once their connections time out locally
}

// TestBlobConnectionsNoticeASilentPeer: a dialed piece-exchange connection ends about BlobIdleTimeout after its
// peer goes silent, while an RPC connection to the same peer keeps the endpoint's 30 s idle timeout. The accepting
// end takes the dialer's timeout too, but quic-go raises a peer's advertised idle timeout to at least 5 s, so it
// notices within about 7 s (the swarm's server has its own stall deadline on piece writes for that reason).
func TestBlobConnectionsNoticeASilentPeer(t *testing.T) {
	ca := newTestCA(t, "test")
	for _, silent := range []string{"server", "client"} {
		t.Run("silent "+silent, func(t *testing.T) {
			srv := listenTest(t, newTestIdentity(t, ca, "server"), "")
			cli := listenTest(t, newTestIdentity(t, ca, "client"), "")
			accepted := make(chan *quic.Conn, 2)
			hold := func(conn *quic.Conn, _ string) {
				accepted <- conn
				<-conn.Context().Done()
			}
			srv.Handle(ALPNBlob, hold)
			srv.Handle(ALPNRPC, hold)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			blob, err := cli.Dial(ctx, srv.Addr().String(), ALPNBlob)
			if err != nil {
				t.Fatal(err)
			}
			rpc, err := cli.Dial(ctx, srv.Addr().String(), ALPNRPC)
			if err != nil {
				t.Fatal(err)
			}
			// Open a stream each way so both ends have seen the handshake complete.
			var srvBlob *quic.Conn
			for range 2 {
				c := <-accepted
				if c.ConnectionState().TLS.NegotiatedProtocol == ALPNBlob {
					srvBlob = c
				}
			}
			// Quiet for longer than the idle timeout: the keep-alives hold the connection open.
			time.Sleep(2 * BlobIdleTimeout) // the behaviour under test is the passage of time without traffic
			if blob.Context().Err() != nil || srvBlob.Context().Err() != nil {
				t.Fatalf("an idle blob connection between live endpoints closed: %v / %v",
					context.Cause(blob.Context()), context.Cause(srvBlob.Context()))
			}
			survivor := blob
			if silent == "server" {
				crash(t, srv)
			} else {
				crash(t, cli)
				survivor = srvBlob
			}
			start := time.Now()
			limit := 4 * BlobIdleTimeout // the dialer: its own idle timeout, and a keep-alive interval
			if silent == "client" {
				limit = 12 * time.Second // the accepting end: quic-go's 5 s floor on a peer's timeout, plus a keep-alive
			}
			select {
			case <-survivor.Context().Done():
			case <-time.After(limit):
				t.Fatalf("the %s's blob connection is still open %v after its peer went silent", map[string]string{"server": "client", "client": "server"}[silent], limit)
			}
			took := time.Since(start)
			t.Logf("blob connection ended %v after the %s went silent (idle timeout %v): %v", took.Round(time.Millisecond), silent, BlobIdleTimeout, context.Cause(survivor.Context()))
			if silent == "server" && rpc.Context().Err() != nil {
				t.Fatalf("the RPC connection closed with the blob one (%v): only piece exchange gets the short idle timeout", context.Cause(rpc.Context()))
			}
		})
	}
}
