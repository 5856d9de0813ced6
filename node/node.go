package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

// Node is one running member of a mesh. Open starts it; Close stops it in the reverse order.
type Node struct {
	cfg    Config
	log    *slog.Logger
	stored *Stored

	fsm  *raftfsm.FSM
	raft *raft.Raft
	// heartbeats spares raft heartbeats to peers that have just answered (heartbeat.go).
	heartbeats *heartbeatGate
	store      *raftboltdb.BoltStore
	ep         *transport.Endpoint
	gossip     *memberlist.Memberlist
	members    *memberTable
	known      knownCheck // the command types every member knows (commands.go)
	// httpLn is the HTTP API's listener, bound by the node because gossip advertises its address; the API
	// server (package api) takes it over (TakeHTTPListener).
	httpLn    net.Listener
	httpTaken bool // under httpMu
	httpMu    sync.Mutex
	disk      *diskHealth
	leaderCh  chan bool
	leaderW   *leaderWatch // leader and Raft state changes (leaderwatch.go)
	left      chan struct{}
	leftOnce  sync.Once
	metrics   *metrics
	raftAddr  string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// leaderHooks run on the leader, each in its own goroutine with a context that ends when leadership does.
	hookMu      sync.Mutex
	leaderHooks []func(ctx context.Context, term uint64)
	// lease is the current leadership, while this node leads with its epoch committed (nil otherwise).
	lease *leadership

	closeOnce sync.Once

	// applied tracks what the state machine has really processed (see fsm.go). startIndex is the last entry of
	// this node's own log when it started; until the state machine has applied that far (or readyAfter passes),
	// the node's state is older than what it has already seen.
	applied    *appliedFSM
	startIndex uint64
	startedAt  time.Time

	// raftUp is set once n.raft exists: RPC handlers, registered before Raft starts, check it first.
	raftUp atomic.Bool
	// answered is the highest index of a write this node committed (and answered): plain reads wait until the
	// state includes it, so a client sees its own write on the node that took it (see BeginRead).
	answered   atomic.Uint64
	gossipKeys gossipKeys
	caTrust    caTrust
	renewWake  chan struct{}
	keysSynced bool // owned by renewLoop
}

// readyAfter bounds how long a restarted node reports itself as loading, in case the tail of its log was never
// committed and is replaced by the leader.
const readyAfter = 30 * time.Second

// Ready reports whether the node has the mesh's state: it has received it at least once, and replayed what it
// held before it (re)started. Before that, a token or
// record it does not find may just not be loaded yet.
func (n *Node) Ready() bool {
	var meshKnown bool
	n.fsm.Read(func(s *raftfsm.State) { meshKnown = s.Mesh != nil })
	// A node that just joined has no state at all until the leader adds it to Raft and sends the log.
	return meshKnown && (n.applied.through(n.startIndex) || time.Since(n.startedAt) > readyAfter)
}

// Open starts a node from an initialised or joined data dir: the QUIC endpoint, Raft, the HTTP API's listener
// (package api serves it), then gossip (the order of start; Close stops them the other way round).
func Open(cfg Config) (*Node, error) {
	st, err := LoadStored(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.ApplyStored(st)
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if cfg.Name != st.Name {
		return nil, fmt.Errorf("data dir %s belongs to node %q, not %q", cfg.DataDir, st.Name, cfg.Name)
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.Name), stored: st, fsm: raftfsm.New(),
		leaderCh: make(chan bool, 16), leaderW: newLeaderWatch(), left: make(chan struct{}), renewWake: make(chan struct{}, 1)}
	if st.Left {
		return nil, fmt.Errorf("the node in data dir %s left the mesh (`node leave`): to bring this server back, remove the data dir and `node join` again with a join token", cfg.DataDir)
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.members = newMemberTable()
	n.fsm.OnApply = func(t raftfsm.CommandType, _ *raftfsm.Result) {
		if t == raftfsm.CmdMemberLeave || t == raftfsm.CmdMemberRejoin {
			n.members.signal()    // the leader reconciles Raft membership at once
			n.membershipChanged() // and every node closes the removed node's connections
		}
		if t == raftfsm.CmdGossipKeyRotate {
			n.installGossipKeys()
		}
		if t == raftfsm.CmdCARotate {
			n.refreshTrust()
			n.wakeRenewal()
		}
	}
	n.metrics = newMetrics(cfg.Registry, n)
	n.OnLeader(n.pruneLoop)
	if err := n.start(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) start() error {
	id, err := transport.LoadIdentity(filepath.Join(n.cfg.DataDir, tlsDir))
	if err != nil {
		return fmt.Errorf("load node identity: %w", err)
	}
	if err := checkOwnCert(id, n.cfg.DataDir); err != nil {
		return err
	}
	n.ep, err = transport.Listen(transport.Config{
		Bind: hostPort(n.cfg.BindIP, n.cfg.QUICPort), Identity: id, Logger: n.log.With("component", "transport"),
	})
	if err != nil {
		return fmt.Errorf("listen QUIC on %s: %w", hostPort(n.cfg.BindIP, n.cfg.QUICPort), err)
	}
	quicPort := n.ep.Addr().(*net.UDPAddr).Port
	n.raftAddr = hostPort(n.cfg.AdvertiseIP, quicPort)
	adv, err := net.ResolveUDPAddr("udp", n.raftAddr)
	if err != nil {
		return err
	}
	n.ep.SetAdvertise(adv)
	n.ep.SetPeerCheck(n.checkPeerCert)
	n.registerRPCs()

	if err := n.startRaft(); err != nil {
		return err
	}
	if err := n.reserveHTTP(); err != nil {
		return err
	}
	if err := n.startGossip(); err != nil {
		return err
	}
	n.wg.Add(4)
	go n.leaderLoop()
	go n.rejoinLoop()
	go n.renewLoop()
	go n.snapshotTuner()
	return nil
}

// Close leaves nothing running: the leader loop, gossip, Raft, and the endpoint last, since Raft talks through
// it until it is shut down. The HTTP API (package api) is closed before it.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.handOff()
		n.cancel() // ends long-lived work (loops, log follows)
		n.closeHTTPListener()
		n.wg.Wait()
		n.stopGossipKeys()
		n.stopTrustTimer()
		if n.gossip != nil {
			_ = n.gossip.Shutdown()
		}
		if n.raft != nil {
			n.snapshotBeforeStop()
			if err := n.raft.Shutdown().Error(); err != nil {
				n.log.Warn("raft shutdown", "err", err)
			}
		}
		if n.store != nil {
			_ = n.store.Close()
		}
		if n.ep != nil {
			_ = n.ep.Close()
		}
	})
	return nil
}

// Done is closed when the node starts closing: long-lived work (streams, loops) should end then.
func (n *Node) Done() <-chan struct{} { return n.ctx.Done() }

// Tags returns this node's own configured tags.
func (n *Node) Tags() map[string]string { return n.cfg.Tags }

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// FSM returns the node's replicated state machine (read-only use).
func (n *Node) FSM() *raftfsm.FSM { return n.fsm }

// Endpoint returns the node's QUIC endpoint.
func (n *Node) Endpoint() *transport.Endpoint { return n.ep }

// HTTPAddr returns the address the API listens on.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// reserveHTTP binds the HTTP API's address: gossip advertises it from the start, and its port may be the
// kernel's choice, so it is bound before gossip starts; the API server serves it (TakeHTTPListener).
func (n *Node) reserveHTTP() error {
	ln, err := net.Listen("tcp", hostPort(n.cfg.BindIP, n.cfg.HTTPPort))
	if err != nil {
		return fmt.Errorf("listen HTTP on %s: %w", hostPort(n.cfg.BindIP, n.cfg.HTTPPort), err)
	}
	n.httpLn = ln
	return nil
}

// TakeHTTPListener hands the HTTP API's listener to the one server that serves it (api.New), which closes it.
// Connections wait in the listen queue until it serves.
func (n *Node) TakeHTTPListener() (net.Listener, error) {
	n.httpMu.Lock()
	defer n.httpMu.Unlock()
	if n.httpTaken {
		return nil, fmt.Errorf("node %s: the HTTP API's listener is served already", n.cfg.Name)
	}
	n.httpTaken = true
	return n.httpLn, nil
}

// closeHTTPListener closes the listener if no API server took it (that server closes it).
func (n *Node) closeHTTPListener() {
	n.httpMu.Lock()
	defer n.httpMu.Unlock()
	if n.httpLn != nil && !n.httpTaken {
		_ = n.httpLn.Close()
	}
}

// AdvertisedHTTPAddr returns the address other machines reach the API at: the advertised IP with the port the API
// listens on (HTTPAddr says [::] when the node binds every address).
func (n *Node) AdvertisedHTTPAddr() string {
	_, port, err := net.SplitHostPort(n.HTTPAddr())
	if err != nil || n.cfg.AdvertiseIP == "" {
		return n.HTTPAddr()
	}
	return net.JoinHostPort(n.cfg.AdvertiseIP, port)
}

// GossipAddr returns the address gossip listens on.
func (n *Node) GossipAddr() string {
	m := n.gossip.LocalNode()
	return net.JoinHostPort(m.Addr.String(), fmt.Sprint(m.Port))
}

// RaftAddr returns the QUIC address Raft peers reach this node at.
func (n *Node) RaftAddr() string { return n.raftAddr }

// DataDir returns the node's data dir.
func (n *Node) DataDir() string { return n.cfg.DataDir }

// Logger returns the node's logger.
func (n *Node) Logger() *slog.Logger { return n.log }

// IsLeader reports whether this node is the Raft leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's name and QUIC address, empty while there is none.
func (n *Node) Leader() (name, addr string) {
	a, id := n.raft.LeaderWithID()
	return string(id), string(a)
}

// OnLeader registers fn to run whenever this node becomes leader, after its leader epoch is committed; fn's
// context ends when leadership does, and the node waits for fn to return before it leads again. If the node
// leads already, fn starts at once.
func (n *Node) OnLeader(fn func(ctx context.Context, term uint64)) {
	n.hookMu.Lock()
	defer n.hookMu.Unlock()
	n.leaderHooks = append(n.leaderHooks, fn)
	if l := n.lease; l != nil {
		l.start(fn)
	}
}

// leadership is one term of this node's leadership: the hooks run under its context.
type leadership struct {
	ctx  context.Context
	term uint64
	wg   *sync.WaitGroup
}

func (l *leadership) start(fn func(ctx context.Context, term uint64)) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		fn(l.ctx, l.term)
	}()
}

// Registry returns the node's Prometheus registry, for other components' collectors.
func (n *Node) Registry() *prometheus.Registry { return n.cfg.Registry }

func (n *Node) startRaft() error {
	dir := filepath.Join(n.cfg.DataDir, raftDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := checkRaftLog(filepath.Join(dir, "raft.db")); err != nil {
		return err
	}
	store, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		return fmt.Errorf("open raft log %s: %w (is another node running on this data dir?)", dir, err)
	}
	n.store = store
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclogFor(n.log, "raft"))
	if err != nil {
		return fmt.Errorf("open raft snapshots: %w", err)
	}
	rc := raft.DefaultConfig()
	if n.cfg.Timing.CommitTimeout > 0 {
		rc.CommitTimeout = n.cfg.Timing.CommitTimeout
	}
	// Heartbeats to a peer that answered an AppendEntries within this window are spared (see heartbeat.go):
	// AppendEntries go out every CommitTimeout to 2·CommitTimeout, so a live peer always has a recent answer.
	n.heartbeats = newHeartbeatGate(min(n.cfg.Timing.HeartbeatTimeout/2, 2*rc.CommitTimeout+n.cfg.Timing.HeartbeatTimeout/10))
	trans := &quietTransport{NetworkTransport: raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  n.ep.RaftLayer(),
		MaxPool: 8,
		Timeout: 5 * time.Second,
		Logger:  hclogFor(n.log, "raft-net"),
	}), gate: n.heartbeats}
	rc.LocalID = raft.ServerID(n.cfg.Name)
	rc.Logger = hclogFor(n.log, "raft")
	t := n.cfg.Timing
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = t.HeartbeatTimeout, t.ElectionTimeout, t.LeaderLeaseTimeout
	// One microsecond of room to lower the heartbeat timeout once Raft runs (campaignIfSoleVoter).
	rc.HeartbeatTimeout += time.Microsecond
	rc.ElectionTimeout = max(rc.ElectionTimeout, rc.HeartbeatTimeout)
	rc.SnapshotThreshold = t.SnapshotThreshold
	if t.SnapshotInterval > 0 {
		rc.SnapshotInterval = t.SnapshotInterval
	}
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true
	rc.NotifyCh = n.leaderCh

	n.applied = &appliedFSM{FSM: n.fsm, m: n.metrics, logs: store, restored: func() {
		n.membershipChanged()
		n.installGossipKeys()
		n.refreshTrust()
	}}
	if n.startIndex, err = store.LastIndex(); err != nil {
		return fmt.Errorf("read raft log: %w", err)
	}
	n.startedAt = time.Now()
	n.disk = &diskHealth{dir: dir}
	n.raft, err = raft.NewRaft(rc, n.applied, &watchedLogStore{LogStore: store, health: n.disk}, store, snaps, trans)
	if err != nil && strings.Contains(err.Error(), "snapshot") {
		// Every snapshot in the directory failed to restore (raft logs why for each).
		return &CorruptDataError{File: filepath.Join(dir, "snapshots"), Reason: err.Error()}
	}
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	n.leaderW.observe(n.raft)
	n.raftUp.Store(true)
	if n.stored.Bootstrap {
		has, err := raft.HasExistingState(store, store, snaps)
		if err != nil {
			return err
		}
		if !has {
			f := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
				ID: rc.LocalID, Address: raft.ServerAddress(n.raftAddr), Suffrage: raft.Voter,
			}}})
			if err := f.Error(); err != nil {
				return fmt.Errorf("bootstrap raft: %w", err)
			}
		}
		n.stored.Bootstrap = false
		if err := saveStored(n.cfg.DataDir, n.stored); err != nil {
			return err
		}
	}
	n.campaignIfSoleVoter()
	return nil
}

// campaignIfSoleVoter starts the election at once when this node is the only voter of the configuration it
// restored: no other node can be leader, yet Raft would first wait out a heartbeat timeout (up to twice
// HeartbeatTimeout) for one. Lowering the heartbeat timeout makes Raft's follower loop check at once (raft's
// ReloadConfig notifies it), which finds no contact and campaigns; a sole voter wins its own vote. The
// election is the one Raft would hold anyway, only sooner. With other voters, nothing changes.
func (n *Node) campaignIfSoleVoter() {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	var voters []raft.ServerID
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, s.ID)
		}
	}
	if len(voters) != 1 || voters[0] != raft.ServerID(n.cfg.Name) {
		return
	}
	rc := n.raft.ReloadableConfig()
	rc.HeartbeatTimeout = n.cfg.Timing.HeartbeatTimeout
	if err := n.raft.ReloadConfig(rc); err != nil {
		n.log.Warn("could not start the sole voter's election early", "err", err)
	}
}

// WaitLeader blocks until the mesh has a leader or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) error {
	for {
		if _, addr := n.Leader(); addr != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("no leader was elected in time")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// handOff passes leadership to another voter before a planned stop, so the mesh needs no election (a crash
// still costs one). It gives up after a few seconds: stopping must not hang on a sick mesh.
func (n *Node) handOff() {
	if n.raft == nil || !n.IsLeader() {
		return
	}
	voters := 0
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				voters++
			}
		}
	}
	if voters < 2 {
		return
	}
	done := make(chan error, 1)
	go func() { done <- n.raft.LeadershipTransfer().Error() }()
	select {
	case err := <-done:
		if err != nil {
			n.log.Warn("leadership hand-off before stopping failed", "err", err)
		}
	case <-time.After(3 * time.Second):
		n.log.Warn("leadership hand-off before stopping timed out")
	}
}

// Left is closed once the node has left the mesh through Leave; the agent then exits.
func (n *Node) Left() <-chan struct{} { return n.left }

// Leave takes this node out of the mesh for good: it hands leadership to another voter if it leads, records its
// departure in Raft (the leader then removes it from the Raft configuration at once, and every node lists it as
// left), waits for the removal, marks its data dir as left, and leaves gossip.
func (n *Node) Leave(ctx context.Context) error {
	log := n.log.With("component", "reconcile")
	if n.IsLeader() {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			return fmt.Errorf("hand off leadership before leaving: %w (a mesh of one voter cannot lose its last one)", err)
		}
	}
	if _, err := n.Apply(ctx, &raftfsm.MemberLeave{Name: n.cfg.Name, At: time.Now().UTC()}); err != nil {
		if !transport.IsNotMember(err) {
			return fmt.Errorf("record the departure: %w", err)
		}
		// The leader applied the departure and closed this node's connections before its answer arrived (another
		// stream of ours reached it first): the refusal itself says the departure is committed.
		log.Info("the leader refused this node as departed before answering: the departure is committed")
	}
	// Once the departure is committed the leader removes this node from Raft, and every member refuses its
	// certificate: it may never hear of its own removal, so it waits only briefly to see it.
	seen := time.After(2 * time.Second)
	for n.InRaft() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("the departure is recorded, but the leader has not removed this node from Raft yet: check `node members`")
		case <-seen:
			log.Info("departure committed; the mesh no longer accepts this node, so it cannot see its removal from Raft")
		case <-time.After(50 * time.Millisecond):
			continue
		}
		break
	}
	n.stored.Left = true
	if err := saveStored(n.cfg.DataDir, n.stored); err != nil {
		return err
	}
	if err := n.gossip.Leave(5 * time.Second); err != nil {
		log.Warn("gossip leave", "err", err)
	}
	log.Info("left the mesh")
	n.leftOnce.Do(func() { close(n.left) })
	return nil
}

// InRaft reports whether this node is in the Raft configuration it knows (as a voter or a non-voter).
func (n *Node) InRaft() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return true
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == n.cfg.Name {
			return true
		}
	}
	return false
}
