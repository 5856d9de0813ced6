package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/shoal-ci/shoal/internal/testutil"
)

const alpnTest = "shoal-test/1"

func TestHandleDialEcho(t *testing.T) {
	ca := newTestCA(t, "test")
	srv := listenTest(t, newTestIdentity(t, ca, "server"), "")
	cli := listenTest(t, newTestIdentity(t, ca, "client"), "")

	peers := make(chan string, 1)
	srv.Handle(alpnTest, func(conn *quic.Conn, peer string) {
		peers <- peer
		for {
			st, err := conn.AcceptStream(conn.Context())
			if err != nil {
				return
			}
			data, err := io.ReadAll(st)
			if err != nil {
				return
			}
			st.Write(append([]byte("echo:"), data...))
			st.Close()
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := cli.Dial(ctx, srv.Addr().String(), alpnTest)
	if err != nil {
		t.Fatal(err)
	}
	if got := PeerName(conn); got != "server" {
		t.Fatalf("client sees server as %q", got)
	}
	for i := range 3 {
		st, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf("hello %d", i)
		if _, err := st.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		st.Close()
		got, err := io.ReadAll(st)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "echo:"+msg {
			t.Fatalf("got %q", got)
		}
	}
	if peer := <-peers; peer != "client" {
		t.Fatalf("server handler sees peer %q, want client", peer)
	}

	// Cached: concurrent dials share one connection.
	var wg sync.WaitGroup
	conns := make([]*quic.Conn, 8)
	errs := make([]error, 8)
	for i := range conns {
		wg.Go(func() { conns[i], errs[i] = cli.Dial(ctx, srv.Addr().String(), alpnTest) })
	}
	wg.Wait()
	for i := range conns {
		if errs[i] != nil || conns[i] != conn {
			t.Fatalf("dial %d: %v, same conn %v", i, errs[i], conns[i] == conn)
		}
	}
	if n := srv.acceptedTotal.Load(); n != 1 {
		t.Fatalf("server accepted %d connections, want 1", n)
	}
}

func TestConcurrentFirstDialsShareOneHandshake(t *testing.T) {
	ca := newTestCA(t, "test")
	srv := listenTest(t, newTestIdentity(t, ca, "server"), "")
	cli := listenTest(t, newTestIdentity(t, ca, "client"), "")
	srv.Handle(alpnTest, func(conn *quic.Conn, _ string) { <-conn.Context().Done() })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	conns := make([]*quic.Conn, 16)
	for i := range conns {
		wg.Go(func() {
			c, err := cli.Dial(ctx, srv.Addr().String(), alpnTest)
			if err != nil {
				t.Error(err)
			}
			conns[i] = c
		})
	}
	wg.Wait()
	for _, c := range conns[1:] {
		if c != conns[0] {
			t.Fatal("concurrent first dials produced different connections")
		}
	}
	// The server accepts once it has the client's Finished, which may come after the client's Dial returned.
	testutil.Until(t, 20*time.Second, "the server to accept the connection", func() bool { return srv.acceptedTotal.Load() >= 1 })
	if n := srv.acceptedTotal.Load(); n != 1 {
		t.Fatalf("server accepted %d connections, want 1", n)
	}
}

type codedErr struct{ code, msg string }

func (e codedErr) Error() string     { return e.msg }
func (e codedErr) ErrorCode() string { return e.code }

type echoReq struct {
	Text string `json:"text"`
}

type echoResp struct {
	Text string `json:"text"`
	Peer string `json:"peer"`
}

func TestRPC(t *testing.T) {
	ca := newTestCA(t, "test")
	srv := listenTest(t, newTestIdentity(t, ca, "server"), "")
	cli := listenTest(t, newTestIdentity(t, ca, "client"), "")

	srv.HandleRPC("echo", func(ctx context.Context, peer string, body json.RawMessage) (any, error) {
		var req echoReq
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, err
		}
		return echoResp{Text: req.Text, Peer: peer}, nil
	})
	srv.HandleRPC("not-leader", func(context.Context, string, json.RawMessage) (any, error) {
		return nil, fmt.Errorf("forward: %w", codedErr{"not_leader", "this node is not the leader"})
	})
	srv.HandleRPC("plain", func(context.Context, string, json.RawMessage) (any, error) {
		return nil, errors.New("disk full")
	})
	srv.HandleRPC("panic", func(context.Context, string, json.RawMessage) (any, error) {
		panic("handler bug")
	})
	srv.HandleRPCLimit("big", 2<<20, func(_ context.Context, _ string, body json.RawMessage) (any, error) {
		return json.RawMessage(body), nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addr := srv.Addr().String()

	var resp echoResp
	if err := cli.Call(ctx, addr, "echo", echoReq{Text: "hi"}, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Text != "hi" || resp.Peer != "client" {
		t.Fatalf("response %+v, want text hi from peer client", resp)
	}

	for method, want := range map[string]RemoteError{
		"not-leader": {Code: "not_leader", Message: "forward: this node is not the leader"},
		"plain":      {Code: CodeInternal, Message: "disk full"},
		"panic":      {Code: CodeInternal},
		"nope":       {Code: CodeUnknownMethod},
	} {
		err := cli.Call(ctx, addr, method, nil, nil)
		var re *RemoteError
		if !errors.As(err, &re) {
			t.Fatalf("%s: error %v (%T) is not a RemoteError", method, err, err)
		}
		if re.Code != want.Code || (want.Message != "" && re.Message != want.Message) || err.Error() != re.Message {
			t.Fatalf("%s: got %+v, want %+v", method, *re, want)
		}
	}

	// A large body passes (well below the frame limit), and many calls run concurrently on one connection.
	big := bytes.Repeat([]byte("x"), 1<<20)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			var out string
			if err := cli.Call(ctx, addr, "big", string(big), &out); err != nil {
				t.Error(err)
				return
			}
			if len(out) != len(big) {
				t.Errorf("big body came back with %d bytes", len(out))
			}
		})
	}
	wg.Wait()

	// The client's cancellation reaches the handler.
	started := make(chan struct{})
	cancelled := make(chan struct{})
	srv.HandleRPC("block", func(ctx context.Context, _ string, _ json.RawMessage) (any, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	})
	cctx, ccancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- cli.Call(cctx, addr, "block", nil, nil) }()
	<-started
	ccancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call returned %v", err)
	}
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("the handler's context was not cancelled when the caller gave up")
	}
}

func TestFrameLimits(t *testing.T) {
	var buf bytes.Buffer
	if err := writeFrame(&buf, make([]byte, MaxFrame+1)); err == nil {
		t.Fatal("writeFrame accepted an oversized frame")
	}
	buf.Reset()
	buf.Write([]byte{0x01, 0x00, 0x00, 0x01}) // 16 MiB + 1
	if _, err := readFrame(&buf, MaxFrame); err == nil {
		t.Fatal("readFrame accepted an oversized length")
	}
	buf.Reset()
	writeFrame(&buf, []byte(`{}`))
	buf.WriteString("more")
	if _, err := readFrame(&buf, MaxFrame); err == nil {
		t.Fatal("readFrame accepted trailing data")
	}
}

func TestCloseStopsEverything(t *testing.T) {
	ca := newTestCA(t, "test")
	srv := listenTest(t, newTestIdentity(t, ca, "server"), "")
	cli := listenTest(t, newTestIdentity(t, ca, "client"), "")
	handlerDone := make(chan struct{})
	srv.Handle(alpnTest, func(conn *quic.Conn, _ string) {
		defer close(handlerDone)
		<-conn.Context().Done()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := cli.Dial(ctx, srv.Addr().String(), alpnTest)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Until(t, 20*time.Second, "the server to accept the connection", func() bool { return srv.acceptedTotal.Load() == 1 })
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-handlerDone: // Close waited for it
	default:
		t.Fatal("Close returned before the connection handler")
	}
	select {
	case <-conn.Context().Done(): // the peer learned at once (CONNECTION_CLOSE)
	case <-ctx.Done():
		t.Fatal("client connection still open after the server closed")
	}
	if _, err := srv.Dial(ctx, cli.Addr().String(), alpnTest); !errors.Is(err, ErrClosed) {
		t.Fatalf("Dial after Close: %v", err)
	}
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
}
