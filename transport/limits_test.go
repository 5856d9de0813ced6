package transport

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/shoal-ci/shoal/internal/testtier"
	"github.com/shoal-ci/shoal/internal/testutil"
)

// dialStranger opens a join connection without a certificate, from the UDP socket conn (nil: a fresh one on
// 127.0.0.1), as anyone on the network can.
func dialStranger(ctx context.Context, addr string, from net.PacketConn) (*quic.Conn, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{ALPNJoin}, InsecureSkipVerify: true}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	if from == nil {
		return quic.DialAddr(ctx, addr, tlsConf, &quic.Config{HandshakeIdleTimeout: 3 * time.Second})
	}
	return quic.Dial(ctx, from, ua, tlsConf, &quic.Config{HandshakeIdleTimeout: 3 * time.Second})
}

// A stranger on the join ALPN cannot make the node hold memory by declaring large frames on many streams: the
// frame limit is 64 KiB, memory follows the bytes really sent, and streams past two per connection are reset.
func TestJoinALPNBoundsFramesAndStreams(t *testing.T) {
	g := newGuardedServer(t)
	addr := g.e.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	conn, err := dialStranger(ctx, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	const streams = 40
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxFrame) // the old limit: 16 MiB declared per stream
	var sts []*quic.Stream
	for range streams {
		st, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write(append(hdr[:], make([]byte, 1024)...)); err != nil {
			t.Fatal(err)
		}
		sts = append(sts, st)
	}
	// Every stream ends promptly: refused for its declared size, or reset as one too many. None stays open
	// waiting for 16 MiB.
	var refused, reset int
	for _, st := range sts {
		st.SetReadDeadline(time.Now().Add(20 * time.Second))
		raw, err := readFrame(st, MaxFrame)
		var se *quic.StreamError
		switch {
		case errors.As(err, &se):
			reset++
		case err == nil && strings.Contains(string(raw), "exceeds the 65536 byte limit"):
			refused++
		default:
			t.Fatalf("stream answered %q, %v; want a refusal or a reset", raw, err)
		}
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d streams declaring 16 MiB each: %d refused, %d reset; heap grew %d KiB", streams, refused, reset, grew>>10)
	if refused == 0 || reset == 0 {
		t.Fatalf("refused %d, reset %d: want both (the frame limit and the per-connection stream limit)", refused, reset)
	}
	if grew > 32<<20 {
		t.Fatalf("the heap grew by %d MiB for frames that were never sent", grew>>20)
	}
	if g.joinCalls.Load() != 0 {
		t.Fatal("an oversized join frame reached the handler")
	}
	// A real join still gets through.
	if err := CallJoin(ctx, addr, g.ca.Hash(), "join", map[string]string{"secret": "s"}, nil); err != nil {
		t.Fatal(err)
	}
}

// Authenticated methods have their own request limits: a member cannot send a method more than it takes.
func TestRPCFrameLimitPerMethod(t *testing.T) {
	ca := newTestCA(t, "test")
	srv := listenTest(t, newTestIdentity(t, ca, "server"), "")
	cli := listenTest(t, newTestIdentity(t, ca, "client"), "")
	echo := func(_ context.Context, _ string, body json.RawMessage) (any, error) { return len(body), nil }
	srv.HandleRPC("small", echo)
	srv.HandleRPCLimit("large", 1<<20, echo)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	body := strings.Repeat("x", 100<<10)
	var n int
	if err := cli.Call(ctx, srv.Addr().String(), "large", body, &n); err != nil || n < len(body) {
		t.Fatalf("large: %d, %v", n, err)
	}
	var re *RemoteError
	err := cli.Call(ctx, srv.Addr().String(), "small", body, &n)
	if !errors.As(err, &re) || re.Code != CodeBadRequest || !strings.Contains(re.Message, `limit of "small"`) {
		t.Fatalf("small with 100 KiB: %v, want a bad_request naming the limit", err)
	}
}

// A source that opens handshakes faster than its rate is refused once it has proven its address; another source
// is not affected, and the first gets in again once its bucket refills.
func TestHandshakeRateLimitPerSource(t *testing.T) {
	ca := newTestCA(t, "mesh")
	// A small bucket that refills slowly, so that the count does not depend on how fast this machine is.
	const burst = 16
	e, err := Listen(Config{Bind: "127.0.0.1:0", Identity: newTestIdentity(t, ca, "server"), Logger: testLogger(t),
		HandshakeBurst: burst, HandshakeRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	e.HandleJoinRPC("join", func(context.Context, string, json.RawMessage) (any, error) { return nil, nil })
	addr := e.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	flood, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	tr := &quic.Transport{Conn: flood}
	defer tr.Close()

	var ok, refused int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 40 {
				c, err := dialStrangerVia(ctx, tr, addr)
				mu.Lock()
				if err != nil {
					refused++
				} else {
					ok++
				}
				mu.Unlock()
				if c != nil {
					c.CloseWithError(0, "")
				}
			}
		})
	}
	wg.Wait()
	t.Logf("320 handshakes from one source: %d admitted, %d refused (server counted %d)", ok, refused, e.RefusedHandshakes())
	if refused == 0 || e.RefusedHandshakes() == 0 {
		t.Fatal("no handshake was refused: the per-source rate limit is missing")
	}
	if ok < burst {
		t.Fatalf("only %d handshakes admitted: the burst allows %d", ok, burst)
	}
	// Another source is not limited by the first one's flood.
	other, err := net.ListenPacket("udp", "127.0.0.2:0")
	if err != nil {
		testtier.Skipf(t, "no second loopback address: %v", err)
	}
	defer other.Close()
	c, err := dialStranger(ctx, addr, other)
	if err != nil {
		t.Fatalf("a handshake from another source: %v", err)
	}
	c.CloseWithError(0, "")
	// And the flooding source is admitted again once its bucket refills.
	testutil.Until(t, 10*time.Second, "the flooding source to be admitted again", func() bool {
		c, err := dialStrangerVia(ctx, tr, addr)
		if err == nil {
			c.CloseWithError(0, "")
		}
		return err == nil
	})
}

func dialStrangerVia(ctx context.Context, tr *quic.Transport, addr string) (*quic.Conn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{ALPNJoin}, InsecureSkipVerify: true}
	return tr.Dial(ctx, ua, tlsConf, &quic.Config{HandshakeIdleTimeout: 3 * time.Second})
}
