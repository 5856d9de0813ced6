// Package fakenode is a fake of the cluster side of node.Node for the unit tests of the services (builder,
// deployer, spread): its state is a real raftfsm.FSM, and its Apply encodes each command and applies it to that
// FSM at once, as the leader's Raft would; membership, leadership and readiness are what the test sets.
// Imported by tests only.
package fakenode

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

// Write is one command that went through Apply, and its error (nil: applied): the FSM's refusal, or the
// BeforeApply hook's failure.
type Write struct {
	Cmd raftfsm.Command
	Err error
}

// mesh is what the nodes of one fake mesh share: the replicated state and its log, and gossip's view.
type mesh struct {
	fsm *raftfsm.FSM

	mu      sync.Mutex // serializes applies, as Raft's log does
	index   uint64
	writes  []Write
	before  func(raftfsm.Command) error
	members []node.Member
}

// Node is one fake member. The zero value is not usable: use New, or Peer for another member of the same mesh.
type Node struct {
	m       *mesh
	name    string
	dataDir string
	log     *slog.Logger
	reg     *prometheus.Registry
	done    chan struct{}

	mu       sync.Mutex
	tags     map[string]string
	leader   bool
	ready    bool
	readErr  error
	hooks    []func(ctx context.Context, term uint64)
	stopLead func()
}

// New returns the member name of a new fake mesh with an empty state, alone in its member list (alive), ready,
// and not leader; its data dir is a temporary directory of t. Done's channel is closed when the test ends.
func New(t testing.TB, name string) *Node {
	m := &mesh{fsm: raftfsm.New()}
	n := m.node(t, name)
	m.members = []node.Member{{Name: name, Status: node.StatusAlive, Addr: name + ":7422"}}
	return n
}

// Peer returns another member of n's mesh: the same state, log and member list (the caller adds it to the list
// with SetMembers if it should appear there).
func (n *Node) Peer(t testing.TB, name string) *Node { return n.m.node(t, name) }

func (m *mesh) node(t testing.TB, name string) *Node {
	n := &Node{m: m, name: name, dataDir: t.TempDir(), log: slog.New(slog.DiscardHandler),
		reg: prometheus.NewRegistry(), done: make(chan struct{}), ready: true}
	t.Cleanup(func() {
		n.Unlead()
		close(n.done)
	})
	return n
}

// Name is the member's name.
func (n *Node) Name() string { return n.name }

// FSM is the mesh's state machine, shared by its members.
func (n *Node) FSM() *raftfsm.FSM { return n.m.fsm }

// Apply encodes c and applies it to the FSM at the next index, synchronously: once it returns, the state
// includes the write (or the FSM refused it, and the refusal is the error, as node.Node.Apply returns it). The
// options only matter to a real write path and are ignored. A hook set with BeforeApply runs first, and its
// error, if any, is returned instead of applying c.
func (n *Node) Apply(ctx context.Context, c raftfsm.Command, _ ...node.ApplyOption) (*node.Applied, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.m.mu.Lock()
	before := n.m.before
	n.m.mu.Unlock()
	if before != nil {
		if err := before(c); err != nil {
			n.m.mu.Lock()
			n.m.writes = append(n.m.writes, Write{Cmd: c, Err: err})
			n.m.mu.Unlock()
			return nil, err
		}
	}
	data, err := raftfsm.Encode(c)
	if err != nil {
		return nil, err
	}
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	n.m.index++
	res := n.m.fsm.Apply(&raft.Log{Index: n.m.index, Term: 1, Type: raft.LogCommand, Data: data}).(*raftfsm.Result)
	if res.Err != nil {
		n.m.writes = append(n.m.writes, Write{Cmd: c, Err: res.Err})
		return nil, res.Err
	}
	n.m.writes = append(n.m.writes, Write{Cmd: c})
	return &node.Applied{Index: res.Index, Value: res.Value}, nil
}

// MustApply applies each command and fails the test if the FSM refuses one: the test's own setup of the state.
func (n *Node) MustApply(t testing.TB, cmds ...raftfsm.Command) {
	t.Helper()
	for _, c := range cmds {
		if _, err := n.Apply(context.Background(), c); err != nil {
			t.Fatalf("%T: %v", c, err)
		}
	}
}

// BeforeApply sets a hook that runs before each later Apply (of any member of the mesh), outside the log's
// lock: it may apply commands itself, which then come first, and a non-nil error fails the write without
// applying it (a write that reached no leader). nil removes it.
func (n *Node) BeforeApply(fn func(raftfsm.Command) error) {
	n.m.mu.Lock()
	n.m.before = fn
	n.m.mu.Unlock()
}

// Writes returns the commands applied through Apply so far by any member of the mesh, in log order.
func (n *Node) Writes() []Write {
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	return slices.Clone(n.m.writes)
}

// WaitApplied returns at once: Apply is synchronous.
func (n *Node) WaitApplied(context.Context, uint64) {}

// ConsistentRead returns what SetReadError set (nil by default): the state is always current.
func (n *Node) ConsistentRead(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.readErr
}

// SetReadError makes ConsistentRead fail with err (nil: succeed), like a node that cannot reach a leader.
func (n *Node) SetReadError(err error) {
	n.mu.Lock()
	n.readErr = err
	n.mu.Unlock()
}

// Members returns the member list set with SetMembers (at first, the first member alone, alive).
func (n *Node) Members() []node.Member {
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	return slices.Clone(n.m.members)
}

// SetMembers sets gossip's view of the mesh, for every member.
func (n *Node) SetMembers(ms ...node.Member) {
	n.m.mu.Lock()
	n.m.members = slices.Clone(ms)
	n.m.mu.Unlock()
}

// MemberStatus is the status of name in the member list, "" for a name it does not hold.
func (n *Node) MemberStatus(name string) string {
	for _, m := range n.Members() {
		if m.Name == name {
			return m.Status
		}
	}
	return ""
}

// Tags are the member's gossip tags (SetTags).
func (n *Node) Tags() map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.tags
}

// SetTags sets the member's gossip tags.
func (n *Node) SetTags(tags map[string]string) {
	n.mu.Lock()
	n.tags = tags
	n.mu.Unlock()
}

// Ready reports what SetReady set (true by default): the node has replayed its log.
func (n *Node) Ready() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ready
}

// SetReady sets what Ready reports.
func (n *Node) SetReady(ok bool) {
	n.mu.Lock()
	n.ready = ok
	n.mu.Unlock()
}

// IsLeader reports whether the test made this member lead (Lead) and has not ended it (Unlead).
func (n *Node) IsLeader() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leader
}

// OnLeader registers fn to run at each later Lead, as node.Node runs it when it gains leadership.
func (n *Node) OnLeader(fn func(ctx context.Context, term uint64)) {
	n.mu.Lock()
	n.hooks = append(n.hooks, fn)
	n.mu.Unlock()
}

// Lead makes this member the leader of term: it commits the leader epoch as node.Node does, then starts every
// OnLeader hook in its own goroutine under a context that Unlead (or the end of the test) cancels.
func (n *Node) Lead(t testing.TB, term uint64) {
	t.Helper()
	n.Unlead()
	n.MustApply(t, &raftfsm.LeaderEpoch{Term: term, Node: n.name})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	n.mu.Lock()
	n.leader = true
	for _, h := range n.hooks {
		wg.Go(func() { h(ctx, term) })
	}
	n.stopLead = func() {
		cancel()
		wg.Wait()
	}
	n.mu.Unlock()
}

// Unlead ends this member's leadership: the hooks' context is cancelled and Unlead waits for them to return.
func (n *Node) Unlead() {
	n.mu.Lock()
	stop := n.stopLead
	n.stopLead, n.leader = nil, false
	n.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Endpoint is nil: a fake member has no QUIC endpoint. Code that dials or serves over the mesh needs a real one.
func (n *Node) Endpoint() *transport.Endpoint { return nil }

// DataDir is a temporary directory of the test.
func (n *Node) DataDir() string { return n.dataDir }

// Logger discards.
func (n *Node) Logger() *slog.Logger { return n.log }

// Registry is a registry of this member's own.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Done is closed when the test ends.
func (n *Node) Done() <-chan struct{} { return n.done }
