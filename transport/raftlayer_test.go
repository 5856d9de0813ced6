package transport

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-ci/shoal/internal/testutil"
)

// setFSM records the distinct commands applied, so a command retried after a leadership change counts once.
type setFSM struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (f *setFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen[string(l.Data)] = true
	return nil
}

func (f *setFSM) has(cmds []string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cmds {
		if !f.seen[c] {
			return false
		}
	}
	return true
}

func (f *setFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := json.Marshal(f.seen)
	return snapBytes(b), err
}

func (f *setFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	seen := map[string]bool{}
	if err := json.NewDecoder(rc).Decode(&seen); err != nil {
		return err
	}
	f.mu.Lock()
	f.seen = seen
	f.mu.Unlock()
	return nil
}

type snapBytes []byte

func (s snapBytes) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}
func (snapBytes) Release() {}

type raftNode struct {
	name string
	e    *Endpoint
	r    *raft.Raft
	fsm  *setFSM
	down bool
}

func (n *raftNode) shutdown() {
	if n.down {
		return
	}
	n.down = true
	n.r.Shutdown().Error()
	n.e.Close()
}

func TestRaftOverQUIC(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node Raft cluster; skipped with -short")
	}
	ca := newTestCA(t, "raft")
	logOut := io.Discard
	if testing.Verbose() {
		logOut = os.Stderr
	}
	var nodes []*raftNode
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		n := &raftNode{name: name, e: listenTest(t, newTestIdentity(t, ca, name), ""), fsm: &setFSM{seen: map[string]bool{}}}
		nodes = append(nodes, n)
	}
	var servers []raft.Server
	for _, n := range nodes {
		servers = append(servers, raft.Server{ID: raft.ServerID(n.name), Address: raft.ServerAddress(n.e.Addr().String())})
	}
	for i, n := range nodes {
		conf := raft.DefaultConfig()
		conf.LocalID = raft.ServerID(n.name)
		conf.HeartbeatTimeout = 300 * time.Millisecond
		conf.ElectionTimeout = 300 * time.Millisecond
		conf.LeaderLeaseTimeout = 150 * time.Millisecond
		conf.LogOutput = logOut
		conf.LogLevel = "WARN"
		trans := raft.NewNetworkTransport(n.e.RaftLayer(), 3, 5*time.Second, logOut)
		if got := string(trans.LocalAddr()); got != n.e.Addr().String() {
			t.Fatalf("raft transport advertises %s, endpoint is bound to %s", got, n.e.Addr())
		}
		store := raft.NewInmemStore()
		r, err := raft.NewRaft(conf, n.fsm, store, store, raft.NewInmemSnapshotStore(), trans)
		if err != nil {
			t.Fatal(err)
		}
		n.r = r
		t.Cleanup(n.shutdown) // before the endpoint's own cleanup: Raft first, then its transport
		if i == 0 {
			if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
				t.Fatal(err)
			}
		}
	}

	leaderOf := func(among []*raftNode) *raftNode {
		for _, n := range among {
			if !n.down && n.r.State() == raft.Leader {
				return n
			}
		}
		return nil
	}
	// apply commits each command on whichever node leads, retrying across elections; commands are distinct so a
	// retry of an already committed one changes nothing.
	apply := func(among []*raftNode, cmds []string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for _, c := range cmds {
			for {
				if time.Now().After(deadline) {
					t.Fatalf("could not commit %q: no stable leader", c)
				}
				l := leaderOf(among)
				if l == nil {
					time.Sleep(20 * time.Millisecond) // poll for a leader
					continue
				}
				if err := l.r.Apply([]byte(c), 5*time.Second).Error(); err != nil {
					t.Logf("apply %q on %s: %v; retrying", c, l.name, err)
					continue
				}
				break
			}
		}
	}
	cmds := func(prefix string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s-%d", prefix, i)
		}
		return out
	}

	testutil.Until(t, 30*time.Second, "a leader", func() bool { return leaderOf(nodes) != nil })
	first := cmds("a", 100)
	apply(nodes, first)
	for _, n := range nodes {
		testutil.Until(t, 30*time.Second, n.name+" to apply 100 commands", func() bool { return n.fsm.has(first) })
	}

	old := leaderOf(nodes)
	if old == nil {
		t.Fatal("lost the leader before shutting it down")
	}
	t.Logf("shutting down leader %s", old.name)
	old.shutdown()
	var rest []*raftNode
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	testutil.Until(t, 30*time.Second, "a new leader among the survivors", func() bool { return leaderOf(rest) != nil })
	second := cmds("b", 20)
	apply(rest, second)
	for _, n := range rest {
		testutil.Until(t, 30*time.Second, n.name+" to apply writes under the new leader", func() bool { return n.fsm.has(second) })
	}
}

func TestRaftLayerStreams(t *testing.T) {
	ca := newTestCA(t, "raft")
	a := listenTest(t, newTestIdentity(t, ca, "a"), "")
	b := listenTest(t, newTestIdentity(t, ca, "b"), "")
	la, lb := a.RaftLayer(), b.RaftLayer()
	if la != a.RaftLayer() {
		t.Fatal("RaftLayer returned a second layer while the first is open")
	}
	adv := &fakeAddr{"10.1.2.3:7422"}
	a.SetAdvertise(adv)
	if la.Addr() != adv {
		t.Fatalf("Addr %v, want the advertised address", la.Addr())
	}

	conn, err := la.Dial(raft.ServerAddress(b.Addr().String()), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	peer := acceptWithin(t, lb)
	if peer.RemoteAddr().String() != a.Addr().String() || conn.RemoteAddr().String() != b.Addr().String() {
		t.Fatalf("addresses: accepted remote %v (a is %v), dialed remote %v (b is %v)",
			peer.RemoteAddr(), a.Addr(), conn.RemoteAddr(), b.Addr())
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	// Deadlines pass through to the stream.
	peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := peer.Read(buf); err == nil {
		t.Fatal("read past its deadline returned no error")
	}
	peer.SetReadDeadline(time.Time{})

	// Close is a full close: the other side's reads end and its writes fail.
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(peer); err != nil {
		t.Fatalf("read after peer close: %v (want EOF)", err)
	}
	testutil.Until(t, 20*time.Second, "writes to a closed stream to fail", func() bool {
		_, err := peer.Write([]byte("x"))
		return err != nil
	})
	peer.Close()

	// Closing the layer ends Accept, closes the peer connections it served and stops serving ALPNRaft; a new
	// layer serves it again once the peer redials.
	lb.Close()
	if _, err := lb.Accept(); err == nil {
		t.Fatal("Accept on a closed layer succeeded")
	}
	testutil.Until(t, 20*time.Second, "a to drop its connection to b's closed layer", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.dials[dialKey{b.Addr().String(), ALPNRaft}] == nil
	})
	lb2 := b.RaftLayer()
	if lb2 == lb {
		t.Fatal("RaftLayer returned the closed layer")
	}
	conn2, err := la.Dial(raft.ServerAddress(b.Addr().String()), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	conn2.Write([]byte("again"))
	acceptWithin(t, lb2).Close()
}

func acceptWithin(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.c
	case <-time.After(20 * time.Second):
		l.Close() // ends the Accept above
		t.Fatal("no stream accepted")
		return nil
	}
}

type fakeAddr struct{ s string }

func (a *fakeAddr) Network() string { return "udp" }
func (a *fakeAddr) String() string  { return a.s }
